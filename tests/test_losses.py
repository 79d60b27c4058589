import math

import pytest
import torch

from motionprompt.engine.losses import disc_loss, flow_tv, normalize_flow, token_drift, total_loss


def test_disc_loss_forms_match_paper_formulas():
    logits = torch.tensor([-2.0, 0.0, 3.0])
    d = torch.sigmoid(logits)
    assert torch.allclose(disc_loss(logits, "saturating"), torch.log(1 - d).mean(), atol=1e-6)
    assert torch.allclose(disc_loss(logits, "non_saturating"), -torch.log(d).mean(), atol=1e-6)
    # saturating form: minimising it pushes D up, like the non-saturating one
    x = torch.zeros(1, requires_grad=True)
    disc_loss(x, "saturating").backward()
    assert x.grad.item() < 0
    with pytest.raises(ValueError):
        disc_loss(logits, "hinge")


def test_disc_loss_is_stable_for_extreme_logits():
    logits = torch.tensor([-80.0, 80.0])
    assert torch.isfinite(disc_loss(logits, "saturating"))
    assert torch.isfinite(disc_loss(logits, "non_saturating"))


def test_normalize_flow_divides_by_frame_size():
    flow = torch.zeros(1, 2, 4, 8)
    flow[:, 0] = 8.0  # one frame width to the right
    flow[:, 1] = 2.0  # half the frame height down
    n = normalize_flow(flow)
    assert torch.allclose(n[:, 0], torch.ones(1, 4, 8))
    assert torch.allclose(n[:, 1], torch.full((1, 4, 8), 0.5))


def test_flow_tv_by_hand():
    f = torch.zeros(1, 2, 2, 3)
    f[0, 0] = torch.tensor([[0.0, 0.1, 0.3], [0.0, 0.0, 0.0]])
    h, w = 2, 3
    # x-differences (times W): row0 |0.1|+|0.2|, row1 0 -> mean over the 2x2 difference grid
    tv_x = (0.1 + 0.2) * w / 4
    # y-differences (times H): |0-0|,|0-0.1|,|0-0.3| -> mean over the 1x3 grid
    tv_y = (0.1 + 0.3) * h / 3
    assert flow_tv(f).item() == pytest.approx(tv_x + tv_y, rel=1e-5)


def _rotation_flow(size: int) -> torch.Tensor:
    """Normalized flow of a small rotation about the centre: smooth, resolution-independent."""
    ys, xs = torch.meshgrid(torch.linspace(-0.5, 0.5, size), torch.linspace(-0.5, 0.5, size), indexing="ij")
    angle = 0.05
    return torch.stack([-angle * ys, angle * xs]).unsqueeze(0)


def test_flow_tv_means_the_same_at_every_resolution():
    tvs = [flow_tv(_rotation_flow(s)).item() for s in (32, 64, 256)]
    # analytic value: |d(-a y)/dy| + |d(a x)/dx| = 2a, summed over channels -> 2 * 0.05 = 0.1
    for tv in tvs:
        assert tv == pytest.approx(0.1, rel=0.05)


def test_total_loss_weights_and_drift():
    logits = torch.tensor([0.5])
    flow = _rotation_flow(16)
    t0 = torch.zeros(2, 4)
    t = torch.ones(2, 4)
    assert token_drift(t, t0).item() == 8.0
    terms = total_loss(logits, flow, t, t0, 2.0, 3.0, 0.5)
    expected = 2.0 * math.log(1 - 1 / (1 + math.exp(-0.5))) + 3.0 * terms.tv.item() + 0.5 * 8.0
    assert terms.total.item() == pytest.approx(expected, rel=1e-5)
    assert terms.d_score.item() == pytest.approx(1 / (1 + math.exp(-0.5)), rel=1e-6)
