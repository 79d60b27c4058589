"""The per-clip measures ``evaluate`` records and ``report`` plots, and which way each one is better."""

from __future__ import annotations

# metric -> higher is better?
METRICS: dict[str, bool] = {
    "d_guide": True, "d_independent": True,
    "warp_error": False, "flicker": True, "smoothness": True,
    "visible_frac": True, "direction_ok": True, "speed_error": False, "area_cv": False, "jerk": False,
    "colour_purity": True,
}
