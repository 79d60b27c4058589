"""modules/ui_components.py: InputAccordion is a Checkbox whose value is the accordion's open state."""

import gradio as gr


class ToolButton(gr.Button):
    def __init__(self, *args, **kwargs):
        classes = kwargs.pop("elem_classes", [])
        super().__init__(*args, elem_classes=["tool", *classes], **kwargs)


class FormRow(gr.Row):
    pass


class InputAccordion(gr.Checkbox):
    global_index = 0

    def __init__(self, value, **kwargs):
        self.accordion_id = kwargs.get("elem_id") or f"input-accordion-{InputAccordion.global_index}"
        InputAccordion.global_index += 1
        super().__init__(value=value, visible=False, elem_id=f"{self.accordion_id}-checkbox",
                         label=kwargs.get("label", "Accordion"))
        self.accordion = gr.Accordion(kwargs.get("label", "Accordion"), open=value, elem_id=self.accordion_id,
                                      elem_classes=["input-accordion"])

    def __enter__(self):
        self.accordion.__enter__()
        return self

    def __exit__(self, exc_type, exc_val, exc_tb):
        self.accordion.__exit__(exc_type, exc_val, exc_tb)
