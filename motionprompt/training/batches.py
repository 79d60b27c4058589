"""Which samples a training step sees: drawn from (seed, step) alone, then cut into this process's share.

This is the trainer's distributed sampler. Every process draws the same *global* batch of step ``s``
(and the same augmentation flips) from a generator seeded with (seed, s), then keeps its contiguous
share. Each share's loss is a mean over an equal number of samples and DDP averages the shares'
gradients, so N processes with global batch B take the gradient step one process with batch B takes:
the same run, up to float summation order. Nothing here depends on earlier steps, so resuming at step
``s`` needs nothing but ``s``, whatever the number of processes before and after.

Steps, not epochs: the batches are balanced (half real, half fake) by sampling with replacement, which
an epoch over an unbalanced set cannot give; the validation split comes from the data seed and is
therefore the same on every rank.
"""

from __future__ import annotations

import torch

from .dataset import DataError, FlowSet


def step_generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(step) * 7_919) % (2**63))


def draw_flips(gen: torch.Generator, b: int, p: float = 0.5, hflip: bool = True, vflip: bool = True,
               reverse: bool = True) -> torch.Tensor:
    """[3, b] bool (hflip, vflip, reverse) per sample; drawn for the global batch so shares agree."""
    flips = torch.rand(3, b, generator=gen) < p
    flips[0] &= hflip
    flips[1] &= vflip
    flips[2] &= reverse
    return flips


def apply_flips(flow: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
    """Flow-aware flips: mirroring the frames mirrors the field *and* negates that component.

    Horizontal flip: x -> -x, so u -> -u. Vertical flip: v -> -v. Time reversal (b -> a instead of
    a -> b): flow -> -flow (exact for translations, first-order otherwise).
    """
    hf, vf, rev = flips.to(flow.device)
    out = flow.clone()
    out[hf] = out[hf].flip(-1)
    out[hf, 0] = -out[hf, 0]
    out[vf] = out[vf].flip(-2)
    out[vf, 1] = -out[vf, 1]
    out[rev] = -out[rev]
    return out


def augment(flow: torch.Tensor, gen: torch.Generator, p: float = 0.5, hflip: bool = True, vflip: bool = True,
            reverse: bool = True) -> torch.Tensor:
    """Random flow-aware flips per sample (see ``apply_flips``)."""
    return apply_flips(flow, draw_flips(gen, flow.shape[0], p, hflip, vflip, reverse))


class StepBatches:
    """``batches(step)`` -> (flows, labels) of this process's share of step ``step``'s global batch."""

    def __init__(self, data: FlowSet, batch: int, seed: int, augment: bool = True, share: range | None = None):
        train_idx = (~data.val).nonzero().squeeze(1)
        self.real_idx = train_idx[data.labels[train_idx] == 1]
        self.fake_idx = train_idx[data.labels[train_idx] == 0]
        if len(self.real_idx) == 0 or len(self.fake_idx) == 0:
            raise DataError("the training split lacks real or fake samples; lower the validation fraction or add "
                            "clips")
        self.flows = data.flows
        self.batch, self.half, self.seed, self.augment = batch, batch // 2, seed, augment
        self.share = share if share is not None else range(batch)
        labels = torch.cat([torch.ones(self.half), torch.zeros(batch - self.half)])
        self.labels = labels[self.share.start : self.share.stop]

    def indices(self, step: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The global batch's sample indices and flips (None without augmentation)."""
        gen = step_generator(self.seed, step)
        ri = self.real_idx[torch.randint(len(self.real_idx), (self.half,), generator=gen)]
        fi = self.fake_idx[torch.randint(len(self.fake_idx), (self.batch - self.half,), generator=gen)]
        flips = draw_flips(gen, self.batch) if self.augment else None
        return torch.cat([ri, fi]), flips

    def __call__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx, flips = self.indices(step)
        mine = slice(self.share.start, self.share.stop)
        x = self.flows[idx[mine]].float()
        if flips is not None:
            x = apply_flips(x, flips[:, mine])
        return x, self.labels
