import pytest
import torch

from motionprompt.engine.diffusion import predicted_x0, x0_from_eps, x0_from_sigma_eps, x0_from_v
from motionprompt.hosts.diffusers.models import ddim_scheduler


def _noised(alpha_bar: float):
    x0 = torch.randn(3, 4, 5, 5)
    eps = torch.randn_like(x0)
    a = torch.tensor(alpha_bar)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    return x0, eps, x_t, a


def test_x0_from_eps_inverts_forward_process():
    for ab in (0.999, 0.5, 0.01):
        x0, eps, x_t, a = _noised(ab)
        assert torch.allclose(x0_from_eps(x_t, eps, a), x0, atol=1e-4)


def test_x0_from_v_inverts_forward_process():
    for ab in (0.9, 0.3, 0.05):
        x0, eps, x_t, a = _noised(ab)
        v = a.sqrt() * eps - (1 - a).sqrt() * x0
        assert torch.allclose(x0_from_v(x_t, v, a), x0, atol=1e-4)


def test_sigma_parameterisation_matches_alpha_form():
    # k-diffusion: x = x0 + sigma*eps with sigma = sqrt((1-a)/a) and x = x_t / sqrt(a)
    x0, eps, x_t, a = _noised(0.4)
    sigma = ((1 - a) / a).sqrt()
    assert torch.allclose(x0_from_sigma_eps(x_t / a.sqrt(), eps, sigma), x0, atol=1e-4)
    per_row = sigma.repeat(3)
    assert torch.allclose(x0_from_sigma_eps(x_t / a.sqrt(), eps, per_row), x0, atol=1e-4)


@pytest.mark.diffusers
def test_matches_diffusers_ddim_pred_original_sample():
    sched = ddim_scheduler()
    sched.set_timesteps(25)
    t = sched.timesteps[7]
    x_t = torch.randn(1, 4, 2, 8, 8)
    eps = torch.randn_like(x_t)
    ours = predicted_x0(x_t, eps, sched.alphas_cumprod[int(t)], "epsilon")
    ref = sched.step(eps, t, x_t).pred_original_sample
    assert torch.allclose(ours, ref, atol=1e-5)
