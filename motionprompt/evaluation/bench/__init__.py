"""Cost of guidance (``python -m motionprompt bench``): plain and guided sampling of the same job in one process.

``run_bench`` samples the job once without guidance and once per preset with it (same model, seed,
steps, frames, size), then reports

* wall-time ratio guided / plain (the guided wall time excludes the bench's own disc-loss probe), and a
  steadier ``time_ratio_steady`` = (P + guidance time) / P, where P is the fastest execution of the plain
  sampling work seen in the process (the plain run, or a guided run minus its guidance time): on a
  shared CPU another process can slow one run by 2x, which the raw ratio inherits;
* peak-memory ratio guided / plain. On CUDA: ``torch.cuda.max_memory_allocated`` after
  ``reset_peak_memory_stats`` (tensors only: weights + activations). On CPU: the process's peak RSS
  during the run, read from ``VmHWM`` in ``/proc/self/status`` after resetting it by writing 5 to
  ``/proc/self/clear_refs`` (exact, kernel-tracked; weights, activations, allocator caches, libraries);
  where that reset is not allowed, ``VmRSS`` sampled every 5 ms by a thread. ``peak_mem_delta_ratio``
  compares only the rise above the RSS / allocation at the start of each run (the transient);
* where guidance time goes, from ``MotionGuide`` records (text encoder, UNet forward, VAE decode,
  flow, discriminator, backward, optimizer) with the backward split by gradient-arrival hooks into
  discriminator, flow, VAE, UNet and text-encoder parts; ``untimed`` is the remainder of the step
  time (pair sampling, bookkeeping). ``unet_share`` = (UNet forward + backward) / guidance time;
* the discriminator-loss reduction: per guided step, disc loss at iteration 0 (tokens as they entered
  the step) minus the disc loss with the tokens after the step's last update on the *same* pairs,
  latents and timestep (one extra no-grad forward per guided step, timed and subtracted), mean over
  steps (``disc_drop``) and summed (``disc_drop_total``). With a random discriminator it measures how
  well the optimizer moves the loss, not motion quality.

Parts: ``settings`` (the job, the model, each preset's config), ``memory`` (peak memory of one run),
``phases`` (where guidance time goes, with the backward split by gradient arrival), ``runs`` (the plain
and guided runs and the result dict), ``costs`` (ratios, step-costs and the projection), ``report`` (the
markdown tables), ``command`` (the CLI flags). The names below are the ones callers import.
"""

from __future__ import annotations

from .command import add_arguments, run, settings_from_args
from .costs import FRAME_LINEAR, step_costs
from .memory import MemoryMeter
from .phases import PHASES
from .report import format_report
from .runs import run_bench
from .settings import DEFAULT_JOBS, BenchSettings, build_model, guidance_config

__all__ = ["DEFAULT_JOBS", "FRAME_LINEAR", "PHASES", "BenchSettings", "MemoryMeter", "add_arguments", "build_model",
           "format_report", "guidance_config", "run", "run_bench", "settings_from_args", "step_costs"]
