"""Error measures a desk reads: each strike once on its out-of-the-money side, and errors in vol space.

Why: every strike is quoted as a call and a put. The in-the-money twin has the same vega and the same
absolute error as the OTM one but a much larger mark, so its *relative* error is tiny and halves an
all-quotes average (BTC 2025-12-13: vMAE 7.70 % on all quotes vs 13.54 % OTM only). A desk also reads
errors in vol points, not in percent of premium.

Public API (pure numpy, no per-option Python loops; stable: the backtest copies this module):

    otm_mask(F, K, is_call) -> bool array
        calls with K >= F, puts with K < F: each strike exactly once, on its OTM side.
    mark_sigma(mark_iv, mark, F, K, T, is_call) -> sigma_mark
        Deribit's mark_iv (fraction) where it is a finite positive number, else the inverted mark.
    forward_delta(F, K, T, sigma, is_call) -> Black-76 forward delta (N(d1) for calls, N(d1) - 1 for puts).
    desk_errors(F, K, T, is_call, mark, market_iv, synthetic_sigma, *, band_index=None, band_names=(),
                bucket_edges=(0.10, 0.25)) -> DeskErrors

Units: prices in coin (as Deribit quotes), vols as fractions in, vol points (1 vp = 0.01 vol) and
percent out. Weights are Black-76 vega at the market IV (coin per 1.00 vol), independent of the
model, so two models are compared on the same weights.

    otm_vega_weighted_mae_pct = sum_OTM w |P_syn - mark| / mark / sum_OTM w x 100
    iv_error_vp               = sum_OTM w |sigma_syn - sigma_mark| / sum_OTM w x 100
    iv_bias_vp                = sum_OTM w (sigma_syn - sigma_mark) / sum_OTM w x 100
    all_vega_weighted_mae_pct = the first formula over every quote (continuity with older runs)

by_delta_bucket: per band (and "all"), the OTM quotes split by |forward delta| at the market IV:
put_lt10 (|D| < 10), put_10_25, atm (25D put to 25D call), call_10_25, call_lt10. Each bucket gives
samples, vega-weighted market and synthetic IV (%), the signed gap (vp) and the vega-weighted price
error (% of mark).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import ndtr

from calreport.calibration.pricing import black76_price, black76_vega, implied_vol

BUCKETS: tuple[str, ...] = ("put_lt10", "put_10_25", "atm", "call_10_25", "call_lt10")
BUCKET_LABELS: dict[str, str] = {
    "put_lt10": "<10D put",
    "put_10_25": "10-25D put",
    "atm": "ATM (25D put-25D call)",
    "call_10_25": "10-25D call",
    "call_lt10": "<10D call",
}
DEFAULT_BUCKET_EDGES: tuple[float, float] = (0.10, 0.25)
ALL = "all"


def _f(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=np.float64).reshape(-1)


def otm_mask(F: Any, K: Any, is_call: Any) -> np.ndarray:
    """True for calls with K >= F and puts with K < F (each strike once, on its OTM side)."""
    F, K = np.broadcast_arrays(np.asarray(F, dtype=np.float64), np.asarray(K, dtype=np.float64))
    c = np.broadcast_to(np.asarray(is_call, dtype=bool), F.shape)
    with np.errstate(invalid="ignore"):
        return np.where(c, K >= F, K < F)


def mark_sigma(mark_iv: Any, mark: Any, F: Any, K: Any, T: Any, is_call: Any) -> np.ndarray:
    """sigma_mark: Deribit's mark_iv (fraction) where finite and > 0, else the mark inverted (NaN if neither)."""
    iv = np.asarray(mark_iv, dtype=np.float64)
    good = np.isfinite(iv) & (iv > 0)
    if bool(good.all()):
        return iv.copy()
    inverted = implied_vol(mark, F, K, T, is_call)
    return np.where(good, iv, inverted)


