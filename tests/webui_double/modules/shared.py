"""modules/shared.py + options.Options + shared_state.State, reduced to what extensions touch."""

import os
from argparse import Namespace

from modules.paths import data_path


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False, category_id=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.section = section
        self.comment_after = ""

    def info(self, info):
        self.comment_after += f"<span class='info'>({info})</span>"
        return self

    def needs_reload_ui(self):
        return self


class Options:
    """Attribute access backed by ``.data``; ``add_option`` registers a default (options.Options)."""

    def __init__(self, defaults: dict):
        object.__setattr__(self, "data", dict(defaults))
        object.__setattr__(self, "data_labels", {})

    def __getattr__(self, item):
        data = object.__getattribute__(self, "data")
        if item in data:
            return data[item]
        labels = object.__getattribute__(self, "data_labels")
        if item in labels:
            return labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        self.data[key] = value

    def add_option(self, key, info):
        self.data_labels[key] = info
        self.data.setdefault(key, info.default)

    def save(self, filename):
        """options.Options.save: the whole ``data`` dict (registered or not) as JSON."""
        import json

        with open(filename, "w", encoding="utf8") as file:
            json.dump(self.data, file, indent=4, ensure_ascii=False)


class State:
    def __init__(self):
        self.interrupted = False
        self.skipped = False
        self.stopping_generation = False
        self.job = ""
        self.job_no = 0
        self.job_count = 0
        self.sampling_step = 0
        self.sampling_steps = 0
        self.textinfo = None

    def interrupt(self):
        self.interrupted = True

    def skip(self):
        self.skipped = True

    def begin(self, job="(unknown)"):
        self.__init__()
        self.job = job

    def end(self):
        self.job = ""


DEFAULTS = {
    "batch_cond_uncond": True, "pad_cond_uncond": False, "pad_cond_uncond_v0": False, "persistent_cond_cache": True,
    "skip_early_cond": 0.0, "s_min_uncond_all": False, "CLIP_stop_at_last_layers": 1, "emphasis": "Original",
    "comma_padding_backtrack": 20, "live_preview_content": "Prompt", "enable_pnginfo": True,
}

opts = Options(DEFAULTS)
state = State()
cmd_opts = Namespace(medvram=False, lowvram=False, no_half=True, motionprompt_models_dir=None, motionprompt_offline=False,
                     embeddings_dir=os.path.join(data_path, "embeddings"))  # cmd_args: --embeddings-dir's default
sd_model = None
config_filename = None  # cmd_opts.ui_settings_file (config.json); the test host points it into tmp
