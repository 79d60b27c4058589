"""``python -m motionprompt toy-train``: train the toy text-to-video model on the procedural world.

Two phases in one resumable run: the VAE on single frames (its posterior mean decoded, object-weighted
pixel + edge loss: see ``vae_loss``), then (VAE frozen, latents normalised to zero mean and unit variance) the
UNetMotionModel and the text encoder jointly on 16-frame clips, epsilon or v prediction (the latter on a
zero-terminal-SNR schedule) with min-SNR weighting and 10 % caption dropout for classifier-free guidance.

Every batch is a pure function of (seed, step): clips are rendered on the fly from seeds, so a resumed run
sees exactly the data an uninterrupted one would. One state file (raw fp32 weights + fp16 EMA), replaced
atomically every ``save_every`` seconds, on Ctrl-C/SIGTERM and at the end; Adam's moments are not kept
(they would double the file) and are rebuilt after a resume under a short learning-rate warm-up.
"""

from __future__ import annotations

import csv
import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ..files.video import to_tensor
from .model import ToyArch, ToyParts, build, load_tensors, save_model, set_latent_stats, state_tensors
from .world import LEVELS, WorldSpec, render, sample_scene

STATE_FORMAT = "motionprompt-toy-train-state"
MIN_SNR_GAMMA = 5.0
EMA_DECAY = 0.999


@dataclass
class ToyTrainConfig:
    level: str = "toy"
    seed: int = 0
    vae_steps: int = 2500
    vae_batch: int = 32  # frames
    vae_lr: float = 1e-3
    steps: int = 40000  # UNet steps
    batch: int = 8  # clips
    lr: float = 3e-4
    warmup: int = 200
    caption_dropout: float = 0.1
    # weight of the clean-clip error at low SNR, where the clip's layout and direction are decided: min-SNR
    # alone gives it ~SNR (0.005-0.1 above t=600), so the caption's direction barely moved the loss; 0 = off
    x0_floor: float = 1.0
    # "v_prediction" trains on a zero-terminal-SNR schedule: the last step is pure noise in training as in
    # sampling, so what a clip looks like from noise alone (layout, direction) must come from the caption
    prediction: str = "v_prediction"
    # SD3's timestep shift: t = 999 * s*u / (1 + (s-1)*u), u uniform. s > 1 trains more often at high noise,
    # the only place a caption's layout words matter (below t ~ 700 the noisy clip already shows where the
    # object is); s = 3 puts 56 % of the steps above t = 700 instead of 30 %
    t_shift: float = 3.0
    # the text encoder's learning rate as a multiple of ``lr``: the UNet's loss depends most on the direction
    # word's row at high noise, yet the word's embedding gets a tenth of a colour word's gradient (the tiny
    # encoder routes colour into every later row and the direction into few), so it barely moves at lr
    text_lr_mult: float = 10.0
    # "trained" learns the text encoder with the UNet; "frozen" keeps it at its random initialisation (seed),
    # as SD keeps its CLIP fixed. Trained jointly, the tiny encoder collapsed "left" and "right" into one
    # conditioning (its first layer maps both words to the same large vector: output rows differed by 0.01
    # of a row norm of 5.5), so no UNet could follow them; a random encoder carries every word into every
    # later row. Switching to "frozen" on a resume re-initialises the encoder and restarts the EMA.
    text_encoder: str = "frozen"
    save_every: float = 600.0  # seconds
    device: str = "cpu"
    workers: int = 0  # processes rendering the next steps' clips (0 = in the training loop)

    def to_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k not in RUNTIME_KEYS}


#: settings that say how to run, not what is learned: free to change on a resume
RUNTIME_KEYS = ("device", "workers", "save_every")
#: what is learned, yet may change on a resume (e.g. a larger batch on a GPU): recorded in the state's notes
LEARN_KEYS = ("batch", "lr", "x0_floor", "prediction", "t_shift", "text_lr_mult", "text_encoder")
#: what states written before a learning setting existed were trained with, where the default has changed since
#: (the defaults are now the shipped model's final recipe, so a new run trains it from the first step)
LEGACY = {"x0_floor": 0.0, "prediction": "epsilon", "t_shift": 1.0, "text_lr_mult": 1.0, "text_encoder": "trained"}
TEXT_ENCODERS = ("trained", "frozen")


def saved_setting(saved: dict, key: str):
    """A learning setting of a stored config; the default where there is no state (``saved`` empty)."""
    default = getattr(ToyTrainConfig, key)
    return saved.get(key, LEGACY.get(key, default)) if saved else default


