"""MotionPrompt loss terms (paper eq. 6-8) with units fixed so the weights mean the same at any size.

Flow enters every term *normalized by image size*: u = flow_x / W, v = flow_y / H, i.e. a fraction of
the frame. TV uses derivatives w.r.t. normalized coordinates (finite differences times W or H), so the
same motion gives the same TV at 128 px or 512 px; it is a mean over pixels and pairs of the
anisotropic L1 norm summed over both flow channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def normalize_flow(flow_px: torch.Tensor) -> torch.Tensor:
    """Pixels at the flow resolution -> fraction of the frame (x by width, y by height)."""
    h, w = flow_px.shape[-2:]
    scale = flow_px.new_tensor([1.0 / w, 1.0 / h]).view(1, 2, 1, 1)
    return flow_px * scale


def disc_loss(logits: torch.Tensor, form: str = "saturating") -> torch.Tensor:
    """Paper eq. 7 log(1 - sigmoid(l)) (saturating) or -log sigmoid(l) (non-saturating), mean over pairs."""
    if form == "saturating":
        return F.logsigmoid(-logits).mean()
    if form == "non_saturating":
        return -F.logsigmoid(logits).mean()
    raise ValueError(f"unknown discriminator loss form {form!r}")


def flow_tv(flow_norm: torch.Tensor) -> torch.Tensor:
    """Anisotropic TV of normalized flow [B,2,H,W] in normalized-coordinate derivatives (see module doc)."""
    h, w = flow_norm.shape[-2:]
    dx = (flow_norm[..., :, 1:] - flow_norm[..., :, :-1]).abs() * w
    dy = (flow_norm[..., 1:, :] - flow_norm[..., :-1, :]).abs() * h
    return dx.sum(1).mean() + dy.sum(1).mean()


def token_drift(tokens: torch.Tensor, tokens0: torch.Tensor) -> torch.Tensor:
    """||T - T0||^2 summed over all learnable vectors (paper eq. 6, third term)."""
    return (tokens - tokens0).pow(2).sum()


def flow_speed(flow_norm: torch.Tensor) -> torch.Tensor:
    """Mean flow magnitude [B,2,H,W] -> scalar, as a fraction of the frame per pair (how far things move)."""
    return flow_norm.float().pow(2).sum(1).add(1e-12).sqrt().mean()


def speed_loss(flow_norm: torch.Tensor, reference: torch.Tensor, eps: float = 1e-4) -> torch.Tensor:
    """(log speed - log reference speed)^2: a token may change how motion looks, not how far it goes; symmetric
    in slower and faster, and scale-free (the same for a slow prompt as for a fast one)."""
    return (torch.log(flow_speed(flow_norm) + eps) - torch.log(reference.float() + eps)).pow(2)


@dataclass
class LossTerms:
    total: torch.Tensor
    disc: torch.Tensor
    tv: torch.Tensor
    drift: torch.Tensor
    d_score: torch.Tensor  # mean sigmoid(D): the discriminator's "real motion" probability
    speed: torch.Tensor | None = None  # speed_loss, where the loss has that term (token-train's lambda_speed)


def total_loss(
    logits: torch.Tensor,
    flow_norm: torch.Tensor,
    tokens: torch.Tensor,
    tokens0: torch.Tensor,
    lambda_disc: float,
    lambda_tv: float,
    lambda_drift: float,
    form: str = "saturating",
) -> LossTerms:
    d = disc_loss(logits, form)
    tv = flow_tv(flow_norm)
    drift = token_drift(tokens, tokens0)
    total = lambda_disc * d + lambda_tv * tv + lambda_drift * drift
    return LossTerms(total, d, tv, drift, torch.sigmoid(logits.detach()).mean())
