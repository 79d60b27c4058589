"""ldm_patched/modules/utils.py: the helpers the double's patcher and conds use, as upstream."""

import math

import torch


def repeat_to_batch_size(tensor, batch_size):
    if tensor.shape[0] > batch_size:
        return tensor[:batch_size]
    elif tensor.shape[0] < batch_size:
        return tensor.repeat([math.ceil(batch_size / tensor.shape[0])] + [1] * (len(tensor.shape) - 1))[:batch_size]
    return tensor


def set_attr(obj, attr, value):
    """A weight replaced by a patch (LoRA) becomes a NEW Parameter with requires_grad=False."""
    attrs = attr.split(".")
    for name in attrs[:-1]:
        obj = getattr(obj, name)
    setattr(obj, attrs[-1], torch.nn.Parameter(value, requires_grad=False))


def get_attr(obj, attr):
    for name in attr.split("."):
        obj = getattr(obj, name)
    return obj
