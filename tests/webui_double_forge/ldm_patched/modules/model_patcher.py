"""ldm_patched/modules/model_patcher.py (Forge ``previous``): ``ModelPatcher`` holds a model, its ``model_options``
(deep-copied by ``clone``) and weight patches; ``patch_model`` applies the patches (weights computed in the
caller's grad mode, set as new ``Parameter(requires_grad=False)``) and then moves the model with ``Module.to``;
``unpatch_model`` puts the backed-up weights back. Patches here are plain weight deltas (LoRA "diff" style);
upstream's other patch kinds only change how the delta is computed."""

import copy

import torch
from ldm_patched.modules import model_management, utils


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, current_device=None, weight_inplace_update=False):
        self.size = size
        self.model = model
        self.patches = {}
        self.backup = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.model_size()
        self.load_device = load_device
        self.offload_device = offload_device
        self.current_device = self.offload_device if current_device is None else current_device
        self.weight_inplace_update = weight_inplace_update

    def model_size(self):
        if self.size > 0:
            return self.size
        self.size = model_management.module_size(self.model)
        self.model_keys = set(self.model.state_dict().keys())
        return self.size

    def clone(self):
        n = ModelPatcher(self.model, self.load_device, self.offload_device, self.size, self.current_device,
                         weight_inplace_update=self.weight_inplace_update)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.model_keys = self.model_keys
        return n

    def is_clone(self, other):
        return hasattr(other, "model") and self.model is other.model

    def memory_required(self, input_shape):
        return self.model.memory_required(input_shape=input_shape)

    def set_model_sampler_post_cfg_function(self, post_cfg_function, disable_cfg1_optimization=False):
        self.model_options["sampler_post_cfg_function"] = [*self.model_options.get("sampler_post_cfg_function", []), post_cfg_function]
        if disable_cfg1_optimization:
            self.model_options["disable_cfg1_optimization"] = True

    def set_model_unet_function_wrapper(self, unet_wrapper_function):
        self.model_options["model_function_wrapper"] = unet_wrapper_function

    def model_patches_to(self, device):
        pass  # upstream moves patch objects in transformer_options; the double's patches are functions

    def model_dtype(self):
        return self.model.get_dtype() if hasattr(self.model, "get_dtype") else torch.float32

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        added = []
        for k, delta in patches.items():
            if k in self.model_keys:
                self.patches.setdefault(k, []).append((strength_patch, delta, strength_model))
                added.append(k)
        return added

    def calculate_weight(self, patches, weight, key):
        for strength, delta, strength_model in patches:
            weight = weight * strength_model + strength * delta.to(weight)
        return weight

    def patch_model(self, device_to=None, patch_weights=True):
        if patch_weights:
            model_sd = self.model.state_dict()
            for key in self.patches:
                weight = model_sd[key]
                if key not in self.backup:
                    self.backup[key] = weight.to(device=self.offload_device, copy=self.weight_inplace_update)
                temp_weight = weight.to(torch.float32, copy=True)
                out_weight = self.calculate_weight(self.patches[key], temp_weight, key).to(weight.dtype)
                utils.set_attr(self.model, key, out_weight)
            if device_to is not None:
                model_management.move(self.model, device_to)
                self.current_device = device_to
        return self.model

    def unpatch_model(self, device_to=None):
        for k in list(self.backup.keys()):
            utils.set_attr(self.model, k, self.backup[k])
        self.backup = {}
        if device_to is not None:
            model_management.move(self.model, device_to)
            self.current_device = device_to
