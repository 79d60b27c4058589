import pytest
import torch

from motionprompt.flow.registry import (
    RAFT_FILES,
    FlowWeightsMissing,
    build_flow,
    find_raft_weights,
    working_size,
)
from motionprompt.flow.settings import FlowSettings


def test_working_size_keeps_aspect_in_multiples_of_8():
    assert working_size(512, 512, 256) == (256, 256)
    assert working_size(512, 768, 256) == (256, 384)
    assert working_size(64, 64, 256) == (256, 256)
    assert working_size(64, 40, 128, minimum=128) == (208, 128)
    assert working_size(30, 30, 8, minimum=128) == (128, 128)


def test_missing_raft_weights_say_what_to_download_and_where(tmp_path):
    with pytest.raises(FlowWeightsMissing) as info:
        build_flow(FlowSettings("raft_small"), weights_dirs=[tmp_path])
    msg = str(info.value)
    assert RAFT_FILES["raft_small"] in msg and str(tmp_path) in msg and "download.pytorch.org" in msg


def test_raft_weights_load_from_models_folder_weights_only(tmp_path):
    settings = FlowSettings("raft_small", size=128, iters=2)
    random_flow = build_flow(settings, allow_random=True)
    assert random_flow.pretrained is False
    torch.save(random_flow.net.state_dict(), tmp_path / RAFT_FILES["raft_small"])
    assert find_raft_weights("raft_small", [tmp_path]) == tmp_path / RAFT_FILES["raft_small"]
    loaded = build_flow(settings, weights_dirs=[tmp_path])
    assert loaded.pretrained is True
    a, b = torch.rand(1, 3, 128, 128) * 2 - 1, torch.rand(1, 3, 128, 128) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(loaded(a, b), random_flow(a, b), atol=1e-5)


def test_a_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / RAFT_FILES["raft_small"], _use_new_zipfile_serialization=True)
    with pytest.raises(FlowWeightsMissing, match="could not read RAFT weights"):
        build_flow(FlowSettings("raft_small"), weights_dirs=[tmp_path])


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown flow backend"):
        build_flow(FlowSettings("pwc"), allow_random=True)


def test_raft_is_frozen_differentiable_and_resizes():
    flow = build_flow(FlowSettings("raft_small", size=128, iters=2), allow_random=True)
    assert not any(p.requires_grad for p in flow.parameters())
    a = (torch.rand(2, 3, 64, 96) * 2 - 1).requires_grad_(True)
    b = (torch.rand(2, 3, 64, 96) * 2 - 1).requires_grad_(True)
    out = flow(a, b)
    assert out.shape == (2, 2, 128, 192)  # short side 128 (RAFT minimum), aspect kept
    ga, gb = torch.autograd.grad(out.square().mean(), [a, b])
    assert ga.abs().sum() > 0 and gb.abs().sum() > 0
    with pytest.raises(ValueError, match="equal shape"):
        flow(a, b[:, :, :32])
