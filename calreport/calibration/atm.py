"""ATM implied vol from the marks: per expiry, and interpolated to a 7-day maturity."""

from __future__ import annotations

import math

import numpy as np

from calreport.market.quotes import QuoteArrays
from calreport.timeutil import DAYS_PER_YEAR

ATM_TARGET_DAYS = 7.0


def atm_iv_by_expiry(q: QuoteArrays, T: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(expiry_ms, T, ATM mark IV) per expiry: the out-of-the-money side's IV, linear in ln(K/F) at 0.

    Needs strikes on both sides of the forward; expiries without them are skipped.
    """
    F, K, iv = q.underlying_price, q.strike, q.mark_iv
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.log(K / F)
    otm = np.where(q.is_call, x >= 0, x < 0)
    ok = np.isfinite(x) & np.isfinite(iv) & (iv > 0) & otm & (T > 0)
    exps, Ts, ivs = [], [], []
    for e in np.unique(q.expiry_ms[ok]):  # per expiry (a handful), not per option
        sel = ok & (q.expiry_ms == e)
        xs, vs = x[sel], iv[sel]
        if not (np.any(xs <= 0) and np.any(xs >= 0)):
            continue
        order = np.argsort(xs)
        exps.append(int(e))
        Ts.append(float(T[sel][0]))
        ivs.append(float(np.interp(0.0, xs[order], vs[order])))
    return np.array(exps, dtype=np.int64), np.array(Ts), np.array(ivs)


def atm_iv_7d(q: QuoteArrays, T: np.ndarray, min_dte: float = 1.0) -> tuple[float | None, str]:
    """ATM mark IV at a 7-day maturity: linear in total variance between the bracketing expiries."""
    _, Ts, ivs = atm_iv_by_expiry(q, T)
    keep = Ts * DAYS_PER_YEAR >= min_dte
    Ts, ivs = Ts[keep], ivs[keep]
    if Ts.size == 0:
        return None, "none: no expiry with strikes on both sides of the forward"
    t7 = ATM_TARGET_DAYS / DAYS_PER_YEAR
    order = np.argsort(Ts)
    Ts, ivs = Ts[order], ivs[order]
    days = Ts * DAYS_PER_YEAR
    if Ts.size == 1 or t7 <= Ts[0] or t7 >= Ts[-1]:
        j = 0 if t7 <= Ts[0] else Ts.size - 1
        if abs(Ts[j] - t7) < 1e-9:
            return float(ivs[j]), f"expiry {days[j]:.1f}d"
        return float(ivs[j]), f"flat from nearest expiry {days[j]:.1f}d (7d outside {days[0]:.1f}-{days[-1]:.1f}d)"
    j = int(np.searchsorted(Ts, t7))
    t0, t1 = Ts[j - 1], Ts[j]
    w0, w1 = ivs[j - 1] ** 2 * t0, ivs[j] ** 2 * t1
    w = w0 + (w1 - w0) * (t7 - t0) / (t1 - t0)
    return float(math.sqrt(max(w, 0.0) / t7)), f"interpolated {days[j - 1]:.1f}d-{days[j]:.1f}d"
