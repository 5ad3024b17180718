"""The root's price store: hourly closes of the perpetual and Deribit's historical volatility.

Why: RV_7d from the harvest's nearest-expiry forwards rests on whatever hours were harvested (11-26
returns on the shared data); a real hourly series gives a full week (168 returns).

Files (docs/FILES.md), append-only JSON lines like the history, appended under the file's lock in
one write, de-duplicated by time (a time already stored is never appended again), a torn last line
skipped by readers:
    data/prices/<U>/hourly_closes.jsonl            {"t": bar start ms, "close": price, "instrument": "BTC-PERPETUAL"}
    data/prices/<U>/historical_volatility.jsonl    {"t": ms, "vol_pct": Deribit's historical vol in percent}

    fetch_prices(root, underlying, days, client, now_ms) -> PricesFetched   (`calreport prices fetch`)
    read_closes(root, underlying) -> (ticks_ms, close)
    rv_from_price_store(root, underlying, end_ms) -> RealisedVol | None     (None: no store)
    hv_at(root, underlying, t_ms) -> (vol fraction, t_ms) | None           (the cross-check)
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calreport.errors import CalreportError
from calreport.market.deribit import DeribitClient, fetch_historical_volatility
from calreport.market.rv import RealisedVol, realised_vol
from calreport.store.files import append_line, locked
from calreport.store.paths import Root
from calreport.timeutil import MS_PER_DAY, MS_PER_HOUR

CLOSES = "hourly_closes.jsonl"
HV = "historical_volatility.jsonl"


def prices_dir(root: Root, underlying: str) -> Path:
    return root.path / "data" / "prices" / underlying


def perpetual(underlying: str) -> str:
    return f"{underlying.upper()}-PERPETUAL"


def _read_points(path: Path, key: str) -> tuple[np.ndarray, np.ndarray]:
    """(t, value) from a store file: unreadable lines skipped, the first value of a time kept, sorted."""
    if not path.exists():
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    seen: dict[int, float] = {}
    with path.open("rb") as fh:
        for line in fh:  # one small line per hour: a week is 168 lines
            try:
                row = json.loads(line)
                t, v = int(row["t"]), float(row[key])
            except (ValueError, KeyError, TypeError):
                continue
            seen.setdefault(t, v)
    t = np.array(sorted(seen), dtype=np.int64)
    return t, np.array([seen[int(x)] for x in t], dtype=np.float64)


def _append_new(path: Path, points: list[dict[str, Any]]) -> int:
    """Append the points whose time is not stored yet, in one write, under the file's lock."""
    with locked(path):
        have = set(_read_points(path, next(k for k in points[0] if k != "t"))[0].tolist()) if points else set()
        new = []
        for p in points:  # hourly points: a few hundred at most
            if p["t"] not in have:
                have.add(p["t"])
                new.append(p)
        if new:
            append_line(path, b"".join(json.dumps(p, separators=(",", ":")).encode() + b"\n" for p in new))
    return len(new)


@dataclass(frozen=True)
class PricesFetched:
    closes_added: int
    closes_total: int
    hv_added: int
    first_ms: int | None
    last_ms: int | None
    path: Path


def fetch_prices(root: Root, underlying: str, days: float, client: DeribitClient, now_ms: int) -> PricesFetched:
    """Hourly closes of the perpetual for the last `days` (finished hours only: the bar still
    forming has no final close) and Deribit's historical volatility, appended to the store."""
    if not 0 < days <= 60:
        raise CalreportError(f"--days must be in (0, 60], got {days:g}")
    start = now_ms - int(days * MS_PER_DAY)
    ticks, close = client.chart_data(perpetual(underlying), start, now_ms, "60")
    done = ticks + MS_PER_HOUR <= now_ms
    points = [{"t": int(t), "close": float(c), "instrument": perpetual(underlying)} for t, c in zip(ticks[done], close[done], strict=True)]
    d = prices_dir(root, underlying)
    added = _append_new(d / CLOSES, points)
    hv = fetch_historical_volatility(client, underlying)
    hv_added = _append_new(d / HV, [{"t": int(t), "vol_pct": float(v)} for t, v in hv])
    t_all, _ = _read_points(d / CLOSES, "close")
    return PricesFetched(
        added, int(t_all.size), hv_added, int(t_all[0]) if t_all.size else None, int(t_all[-1]) if t_all.size else None, d / CLOSES
    )


def read_closes(root: Root, underlying: str) -> tuple[np.ndarray, np.ndarray]:
    return _read_points(prices_dir(root, underlying) / CLOSES, "close")


def rv_from_price_store(root: Root, underlying: str, end_ms: int) -> RealisedVol | None:
    """RV_7d from the stored hourly closes (bars that closed by end_ms); None without a store."""
    t, c = read_closes(root, underlying)
    if t.size == 0:
        return None
    # a bar starting at t closes at t + 1 h: use it as that hour's close, never a bar still open at end_ms
    closed = t + MS_PER_HOUR <= end_ms
    return realised_vol(t[closed], c[closed], end_ms, source=f"prices:{perpetual(underlying)}")


def hv_at(root: Root, underlying: str, t_ms: int) -> tuple[float, int] | None:
    """Deribit's historical volatility (fraction) at or before t_ms, within a day; None if none."""
    t, v = _read_points(prices_dir(root, underlying) / HV, "vol_pct")
    i = int(np.searchsorted(t, t_ms, side="right")) - 1
    if i < 0 or t_ms - int(t[i]) > MS_PER_DAY:
        return None
    return float(v[i]) / 100.0, int(t[i])
