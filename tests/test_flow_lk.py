"""Weight-free pyramidal Lucas-Kanade flow against ground truth the tests make themselves."""

import itertools

import pytest
import torch

from motionprompt.disc.checkpoint import load_discriminator, save_discriminator
from motionprompt.disc.models import build_discriminator
from motionprompt.flow.lk import warp
from motionprompt.flow.registry import FLOW_BACKENDS, build_flow
from motionprompt.flow.settings import FlowSettings

from .synthetic import pair_with_flow, rotation, smooth_field, texture, translation, valid_epe

SIZE = 128


@pytest.fixture(scope="module")
def lk():
    return build_flow(FlowSettings("lk_pyramid", size=SIZE, iters=6))


@pytest.mark.parametrize(
    ("name", "field", "bound"),
    [("translation", translation(SIZE, 3.5, -2.0), 0.05),
     ("large translation", translation(SIZE, 12.0, 7.0), 0.5),
     ("rotation 4 deg", rotation(SIZE, 4.0), 0.05),
     ("smooth random field", smooth_field(SIZE, 3.0, seed=1), 0.1)],
)
def test_end_point_error_against_known_motion(lk, name, field, bound):
    b = texture(SIZE, seed=2)
    a = pair_with_flow(b, field)
    est = lk(a, b)
    epe = valid_epe(est, field)
    print(f"{name}: EPE {epe:.4f} px (mean motion {field.norm(dim=0).mean():.2f} px)")
    assert epe < bound


def test_recovers_shift_direction_at_other_resolutions():
    for size, (dx, dy) in [(64, (2.0, 0.0)), (64, (0.0, -2.0)), (256, (-5.0, 3.0))]:
        lk = build_flow(FlowSettings("lk_pyramid", size=size, iters=4))
        b = texture(size, seed=3)
        a = pair_with_flow(b, translation(size, dx, dy))
        mean = lk(a, b)[0, :, 8:-8, 8:-8].mean(dim=(1, 2))
        assert torch.allclose(mean, torch.tensor([dx, dy]), atol=0.1), (size, mean)


def test_flow_is_reported_at_the_working_resolution():
    lk = build_flow(FlowSettings("lk_pyramid", size=64, iters=4))
    b = texture(128, seed=4)
    a = pair_with_flow(b, translation(128, 4.0, 0.0))  # 4 px at 128 -> 2 px at the 64 px working size
    est = lk(a, b)
    assert est.shape == (1, 2, 64, 64)
    assert est[0, 0, 8:-8, 8:-8].mean().item() == pytest.approx(2.0, abs=0.1)


def test_gradients_are_finite_and_reach_both_frames(lk):
    b = texture(SIZE, seed=5).requires_grad_(True)
    a = pair_with_flow(b.detach(), smooth_field(SIZE, 2.0)).requires_grad_(True)
    ga, gb = torch.autograd.grad(lk(a, b).square().mean(), [a, b])
    for g in (ga, gb):
        assert torch.isfinite(g).all() and g.abs().sum() > 0


def test_optimizing_frames_toward_a_preferred_shift_decreases_the_loss(lk):
    """A loss that wants 3 px of rightward motion pulls a frame's shift parameter from 1 to 3.

    The flow moves 1:1 with the shift, so the gradient must be close to the analytic 2 * (s - 3).
    """
    base = texture(SIZE, seed=6)
    shift = torch.tensor(1.0, requires_grad=True)
    losses = []
    for step in range(10):
        field = torch.zeros(1, 2, SIZE, SIZE) + torch.stack([shift, torch.zeros(())]).view(1, 2, 1, 1)
        a = warp(base, field)  # a(x) = base(x + shift): the motion from a to base is +shift
        flow = lk(a, base)[..., 8:-8, 8:-8]
        loss = (flow[:, 0] - 3.0).square().mean() + flow[:, 1].square().mean()
        (grad,) = torch.autograd.grad(loss, [shift])
        if step == 0:
            assert grad.item() == pytest.approx(2 * (1.0 - 3.0), rel=0.1)
        with torch.no_grad():
            shift -= 0.3 * grad
        losses.append(loss.item())
    assert all(b < a for a, b in itertools.pairwise(losses))
    assert shift.item() == pytest.approx(3.0, abs=0.02)


def test_registered_and_recorded_in_checkpoints(tmp_path):
    assert "lk_pyramid" in FLOW_BACKENDS
    settings = FlowSettings("lk_pyramid", size=128, iters=6)
    path = save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=4, depth=2), settings)
    d = load_discriminator(path)
    assert d.flow == settings
    d.check_flow(settings)
    with pytest.raises(ValueError, match="trained on 'lk_pyramid' flow but guidance uses 'raft_small'"):
        d.check_flow(FlowSettings("raft_small"))