def train_seed(cfg: ToyTrainConfig, step: int, i: int, phase: str) -> int:
    """World seeds for training: below 2**40; evaluation uses seeds from 2**40 up (never seen)."""
    base = 0 if phase == "vae" else 1 << 36
    return base + ((cfg.seed * 1_000_003 + step) * 64 + i) % (1 << 36)


HELD_OUT_SEED_BASE = 1 << 40


def loss_weight(alpha_bar: torch.Tensor, x0_floor: float = 0.0, prediction: str = "epsilon") -> torch.Tensor:
    """Min-SNR-5 weight of the model-output error, with the clean-clip error's weight held at >= ``x0_floor``.

    The x0 error is the epsilon error / SNR and the v error / (SNR + 1), so min-SNR weighting gives the x0
    error a weight of min(SNR, 5): about SNR, i.e. almost nothing, at the noise levels where a clip's layout
    and direction are decided (and exactly nothing at zero SNR).
    """
    snr = alpha_bar / (1 - alpha_bar)
    x0_weight = torch.clamp(snr, min=x0_floor, max=MIN_SNR_GAMMA)
    if prediction == "v_prediction":
        return x0_weight / (snr + 1)
    if bool((snr <= 0).any()):
        raise ValueError("epsilon prediction cannot be weighted at zero SNR")
    return x0_weight / snr


def draw_timesteps(n: int, steps: int, shift: float, gen: torch.Generator) -> torch.Tensor:
    """Training timesteps in [0, steps): uniform for ``shift`` = 1 (the same draws as randint), else shifted."""
    if shift == 1.0:
        return torch.randint(0, steps, (n,), generator=gen)
    u = torch.rand(n, generator=gen, dtype=torch.float64)
    return (shift * u / (1 + (shift - 1) * u) * steps).long().clamp_(0, steps - 1)


