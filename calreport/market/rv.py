"""RV_7d: realised volatility of the index from hourly close-to-close log returns.

    rv = std(log(close[h] / close[h-1])) x sqrt(24 x 365)

over the hourly closes of the 7 days that end at the run's "now" (the snapshot time, never the
wall clock). Only returns between *adjacent* hours count: a gap in the prices (a harvest outage)
removes returns instead of inventing one large multi-hour return, so `n_returns` honestly says how
much history stood behind the number (a full week is 168). Too little history gives rv=None with
the count, never a silent constant; the caller decides whether that degrades or fails the run.

Public API:
    realised_vol(ticks_ms, close, end_ms, days=7, source="chart") -> RealisedVol
    manual_rv(value) -> RealisedVol                          (--rv X, checked)
Pure (no file I/O): the harvest's own series is harvest.rv_from_harvest, a chart file's
rvsource.rv_from_chart_file, and the order of the sources rvsource.resolve_rv.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from calreport.errors import CalreportError, excerpt
from calreport.timeutil import HOURS_PER_YEAR, MS_PER_DAY, MS_PER_HOUR

WINDOW_DAYS = 7.0
FULL_WEEK_RETURNS = int(WINDOW_DAYS * 24)  # hourly returns in a complete window
MIN_RETURNS = 2  # below this there is no standard deviation at all
MAX_MANUAL_RV = 10.0


@dataclass(frozen=True)
class RealisedVol:
    rv: float | None  # annualised fraction, None when there are fewer than MIN_RETURNS returns
    n_returns: int
    source: str  # "chart:<file>", "harvest", "manual"
    start_ms: int | None = None  # first hourly close used
    end_ms: int | None = None  # last hourly close used


def to_hourly(ticks_ms: np.ndarray, close: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Last price in each clock hour -> (hour start ms, close); input in any order."""
    t = np.asarray(ticks_ms, dtype=np.int64)
    c = np.asarray(close, dtype=np.float64)
    ok = np.isfinite(c) & (c > 0)
    t, c = t[ok], c[ok]
    if t.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.argsort(t, kind="stable")
    t, c = t[order], c[order]
    hour = t // MS_PER_HOUR
    last = np.ones(hour.size, dtype=bool)
    last[:-1] = hour[1:] != hour[:-1]
    return hour[last] * MS_PER_HOUR, c[last]


def realised_vol(
    ticks_ms: np.ndarray,
    close: np.ndarray,
    end_ms: int,
    *,
    days: float = WINDOW_DAYS,
    source: str = "chart",
) -> RealisedVol:
    """Annualised RV from the hourly closes within [end_ms - days, end_ms]."""
    hours, c = to_hourly(ticks_ms, close)
    keep = (hours >= end_ms - days * MS_PER_DAY) & (hours <= end_ms)
    hours, c = hours[keep], c[keep]
    if hours.size < 2:
        return RealisedVol(None, 0, source)
    adjacent = np.diff(hours) == MS_PER_HOUR
    r = np.diff(np.log(c))[adjacent]
    n = int(r.size)
    if n < MIN_RETURNS:
        return RealisedVol(None, n, source, int(hours[0]), int(hours[-1]))
    rv = float(np.std(r, ddof=1) * math.sqrt(HOURS_PER_YEAR))
    return RealisedVol(rv, n, source, int(hours[0]), int(hours[-1]))


def manual_rv(value: float) -> RealisedVol:
    """`--rv X`: an annualised vol given as a fraction, checked, with source "manual"."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and math.isfinite(value) and 0 < value < MAX_MANUAL_RV):
        raise CalreportError(f"--rv must be an annualised vol as a fraction in (0, 10), e.g. 0.43; got {excerpt(value, 40)}")
    return RealisedVol(float(value), 0, "manual")
