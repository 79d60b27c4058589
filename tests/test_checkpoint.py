import json
import os

import pytest
import torch
from safetensors.torch import save_file

from motionprompt.disc import checkpoint as ck
from motionprompt.disc.checkpoint import (
    CheckpointError,
    load_discriminator,
    read_metadata,
    save_discriminator,
)
from motionprompt.disc.models import build_discriminator
from motionprompt.flow.settings import FlowSettings

FLOW = FlowSettings(backend="raft_small", size=128, iters=6)


@pytest.mark.parametrize(
    ("arch", "cfg"),
    [("cnn", {"width": 8, "depth": 3}),
     ("vit", {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32,
              "head_dim": 8})],
)
def test_round_trip_rebuilds_the_same_function(tmp_path, arch, cfg):
    model = build_discriminator(arch, **cfg).eval()
    path = save_discriminator(tmp_path / "d.safetensors", model, FLOW, {"steps": 10, "val_acc": 0.9})
    loaded = load_discriminator(path)
    flow = torch.randn(3, 2, 48, 40) * 0.05
    with torch.no_grad():
        assert torch.allclose(model(flow), loaded.model(flow), atol=1e-6)
    assert loaded.arch == arch and loaded.config == model.config
    assert loaded.flow == FLOW
    assert loaded.training == {"steps": 10, "val_acc": 0.9}
    assert not any(p.requires_grad for p in loaded.model.parameters())
    assert [p.name for p in tmp_path.iterdir()] == ["d.safetensors"]  # no temp file left behind


def test_vit_backbone_loads_torchvision_vit_weights_from_a_local_file(tmp_path):
    """README: ImageNet weights of torchvision's ViT load into the ``vit`` discriminator (here a tiny ViT of the
    same class, saved the way torchvision's ``vit_b_16`` weights are: a plain state dict with its ``heads``)."""
    from torchvision.models.vision_transformer import VisionTransformer

    shape = {"image_size": 32, "patch_size": 8, "num_layers": 2, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}
    source = VisionTransformer(**shape, num_classes=10)
    torch.save(source.state_dict(), tmp_path / "vit.pth")
    disc = build_discriminator("vit", **shape, head_dim=8)
    disc.load_backbone(str(tmp_path / "vit.pth"))
    mine = disc.backbone.state_dict()
    assert mine and all(torch.equal(v, source.state_dict()[k]) for k, v in mine.items())
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="does not match this ViT"):
        disc.load_backbone(str(tmp_path / "other.pth"))


def _good(tmp_path):
    return save_discriminator(tmp_path / "good.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)


def _rewrite(tmp_path, name, tensors=None, **meta_changes):
    good = _good(tmp_path)
    from safetensors import safe_open

    with safe_open(str(good), "pt") as f:
        meta = dict(f.metadata())
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    for k, v in meta_changes.items():
        if v is None:
            meta.pop(k)
        else:
            meta[k] = v
    if tensors is not None:
        state = tensors(state)
    path = tmp_path / name
    save_file(state, str(path), metadata=meta)
    return path


def test_missing_file_names_the_folder(tmp_path):
    with pytest.raises(CheckpointError, match="file not found"):
        load_discriminator(tmp_path / "nope.safetensors")


def test_pickle_files_are_never_opened(tmp_path):
    p = tmp_path / "d.ckpt"
    torch.save({"x": 1}, p)
    with pytest.raises(CheckpointError, match="pickle files are never opened"):
        load_discriminator(p)


def test_corrupt_and_truncated_files(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(os.urandom(300))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_discriminator(junk)
    good = _good(tmp_path)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_discriminator(cut)
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_discriminator(empty)


def test_foreign_safetensors_is_refused(tmp_path):
    p = tmp_path / "lora.safetensors"
    save_file({"w": torch.zeros(2)}, str(p))
    with pytest.raises(CheckpointError, match="not a MotionPrompt discriminator"):
        load_discriminator(p)


@pytest.mark.parametrize(
    ("changes", "message"),
    [({"format_version": "99"}, "newer than this extension"),
     ({"format_version": "one"}, "bad format_version"),
     ({"arch": "resnet"}, "unknown architecture"),
     ({"arch_config": "{not json"}, "not valid JSON"),
     ({"arch_config": json.dumps({"width": 8, "depth": 2, "colour": 1})}, "cannot build"),
     ({"arch_config": json.dumps({"width": 16, "depth": 2})}, "has shape"),
     ({"flow": json.dumps({"backend": "raft_small", "size": 100, "iters": 3})}, "bad flow settings"),
     ({"normalization": json.dumps({"flow_units": "pixels"})}, "flow units"),
     ({"flow": None}, "metadata lacks")],
)
def test_bad_metadata(tmp_path, changes, message):
    path = _rewrite(tmp_path, "bad.safetensors", **changes)
    with pytest.raises(CheckpointError, match=message):
        load_discriminator(path)


def test_mismatched_and_non_finite_weights(tmp_path):
    def drop_one(state):
        state.pop(sorted(state)[0])
        return state

    with pytest.raises(CheckpointError, match="missing"):
        load_discriminator(_rewrite(tmp_path, "a.safetensors", tensors=drop_one))

    def add_one(state):
        return {**state, "extra.weight": torch.zeros(1)}

    with pytest.raises(CheckpointError, match="unexpected"):
        load_discriminator(_rewrite(tmp_path, "b.safetensors", tensors=add_one))

    def poison(state):
        key = sorted(state)[0]
        state[key] = state[key].clone()
        state[key].view(-1)[0] = float("nan")
        return state

    with pytest.raises(CheckpointError, match="NaN"):
        load_discriminator(_rewrite(tmp_path, "c.safetensors", tensors=poison))


def test_failed_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = _good(tmp_path)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError, match="disk full"):
        save_discriminator(path, build_discriminator("cnn", width=4, depth=2), FLOW)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors"]


def test_flow_backend_mismatch_is_refused(tmp_path):
    d = load_discriminator(_good(tmp_path))
    d.check_flow(FlowSettings(backend="raft_small", size=256, iters=12))  # size/iters may differ
    with pytest.raises(CheckpointError, match="trained on 'raft_small' flow"):
        d.check_flow(FlowSettings(backend="raft_large"))


def test_metadata_read_is_header_only(tmp_path):
    meta = read_metadata(_good(tmp_path))
    assert meta["arch"] == "cnn" and meta["flow"] == FLOW and meta["format_version"] == ck.FORMAT_VERSION
