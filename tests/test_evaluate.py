"""``evaluate`` end to end on a tiny toy model: arms, pairing by seed, resume, summary and report."""

import json
import shutil

import numpy as np
import pytest
import torch

from motionprompt.disc.checkpoint import save_discriminator
from motionprompt.disc.models import build_discriminator
from motionprompt.evaluation.evaluate import Arm, Evaluation, format_summary, summarize
from motionprompt.flow.settings import FlowSettings
from motionprompt.toy.model import save_model
from motionprompt.toy.protocol import eval_pairs
from tests.test_toy_model import tiny_parts

FLOW = FlowSettings(backend="lk_pyramid", size=16, iters=2)


@pytest.fixture
def files(tmp_path):
    model = save_model(tiny_parts(), tmp_path / "toy.safetensors", dtype=torch.float32)
    torch.manual_seed(1)
    d1 = save_discriminator(tmp_path / "d1.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    torch.manual_seed(2)
    d2 = save_discriminator(tmp_path / "d2.safetensors", build_discriminator("cnn", width=8, depth=2), FLOW)
    return model, d1, d2


def test_arm_specs_parse_into_preset_and_typed_overrides():
    a = Arm.parse("K1=paper:inner_iters=1,lr=0.05,init_word=the,flow.iters=3")
    assert (a.name, a.preset) == ("K1", "paper")
    assert a.overrides == {"inner_iters": 1, "lr": 0.05, "init_word": "the", "flow.iters": 3}
    assert Arm.parse("fast") == Arm("fast", "fast", {})
    with pytest.raises(ValueError, match="key=value"):
        Arm.parse("x=paper:inner_iters")


@pytest.mark.diffusers
def test_guidance_flow_always_follows_the_discriminator(files):
    from motionprompt.disc.checkpoint import load_discriminator

    disc = load_discriminator(files[1])
    cfg = Arm.parse("fast").config(disc)  # the preset asks for RAFT at 128 px
    assert cfg.flow == FLOW and cfg.inner_iters == 1 and cfg.every_k == 2
    assert Arm.parse("a=paper:flow.iters=5").config(disc).flow.iters == 5
    with pytest.raises(ValueError, match=r"only flow\.iters"):
        Arm.parse("a=paper:flow.size=64").config(disc)


@pytest.mark.diffusers
def test_evaluation_pairs_by_seed_resumes_and_summarises(tmp_path, files, one_torch_thread):
    model, d1, d2 = files
    arms = [Arm.parse("g=paper:inner_iters=1,window_start=0.0,window_end=0.5")]
    out = tmp_path / "ev"

    def make():
        return Evaluation(out, str(model), str(d1), str(d2), arms, n_prompts=1, n_seeds=3, steps=4, cfg_scale=3.0)

    calls = []
    first = make()
    assert first.run(stop=lambda: calls.append(1) or len(calls) > 3) == {}  # stopped after 3 clips
    assert len(json.loads((out / "samples.json").read_text())["rows"]) == 3
    second = make()
    summary = second.run()
    rows = second.rows
    assert len(rows) == 6 and sorted({r["arm"] for r in rows}) == ["g", "plain"]
    assert {(r["prompt"], r["seed"]) for r in rows} == set(eval_pairs(1, 3))
    guided = [r for r in rows if r["arm"] == "g"]
    assert all(r["guide"]["steps_guided"] == 2 and r["guide"]["iterations"] == 2 for r in guided)
    entry = summary["arms"]["g"]
    assert entry["n"] == 3 and entry["metrics"]["d_guide"]["n"] == 3
    # the summary's numbers are the rows' numbers
    plain = {r["seed"]: r["metrics"]["d_independent"] for r in rows if r["arm"] == "plain"}
    diffs = [r["metrics"]["d_independent"] - plain[r["seed"]] for r in guided]
    assert entry["metrics"]["d_independent"]["diff_mean"] == pytest.approx(np.mean(diffs))
    assert set(summary["flow_frechet_to_real"]) == {"plain", "g"}
    assert (out / "report.html").read_text().count("<table>") >= 2 and (out / "differences.png").stat().st_size > 0
    assert "d_guide" in format_summary(summary)
    with pytest.raises(ValueError, match="other settings"):
        Evaluation(out, str(model), str(d1), None, arms, n_prompts=1, n_seeds=3, steps=4, cfg_scale=3.0)
    # weights are the same by content: a copy elsewhere continues the evaluation, a file retrained in place does not
    copy = shutil.copy(d1, tmp_path / "shipped_d1.safetensors")
    assert len(Evaluation(out, str(model), str(copy), str(d2), arms, n_prompts=1, n_seeds=3, steps=4,
                          cfg_scale=3.0).rows) == 6
    torch.manual_seed(3)
    save_discriminator(d1, build_discriminator("cnn", width=8, depth=2), FLOW)
    with pytest.raises(ValueError, match="other settings"):
        make()


def test_summary_of_a_planted_improvement_is_significant_only_where_planted():
    rng = np.random.default_rng(0)
    rows = []
    for k in range(40):
        base = {"d_guide": rng.uniform(0.2, 0.4), "d_independent": rng.uniform(0.2, 0.4), "warp_error": rng.uniform(5, 9)}
        rows.append({"prompt": "p", "seed": k, "arm": "plain", "seconds": 1.0, "metrics": dict(base), "guide": {}})
        better = dict(base, d_guide=base["d_guide"] + 0.1 + rng.normal(0, 0.02),
                      d_independent=base["d_independent"] + rng.normal(0, 0.05))
        rows.append({"prompt": "p", "seed": k, "arm": "paper", "seconds": 3.0, "metrics": better,
                     "guide": {"token_drift": 0.1}})
    s = summarize(rows, ["paper"])["arms"]["paper"]
    assert s["metrics"]["d_guide"]["p_value"] < 1e-6 and s["metrics"]["d_guide"]["win_rate"] > 0.95
    assert s["metrics"]["d_independent"]["p_value"] > 0.01
    assert s["metrics"]["warp_error"]["diff_mean"] == 0 and s["time_ratio_mean"] == pytest.approx(3.0)


@pytest.mark.diffusers
def test_every_fixed_toy_results_arm_is_a_valid_setting_that_differs_from_the_paper_where_named(files):
    """A typo in an ablation arm would only surface an hour into ``toy-results``: each must build its config."""
    from motionprompt.disc.checkpoint import load_discriminator
    from motionprompt.toy.results import ABLATION_ARMS, MAIN_ARMS

    disc = load_discriminator(files[1])
    paper = Arm.parse("paper").config(disc).to_dict()
    names = set()
    for spec in (*MAIN_ARMS, *ABLATION_ARMS):
        arm = Arm.parse(spec)
        cfg = arm.config(disc).to_dict()
        names.add(arm.name)
        for key, value in arm.overrides.items():
            got = cfg["flow"][key[5:]] if key.startswith("flow.") else cfg[key]
            assert got == value and got != (paper["flow"][key[5:]] if key.startswith("flow.") else paper[key])
    assert len(names) == len(MAIN_ARMS) + len(ABLATION_ARMS) - 1  # "paper" in both lists, every other name once


@pytest.mark.diffusers
def test_toy_results_evaluates_the_shipped_token_or_one_it_trains_itself(tmp_path, files, monkeypatch,
                                                                          one_torch_thread):
    """The amortized stage: the shipped model and guiding D use the shipped token; another model gets a token
    trained here with token-train's settings against its own guiding D, exported once, reused on a rerun; its two
    arms build the token-started configs (no inner loop / one iteration)."""
    import motionprompt.amortized.train as train_mod
    from motionprompt.amortized.token_file import load_token, save_token
    from motionprompt.disc.checkpoint import load_discriminator
    from motionprompt.evaluation.evaluate import token_arms
    from motionprompt.toy.demo import GUIDE_D, INDEPENDENT_D, MOTION_TOKEN
    from motionprompt.toy.results import motion_token

    shipped = {"guide": GUIDE_D, "independent": INDEPENDENT_D}
    if MOTION_TOKEN.is_file():
        assert motion_token(tmp_path / "shipped", "toy", shipped, log=lambda m: None) == MOTION_TOKEN
    model, d1, d2 = files
    real, runs = train_mod.TokenTrainConfig, []

    def small(**kw):  # token-train's own defaults, fewer and smaller updates
        runs.append(kw)
        return real(**{**kw, "steps": 2, "batch": 1, "seeds": 1, "val_seeds": 1, "val_every": 2, "save_every": 2,
                       "sampling_steps": 4, "val_fraction": 0.05})

    monkeypatch.setattr(train_mod, "TokenTrainConfig", small)
    token = motion_token(tmp_path / "own", str(model), {"guide": d1, "independent": d2}, log=lambda m: None)
    assert token == tmp_path / "own" / "token" / f"{MOTION_TOKEN.stem}.safetensors" and token.is_file()
    assert runs[0]["disc"] == str(d1) and runs[0]["model"] == str(model)
    assert load_token(token).meta["discriminator"]["name"] == d1.name
    finished = load_token(token)
    assert finished.meta["training"]["updates"] == 2
    built = []
    real_init = train_mod.TokenTrainer.__init__
    monkeypatch.setattr(train_mod.TokenTrainer, "__init__", lambda self, *a, **k: built.append(1) or real_init(self, *a, **k))
    own = {"guide": d1, "independent": d2}
    assert motion_token(tmp_path / "own", str(model), own, log=lambda m: None) == token
    assert not built  # a finished token: no model, D or trainer is even loaded
    # killed between saving the finished state and exporting: the file still holds an earlier update's token
    save_token(token, torch.zeros_like(finished.vectors), {**finished.meta, "training": {"updates": 1}})
    assert motion_token(tmp_path / "own", str(model), own, log=lambda m: None) == token
    again = load_token(token)
    assert built and again.meta["training"]["updates"] == 2 and torch.equal(again.vectors, finished.vectors)
    disc = load_discriminator(d1)
    amortized, hybrid = token_arms(token)
    assert (amortized.name, hybrid.name) == ("amortized", "hybrid")
    a_cfg, h_cfg = amortized.config(disc), hybrid.config(disc)
    assert a_cfg.inner_iters == 0 and h_cfg.inner_iters == 1 and a_cfg.start_token == h_cfg.start_token == str(token)


def test_results_tables_show_signed_paired_cells_and_say_when_the_gate_failed():
    from motionprompt.toy.results import tables

    rows = []
    for k in range(12):
        m = {"d_independent": 0.3 + 0.01 * k, "warp_error": 5.0, "direction_ok": 0.0}
        rows.append({"prompt": "p", "seed": k, "arm": "plain", "seconds": 2.0, "metrics": m, "guide": {}})
        g = dict(m, d_independent=m["d_independent"] + 0.05, warp_error=4.0)
        rows.append({"prompt": "p", "seed": k, "arm": "paper", "seconds": 5.0, "metrics": g, "guide": {"token_drift": 0}})
    main = summarize(rows, ["paper"])
    gate = {"passed": False, "model": {"clips": 96, "visible_frames": 0.935, "direction_ok": 0.21}}
    text = tables(gate, main, {"pairs": 0, "arms": {}})
    assert "NOT passed" in text and "21.0%" in text
    paper_row = next(line for line in text.splitlines() if line.startswith("| paper |"))
    cells = paper_row.strip("|").split("|")
    assert cells[1].strip() == "2.50"  # time ratio 5 s / 2 s
    assert cells[2].strip().startswith("+0.0500") and "win 1.00" in cells[2]  # d_independent up in every pair
    assert cells[4].strip().startswith("-1.0000")  # warp error down by 1
    assert "Amortized token" not in text
    token_rows = [dict(r, arm="amortized") if r["arm"] == "paper" else r for r in rows]
    with_token = tables(gate, main, {"pairs": 0, "arms": {}}, summarize(token_rows, ["amortized"]))
    section = with_token.split("## Amortized token", 1)[1].split("## Ablations", 1)[0]
    assert "| amortized | 2.50 |" in section and "| paper |" not in section


@pytest.mark.diffusers
def test_an_arms_flow_iterations_guide_its_clips_while_the_metrics_keep_the_discriminators_flow(
        tmp_path, files, monkeypatch, one_torch_thread):
    from motionprompt.engine import guidance

    model, d1, d2 = files
    seen = []

    class Spy(guidance.MotionGuide):
        def __init__(self, cfg, host, flow, disc):
            seen.append((cfg.flow.iters, flow.settings.iters))
            super().__init__(cfg, host, flow, disc)

    monkeypatch.setattr(guidance, "MotionGuide", Spy)
    arms = [Arm.parse(a) for a in ("same=paper:inner_iters=1,window_start=0.0,window_end=0.3",
                                   "it5=paper:inner_iters=1,window_start=0.0,window_end=0.3,flow.iters=5")]
    ev = Evaluation(tmp_path / "ev", str(model), str(d1), str(d2), arms, n_prompts=1, n_seeds=1, steps=3, cfg_scale=3.0)
    ev.run()
    assert seen == [(FLOW.iters, FLOW.iters), (5, 5)]  # was: every arm guided by the D's own flow (iters 2)


@pytest.mark.diffusers
def test_evaluate_takes_ones_own_prompts_and_seeds_and_keeps_the_tables_cases_by_default(tmp_path, files, capsys):
    """Issue 26 item 12: `--prompts N` was the first N of 24 fixed captions and the seeds were fixed."""
    from motionprompt.cli.main import build_parser, main
    from motionprompt.toy.protocol import caption_split, seeds

    model, d1, d2 = files
    held = caption_split()["eval"]
    # the defaults are the README tables' cases, and a run of them resumes as before (same setup record)
    default = Evaluation(tmp_path / "d", str(model), str(d1), str(d2), [Arm.parse("paper")], 24, 3, 25, 5.0)
    assert default.work() == [(p, s) for p in held for s in seeds("eval", 3)] == eval_pairs(24, 3)
    assert (default.setup()["prompts"], default.setup()["seeds"]) == (24, 3)
    args = build_parser().parse_args(["evaluate", "--disc", "d"])
    assert (args.prompts, args.seeds, args.prompt_file, args.seed_list, args.steps, args.cfg) == (24, 3, None, None,
                                                                                                   25, 5.0)
    never_held = caption_split()["guide"][0]  # a caption of the world outside the evaluation split
    prompts = tmp_path / "mine.txt"
    prompts.write_text(f"# my cases\n{never_held}\n\na purple fox in the snow\n", encoding="utf-8")
    out = tmp_path / "ev"
    argv = ["evaluate", "--model", str(model), "--disc", str(d1), "--independent-disc", str(d2),
            "--arm", "g=paper:inner_iters=1,window_start=0.0,window_end=0.5", "--steps", "2",
            "--prompt-file", str(prompts), "--seed-list", "11,40-40", "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads((out / "samples.json").read_text())
    pairs = {(r["prompt"], r["seed"]) for r in data["rows"]}
    assert pairs == {(p, s) for p in (never_held, "a purple fox in the snow") for s in (11, 40)}
    assert len(data["rows"]) == 8 and data["setup"]["prompts"] == [never_held, "a purple fox in the snow"]
    assert data["setup"]["seeds"] == [11, 40]
    fox = [r for r in data["rows"] if r["prompt"] == "a purple fox in the snow"]
    world = [r for r in data["rows"] if r["prompt"] == never_held]
    assert all(r["metrics"]["direction_ok"] is None and r["metrics"]["d_guide"] is not None for r in fox)
    assert all(isinstance(r["metrics"]["direction_ok"], bool) for r in world)  # ground truth where the world has it
    summary = json.loads((out / "summary.json").read_text())
    assert summary["arms"]["g"]["metrics"]["direction_ok"]["n"] == 2 and summary["arms"]["g"]["n"] == 4
    capsys.readouterr()
    assert main([*argv[:-2], "--seed-list", "12", "--out", str(out)]) == 2  # other cases: another --out
    assert "other settings" in capsys.readouterr().err
    for bad in (["--prompts", "3", "--prompt-file", str(prompts)], ["--seeds", "2", "--seed-list", "1"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["evaluate", "--disc", "d", *bad])
    assert main(["evaluate", "--model", str(model), "--disc", str(d1), "--seed-list", "5-3", "--out",
                 str(tmp_path / "x")]) == 2
