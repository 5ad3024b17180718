"""Which quotes a calibration uses: the filters, in a fixed order, each drop counted once.

    select_quotes(q: QuoteArrays, now_ms, filters, underlying) -> Selection

A quote is counted under the first reason that drops it (DROP_REASONS order); `Selection.quotes`
keeps every quote that passes. All vectorised: one boolean mask per reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calreport.calibration.pricing import year_fraction
from calreport.market.quotes import QuoteArrays, parse_instrument_names
from calreport.model import FilterConfig
from calreport.timeutil import DAYS_PER_YEAR

DROP_REASONS = (
    "bad_name",
    "other_underlying",
    "linear",
    "option_type",
    "dte_range",
    "non_finite",
    "min_mark_price",
    "moneyness",
    "open_interest",
    "spread",
)


@dataclass(frozen=True)
class Selection:
    """Quotes that pass the filters, with their derived arrays, and what was dropped."""

    quotes: QuoteArrays
    T: np.ndarray  # years
    dte: np.ndarray  # days
    dropped: dict[str, int]
    total: int

    @property
    def n(self) -> int:
        return len(self.quotes)


def _is_linear(names: np.ndarray) -> np.ndarray:
    """BTC_USDC-... options are priced in USDC, not the coin: they cannot join a coin fit."""
    return np.array(["_" in n.split("-", 1)[0] if isinstance(n, str) else False for n in names], dtype=bool)


def select_quotes(q: QuoteArrays, now_ms: int | np.ndarray, filters: FilterConfig, underlying: str) -> Selection:
    """Apply the filters in order; a quote is counted under the first reason that drops it."""
    n = len(q)
    now = np.asarray(now_ms, dtype=np.float64)
    T = year_fraction(q.expiry_ms, now)
    dte = T * DAYS_PER_YEAR
    if q.name_code is not None and q.name_table is not None:  # per unique name, not per quote
        base = parse_instrument_names(q.name_table).base[q.name_code]
        linear = _is_linear(q.name_table)[q.name_code]
    else:
        base = parse_instrument_names(q.instrument).base
        linear = _is_linear(q.instrument)
    F, K, mark = q.underlying_price, q.strike, q.mark_price
    with np.errstate(invalid="ignore", divide="ignore"):
        log_m = np.abs(np.log(K / F))
        both = np.isfinite(q.bid) & np.isfinite(q.ask) & (q.bid > 0) & (q.ask > 0)
        mid = 0.5 * (q.bid + q.ask)
        rel_spread = np.where(both, (q.ask - q.bid) / mid, 0.0)
        types = {t.upper() for t in filters.option_types}
        type_ok = (q.is_call & ("C" in types)) | (~q.is_call & ("P" in types))
        oi = q.open_interest
        checks = {
            "bad_name": q.valid_name,
            "other_underlying": base == underlying.upper(),
            "linear": ~linear,
            "option_type": type_ok,
            "dte_range": (dte >= filters.min_dte) & (dte <= filters.max_dte),
            "non_finite": np.isfinite(mark) & (mark > 0) & np.isfinite(F) & (F > 0) & np.isfinite(K) & (K > 0),
            "min_mark_price": mark >= filters.min_mark_price,
            "moneyness": log_m <= filters.max_abs_log_moneyness,
            "open_interest": (oi >= filters.min_open_interest) | (filters.min_open_interest <= 0),
            "spread": ~both | (rel_spread <= filters.max_rel_spread),
        }
    keep = np.ones(n, dtype=bool)
    dropped: dict[str, int] = {}
    for reason in DROP_REASONS:  # per reason (ten), not per quote
        ok = checks[reason]
        lost = keep & ~ok
        dropped[reason] = int(np.count_nonzero(lost))
        keep &= ok
    return Selection(quotes=q.take(keep), T=T[keep], dte=dte[keep], dropped=dropped, total=n)


def dropped_text(dropped: dict[str, int]) -> str:
    """'non_finite 3, spread 1' (reasons that dropped nothing are left out), or 'none'."""
    parts = [f"{k} {v}" for k, v in dropped.items() if v]
    return ", ".join(parts) or "none"
