"""Which flow settings guidance runs with: one rule for the WebUI, the CLI and the bench.

A discriminator only knows the flow statistics it was trained on (backend, resolution, refinement
iterations all change them), so a checkpoint's own settings win over any preset. A user may still
ask for another resolution or iteration count on purpose (e.g. cheaper flow); that is allowed, but
it is never silent: the mismatch comes back as a note for the log and the infotext. Another
*backend* is refused, because its flow fields are not comparable at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .settings import FlowSettings


class FlowMismatch(ValueError):
    """The requested flow backend is not the one the discriminator was trained on."""


@dataclass
class FlowChoice:
    settings: FlowSettings
    notes: list[str] = field(default_factory=list)


def resolve_flow(disc_flow: FlowSettings | None, fallback: FlowSettings, backend: str | None = None,
                 size: int | None = None, iters: int | None = None) -> FlowChoice:
    """``disc_flow``: the checkpoint's settings (None: no checkpoint, e.g. a random test D).
    ``fallback``: what to use without a checkpoint (a preset's flow). ``backend/size/iters``: what the
    user explicitly asked for; None (or 0) means "no request"."""
    size, iters = size or None, iters or None
    if disc_flow is None:
        base = fallback
        chosen = FlowSettings(backend or base.backend, size or base.size, iters or base.iters)
        chosen.validate()
        return FlowChoice(chosen)
    if backend and backend != disc_flow.backend:
        raise FlowMismatch(f"the discriminator was trained on '{disc_flow.backend}' flow, '{backend}' was requested; "
                           f"leave the flow backend on auto or train a discriminator for '{backend}'")
    chosen = FlowSettings(disc_flow.backend, size or disc_flow.size, iters or disc_flow.iters)
    chosen.validate()
    notes = []
    if chosen.size != disc_flow.size:
        notes.append(f"flow size {chosen.size} requested, discriminator trained at {disc_flow.size}: "
                     "its scores are on flow statistics it was not trained on")
    if chosen.iters != disc_flow.iters:
        notes.append(f"flow iterations {chosen.iters} requested, discriminator trained with {disc_flow.iters}")
    return FlowChoice(chosen, notes)
