"""modules/devices.py: CPU fp32, as a --no-half run."""

import contextlib

import torch

device = torch.device("cpu")
dtype = dtype_vae = dtype_unet = torch.float32
unet_needs_upcast = False


def autocast(disable=False):
    return contextlib.nullcontext()


def without_autocast(disable=False):
    return contextlib.nullcontext()


def cond_cast_unet(x):
    return x.to(dtype_unet)


def torch_gc():
    pass
