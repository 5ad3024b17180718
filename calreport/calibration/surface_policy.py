"""The policy that delivers the fit (issue 20 item 4), as pure functions of numbers (no I/O, no models).

Proposed defaults (evidence: CALIBRATION_NOTES walk-forward tables, alpha 1 better than 0.5 and 0.3 in every
second-half cell on BTC and ETH, half-life 12 h worse everywhere):

    HALF_LIFE_HOURS = 1.0   smoothing in calendar time: weight of the new fit 1 - 0.5^(dt / 1 h);
                            an hourly run takes 50 %, a run a day after the last takes ~100 %
    SIGNIFICANT_SE = 2.0    a parameter whose change exceeds 2 SE (and min_delta) is *significant*:
                            it is applied whole (weight 1, no smoothing) in one apply
    STEP_CAP_SE = 6.0       a step larger than 6 SE (and larger than STEP_CAP_FLOOR) is capped there: a
                            jump the data cannot support is limited by the data's own uncertainty
    STEP_CAP_FLOOR = 0.10   relative floor of that cap (fraction of the applied value) when SE is tiny
    MIN_DELTA = 0.01        changes below this are noise: held (no churn)
    untouched defaults      (never applied: all 1.0) take the fit whole, no cap, no smoothing

    decide(new, applied, se, *, untouched, hours_since) -> Decision(values, action, reason)

`new`, `applied`, `se` are flat arrays over the same parameters (pillar levels then smile node values);
se may contain NaN (unknown: min_delta alone decides, the floor cap applies).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

HALF_LIFE_HOURS = 1.0
SIGNIFICANT_SE = 2.0
STEP_CAP_SE = 6.0
STEP_CAP_FLOOR = 0.10
MIN_DELTA = 0.01


@dataclass(frozen=True)
class Decision:
    values: np.ndarray  # what is applied (== applied when held)
    action: str  # "apply" or "hold"
    reason: str


def smoothing_weight(hours_since: float | None, half_life_hours: float = HALF_LIFE_HOURS) -> float:
    """Weight of the new fit: 1 - 0.5^(dt / half-life); no previous value (None) or half-life 0: 1."""
    if hours_since is None or half_life_hours <= 0:
        return 1.0
    return float(1.0 - 0.5 ** (max(hours_since, 0.0) / half_life_hours))


def step_cap(applied: np.ndarray, se: np.ndarray, *, cap_se: float = STEP_CAP_SE, floor: float = STEP_CAP_FLOOR) -> np.ndarray:
    """Largest step per parameter: max(cap_se x SE, floor x |applied|) (SE NaN: the floor)."""
    se = np.nan_to_num(np.asarray(se, dtype=np.float64), nan=0.0)
    return np.maximum(cap_se * se, floor * np.abs(np.asarray(applied, dtype=np.float64)))


def decide(
    new: np.ndarray, applied: np.ndarray, se: np.ndarray, *, untouched: bool, hours_since: float | None,
    half_life_hours: float = HALF_LIFE_HOURS, significant_se: float = SIGNIFICANT_SE, min_delta: float = MIN_DELTA,
    cap_se: float = STEP_CAP_SE, floor: float = STEP_CAP_FLOOR,
) -> Decision:
    new, applied = np.asarray(new, dtype=np.float64), np.asarray(applied, dtype=np.float64)
    se = np.broadcast_to(np.asarray(se, dtype=np.float64), new.shape)
    if untouched:
        return Decision(new.copy(), "apply", "first apply over untouched defaults: the fit whole")
    d = new - applied
    limit = np.maximum(min_delta, significant_se * np.nan_to_num(se, nan=0.0))
    significant = np.abs(d) >= limit
    if not significant.any():
        return Decision(applied.copy(), "hold", f"no change beyond max(min_delta, {significant_se:g} SE) (largest |d| {np.max(np.abs(d)):.4f})")
    alpha = smoothing_weight(hours_since, half_life_hours)
    # significant parameters move whole; the rest follow the calendar-time EWMA
    target = np.where(significant, new, applied + alpha * d)
    cap = step_cap(applied, se, cap_se=cap_se, floor=floor)
    step = np.clip(target - applied, -cap, cap)
    capped = int(np.count_nonzero(np.abs(target - applied) > cap + 1e-12))
    reason = f"{int(significant.sum())} significant change(s) applied whole; others smoothed at weight {alpha:.2f}"
    if capped:
        reason += f"; {capped} step(s) capped at max({cap_se:g} SE, {floor:g} x applied)"
    return Decision(applied + step, "apply", reason)
