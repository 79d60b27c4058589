"""Issue 26 items 2 and 3: the result line's time figure, checked against a WebUI double whose costs are known.

Every cost here is a known sleep on a fake ``time.perf_counter`` (the only clock the figure reads), so nothing of the
machine's own speed enters the check: the UNet, the VAE decoder and the text encoder sleep a fixed time per call,
loading the discriminator and measuring the clip a fixed time per call, and Forge's model loads a fixed time per
load. A sleep inside MotionPrompt's CFG callback, or in its set-up and measurement, is MotionPrompt's; every other
sleep is the host's own (plain) work. The printed ratio must be (plain + MotionPrompt's) / plain, to the printed
digits. (Before the fix the line read ``+X s (xR time)`` with R from the first CFG callback on: the probe, the
encoding, the loading and the measurement counted as plain, or not at all.)"""

import re
import time
from pathlib import Path

import pytest
import torch

from .webui_host import WebUI, install_double, save_disc, small_forge_gpu

ROOT = Path(__file__).resolve().parents[1]
AD = {"enable": True, "video_length": 8, "batch_size": 8}
MP = {"enabled": True, "discriminator": "disc.safetensors", "inner_iters": 2, "window_start": 0.25,
      "window_end": 0.75}
TOKEN = "mp_walk"
AMORTIZED = {"enabled": True, "mode": "amortized", "token": f"{TOKEN}.safetensors", "discriminator": "disc.safetensors"}
#: seconds of the fake clock per call
UNET, VAE, TEXT, LOAD, MEASURE, MODEL_LOAD = 0.05, 0.02, 0.01, 0.3, 0.2, 0.1
#: half a unit of the printed last digit (seconds under 10 and ratios have two decimals), and float slack
DIGITS = 0.005 + 1e-9

GUIDED_LINE = re.compile(r"\+(?P<extra>[\d.]+) s over (?P<plain>[\d.]+) s plain \(x(?P<ratio>[\d.]+) time: "
                         r"set-up (?P<setup>[\d.]+) s \+ guidance (?P<guidance>[\d.]+) s"
                         r"(?: \+ measuring the clip (?P<measure>[\d.]+) s)?\)")
AMORTIZED_LINE = re.compile(r"\+(?P<extra>[\d.]+) s over (?P<plain>[\d.]+) s plain \(x(?P<ratio>[\d.]+) time: "
                            r"loading and encoding the token (?P<token>[\d.]+) s"
                            r"(?: \+ measuring the clip (?P<measure>[\d.]+) s\); measuring the clip is turned off in "
                            r"Settings > MotionPrompt > Measure guided clips \(then x(?P<without>[\d.]+) time)?\)")


class Ledger:
    """A fake ``perf_counter`` that only sleeps move, and who each sleep belonged to."""

    def __init__(self):
        self.now = 1000.0
        self.host = self.ours = 0.0
        self.inside = 0  # > 0 while MotionPrompt's CFG callback runs
        self.batches: list[tuple[float, float]] = []  # (host, ours) at the end of each batch's end_batch

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float, ours: bool = False) -> None:
        self.now += seconds
        if ours or self.inside:
            self.ours += seconds
        else:
            self.host += seconds

    def batch(self, index: int) -> tuple[float, float]:
        """What batch ``index`` cost the host and MotionPrompt: from the previous batch's end (the job's start)."""
        before = self.batches[index - 1] if index else (0.0, 0.0)
        host, ours = self.batches[index]
        return host - before[0], ours - before[1]


def _sleepy(monkeypatch, ledger, cls, name, seconds, ours=False):
    original = getattr(cls, name)

    def slept(*args, **kwargs):
        ledger.sleep(seconds, ours)
        return original(*args, **kwargs)

    monkeypatch.setattr(cls, name, slept)


def _ours(monkeypatch, ledger, cls, name):
    """Calls of ``cls.name`` are MotionPrompt's time (its CFG callback)."""
    original = getattr(cls, name)

    def inside(*args, **kwargs):
        ledger.inside += 1
        try:
            return original(*args, **kwargs)
        finally:
            ledger.inside -= 1

    monkeypatch.setattr(cls, name, inside)


def _batch_ends(monkeypatch, ledger, cls):
    original = cls.end_batch

    def end_batch(self, *args, **kwargs):
        try:
            return original(self, *args, **kwargs)
        finally:
            ledger.batches.append((ledger.host, ledger.ours))

    monkeypatch.setattr(cls, "end_batch", end_batch)


