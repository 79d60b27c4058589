"""The per-clip measures ``evaluate`` records and ``report`` plots, and which way each one is better."""

from __future__ import annotations

# metric -> higher is better? (None: no better side, reported as a change: the object's travel along the prompted
# direction, whose distance from the prompted one is ``speed_error``)
METRICS: dict[str, bool | None] = {
    "d_guide": True, "d_independent": True,
    "warp_error": False, "flicker": True, "smoothness": True,
    "visible_frac": True, "direction_ok": True, "displacement": None, "speed_error": False, "area_cv": False,
    "jerk": False, "colour_purity": True,
}
