"""Is a calibration result believable? (contract section 7, rules and order from request.md).

A multiplier pinned at 0.5 with MAE 4,668,684 % is `failed`, never `ok`, whatever the data
quality said.
"""

from __future__ import annotations

import math

from calreport.store.config import RealismConfig

MIN_MULT = 0.7
MAX_MULT = 1.6
MAX_MAE = 400.0  # percent
MAX_VEGA_MAE = 200.0  # percent

REASON_DATA_FAILED = "Data quality failed (schema/coverage issues)"
REASON_UNREALISTIC = "Unrealistic auto-calibration: multiplier or MAE outside sane range"
REASON_UNREALISTIC_LIVE = "Unrealistic live calibration: multiplier or MAE outside sane range"
REASON_DEGRADED = "Data quality degraded; use with caution"
REASON_OK = "Calibration within thresholds"


def _bad(x: float | None) -> bool:
    return x is not None and not math.isfinite(x)


def assess_calibration_realism(
    multiplier: float | None,
    mae_pct: float | None,
    vega_weighted_mae_pct: float | None,
    data_quality_status: str | None,
    *,
    thresholds: RealismConfig | None = None,
    kind: str = "auto",
) -> tuple[str, str]:
    """Return (status, reason) with status in ok / degraded / failed.

    Order: data quality failed -> failed; multiplier outside [min, max] or MAE / vega MAE above
    their caps -> failed; data quality degraded -> degraded; else ok. A missing or non-finite
    multiplier, or a non-finite error, is unrealistic too: there is nothing sane to apply.
    `kind="live"` only changes the wording of the unrealistic reason for live runs.
    """
    t = thresholds or RealismConfig(min_mult=MIN_MULT, max_mult=MAX_MULT, max_mae=MAX_MAE, max_vega_mae=MAX_VEGA_MAE)
    if data_quality_status == "failed":
        return "failed", REASON_DATA_FAILED
    if (
        multiplier is None
        or _bad(multiplier)
        or multiplier < t.min_mult
        or multiplier > t.max_mult
        or _bad(mae_pct)
        or _bad(vega_weighted_mae_pct)
        or (mae_pct is not None and mae_pct > t.max_mae)
        or (vega_weighted_mae_pct is not None and vega_weighted_mae_pct > t.max_vega_mae)
    ):
        return "failed", REASON_UNREALISTIC_LIVE if kind == "live" else REASON_UNREALISTIC
    if data_quality_status == "degraded":
        return "degraded", REASON_DEGRADED
    return "ok", REASON_OK