def _known_costs(monkeypatch, webui) -> Ledger:
    """The double's models and MotionPrompt's loading/measuring sleep known times on a fake clock."""
    from motionprompt.hosts.webui import amortized, report
    from motionprompt.hosts.webui import run as runs

    from .webui_double.model import ToyTextModel

    if webui.flavour == "forge":
        from ldm_patched.ldm.modules.diffusionmodules.model import Decoder
        from ldm_patched.ldm.modules.diffusionmodules.openaimodel import UNetModel
        from ldm_patched.modules import model_management

        model_loads = (model_management.LoadedModel, "model_load")
    else:
        from ldm.modules.diffusionmodules.model import Decoder
        from ldm.modules.diffusionmodules.openaimodel import UNetModel

        model_loads = None
    ledger = Ledger()
    monkeypatch.setattr(time, "perf_counter", ledger)
    _sleepy(monkeypatch, ledger, UNetModel, "forward", UNET)
    _sleepy(monkeypatch, ledger, Decoder, "forward", VAE)
    _sleepy(monkeypatch, ledger, ToyTextModel, "forward", TEXT)
    if model_loads is not None:
        _sleepy(monkeypatch, ledger, *model_loads, MODEL_LOAD)
    _sleepy(monkeypatch, ledger, runs, "load_disc", LOAD, ours=True)  # the set-up (and the amortized D score's)
    _sleepy(monkeypatch, ledger, report, "clip_metrics", MEASURE, ours=True)
    for cls in (runs.GuidedRun, amortized.AmortizedRun):
        _ours(monkeypatch, ledger, cls, "on_denoiser")
        _batch_ends(monkeypatch, ledger, cls)
    return ledger


def _lines(p) -> list[str]:
    """The result line of every batch, in order (the info box keeps each; the infotext only the last)."""
    return [c[len("MotionPrompt: "):] for c in p.comments if c.startswith("MotionPrompt: ") and " report " not in c]


@pytest.fixture
def webui(tmp_path):
    ui = WebUI(tmp_path)
    save_disc(tmp_path / "models")
    return ui


@pytest.fixture
def forge(tmp_path):
    ui = WebUI(tmp_path, flavour="forge")
    save_disc(tmp_path / "models")
    yield ui
    install_double("a1111")


def _check_guided(line: str, host: float, ours: float, measured: bool) -> dict:
    ratio = re.search(r"\(x([\d.]+) time", line)
    assert ratio and float(ratio[1]) == pytest.approx((host + ours) / host, abs=DIGITS), (line, host, ours)
    m = GUIDED_LINE.search(line)
    assert m, line
    f = {k: float(v) for k, v in m.groupdict().items() if v is not None}
    assert f["plain"] == pytest.approx(host, abs=DIGITS), line
    assert f["ratio"] == pytest.approx((host + ours) / host, abs=DIGITS), (line, host, ours)
    assert f["extra"] == pytest.approx(ours, abs=DIGITS), line
    assert f["setup"] + f["guidance"] + f.get("measure", 0.0) == pytest.approx(ours, abs=3 * DIGITS), line
    assert ("measure" in f) == measured, line
    if measured:
        assert f["measure"] == pytest.approx(MEASURE, abs=DIGITS), line
    return f


def test_guided_time_figure_is_plain_plus_everything_motionprompt_spent(monkeypatch, webui):
    """Two batches: the first carries the set-up (loading the discriminator), both their guided steps (inner loop,
    probe, token encoding) and the clip's measurement; plain is the host's own sampling, text encoding and decode."""
    ledger = _known_costs(monkeypatch, webui)
    p, _ = webui.generate(MP, AD, n_iter=2)
    assert not webui.errors, webui.errors
    lines = _lines(p)
    assert len(lines) == 2 and len(ledger.batches) == 2, lines
    first = _check_guided(lines[0], *ledger.batch(0), measured=True)
    second = _check_guided(lines[1], *ledger.batch(1), measured=True)
    assert first["setup"] >= LOAD and second["setup"] < LOAD  # the discriminator is loaded once per job
    host, ours = ledger.batch(0)
    assert ours > 2 * host  # the guided work is most of it here: counted as plain, the ratio would be far lower
    assert p.extra_generation_params["MotionPrompt result"] == lines[1].replace(",", ";")


def test_without_the_measurement_the_figure_has_none(monkeypatch, webui):
    from modules import shared

    shared.opts.data["motionprompt_report"] = False
    ledger = _known_costs(monkeypatch, webui)
    p, _ = webui.generate(MP, AD)
    assert not webui.errors, webui.errors
    _check_guided(p.extra_generation_params["MotionPrompt result"], *ledger.batch(0), measured=False)
    assert "MotionPrompt metrics" not in p.extra_generation_params


