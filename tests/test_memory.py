"""The memory paths of the inner loop (``engine.memory_plan``, ``engine.checkpointing``, ``engine.saved_bytes``) on
the diffusers reference host: the same gradient on every path, real recomputation, fewer bytes kept, the plan's
choice, and a generation that never breaks on memory (nothing fits, or a CUDA out-of-memory)."""

import pytest
import torch

from motionprompt.disc.models import build_discriminator
from motionprompt.engine import memory_plan
from motionprompt.engine.checkpointing import checkpointed
from motionprompt.engine.config import GuidanceConfig
from motionprompt.engine.guidance import MotionGuide
from motionprompt.flow.registry import build_flow
from motionprompt.flow.settings import FlowSettings
from motionprompt.hosts.diffusers.host import DiffusersVideoHost
from motionprompt.hosts.diffusers.sampler import sample

FLOW = FlowSettings("lk_pyramid", 32, 2)


def _guide(host, path: str, **kw) -> MotionGuide:
    cfg = GuidanceConfig(inner_iters=1, window_start=0.0, window_end=1.0, memory=path, flow=FLOW, gap_max=1,
                         **kw).validate()
    torch.manual_seed(0)
    disc = build_discriminator("cnn")  # float32: decoded frames enter the flow as float32 on every host
    flow = build_flow(FLOW, allow_random=True)
    return MotionGuide(cfg, host, flow, disc)


