"""The variance clock: time to expiry measured in variance-weighted days (pure numpy, no I/O).

Weekend hours (Saturday and Sunday, UTC) carry `weekend_weight` (w_we < 1) of a weekday hour's variance.
The weights are normalised so that a whole calendar week is 7 variance days:

    weekday weight a = 7 / (5 + 2 w_we),   weekend weight b = w_we x a

so tau ~= T on average and the band edges (calendar days) keep their meaning for long maturities; only
the front is re-timed. tau(now, expiry) = (C(expiry) - C(now)) / 365 with C the cumulative clock,
closed form per week (no loop over days):

    C(t) = weeks x 7 + a x min(r, 5) + b x max(r - 5, 0)   (days; r = days since the last Monday 00:00 UTC)

Expiries under one day: tau is measured by the same clock (no floor, no special band). The surface
quotes them on the front pillar's flat-level extrapolation (surface.py); calibration still excludes them
(filters.min_dte 1, calendar days). An expired option (T <= 0) gets tau <= 0 (the caller prices intrinsic).

Public API:
    clock_weights(weekend_weight) -> (a, b)
    variance_time(now_ms, expiry_ms, weekend_weight) -> tau in years (variance time)
    DEFAULT_WEEKEND_WEIGHT
"""

from __future__ import annotations

import numpy as np

MS_PER_DAY = 86_400_000
DAYS_PER_YEAR = 365.0
_MONDAY_EPOCH_MS = 4 * MS_PER_DAY  # 1970-01-05 00:00 UTC was a Monday (1970-01-01 a Thursday)

# Chosen from the shared snapshots (proto/measure.py --clock, proto/RESULTS.md): 0.35 minimises the <7d error on all three.
DEFAULT_WEEKEND_WEIGHT = 0.35


def clock_weights(weekend_weight: float) -> tuple[float, float]:
    """(weekday, weekend) variance per calendar day, normalised so a week is 7 variance days."""
    w = float(weekend_weight)
    if not (0.0 <= w <= 1.0 and np.isfinite(w)):
        raise ValueError(f"weekend_weight must be in [0, 1], got {weekend_weight!r}")
    a = 7.0 / (5.0 + 2.0 * w)
    return a, w * a


def _cumulative_days(t_ms: np.ndarray, a: float, b: float) -> np.ndarray:
    d = (np.asarray(t_ms, dtype=np.float64) - _MONDAY_EPOCH_MS) / MS_PER_DAY
    weeks = np.floor(d / 7.0)
    r = d - 7.0 * weeks
    return weeks * 7.0 + a * np.minimum(r, 5.0) + b * np.maximum(r - 5.0, 0.0)


def variance_time(now_ms: np.ndarray | float, expiry_ms: np.ndarray | float, weekend_weight: float = DEFAULT_WEEKEND_WEIGHT) -> np.ndarray:
    """Variance time to expiry in years (365 variance days); equals calendar time when weekend_weight = 1."""
    a, b = clock_weights(weekend_weight)
    return (_cumulative_days(expiry_ms, a, b) - _cumulative_days(now_ms, a, b)) / DAYS_PER_YEAR