def noised(z: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """The forward process at alpha_bar: what training feeds the UNet and what the direction probe re-creates."""
    return alpha_bar.sqrt() * z + (1 - alpha_bar).sqrt() * noise


def target(z: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor, prediction: str) -> torch.Tensor:
    if prediction == "v_prediction":
        return alpha_bar.sqrt() * noise - (1 - alpha_bar).sqrt() * z
    return noise


def render_clips(cfg: ToyTrainConfig, spec: WorldSpec, size: int, step: int, n: int,
                 phase: str) -> tuple[list[np.ndarray], list[str]]:
    clips, caps = [], []
    for i in range(n):
        scene = sample_scene(spec, train_seed(cfg, step, i, phase))
        clips.append(render(scene, size))
        caps.append(scene.caption)
    return clips, caps


class StepClips(torch.utils.data.Dataset):
    """The UNet phase's clips by step, so worker processes can render the next steps while the model trains."""

    def __init__(self, cfg: ToyTrainConfig, spec: WorldSpec, size: int, start: int):
        self.cfg, self.spec, self.size, self.start = cfg, spec, size, start

    def __len__(self) -> int:
        return max(0, self.cfg.steps - self.start)

    def __getitem__(self, k: int):
        clips, caps = render_clips(self.cfg, self.spec, self.size, self.start + k, self.cfg.batch, "unet")
        return np.stack(clips), caps


def _frames_tensor(clips: list[np.ndarray]) -> torch.Tensor:
    """uint8 clips [F, H, W, 3] -> [B, F, 3, H, W] in [-1, 1]."""
    return torch.stack([to_tensor(c) for c in clips])


def encode_latents(parts: ToyParts, frames: torch.Tensor) -> torch.Tensor:
    """[B, F, 3, H, W] in [-1, 1] -> normalised latents [B, 4, F, h, w] (posterior mean)."""
    b, f = frames.shape[:2]
    with torch.no_grad():
        mean = parts.vae.encode(frames.flatten(0, 1)).latent_dist.mean
    z = (mean - parts.arch.shift_factor) * parts.arch.scaling_factor
    return z.view(b, f, *z.shape[1:]).permute(0, 2, 1, 3, 4)


def vae_loss(rec: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L1 + L2 + L1 of image gradients, with object pixels weighted up.

    Objects cover a few percent of a frame: an unweighted pixel loss is nearly as happy with a blurred blob
    as with a triangle (measured: plateau at PSNR 25 with triangles drawn as discs). Saturation marks
    object pixels in this world (backgrounds are grey), and the gradient term rewards sharp edges.
    """
    sat = (x.amax(1, keepdim=True) - x.amin(1, keepdim=True)) / 2  # [0, 1]
    w = 1.0 + 8.0 * sat
    err = rec - x
    pix = (w * (err.abs() + err.pow(2))).mean() / w.mean()
    gx = lambda t: t[..., :, 1:] - t[..., :, :-1]  # noqa: E731
    gy = lambda t: t[..., 1:, :] - t[..., :-1, :]  # noqa: E731
    edge = (gx(rec) - gx(x)).abs().mean() + (gy(rec) - gy(x)).abs().mean()
    return pix + edge


class ToyTrainer:
    def __init__(self, cfg: ToyTrainConfig, state_path: Path, arch: ToyArch | None = None, log=print):
        self.cfg, self.state_path, self.log = cfg, Path(state_path), log
        if cfg.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder must be 'trained' or 'frozen', not {cfg.text_encoder!r}")
        self.spec = LEVELS[cfg.level]
        arch = replace(arch or ToyArch(size=self.spec.size, frames=self.spec.frames), prediction_type=cfg.prediction)
        self.parts = build(arch, seed=cfg.seed)
        self.phase, self.step, self.vae_step = "vae", 0, 0
        self.history: list[dict] = []
        self.ema: dict[str, torch.Tensor] = {}
        self.seconds = 0.0
        self.notes: list[str] = []  # e.g. batch changes on resume, kept in the state's metadata
        self.device = torch.device(cfg.device)
        if self.state_path.is_file():
            self._load()
        self.alphas_cumprod = self.parts.scheduler().alphas_cumprod.float()
        for m in self.parts.modules().values():
            m.to(self.device)
        self.ema = {k: v.to(self.device) for k, v in self.ema.items()}

    # ----------------------------------------------------------------- state
    def _trainable(self) -> dict[str, torch.nn.Parameter]:
        out = {}
        for prefix in ("unet", "text") if self.cfg.text_encoder == "trained" else ("unet",):
            for k, p in getattr(self.parts, prefix).named_parameters():
                out[f"{prefix}.{k}"] = p
        return out

    def save(self) -> None:
        from ..files.atomic import save_safetensors

        tensors = {f"raw.{k}": v.float() if v.is_floating_point() else v for k, v in state_tensors(self.parts).items()}
        tensors.update({f"ema.{k}": v.detach().to("cpu", torch.float16).contiguous() for k, v in self.ema.items()})
        meta = {
            "format": STATE_FORMAT, "arch": json.dumps(self.parts.arch.to_dict()), "config": json.dumps(self.cfg.to_dict()),
            "phase": self.phase, "step": str(self.step), "vae_step": str(self.vae_step), "seconds": f"{self.seconds:.1f}",
            "notes": json.dumps(self.notes), "world_layout": self.spec.layout,
        }
        save_safetensors(tensors, meta, self.state_path)
        if self.phase == "unet" and self.ema:
            self.export(self.state_path.with_name("toy_model.safetensors"))
        self._write_csv()

    def export(self, path: Path) -> Path:
        """The EMA model as a toy model file (fp16), with the training record in its metadata."""
        if self.phase != "unet" or not self.ema:
            raise ValueError(f"{self.state_path} has no EMA model yet (phase {self.phase}, UNet step {self.step})")
        return save_model(self.ema_parts(), path, self.model_meta())

    def _load(self) -> None:
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(self.state_path), "pt") as f:
            meta = f.metadata() or {}
        if meta.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path} is not a toy training state (format {meta.get('format')!r})")
        saved = json.loads(meta["config"])
        for key in ("level", "seed", "vae_batch"):
            if saved.get(key) != getattr(self.cfg, key):
                raise ValueError(f"state was trained with {key}={saved.get(key)!r}, not {getattr(self.cfg, key)!r}; "
                                 "resume with the same settings or start a new state file")
        self.notes = json.loads(meta.get("notes", "[]"))
        # e.g. a larger batch on a GPU (the seeds stay f(seed, step, i)), or the world a level draws from
        # changed between versions (toy: centred paths from UNet step 10578)
        changes = {key: (saved_setting(saved, key), getattr(self.cfg, key)) for key in LEARN_KEYS}
        changes["world layout"] = (meta.get("world_layout", "free"), self.spec.layout)
        changes = {key: pair for key, pair in changes.items() if pair[0] != pair[1]}
        for key, (old, new) in changes.items():
            self.notes.append(f"{key} {old} -> {new} at UNet step {meta['step']}")
            self.log(f"note: {self.notes[-1]}")
        arch = ToyArch.from_dict(json.loads(meta["arch"]))
        refrozen = changes.get("text_encoder", (None, None))[1] == "frozen"
        switched = arch.prediction_type != self.cfg.prediction or "world layout" in changes or refrozen
        arch.prediction_type = self.cfg.prediction
        self.parts = build(arch, seed=self.cfg.seed)
        # back to the random initialisation a new state of this seed starts from
        fresh_text = {k: v.clone() for k, v in self.parts.text.state_dict().items()} if refrozen else None
        tensors = load_file(str(self.state_path))
        load_tensors(self.parts, tensors, prefix="raw.")
        if fresh_text is not None:
            self.parts.text.load_state_dict(fresh_text)
        # an average over weights of another objective or world would be neither: the EMA starts again here
        self.ema = {} if switched else {k[4:]: v.float() for k, v in tensors.items() if k.startswith("ema.")}
        self.phase, self.step, self.vae_step = meta["phase"], int(meta["step"]), int(meta["vae_step"])
        self.seconds = float(meta.get("seconds", 0))
        csv_path = self.state_path.with_suffix(".csv")
        if csv_path.is_file():
            with open(csv_path) as f:
                self.history = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        self.log(f"resumed {self.state_path}: phase {self.phase}, vae step {self.vae_step}, unet step {self.step}")

    def _write_csv(self) -> None:
        from ..files.atomic import write_text

        if not self.history:
            return
        keys = list(self.history[0])
        lines = [",".join(keys)] + [",".join(f"{row.get(k, float('nan')):.6g}" for k in keys) for row in self.history]
        write_text(self.state_path.with_suffix(".csv"), "\n".join(lines) + "\n")

    def ema_parts(self) -> ToyParts:
        parts = build(self.parts.arch, seed=self.cfg.seed)
        tensors = state_tensors(self.parts)
        tensors.update({k: v.cpu() for k, v in self.ema.items()})
        load_tensors(parts, tensors)
        return parts

    def model_meta(self) -> dict:
        recent = [h["loss"] for h in self.history[-200:] if h.get("phase") == 1]
        return {"level": self.cfg.level, "unet_steps": self.step, "vae_steps": self.vae_step, "batch": self.cfg.batch,
                "seed": self.cfg.seed, "train_seconds": round(self.seconds), "ema_decay": EMA_DECAY,
                "loss_recent": float(np.mean(recent)) if recent else None, "notes": self.notes,
                "learning": {k: getattr(self.cfg, k) for k in LEARN_KEYS}}

    # ----------------------------------------------------------------- phases
    def _clips(self, step: int, n: int, phase: str) -> tuple[list[np.ndarray], list[str]]:
        return render_clips(self.cfg, self.spec, self.parts.arch.size, step, n, phase)

    def _unet_batches(self):
        """(clips, captions) for steps self.step, self.step + 1, ...: rendered here, or ahead in worker processes."""
        data = StepClips(self.cfg, self.spec, self.parts.arch.size, self.step)
        if self.cfg.workers <= 0:
            return (data[k] for k in range(len(data)))
        return iter(torch.utils.data.DataLoader(data, batch_size=None, num_workers=self.cfg.workers,
                                                prefetch_factor=4, persistent_workers=False))

    def vae_step_fn(self, opt) -> float:
        step = self.vae_step
        gen = torch.Generator().manual_seed(self.cfg.seed * 7 + step)
        clips, _ = self._clips(step, max(1, self.cfg.vae_batch // 4), "vae")
        frames = _frames_tensor(clips).flatten(0, 1)
        pick = torch.randperm(frames.shape[0], generator=gen)[: self.cfg.vae_batch]
        x = frames[pick].to(self.device)
        vae = self.parts.vae.train()
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.mode()).sample  # deterministic: sampled latents taught the decoder to blur
        loss = vae_loss(rec, x) + 1e-6 * post.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    def finish_vae(self) -> None:
        self.parts.vae.eval().requires_grad_(False)
        clips, _ = self._clips(10**6, 32, "vae")
        with torch.no_grad():
            mean = self.parts.vae.encode(_frames_tensor(clips).flatten(0, 1).to(self.device)).latent_dist.mean
        set_latent_stats(self.parts, float(mean.mean()), float(mean.std()))
        self.log(f"VAE done: latent mean {float(mean.mean()):.3f}, std {float(mean.std()):.3f} -> normalised")
        self.phase = "unet"

    def unet_step_fn(self, opt, batch: tuple | None = None) -> float:
        """One step on ``batch`` = (uint8 clips [B, F, H, W, 3], captions) of this step, rendered here if None."""
        cfg, step, dev = self.cfg, self.step, self.device
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        rng = np.random.default_rng([cfg.seed, step])
        clips, caps = batch if batch is not None else self._clips(step, cfg.batch, "unet")
        caps = ["" if rng.random() < cfg.caption_dropout else c for c in caps]
        z = encode_latents(self.parts, _frames_tensor([np.asarray(c) for c in clips]).to(dev))
        b, f = z.shape[0], z.shape[2]
        t = draw_timesteps(b, len(self.alphas_cumprod), cfg.t_shift, gen)
        noise = torch.randn(z.shape, generator=gen).to(dev)  # drawn on the CPU: same numbers on every device
        ab = self.alphas_cumprod[t].view(b, 1, 1, 1, 1).to(dev)
        noisy = noised(z, noise, ab)
        goal = target(z, noise, ab, cfg.prediction)
        self.parts.unet.train()
        frozen = cfg.text_encoder == "frozen"
        self.parts.text.train(not frozen).requires_grad_(not frozen)
        with torch.set_grad_enabled(not frozen):
            cond = self.parts.text(self.parts.caption_ids(caps).to(dev))[0].repeat_interleave(f, dim=0)
        pred = self.parts.unet(noisy, t.to(dev), encoder_hidden_states=cond).sample
        weight = loss_weight(ab.flatten(), cfg.x0_floor, cfg.prediction)
        loss = (weight * (pred - goal).pow(2).mean(dim=(1, 2, 3, 4))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(self._trainable().values()), 1.0)
        opt.step()
        self._update_ema()
        return float(loss.detach())

    def _update_ema(self) -> None:
        decay = min(EMA_DECAY, (1 + self.step) / (10 + self.step))
        with torch.no_grad():
            for k, p in self._trainable().items():
                if k not in self.ema:
                    self.ema[k] = p.detach().clone()
                else:
                    self.ema[k].mul_(decay).add_(p.detach(), alpha=1 - decay)

    # ----------------------------------------------------------------- loop
    def run(self, stop=lambda: False, progress=None) -> str:
        """Trains until done or ``stop()``; returns "done" or "stopped" (state saved either way)."""
        last_save = time.monotonic()
        t_mark = time.monotonic()

        def tick(force=False):
            nonlocal last_save, t_mark
            now = time.monotonic()
            self.seconds += now - t_mark
            t_mark = now
            if force or now - last_save >= self.cfg.save_every:
                self.save()
                last_save = now

        if self.phase == "vae":
            opt = torch.optim.AdamW(self.parts.vae.parameters(), lr=self.cfg.vae_lr, weight_decay=0.0)
            while self.vae_step < self.cfg.vae_steps:
                if stop():
                    tick(force=True)
                    return "stopped"
                for g in opt.param_groups:  # cosine to 1/20: the last steps sharpen details
                    g["lr"] = self.cfg.vae_lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * self.vae_step / self.cfg.vae_steps)))
                loss = self.vae_step_fn(opt)
                self.vae_step += 1
                self.history.append({"phase": 0, "step": self.vae_step, "loss": loss})
                if progress:
                    progress("vae", self.vae_step, self.cfg.vae_steps, loss)
                tick()
            self.finish_vae()
            tick(force=True)
        groups = [{"params": [p for k, p in self._trainable().items() if k.startswith(part)], "mult": mult}
                  for part, mult in (("unet.", 1.0), ("text.", self.cfg.text_lr_mult))]
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.AdamW(groups, lr=self.cfg.lr, weight_decay=0.01)
        start = self.step
        batches = self._unet_batches()
        while self.step < self.cfg.steps:
            if stop():
                tick(force=True)
                return "stopped"
            warm = min(1.0, (self.step - start + 1) / self.cfg.warmup)  # also after a resume: moments are new
            for g in opt.param_groups:
                g["lr"] = self.cfg.lr * warm * g["mult"]
            loss = self.unet_step_fn(opt, next(batches))
            self.step += 1
            self.history.append({"phase": 1, "step": self.step, "loss": loss})
            if progress:
                progress("unet", self.step, self.cfg.steps, loss)
            tick()
        tick(force=True)
        return "done"
