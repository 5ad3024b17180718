"""RV_7d: realised volatility of the index from hourly close-to-close log returns.

    rv = std(log(close[h] / close[h-1])) x sqrt(24 x 365)

over the hourly closes of the 7 days that end at the run's "now" (the snapshot time, never the
wall clock). Only returns between *adjacent* hours count: a gap in the prices (a harvest outage)
removes returns instead of inventing one large multi-hour return, so `n_returns` honestly says how
much history stood behind the number (a full week is 168). Too little history gives rv=None with
the count, never a silent constant; the caller decides whether that degrades or fails the run.

Public API:
    realised_vol(ticks_ms, close, end_ms, days=7, source="chart") -> RealisedVol
    rv_from_chart_file(path, end_ms) -> RealisedVol         (--prices FILE)
    rv_from_harvest(root, underlying, end_ms) -> RealisedVol (the harvest's underlying_price series)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from calreport.market.deribit import load_chart_data

MS_PER_HOUR = 3_600_000
HOURS_PER_YEAR = 24 * 365
WINDOW_DAYS = 7.0
MIN_RETURNS = 2  # below this there is no standard deviation at all


@dataclass(frozen=True)
class RealisedVol:
    rv: float | None  # annualised fraction, None when there are fewer than MIN_RETURNS returns
    n_returns: int
    source: str  # "chart:<file>", "harvest", "manual"
    start_ms: int | None = None  # first hourly close used
    end_ms: int | None = None  # last hourly close used

    @property
    def full_window(self) -> int:
        return int(WINDOW_DAYS * 24)


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
    keep = (hours >= end_ms - days * 86_400_000) & (hours <= end_ms)
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


def rv_from_chart_file(path: Path, end_ms: int) -> RealisedVol:
    """--prices FILE: a get_tradingview_chart_data response (envelope or bare result)."""
    ticks, close = load_chart_data(path)
    return realised_vol(ticks, close, end_ms, source=f"chart:{Path(path).name}")


def rv_from_harvest(root: object, underlying: str, end_ms: int) -> RealisedVol:
    """The harvest's underlying_price series (nearest-expiry forward per snapshot, hourly closes)."""
    from calreport.market.harvest import underlying_price_series

    ticks, close = underlying_price_series(root, underlying, end_ms, days=WINDOW_DAYS)  # type: ignore[arg-type]
    return realised_vol(ticks, close, end_ms, source="harvest")