def test_forge_model_loads_in_guided_steps_are_guidance_time(monkeypatch, forge):
    """On a device too small for the UNet and the text encoder together every token encoding pushes the sampling
    models out and the step loads them again: MotionPrompt's time, not the host's."""
    small_forge_gpu(forge)
    ledger = _known_costs(monkeypatch, forge)
    inside = []  # per model load: in MotionPrompt's callback or not
    original_sleep = ledger.sleep

    def sleep(seconds, ours=False):
        if seconds == MODEL_LOAD:
            inside.append(bool(ledger.inside))
        original_sleep(seconds, ours)

    monkeypatch.setattr(ledger, "sleep", sleep)
    p, _ = forge.generate(MP, AD)
    assert not forge.errors, forge.errors
    assert any(inside) and not all(inside), inside  # loads in our steps and the host's own
    _check_guided(p.extra_generation_params["MotionPrompt result"], *ledger.batch(0), measured=True)


# ---------------------------------------------------------------------------------------------- item 3: amortized
@pytest.fixture
def token(tmp_path, monkeypatch):
    from modules import shared

    from motionprompt.amortized.token_file import save_token

    from .webui_double.model import DIM

    folder = tmp_path / "embeddings"
    monkeypatch.setattr(shared.cmd_opts, "embeddings_dir", str(folder), raising=False)
    torch.manual_seed(7)
    save_token(folder / f"{TOKEN}.safetensors", torch.randn(1, DIM), {"init_word": "authentic"})
    return folder


def test_amortized_line_says_what_measuring_the_clip_costs_and_how_to_turn_it_off(monkeypatch, webui, token):
    """Issue 26: amortized with a discriminator selected took x1.09, the line said nothing of it. The clip's
    measurement (its D score: loading D and flow, the flow+D pass) is said apart, with the setting that turns it off
    and what the job costs then."""
    from modules import shared

    ledger = _known_costs(monkeypatch, webui)
    p, _ = webui.generate(AMORTIZED, AD)
    assert not webui.errors, webui.errors
    line = p.extra_generation_params["MotionPrompt result"]
    m = AMORTIZED_LINE.search(line)
    assert m and m["measure"], line
    host, ours = ledger.batch(0)
    measure = LOAD + MEASURE  # the D score loads the discriminator, then measures
    assert float(m["plain"]) == pytest.approx(host, abs=DIGITS), line
    assert float(m["measure"]) == pytest.approx(measure, abs=DIGITS), line
    assert float(m["ratio"]) == pytest.approx((host + ours) / host, abs=DIGITS), line
    assert float(m["without"]) == pytest.approx((host + ours - measure) / host, abs=DIGITS), line
    assert float(m["without"]) < 1.1 < float(m["ratio"])  # the measurement is most of what this mode costs
    assert "D 0." in p.extra_generation_params["MotionPrompt metrics"]
    label = shared.opts.data_labels["motionprompt_report"].label
    assert label.startswith("Measure guided clips"), label  # the setting the line names is the one there is

    shared.opts.data["motionprompt_report"] = False
    ledger.batches.clear()
    ledger.host = ledger.ours = 0.0
    p, _ = webui.generate(AMORTIZED, AD)
    line = p.extra_generation_params["MotionPrompt result"]
    m = AMORTIZED_LINE.search(line)
    assert m and m["measure"] is None and "measuring" not in line, line
    host, ours = ledger.batch(0)
    assert float(m["ratio"]) == pytest.approx((host + ours) / host, abs=DIGITS), line
    assert float(m["token"]) == pytest.approx(ours, abs=DIGITS), line
    assert "MotionPrompt metrics" not in p.extra_generation_params


# ---------------------------------------------------------------------------------------------- the docs say so
def _docs() -> str:
    return "\n".join(path.read_text(encoding="utf-8") for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])


def test_documented_result_lines_have_the_printed_time_format():
    """README's example result line reads as the product prints it; no amortized figure says "no extra time"."""
    text = _docs()
    examples = re.findall(r"MotionPrompt result: (\d+ steps x \d+ it;[^`]*)`", text.replace("\n", " "))
    assert examples, "README lost its example result line"
    for example in examples:
        m = GUIDED_LINE.search(example)
        assert m, example
        f = {k: float(v) for k, v in m.groupdict().items() if v is not None}
        assert f["ratio"] == pytest.approx((f["plain"] + f["extra"]) / f["plain"], abs=0.006), example
        assert f["extra"] == pytest.approx(f["setup"] + f["guidance"] + f.get("measure", 0.0), abs=0.051), example
    examples = re.findall(r"`(\+[\d.]+ s over [^`]*loading and encoding the token[^`]*)`", text.replace("\n", " "))
    assert examples, "README lost its example of the amortized line"
    for example in examples:
        m = AMORTIZED_LINE.search(example)
        assert m and m["measure"], example
        plain, extra, token = float(m["plain"]), float(m["extra"]), float(m["token"])
        assert float(m["ratio"]) == pytest.approx((plain + extra) / plain, abs=0.006), example
        assert float(m["without"]) == pytest.approx((plain + token) / plain, abs=0.006), example
    assert "no extra time," not in text  # the amortized mode's measurement takes time (item 3)