def forward_delta(F: Any, K: Any, T: Any, sigma: Any, is_call: Any) -> np.ndarray:
    """Black-76 forward delta: N(d1) for calls, N(d1) - 1 for puts (NaN where undefined)."""
    F, K, T, sigma, c = np.broadcast_arrays(
        np.asarray(F, dtype=np.float64), np.asarray(K, dtype=np.float64), np.asarray(T, dtype=np.float64),
        np.asarray(sigma, dtype=np.float64), np.asarray(is_call, dtype=bool),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        s = sigma * np.sqrt(T)
        d1 = np.log(F / K) / s + 0.5 * s
        nd1 = ndtr(d1)
    out = np.where(c, nd1, nd1 - 1.0)
    return np.where(np.isfinite(d1) & (s > 0), out, np.nan)


@dataclass(frozen=True)
class BucketStats:
    """One delta bucket's errors (vega-weighted over its OTM quotes)."""

    samples: int
    market_iv_pct: float | None
    synthetic_iv_pct: float | None
    gap_vp: float | None  # signed, synthetic - market
    price_error_pct: float | None  # |synthetic - mark| / mark

    def to_dict(self) -> dict[str, Any]:
        return {
            "samples": self.samples, "market_iv_pct": self.market_iv_pct, "synthetic_iv_pct": self.synthetic_iv_pct,
            "gap_vp": self.gap_vp, "price_error_pct": self.price_error_pct,
        }


@dataclass(frozen=True)
class DeskErrors:
    """The desk measures of one set of quotes against one synthetic sigma per quote."""

    otm_samples: int
    otm_vega_weighted_mae_pct: float | None
    iv_error_vp: float | None
    iv_bias_vp: float | None
    all_vega_weighted_mae_pct: float | None
    by_delta_bucket: dict[str, dict[str, BucketStats]] = field(default_factory=dict)

    def to_fields(self) -> dict[str, Any]:
        """The LiveRun / AutoRun fields of the same names (plain JSON-able values)."""
        return {
            "otm_samples": self.otm_samples,
            "otm_vega_weighted_mae_pct": self.otm_vega_weighted_mae_pct,
            "iv_error_vp": self.iv_error_vp,
            "iv_bias_vp": self.iv_bias_vp,
            "by_delta_bucket": {g: {b: s.to_dict() for b, s in rows.items()} for g, rows in self.by_delta_bucket.items()},
        }

    to_model = to_fields  # the name the brief uses


def _wmean(values: np.ndarray, w: np.ndarray) -> float | None:
    s = float(w.sum())
    return float((values * w).sum() / s) if s > 0 else None


def _bucket_of(delta: np.ndarray, is_call: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """Index into BUCKETS per quote (-1 where the delta is unknown)."""
    lo, hi = float(edges[0]), float(edges[1])
    a = np.abs(delta)
    put = np.where(a < lo, 0, np.where(a < hi, 1, 2))
    call = np.where(a < lo, 4, np.where(a < hi, 3, 2))
    return np.where(np.isfinite(a), np.where(is_call, call, put), -1)


def desk_errors(
    F: Any,
    K: Any,
    T: Any,
    is_call: Any,
    mark: Any,
    market_iv: Any,
    synthetic_sigma: Any,
    *,
    band_index: Any = None,
    band_names: Sequence[str] = (),
    bucket_edges: Sequence[float] = DEFAULT_BUCKET_EDGES,
) -> DeskErrors:
    """OTM price and IV-space errors of Black-76(synthetic_sigma) against the marks.

    `market_iv` is sigma_mark (see mark_sigma); it also sets the vega weights and the deltas.
    `band_index` (int per quote, -1 outside every band) indexes `band_names`; without it only "all".
    Quotes whose mark, IV or vega is unusable count nowhere.
    """
    F, K, T, mark, miv = (_f(a) for a in (F, K, T, mark, market_iv))
    c = np.broadcast_to(np.asarray(is_call, dtype=bool).reshape(-1), F.shape)
    sig = np.broadcast_to(_f(synthetic_sigma), F.shape) if np.ndim(synthetic_sigma) else np.full(F.shape, float(synthetic_sigma))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        w = black76_vega(F, K, T, np.where(np.isfinite(miv) & (miv > 0), miv, np.nan))
        syn = black76_price(F, K, T, sig, c)
        rel = np.abs(syn - mark) / mark * 100.0
        gap = (sig - miv) * 100.0
    usable = np.isfinite(rel) & (mark > 0) & np.isfinite(w) & (w > 0) & np.isfinite(gap)
    w = np.where(usable, w, 0.0)
    rel = np.where(usable, rel, 0.0)
    gap = np.where(usable, gap, 0.0)
    otm = otm_mask(F, K, c) & usable
    wo = np.where(otm, w, 0.0)

    delta = forward_delta(F, K, T, miv, c)
    bucket = _bucket_of(delta, c, bucket_edges)
    groups: list[tuple[str, np.ndarray]] = [(ALL, otm)]
    if band_index is not None:
        bi = np.asarray(band_index).reshape(-1)
        groups += [(name, otm & (bi == i)) for i, name in enumerate(band_names)]
    by_bucket: dict[str, dict[str, BucketStats]] = {}
    for gname, gmask in groups:  # bands x buckets: a handful of masks, not options
        rows: dict[str, BucketStats] = {}
        for j, bname in enumerate(BUCKETS):
            m = gmask & (bucket == j)
            wm = np.where(m, w, 0.0)
            n = int(m.sum())
            rows[bname] = BucketStats(
                samples=n,
                market_iv_pct=_pct(_wmean(np.where(m, miv, 0.0), wm)),
                synthetic_iv_pct=_pct(_wmean(np.where(m, sig, 0.0), wm)),
                gap_vp=_wmean(gap, wm),
                price_error_pct=_wmean(rel, wm),
            )
        by_bucket[gname] = rows

    return DeskErrors(
        otm_samples=int(otm.sum()),
        otm_vega_weighted_mae_pct=_wmean(rel, wo),
        iv_error_vp=_wmean(np.abs(gap), wo),
        iv_bias_vp=_wmean(gap, wo),
        all_vega_weighted_mae_pct=_wmean(rel, w),
        by_delta_bucket=by_bucket,
    )


def _pct(v: float | None) -> float | None:
    return None if v is None else v * 100.0
