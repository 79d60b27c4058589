"""Fine-grained activation checkpointing for the inner loop only.

Why fine-grained: at 16 frames 512² the UNet's forward keeps ~20 GiB for the backward; checkpointing whole
down/up blocks still keeps 7.7 GiB, every resnet, attention and motion module on its own 1.5 GiB
(``docs/memory.md``). So each module of those kinds is wrapped, by its class name as the hosts'
own code names it: ldm / ldm_patched (A1111, Forge), sd-webui-animatediff's motion module, diffusers.

Why by patching instances and only inside the loop: sampling itself must stay exactly what the host runs.
``checkpointed`` sets a ``forward`` attribute on each chosen module for the duration of a ``with`` block and
removes it afterwards, also on an error or an interrupt. Non-reentrant ``torch.utils.checkpoint`` works
under the hosts' ``no_grad``/``inference_mode`` rules (the loop turns grad on itself) and with keyword
arguments; where grad is off the wrapper calls the module as it is.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable, Iterator

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import saved_bytes

log = logging.getLogger("motionprompt")

#: class names of the modules wrapped in the UNet: resnets, spatial transformers (attention), motion modules.
#: A host whose blocks modify saved tensors in place wraps smaller parts (``hosts/webui/forge.py``).
UNET_BLOCKS = frozenset({
    "ResBlock",  # ldm / ldm_patched openaimodel
    "SpatialTransformer",  # ldm / ldm_patched attention
    "VanillaTemporalModule",  # sd-webui-animatediff (A1111 and forge/master) motion_module.py
    "ResnetBlock2D",  # diffusers resnet.py
    "Transformer2DModel",  # diffusers transformer_2d.py
    "AnimateDiffTransformer3D",  # diffusers unet_motion_model.py (>= 0.30)
    "TransformerTemporalModel",  # diffusers transformer_temporal.py (older motion models)
})

#: ... and in the VAE decoder: its resnets and its attention
DECODER_BLOCKS = frozenset({
    "ResnetBlock", "AttnBlock", "MemoryEfficientAttnBlock", "AttnBlockPytorch",  # ldm / ldm_patched model.py
    "ResnetBlock2D", "Attention",  # diffusers
})


def find_blocks(roots: Iterable[nn.Module], names: frozenset[str]) -> list[nn.Module]:
    """The outermost modules under ``roots`` whose class name is in ``names`` (a wrapped module's own
    children are not wrapped again: one recompute per module), each once."""
    found: list[nn.Module] = []
    seen: set[int] = set()

    def walk(module: nn.Module) -> None:
        if id(module) in seen:
            return
        seen.add(id(module))
        if type(module).__name__ in names:
            found.append(module)
            return
        for child in module.children():
            walk(child)

    for root in roots:
        if root is not None:
            walk(root)
    return found


def _options(module: nn.Module) -> dict:
    """Without dropout in the block (eval mode: every host samples in eval) the RNG state need not be saved and
    restored around each recompute. The check that the recompute saved the same tensors stays on: a host kernel
    that computes differently the second time (A1111's Doggettx attention slices by the free memory at call
    time) then fails with torch's CheckpointError, not with a wrong gradient."""
    options = {"use_reentrant": False}
    if not any(m.training for m in module.modules()):
        options["preserve_rng_state"] = False
    return options


def _wrapped(module: nn.Module):
    original = module.forward  # the bound method (or a host's own patched forward): called as it is
    options = _options(module)

    def forward(*args, **kwargs):
        if not torch.is_grad_enabled():
            return original(*args, **kwargs)
        # what checkpointing keeps is the call's inputs: the positional ones it saves through autograd's
        # saved-tensor hooks (the accountant, or Forge's copying hook, sees them there), the keyword ones it holds
        # in a closure (diffusers passes hidden states by keyword): those are counted here
        for value in kwargs.values():
            saved_bytes.observe(value)
        return checkpoint(original, *args, **options, **kwargs)

    return forward


@contextlib.contextmanager
def checkpointed(modules: Iterable[nn.Module]) -> Iterator[int]:
    """Wrap each module's forward in non-reentrant checkpointing for the ``with`` block; yields how many."""
    patched: list[tuple[nn.Module, bool, object]] = []
    try:
        for m in modules:
            had, previous = "forward" in m.__dict__, m.__dict__.get("forward")
            m.forward = _wrapped(m)
            patched.append((m, had, previous))
        yield len(patched)
    finally:
        for m, had, previous in reversed(patched):
            try:
                if had:
                    m.forward = previous
                else:
                    del m.forward
            except Exception:  # one module that cannot be restored must not keep the others wrapped
                log.warning("MotionPrompt: could not restore %s.forward", type(m).__name__)
