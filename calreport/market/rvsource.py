"""Where a live run's RV_7d comes from, in order: --rv, --prices FILE, the root's price store
(`calreport prices fetch`), the harvest's forwards; and what the run records about it.

One home for that rule: `calreport calibrate`, `calreport price` and `calreport backtest` all
call resolve_rv.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from calreport.errors import CalreportError
from calreport.market.deribit import load_chart_data
from calreport.market.harvest import HARVEST_INDEX_SOURCE, rv_from_harvest
from calreport.market.prices import hv_at, rv_from_price_store
from calreport.market.rv import RealisedVol, manual_rv, realised_vol
from calreport.store.paths import Root
from calreport.timeutil import iso_ms


def rv_from_chart_file(path: Path, end_ms: int) -> RealisedVol:
    """--prices FILE: a get_tradingview_chart_data response (envelope or bare result)."""
    ticks, close = load_chart_data(path)
    return realised_vol(ticks, close, end_ms, source=f"chart:{Path(path).name}")


HARVEST_RV_WARNING = (
    "RV_7d from the harvest's nearest-expiry forwards, not a price series: "
    "run `calreport prices fetch --underlying {u}` for hourly closes"
)


def resolve_rv(
    root: Root, underlying: str, now_ms: int, prices: Path | None, rv: float | None,
    *, harvest: Callable[[int], RealisedVol] | None = None,
) -> RealisedVol:
    """RV_7d for a live run: --rv, else --prices FILE, else the root's price store
    (`calreport prices fetch`), else the harvest's forwards (an unreadable harvest is no RV).
    `harvest` replaces the harvest read (the backtest has the harvest in memory already)."""
    if rv is not None:
        return manual_rv(rv)
    if prices is not None:
        return rv_from_chart_file(prices, now_ms)
    stored = rv_from_price_store(root, underlying, now_ms)
    if stored is not None and stored.rv is not None:
        return stored
    try:
        return harvest(now_ms) if harvest is not None else rv_from_harvest(root, underlying, now_ms)
    except CalreportError as exc:
        return RealisedVol(None, 0, f"harvest (unreadable: {exc.problem})")


def rv_context(root: Root, underlying: str, now_ms: int, rvi: RealisedVol) -> dict[str, Any]:
    """rv_warning when RV fell back to the harvest's forwards; Deribit's own historical vol at the
    snapshot (from the price store) as a cross-check of RV_7d."""
    out: dict[str, Any] = {}
    if rvi.source.startswith("harvest") and rvi.source != HARVEST_INDEX_SOURCE:  # the index is a price series
        out["rv_warning"] = HARVEST_RV_WARNING.format(u=underlying)
    hv = hv_at(root, underlying, now_ms)
    if hv is not None:
        out["deribit_hv"], out["deribit_hv_ts"] = round(hv[0], 6), iso_ms(hv[1])
    return out
