"""modules/scripts.py: Script, AlwaysVisible, ScriptRunner (args_from/args_to from ui() lengths with
index 0 reserved, hooks in upstream order, each call wrapped in try/except + errors.report)."""

import os
from collections import namedtuple

import gradio as gr
from modules import errors

AlwaysVisible = object()
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list = []
current_basedir = "."


def basedir():
    return current_basedir


class PostprocessBatchListArgs:
    def __init__(self, images):
        self.images = images


class PostSampleArgs:
    def __init__(self, samples):
        self.samples = samples


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    infotext_fields = None
    paste_field_names = None
    api_info = None

    def title(self):
        raise NotImplementedError

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def before_process(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def before_process_batch(self, p, *args, **kwargs):
        pass

    def process_batch(self, p, *args, **kwargs):
        pass

    def process_before_every_sampling(self, p, *args, **kwargs):
        """Forge first (modules/scripts.py), A1111 since v1.10.0: right before ``sampler.sample``."""
        pass

    def post_sample(self, p, ps, *args):
        pass

    def postprocess_batch(self, p, *args, **kwargs):
        pass

    def postprocess_batch_list(self, p, pp, *args, **kwargs):
        pass

    def postprocess(self, p, processed, *args):
        pass


class ScriptRunner:
    def __init__(self, script_classes, is_img2img=False):
        self.alwayson_scripts = []
        self.inputs = [None]  # index 0: the selectable-script dropdown
        self.infotext_fields = []
        self.paste_field_names = []
        self.is_img2img = is_img2img
        for cls in script_classes:
            script = cls()
            script.filename = getattr(cls, "__module__", "")
            script.is_txt2img, script.is_img2img = not is_img2img, is_img2img
            script.tabname = "img2img" if is_img2img else "txt2img"
            if script.show(is_img2img) is AlwaysVisible:
                script.alwayson = True
                self.alwayson_scripts.append(script)

    def create_script_ui(self):
        """ui() inside gr.Blocks; infotext fields are read AFTER ui() ran (so ui() may set them)."""
        with gr.Blocks(analytics_enabled=False) as blocks:
            for script in self.alwayson_scripts:
                controls = script.ui(script.is_img2img)
                script.args_from = len(self.inputs)
                self.inputs.extend(controls or [])
                script.args_to = len(self.inputs)
                if script.infotext_fields:
                    self.infotext_fields += script.infotext_fields
                if script.paste_field_names:
                    self.paste_field_names += script.paste_field_names
        self.blocks = blocks
        return blocks

    def default_args(self):
        """api.init_default_script_args: build ui() AGAIN and read every component's value."""
        with gr.Blocks(analytics_enabled=False):
            values = [None]
            for script in self.alwayson_scripts:
                values += [getattr(c, "value", None) for c in (script.ui(script.is_img2img) or [])]
        return values

    def _call(self, hook, p, *extra, **kwargs):
        for script in self.alwayson_scripts:
            try:
                args = p.script_args[script.args_from:script.args_to]
                getattr(script, hook)(p, *extra, *args, **kwargs) if extra else getattr(script, hook)(p, *args, **kwargs)
            except Exception:
                errors.report(f"Error running {hook}: {script.filename}", exc_info=True)

    def before_process(self, p):
        self._call("before_process", p)

    def process(self, p):
        self._call("process", p)

    def before_process_batch(self, p, **kwargs):
        self._call("before_process_batch", p, **kwargs)

    def process_batch(self, p, **kwargs):
        self._call("process_batch", p, **kwargs)

    def process_before_every_sampling(self, p, **kwargs):
        self._call("process_before_every_sampling", p, **kwargs)

    def post_sample(self, p, ps):
        self._call("post_sample", p, ps)

    def postprocess_batch(self, p, images, **kwargs):
        self._call("postprocess_batch", p, images=images, **kwargs)

    def postprocess_batch_list(self, p, pp, **kwargs):
        self._call("postprocess_batch_list", p, pp, **kwargs)

    def postprocess(self, p, processed):
        self._call("postprocess", p, processed)


def register_module(module, path="."):
    """load_scripts: every Script subclass found in a script file's namespace is registered."""
    for obj in module.__dict__.values():
        if isinstance(obj, type) and issubclass(obj, Script) and obj is not Script:
            scripts_data.append(ScriptClassData(obj, path, os.path.dirname(path), module))