def _step(model, host, guide, frames=4, side=32):
    model.scheduler.set_timesteps(10)
    torch.manual_seed(1)
    latents = torch.randn(1, 4, frames, side // model.latent_scale, side // model.latent_scale, dtype=torch.float64)
    predict = host.predictor(latents, model.scheduler.timesteps[3], 7.5, "cond")
    guide._optimize(3, 10, predict)
    return guide.records[-1]


@pytest.fixture
def model64(model):
    for m in (model.unet, model.vae, model.text_encoder):
        m.to(torch.float64)
    return model


def _grad_of_path(model, path):
    """One inner iteration's token gradient (SGD step read back) and its record, in float64."""
    host = DiffusersVideoHost(model, "a white fox running", n_tokens=1)
    guide = _guide(host, path, optimizer="nsgd", lr=1.0)
    before = guide.tokens.detach().clone()
    rec = _step(model, host, guide)
    return guide.tokens.detach() - before, rec, host


def test_every_memory_path_gives_the_same_gradient_and_recomputes_what_it_says(model64, monkeypatch):
    """float64: speed, balanced (UNet blocks checkpointed) and low (decoder blocks too, frames one at a time) move
    the tokens identically; balanced runs UNet blocks again in the backward, low decoder blocks too."""
    counts = {}
    host = DiffusersVideoHost(model64, "x", n_tokens=1)
    unet_block = host.checkpoint_blocks(decoder=False)[-1]
    decoder_block = [b for b in host.checkpoint_blocks(decoder=True) if b not in host.checkpoint_blocks(False)][-1]
    steps = {}
    for path in memory_plan.PATHS:
        calls = {"unet": 0, "decoder": 0}  # calls of the blocks' inner modules (a recompute calls them again)
        hooks = [m.register_forward_pre_hook(lambda *_, k=key, c=calls: c.__setitem__(k, c[k] + 1))
                 for key, block in (("unet", unet_block), ("decoder", decoder_block)) for m in block.modules()
                 if m is not block]
        try:
            steps[path], rec, host = _grad_of_path(model64, path)
        finally:
            for h in hooks:
                h.remove()
        counts[path] = (calls["unet"], calls["decoder"])
        assert rec.memory_path == path and rec.iterations and rec.status == "ok"
        assert not any("forward" in b.__dict__ for b in host.checkpoint_blocks(decoder=True))  # restored
    assert torch.equal(steps["balanced"], steps["speed"]) and torch.equal(steps["low"], steps["speed"])
    (u_s, d_s), (u_b, d_b), (u_l, d_l) = counts["speed"], counts["balanced"], counts["low"]
    assert u_b > u_s and d_b == d_s  # balanced: the UNet block ran again in the backward, the decoder did not
    assert u_l == u_b and d_l > d_s  # low: the decoder block too


def test_checkpointed_restores_the_modules_after_an_error(model):
    host = DiffusersVideoHost(model, "x", n_tokens=1)
    blocks = host.checkpoint_blocks(decoder=True)
    assert len(blocks) > 4
    with pytest.raises(RuntimeError, match="interrupt"), checkpointed(blocks):
        assert all("forward" in b.__dict__ for b in blocks)
        raise RuntimeError("interrupt")
    assert not any("forward" in b.__dict__ for b in blocks)


def test_saved_bytes_fall_on_the_paths_that_checkpoint(model):
    """The accounting sees what each path keeps: the UNet's bytes drop on balanced and low, the decoder's on
    low; the flow and D keep the same on every path."""
    saved = {}
    for path in memory_plan.PATHS:
        host = DiffusersVideoHost(model, "a white fox running", n_tokens=1)
        guide = _guide(host, path)
        model.scheduler.set_timesteps(10)
        torch.manual_seed(1)
        latents = torch.randn(1, 4, 4, 8, 8)
        guide._optimize(3, 10, host.predictor(latents, model.scheduler.timesteps[3], 7.5, "cond"))
        saved[path] = guide.records[-1].saved_bytes["bytes"]
    speed, balanced, low = saved["speed"], saved["balanced"], saved["low"]
    assert balanced["unet"] < 0.6 * speed["unet"] and low["unet"] == balanced["unet"]
    assert low["decode"] < 0.6 * balanced["decode"] and balanced["decode"] == speed["decode"]
    assert speed["flow"] == balanced["flow"] == low["flow"] > 0


def test_auto_takes_the_fastest_path_that_fits():
    shape = memory_plan.JobShape(grad_frames=16, latent_pixels=64 * 64, decoded_frames=2, element_size=2)
    need = memory_plan.predict(shape)
    assert need["speed"] > need["balanced"] > need["low"] > 0  # the table says which path keeps less
    for path in memory_plan.PATHS:
        free = int((need[path] + memory_plan.MARGIN_BYTES) / (1 - memory_plan.MARGIN)) + 2**20
        assert memory_plan.choose("auto", shape, free).path == path
    with pytest.raises(MemoryError, match="not even the low-memory path fits"):
        memory_plan.choose("auto", shape, need["low"] // 2)
    assert memory_plan.choose("balanced", shape, 1).path == "balanced"  # asked for: taken as it is
    assert memory_plan.choose("auto", shape, None).path == "speed"  # CPU: nothing to fit
    assert memory_plan.choose("auto", shape, 10**15, floor=2).path == "low"  # after an out-of-memory


def test_nothing_fits_the_step_runs_unguided_before_any_work(model, monkeypatch):
    """auto with too little free memory: no UNet call with gradients, the video finishes (the plain one), and
    the record and summary say why."""
    monkeypatch.setattr(memory_plan, "free_bytes", lambda device: 1)
    host = DiffusersVideoHost(model, "a white fox running", n_tokens=1)
    guide = _guide(host, "auto")
    grad_calls = []
    forward = model.unet.forward
    monkeypatch.setattr(model.unet, "forward", lambda *a, **k: grad_calls.append(torch.is_grad_enabled()) or forward(*a, **k))
    res = sample(host, guide, steps=4, num_frames=4, height=32, width=32, seed=3)
    plain = sample(host, None, steps=4, num_frames=4, height=32, width=32, seed=3)
    assert not any(grad_calls)
    assert torch.equal(res.frames, plain.frames)
    assert "not even the low-memory path fits" in guide.summary()["disabled"]
    assert guide.records[0].status.startswith("skipped: not even the low-memory path fits")


def test_a_cuda_out_of_memory_frees_the_loop_and_auto_goes_lower(model, monkeypatch):
    """A simulated CUDA OOM in the UNet call with gradients: the step continues unguided, the next guided steps
    take the next lower path, the generation finishes; with the path asked for, guidance stops with the reason."""
    monkeypatch.setattr(memory_plan, "free_bytes", lambda device: 10**15)  # everything "fits": auto starts at speed
    host = DiffusersVideoHost(model, "a white fox running", n_tokens=1)
    forward = model.unet.forward
    failing = {"speed"}

    def oom_on(*a, **k):
        guide = state["guide"]
        if torch.is_grad_enabled() and guide.plan is not None and guide.plan.path in failing:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(*a, **k)

    monkeypatch.setattr(model.unet, "forward", oom_on)
    state = {"guide": _guide(host, "auto")}
    res = sample(host, state["guide"], steps=5, num_frames=4, height=32, width=32, seed=3)
    paths = [(r.memory_path, r.status.split(";")[0]) for r in state["guide"].records]
    assert paths[0] == ("speed", "out of memory on the speed path") and all(p == "balanced" for p, _ in paths[1:])
    assert state["guide"].summary()["disabled"] is None and res.frames.shape[0] == 4
    state["guide"] = _guide(host, "speed")
    sample(host, state["guide"], steps=3, num_frames=4, height=32, width=32, seed=3)
    assert "out of memory at step 0 on the speed memory path" in state["guide"].summary()["disabled"]


def test_the_first_measured_iteration_rescales_the_table_for_this_job(model):
    """The table is SD1.5's; the tiny model keeps far less. After its first measured iteration the job's later
    predictions are the table's times measured / table (kept bytes), so the kept part matches what ran."""
    host = DiffusersVideoHost(model, "a white fox running", n_tokens=1)
    guide = _guide(host, "speed")
    model.scheduler.set_timesteps(10)
    torch.manual_seed(1)
    latents = torch.randn(1, 4, 4, 8, 8)
    for step in (3, 4):
        guide._optimize(step, 10, host.predictor(latents, model.scheduler.timesteps[step], 7.5, "cond"))
    first, second = guide.records
    shape = guide.plan.shape
    kept = first.saved_bytes["bytes"]["unet"] + first.saved_bytes["bytes"]["decode"]
    table = memory_plan.predict(shape)["speed"]
    assert first.predicted_bytes == table  # before any measurement: the table's
    assert guide._scale == pytest.approx(kept / memory_plan.predict(shape, kept_only=True)["speed"])
    assert second.predicted_bytes == int(table * guide._scale) and second.predicted_bytes < table / 10


def test_checkpointed_calls_keep_their_inputs_and_the_accounting_counts_each_once():
    """Checkpointing keeps a wrapped call's inputs: positional ones through autograd's saved-tensor hooks, keyword
    ones (diffusers passes hidden states by keyword) in a closure; both are counted, each storage once."""
    from motionprompt.engine.saved_bytes import SavedBytes

    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.f = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.GELU(), torch.nn.Linear(256, 64))

        def forward(self, x, gate=None):
            return self.f(x) * gate

    block = Block()
    x0 = torch.randn(100, 64, requires_grad=True)
    kept = {}
    for wrapped in (False, True):
        saved = SavedBytes()
        with saved.active(), checkpointed([block] if wrapped else []):
            x, gate = x0 * 2, torch.sigmoid(x0)
            block(x, gate=gate)
            block(x, gate=gate)  # the same inputs again: nothing more kept when checkpointed
        kept[wrapped] = saved.total
    inputs = 2 * 100 * 64 * 4  # x and gate, float32
    assert kept[True] == inputs
    assert kept[False] > 3 * inputs  # without checkpointing: the hidden activations of both calls
