"""``evaluate`` arms with an amortized token: plain sampling with the token, and the hybrid inner loop."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from motionprompt.amortized.token_file import load_token, save_token
from motionprompt.disc.checkpoint import save_discriminator
from motionprompt.disc.models import build_discriminator
from motionprompt.evaluation.evaluate import Arm, Evaluation
from motionprompt.evaluation.flowstats import flow_features
from motionprompt.hosts.diffusers.host import DiffusersVideoHost
from motionprompt.hosts.diffusers.sampler import sample
from motionprompt.toy.model import load_model, save_model
from motionprompt.toy.protocol import eval_pairs

from .test_evaluate import FLOW
from .test_toy_model import TINY, tiny_parts

pytestmark = pytest.mark.diffusers  # every test builds the toy model


@pytest.fixture
def files(tmp_path):
    model = save_model(tiny_parts(), tmp_path / "toy.safetensors", dtype=torch.float32)
    torch.manual_seed(1)
    disc = save_discriminator(tmp_path / "d.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    torch.manual_seed(3)
    token = save_token(tmp_path / "mp_toy.safetensors", torch.randn(1, TINY.text_width), {"init_word": "authentic"})
    return model, disc, token


def test_token_arms_parse_into_amortized_and_hybrid_configs(files):
    from motionprompt.disc.checkpoint import load_discriminator

    _model, disc, token = files
    d = load_discriminator(disc)
    amortized = Arm.parse(f"amortized=plain:token={token}").config(d)
    assert (amortized.inner_iters, amortized.start_token, amortized.n_tokens) == (0, str(token), 1)
    hybrid = Arm.parse(f"hybrid=paper:token={token},inner_iters=1").config(d)
    assert (hybrid.inner_iters, hybrid.start_token, hybrid.flow) == (1, str(token), FLOW)
    with pytest.raises(ValueError, match="add token=FILE"):
        Arm.parse("a=plain").config(d)
    with pytest.raises(ValueError, match="no inner loop"):
        Arm.parse(f"a=plain:token={token},inner_iters=2").config(d)


def test_plain_amortized_and_hybrid_arms_in_one_evaluation(tmp_path, files, one_torch_thread):
    model, disc, token = files
    arms = [Arm.parse(f"amortized=plain:token={token}"),
            Arm.parse(f"hybrid=paper:token={token},inner_iters=1,window_start=0.0,window_end=0.5")]
    out = tmp_path / "ev"
    ev = Evaluation(out, str(model), str(disc), None, arms, n_prompts=1, n_seeds=1, steps=4, cfg_scale=3.0)
    summary = ev.run()
    rows = {r["arm"]: r for r in ev.rows}
    assert set(rows) == {"plain", "amortized", "hybrid"} and set(summary["arms"]) == {"amortized", "hybrid"}
    assert rows["amortized"]["guide"]["iterations"] == 0 and rows["amortized"]["guide"]["token_drift"] == 0
    assert rows["hybrid"]["guide"]["iterations"] == 2 and rows["hybrid"]["guide"]["token_drift"] > 0
    # the amortized clip is plain sampling with the token spliced into the prompt at every step
    (prompt, seed), = eval_pairs(1, 1)
    vm = load_model(model).video_model()
    host = DiffusersVideoHost(vm, prompt, "", 1)
    tok = load_token(token).vectors

    appended = SimpleNamespace(cfg=SimpleNamespace(x0_mode="cond"), records=[],
                               conditioning=lambda step, total, predict: host.encode(tok))
    ref = sample(host, appended, steps=4, cfg_scale=3.0, seed=seed, num_frames=TINY.frames, height=TINY.size,
                 width=TINY.size).frames.numpy()
    plain = sample(host, None, steps=4, cfg_scale=3.0, seed=seed, num_frames=TINY.frames, height=TINY.size,
                   width=TINY.size).frames.numpy()
    assert np.abs(ref.astype(int) - plain.astype(int)).max() > 0  # the token changes the clip ...
    got = rows["amortized"]["metrics"]["flow_features"]
    np.testing.assert_allclose(got, flow_features(ref), rtol=1e-5, atol=1e-6)  # ... and the arm is that clip
    assert summary["setup"]["tokens"]["amortized"] == summary["setup"]["tokens"]["hybrid"] is not None
    save_token(token, torch.randn(1, TINY.text_width))  # retrained under the same name: not the same evaluation
    with pytest.raises(ValueError, match="other settings"):
        Evaluation(out, str(model), str(disc), None, arms, n_prompts=1, n_seeds=1, steps=4, cfg_scale=3.0)


def test_one_command_compares_plain_amortized_hybrid_and_per_sample(tmp_path, files):
    from motionprompt.cli.main import main
    from motionprompt.evaluation.evaluate import run_arms

    assert run_arms([]) == [Arm.parse("paper"), Arm.parse("fast")]
    assert run_arms([], "t.safetensors") == [Arm.parse("paper"), Arm.parse("amortized=plain:token=t.safetensors"),
                                             Arm.parse("hybrid=paper:token=t.safetensors,inner_iters=1")]
    assert run_arms(["K1=paper:inner_iters=1"], "t.safetensors")[0] == Arm.parse("K1=paper:inner_iters=1")
    odd = "C:/tokens/v2,final/mp.safetensors"  # the spec's separators in a path: the token arms are built, not parsed
    assert [a.overrides["token"] for a in run_arms([], odd)[1:]] == [odd, odd]
    model, disc, _token = files
    code = main(["evaluate", "--model", str(model), "--disc", str(disc), "--token", str(tmp_path / "none.safetensors"),
                 "--out", str(tmp_path / "ev")])
    assert code == 2 and not (tmp_path / "ev").exists()  # refused before any clip
