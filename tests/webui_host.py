"""Loads the real extension (scripts/motionprompt.py) into a WebUI double, as the WebUI does at startup.

Two doubles: A1111 v1.10 + AnimateDiff master (``webui_double``) and early-2024 Forge + AnimateDiff forge/master
(``webui_double_forge``, which reuses the A1111 files Forge did not change). Either way the double's folder is on
``sys.path``, so ``modules`` and A1111's ``ldm`` (stablediffusion's package; Forge ``previous`` still ships it beside
its ``ldm_patched``) import as in a WebUI. Switching flavour drops every module the other flavour imported (the
doubles, ``ldm``/``ldm_patched``, AnimateDiff, and the extension's WebUI package, whose ``script.py`` subclasses
``modules.scripts.Script`` at import), so each test sees one consistent host.
"""

import importlib.util
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DOUBLE = Path(__file__).resolve().parent / "webui_double"
DOUBLE_FORGE = Path(__file__).resolve().parent / "webui_double_forge"
FLAVOURS = {"a1111": [DOUBLE], "forge": [DOUBLE_FORGE, DOUBLE]}
#: module name prefixes that belong to one flavour's world ("ldm" also covers "ldm_patched")
_PURGE = ("modules", "modules_forge", "ldm", "k_diffusion", "scripts.animatediff_", "tests.webui_double",
          "motionprompt.hosts.webui")


def install_double(flavour="a1111"):
    dirs = FLAVOURS[flavour]
    loaded = sys.modules.get("modules")
    if loaded is not None and Path(loaded.__file__).resolve().parent != dirs[0] / "modules":
        for name in [n for n in sys.modules if n.startswith(_PURGE)]:
            del sys.modules[name]
    for d in (DOUBLE, DOUBLE_FORGE):
        while str(d) in sys.path:
            sys.path.remove(str(d))
    for d in reversed(dirs):
        sys.path.insert(0, str(d))
    import ldm
    import modules

    assert Path(modules.__file__).resolve().parent == dirs[0] / "modules", "a real WebUI 'modules' shadows the double"
    assert Path(ldm.__file__).resolve().parent == DOUBLE / "ldm", "a real 'ldm' shadows the double's"


class WebUI:
    """One started WebUI: callbacks registered in load order, txt2img ScriptRunner with its UI built."""

    def __init__(self, tmp_path, order=("animatediff", "motionprompt"), with_animatediff=True, flavour="a1111"):
        install_double(flavour)
        self.flavour = flavour
        from modules import errors, paths, processing, script_callbacks, scripts, sd_hijack, shared

        if flavour == "forge":
            from ldm_patched.modules import model_management
            from modules import sd_models

            from .webui_double_forge import animatediff as ad
            from .webui_double_forge.model import ForgeToySDModel as ToySDModel

            model_management.current_loaded_models.clear()
            model_management.simulate_device_move = False
            model_management.vram_bytes = None
            model_management.moves.clear()
        else:
            from .webui_double import animatediff as ad
            from .webui_double.model import ToySDModel

        script_callbacks.clear_callbacks()
        scripts.scripts_data.clear()
        errors.reported.clear()
        shared.state.__init__()
        shared.opts.data.clear()
        shared.opts.data.update(shared.DEFAULTS)
        shared.config_filename = self.config = str(tmp_path / "config.json")
        processing.StableDiffusionProcessing.cached_c = [None, None]
        processing.StableDiffusionProcessing.cached_uc = [None, None]
        paths.models_path = str(tmp_path / "models")
        shared.cmd_opts.embeddings_dir = str(tmp_path / "embeddings")  # --embeddings-dir, read when the hijack is made
        sd_hijack.model_hijack.__init__()  # a fresh start's hijack: its embedding database over that folder
        self.outputs = tmp_path / "outputs"
        sys.modules.pop("scripts.animatediff_mm", None)
        sys.modules.pop("scripts.animatediff_infv2v", None)
        ad.mm_animatediff.ad_params = None
        if flavour == "a1111":
            ad.AnimateDiffMM.mm_injected = False
        self.ad = ad
        self.sd_model = ToySDModel(seed=0)
        shared.sd_model = self.sd_model
        if flavour == "forge":
            sd_models.model_data.sd_model = self.sd_model
        classes = []
        for name in order:
            if name == "animatediff" and with_animatediff:
                ad.install_module()
                script_callbacks.on_cfg_denoiser(ad.AnimateDiffInfV2V.animatediff_on_cfg_denoiser if flavour == "forge"
                                                 else ad.animatediff_on_cfg_denoiser)
                classes.append(ad.AnimateDiffScript)
            elif name == "motionprompt":
                module = load_extension_script()
                scripts.register_module(module, str(ROOT / "scripts" / "motionprompt.py"))
                classes.append(module.MotionPromptScript)
        script_callbacks.ui_settings_callback()
        self.runner = scripts.ScriptRunner(classes)
        self.runner.create_script_ui()
        self.mp = next(s for s in self.runner.alwayson_scripts if s.title() == "MotionPrompt")
        self.errors = errors.reported

    def ui_defaults(self) -> list:
        return self.runner.default_args()

    def generate(self, mp_args, ad_args=None, **kwargs):
        """txt2img through process_images; ``mp_args`` is a dict (API style) or a list of UI values."""
        from modules import processing

        args = self.ui_defaults()
        if isinstance(mp_args, dict):
            args[self.mp.args_from] = mp_args  # api.init_script_args copies the API list into the first slots
        else:
            args[self.mp.args_from:self.mp.args_from + len(mp_args)] = mp_args
        for script in self.runner.alwayson_scripts:
            if script.title() == "AnimateDiff":
                ad = dict(ad_args) if ad_args is not None else {"enable": False}
                if self.flavour == "forge" and not isinstance(mp_args, dict):  # the UI hands forge/master its object
                    ad = self.ad.AnimateDiffProcess(**ad)
                args[script.args_from] = ad
        kwargs.setdefault("prompt", "a white fox running")
        kwargs.setdefault("steps", 8)
        kwargs.setdefault("outpath_samples", str(self.outputs / "txt2img-images"))
        p = processing.StableDiffusionProcessingTxt2Img(sd_model=self.sd_model, scripts=self.runner, script_args=args,
                                                        **kwargs)
        p.is_api = isinstance(mp_args, dict)
        res = processing.process_images(p)
        return p, res


def load_extension_script():
    """script_loading.load_module: the extension root on sys.path while the file executes."""
    sys.path.insert(0, str(ROOT))
    try:
        spec = importlib.util.spec_from_file_location("motionprompt.py", ROOT / "scripts" / "motionprompt.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT))
    return module


def save_disc(models_path: Path, name="disc.safetensors", backend="lk_pyramid", size=32):
    from motionprompt.disc.checkpoint import save_discriminator
    from motionprompt.disc.models import build_discriminator
    from motionprompt.flow.settings import FlowSettings

    torch.manual_seed(0)
    return save_discriminator(Path(models_path) / "MotionPrompt" / name, build_discriminator("cnn", width=8, depth=3),
                              FlowSettings(backend, size, 2))


def small_forge_gpu(ui) -> None:
    """A simulated device that holds the UNet, motion module and VAE but not the UNet and the CLIP together: every
    text encode evicts sampling weights (Forge's free_memory), as on a card with little room beside SD1.5 + AnimateDiff."""
    from ldm_patched.modules import model_management

    o = ui.sd_model.forge_objects
    model_management.simulate_device_move = True
    model_management.vram_bytes = o.unet.model_size() + o.clip.patcher.model_size() // 2
    model_management.unload_all_models()
