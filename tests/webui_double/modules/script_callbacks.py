"""modules/script_callbacks.py: params classes with upstream field names, ordered lists, swallowed errors."""

import inspect
import os
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])


class CFGDenoiserParams:
    def __init__(self, x, image_cond, sigma, sampling_step, total_sampling_steps, text_cond, text_uncond, denoiser=None):
        self.x = x
        self.image_cond = image_cond
        self.sigma = sigma
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.text_cond = text_cond
        self.text_uncond = text_uncond
        self.denoiser = denoiser


class CFGDenoisedParams:
    def __init__(self, x, sampling_step, total_sampling_steps, inner_model):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps
        self.inner_model = inner_model


class AfterCFGCallbackParams:
    def __init__(self, x, sampling_step, total_sampling_steps):
        self.x = x
        self.sampling_step = sampling_step
        self.total_sampling_steps = total_sampling_steps


CATEGORIES = ("cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "ui_tabs", "ui_settings", "script_unloaded",
              "infotext_pasted", "before_ui", "app_started")
callback_map = {f"callbacks_{c}": [] for c in CATEGORIES}


def clear_callbacks():
    for lst in callback_map.values():
        lst.clear()


def add_callback(callbacks, fun, *, name=None, category=None, filename=None):
    if filename is None:
        filename = inspect.stack()[2].filename
    unique = f"{os.path.basename(os.path.dirname(os.path.dirname(filename)))}/{os.path.basename(filename)}/{category}"
    if name is not None:
        unique += f"/{name}"
    callbacks.append(ScriptCallback(filename, fun, unique))


def _run(category, *args):
    for c in list(callback_map[f"callbacks_{category}"]):
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {category}_callback for {c.script}", exc_info=True)


def cfg_denoiser_callback(params):
    _run("cfg_denoiser", params)


def cfg_denoised_callback(params):
    _run("cfg_denoised", params)


def cfg_after_cfg_callback(params):
    _run("cfg_after_cfg", params)


def ui_settings_callback():
    _run("ui_settings")


def before_ui_callback():
    _run("before_ui")


def script_unloaded_callback():
    for c in reversed(callback_map["callbacks_script_unloaded"]):
        c.callback()


def infotext_pasted_callback(infotext, params):
    _run("infotext_pasted", infotext, params)


def ui_tabs_callback():
    res = []
    for c in callback_map["callbacks_ui_tabs"]:
        res += c.callback() or []
    return res


def _adder(category):
    def add(callback, *, name=None):
        add_callback(callback_map[f"callbacks_{category}"], callback, name=name, category=category)

    return add


on_cfg_denoiser = _adder("cfg_denoiser")
on_cfg_denoised = _adder("cfg_denoised")
on_cfg_after_cfg = _adder("cfg_after_cfg")
on_ui_tabs = _adder("ui_tabs")
on_ui_settings = _adder("ui_settings")
on_script_unloaded = _adder("script_unloaded")
on_infotext_pasted = _adder("infotext_pasted")
on_before_ui = _adder("before_ui")
on_app_started = _adder("app_started")


def remove_callbacks_for_function(fun):
    for lst in callback_map.values():
        lst[:] = [c for c in lst if c.callback != fun]
