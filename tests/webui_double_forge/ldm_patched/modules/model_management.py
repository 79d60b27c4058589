"""ldm_patched/modules/model_management.py (Forge ``previous``): the list of loaded models and ``load_models_gpu``.

A model is loaded with ``LoadedModel.model_load`` -> ``ModelPatcher.patch_model(device_to=load_device)`` ->
``torch.nn.Module.to``, in whatever grad mode the caller is in: during a job that is ``torch.inference_mode``
(``processing.process_images_inner``), so on a GPU the weights become inference tensors. A model already in
``current_loaded_models`` is not moved again (it only moves to the front of the list).

This machine has no GPU: ``.to(cpu)`` on CPU weights is a no-op, as in a real CPU run (weights stay ordinary
tensors). ``simulate_device_move = True`` stands in for a real cuda device: every load/unload then allocates new
storage for each parameter and buffer, exactly what ``Module.to(other_device)`` does (``Module._apply`` ->
``param.data = fn(param)``), so tensors moved inside inference mode are inference tensors.
``vram_bytes`` (with ``simulate_device_move``) gives that device a size: ``load_models_gpu`` then frees memory as
upstream does (``free_memory``: unload the least recently used models not being loaded, from the end of
``current_loaded_models``, until the new ones fit), and a UNet, motion-module or CLIP transformer run while its model
is not loaded fails the way weights left on the offload device fail on a GPU. The budget counts weights only: the toy
models are kilobytes, so upstream's inference-memory reserve (1 GiB) and activation estimates are left out of it, and
with them upstream's ``free_memory(extra_mem, ...)`` when every asked-for model is already loaded (it frees room for
activations only). Not reproduced: a model that still does not fit after eviction is loaded whole here (upstream
loads it partially, low-VRAM mode), and async/low-VRAM streaming (``async_kept_memory``).
"""

from enum import Enum

import torch


class VRAMState(Enum):
    DISABLED = 0
    NO_VRAM = 1
    LOW_VRAM = 2
    NORMAL_VRAM = 3
    HIGH_VRAM = 4
    SHARED = 5


vram_state = VRAMState.NORMAL_VRAM
simulate_device_move = False
vram_bytes = None  # with simulate_device_move: the simulated device's size (see the module doc)
moves: list = []  # (module class name, inference mode on) for every move that allocated new storage
current_loaded_models: list = []


def get_torch_device():
    return torch.device("cpu")


def unet_dtype(device=None, model_params=0):
    return torch.float32


def unet_manual_cast(weight_dtype, inference_device):
    return None


def vae_dtype():
    return torch.float32


def vae_device():
    return get_torch_device()


def vae_offload_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def text_encoder_device():
    return get_torch_device()


def text_encoder_offload_device():
    return torch.device("cpu")


def get_free_memory(dev=None, torch_free_too=False):
    free = vram_bytes - sum(m.model_memory() for m in current_loaded_models) if _budgeted() else 64 * 1024**3
    return (free, free) if torch_free_too else free


def minimum_inference_memory():
    return 1024**3


def soft_empty_cache(force=False):
    pass


def module_size(module, exclude_device=None):
    return sum(t.nelement() * t.element_size() for t in module.state_dict().values())


def move(module, device):
    """What ``Module.to(device)`` does to the weights (see the module doc)."""
    if simulate_device_move:
        moves.append((type(module).__name__, torch.is_inference_mode_enabled()))
        return module._apply(lambda t: t.clone())
    return module.to(device)


class LoadedModel:
    def __init__(self, model, memory_required):
        self.model = model
        self.memory_required = memory_required
        self.model_accelerated = False
        self.device = model.load_device

    def model_memory(self):
        return self.model.model_size()

    def model_load(self, async_kept_memory=-1):
        self.model.model_patches_to(self.device)
        self.real_model = self.model.patch_model(device_to=self.device)
        return self.real_model

    def model_unload(self, avoid_model_moving=False):
        if avoid_model_moving:
            self.model.unpatch_model()
        else:
            self.model.unpatch_model(self.model.offload_device)

    def __eq__(self, other):
        return self.model is other.model


def unload_model_clones(model):
    to_unload = [i for i in range(len(current_loaded_models)) if model.is_clone(current_loaded_models[i].model)]
    for i in reversed(to_unload):
        current_loaded_models.pop(i).model_unload(avoid_model_moving=True)


def _budgeted() -> bool:
    """Upstream frees memory on a GPU only (never for the cpu device); here: when a device size is simulated."""
    return simulate_device_move and vram_bytes is not None


def free_memory(memory_required, device, keep_loaded=()):
    for i in range(len(current_loaded_models) - 1, -1, -1):
        if get_free_memory(device) > memory_required:
            break
        if current_loaded_models[i] not in keep_loaded:
            current_loaded_models.pop(i).model_unload()


def load_models_gpu(models, memory_required=0):
    models_to_load, models_already_loaded = [], []
    for x in models:
        loaded_model = LoadedModel(x, memory_required=memory_required)
        if loaded_model in current_loaded_models:
            index = current_loaded_models.index(loaded_model)
            current_loaded_models.insert(0, current_loaded_models.pop(index))
            models_already_loaded.append(loaded_model)
        else:
            models_to_load.append(loaded_model)
    if not models_to_load:
        return
    for loaded_model in models_to_load:
        unload_model_clones(loaded_model.model)
    if _budgeted():  # upstream: free_memory(total * 1.3 + extra_mem, device, models_already_loaded); weights only here
        free_memory(sum(m.model_memory() for m in models_to_load) - 1, get_torch_device(), models_already_loaded)
    for loaded_model in models_to_load:
        loaded_model.model_load()
        current_loaded_models.insert(0, loaded_model)


def load_model_gpu(model):
    return load_models_gpu([model])


def check_loaded(module) -> None:
    """A model run while not loaded: on a GPU its weights are on the offload device and the first op fails so."""
    if _budgeted() and not any(m.model.model is module for m in current_loaded_models):
        raise RuntimeError("Expected all tensors to be on the same device, but found at least two devices, cuda:0 and "
                           f"cpu! ({type(module).__name__} is not loaded)")


def unload_all_models():
    """Upstream: ``free_memory(1e30, get_torch_device())`` — every model back to its offload device."""
    while current_loaded_models:
        current_loaded_models.pop().model_unload()
