"""ldm_patched/modules/conds.py: the model-condition wrappers ``calc_cond_uncond_batch`` batches (as upstream,
without CONDCrossAttn's lcm padding of unequal token lengths)."""

import torch
from ldm_patched.modules import utils


class CONDRegular:
    def __init__(self, cond):
        self.cond = cond

    def _copy_with(self, cond):
        return self.__class__(cond)

    def process_cond(self, batch_size, device, **kwargs):
        return self._copy_with(utils.repeat_to_batch_size(self.cond, batch_size).to(device))

    def can_concat(self, other):
        return self.cond.shape == other.cond.shape

    def concat(self, others):
        return torch.cat([self.cond] + [x.cond for x in others])


class CONDCrossAttn(CONDRegular):
    def can_concat(self, other):
        s1, s2 = self.cond.shape, other.cond.shape
        return s1 == s2 or (s1[0] == s2[0] and s1[2] == s2[2] and max(s1[1], s2[1]) // min(s1[1], s2[1]) <= 4)
