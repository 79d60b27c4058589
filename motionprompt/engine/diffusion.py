"""Denoised (Tweedie) estimates for the parameterisations our hosts use."""

from __future__ import annotations

import torch


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """Paper eq. 2: (z_t - sqrt(1 - a) eps) / sqrt(a) for DDPM-style latents."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    return (x_t - (1 - a).sqrt().to(x_t.dtype) * eps) / a.sqrt().to(x_t.dtype)


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar: torch.Tensor | float) -> torch.Tensor:
    """v-prediction (v = sqrt(a) eps - sqrt(1-a) x0): x0 = sqrt(a) z_t - sqrt(1-a) v."""
    a = torch.as_tensor(alpha_bar, dtype=torch.float32, device=x_t.device)
    return a.sqrt().to(x_t.dtype) * x_t - (1 - a).sqrt().to(x_t.dtype) * v


def x0_from_sigma_eps(x: torch.Tensor, eps: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
    """k-diffusion (sigma) parameterisation used by the WebUI samplers: x0 = x - sigma * eps."""
    s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    while s.dim() < x.dim():
        s = s.unsqueeze(-1)
    return x - s * eps


def predicted_x0(x_t: torch.Tensor, model_out: torch.Tensor, alpha_bar, prediction_type: str) -> torch.Tensor:
    if prediction_type == "epsilon":
        return x0_from_eps(x_t, model_out, alpha_bar)
    if prediction_type == "v_prediction":
        return x0_from_v(x_t, model_out, alpha_bar)
    if prediction_type == "sample":
        return model_out
    raise ValueError(f"unsupported prediction type {prediction_type!r}")
