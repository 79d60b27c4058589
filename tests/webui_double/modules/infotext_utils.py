"""modules/infotext_utils.py: what "Read generation parameters" / PNG Info paste does to each field.

Mirrors the loop in ``connect_paste.paste_func`` (v1.10.1): infotext_pasted callbacks run first on the
parsed dict; a field whose key is a callable gets ``key(params)``; None leaves the field unchanged; a
``gr.update`` dict is used as is; otherwise the string is converted with ``type(component.value)`` (a
component whose value is None, e.g. an empty dropdown, cannot take a value this way: ``NoneType(v)``
raises and the field is left unchanged).
"""

import gradio as gr
from modules import errors, script_callbacks

type_of_gr_update = type(gr.update())


def paste(paste_fields, params: dict, infotext: str = "") -> list:
    """The list of updates paste_func returns, one per (component, key) of ``paste_fields``."""
    script_callbacks.infotext_pasted_callback(infotext, params)
    res = []
    for output, key in paste_fields:
        if callable(key):
            try:
                v = key(params)
            except Exception:
                errors.report(f"Error executing {key}", exc_info=True)
                v = None
        else:
            v = params.get(key)
        if v is None:
            res.append(gr.update())
        elif isinstance(v, type_of_gr_update):
            res.append(v)
        else:
            try:
                valtype = type(output.value)
                if valtype is bool and v == "False":
                    val = False
                elif valtype is int:
                    val = float(v)
                else:
                    val = valtype(v)
                res.append(gr.update(value=val))
            except Exception:
                res.append(gr.update())
    return res
