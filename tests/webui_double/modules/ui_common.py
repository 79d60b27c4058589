import gradio as gr
from modules.ui_components import ToolButton

refresh_symbol = "\U0001f504"


def create_refresh_button(refresh_component, refresh_method, refreshed_args, elem_id):
    refresh_components = refresh_component if isinstance(refresh_component, list) else [refresh_component]

    def refresh():
        refresh_method()
        args = refreshed_args() if callable(refreshed_args) else refreshed_args
        return [gr.update(**(args or {})) for _ in refresh_components] if len(refresh_components) > 1 else gr.update(**(args or {}))

    button = ToolButton(value=refresh_symbol, elem_id=elem_id)
    button.click(fn=refresh, inputs=[], outputs=refresh_components)
    return button
