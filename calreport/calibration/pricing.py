"""Vectorised Black-76 in coin units, as Deribit quotes options.

Deribit's `mark_price` is the undiscounted (interest_rate 0) Black-76 USD price divided by the
forward F (`underlying_price`). So in coin units, with k = K / F:

    call = N(d1) - k N(d2),  put = k N(-d2) - N(-d1),  d1,2 = (-ln k) / s +- s / 2,  s = sigma sqrt(T)

and vega (coin per 1.00 of vol) is phi(d1) sqrt(T). Comparing a USD model price with a coin mark is
the unit error that produced "multiplier 0.5000, MAE 4,668,684 %" in the old system.

Public API (all numpy-broadcasting, no per-option Python loops):
    year_fraction(expiry_ms, now_ms) -> T in 365-day years
    black76_price(F, K, T, sigma, is_call) -> coin price
    black76_vega(F, K, T, sigma) -> coin per 1.00 vol
    implied_vol(price_coin, F, K, T, is_call) -> sigma (NaN outside no-arbitrage bounds)

implied_vol works on Black's normalised price b(x, s) = price_usd / sqrt(F K) of the
out-of-the-money side (x = -|ln(F/K)| <= 0), split at the inflection point s_c = sqrt(2|x|):
- above it b is concave in s: Halley on b(s) - beta (monotone from the left);
- below it b is convex and tiny: Halley on 1/ln b(s) - 1/ln beta, which is nearly linear in s^2,
  with ln b evaluated via erfcx so deep out-of-the-money prices never underflow
  (b = exp(x/2 - d1^2/2) (erfcx(-d1/sqrt2) - erfcx(-d2/sqrt2)) / 2 while d2 < d1 < 0).
Every step is kept inside a per-option bracket (bisection when a step would leave it).
"""

from __future__ import annotations

import numpy as np
from scipy.special import erfcx, ndtr

from calreport.timeutil import MS_PER_YEAR

_SQRT2 = np.sqrt(2.0)
_SQRT2PI = np.sqrt(2.0 * np.pi)
_MAX_ITER = 40
_TOL = 4e-16


def year_fraction(expiry_ms: np.ndarray | int | float, now_ms: np.ndarray | int | float) -> np.ndarray:
    """Time to expiry in years of 365 days (negative when expired)."""
    return (np.asarray(expiry_ms, dtype=np.float64) - np.asarray(now_ms, dtype=np.float64)) / MS_PER_YEAR


def _phi(d: np.ndarray) -> np.ndarray:
    return np.exp(-0.5 * d * d) / _SQRT2PI


def black76_price(F, K, T, sigma, is_call) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Undiscounted Black-76 price / F, i.e. the option price in the base coin.

    T <= 0 or sigma <= 0 gives intrinsic value; non-finite inputs give NaN.
    """
    F, K, T, sigma, is_call = np.broadcast_arrays(
        np.asarray(F, dtype=np.float64),
        np.asarray(K, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
        np.asarray(sigma, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = K / F
        s = sigma * np.sqrt(np.maximum(T, 0.0))
        live = s > 0  # False for NaN
        if live.all() and (k > 0).all() and np.isfinite(k).all() and np.isfinite(s).all():
            return _price_live(k, s, is_call)  # the common case: no guards per element
        safe_s = np.where(live, s, 1.0)
        safe_k = np.where(k > 0, k, 1.0)
        price = _price_live(safe_k, safe_s, is_call)
    intrinsic = np.where(is_call, np.maximum(1.0 - k, 0.0), np.maximum(k - 1.0, 0.0))
    out = np.where(live, price, intrinsic)
    return np.where(np.isfinite(s) & np.isfinite(k) & (F > 0) & (K > 0), out, np.nan)


def _price_live(k: np.ndarray, s: np.ndarray, is_call: np.ndarray) -> np.ndarray:
    """w (N(w d1) - k N(w d2)) with w = +1 for calls, -1 for puts: two ndtr calls per option
    instead of four, and no put-call parity (which would lose tiny out-of-the-money puts)."""
    d1 = -np.log(k) / s + 0.5 * s
    w = np.where(is_call, 1.0, -1.0)
    wd1 = w * d1
    return w * (ndtr(wd1) - k * ndtr(wd1 - w * s))


def black76_price_total(k: np.ndarray, total_sd: np.ndarray, is_call: np.ndarray) -> np.ndarray:
    """Coin price from K/F and the total deviation sigma sqrt(T) = sqrt(w), for clean inputs only (k > 0,
    total_sd > 0): the surface quotes w itself, so the engine skips sigma x sqrt(T) and the guards."""
    return _price_live(k, total_sd, is_call)


def black76_vega(F, K, T, sigma) -> np.ndarray:  # type: ignore[no-untyped-def]
    """d(coin price)/d(sigma) = phi(d1) sqrt(T): coin per 1.00 (100 vol points) of vol."""
    F, K, T, sigma = np.broadcast_arrays(*(np.asarray(a, dtype=np.float64) for a in (F, K, T, sigma)))
    sqrt_t = np.sqrt(np.maximum(T, 0.0))
    s = sigma * sqrt_t
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = -np.log(K / F) / s + 0.5 * s
        vega = _phi(d1) * sqrt_t
    return np.where((s > 0) & np.isfinite(vega), vega, 0.0)


# --------------------------------------------------------------------------- implied vol


def _b_concave(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised OTM call b(x, s), its first and second s-derivatives (x <= 0)."""
    d1 = x / s + 0.5 * s
    d2 = d1 - s
    ex = np.exp(0.5 * x)
    b = ex * ndtr(d1) - ndtr(d2) / ex
    b1 = ex * _phi(d1)
    b2 = b1 * d1 * d2 / s
    return b, b1, b2


def _log_b_convex(x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ln b, q = b'/b and q' for d2 < d1 < 0 (s below the inflection point), without underflow."""
    d1 = x / s + 0.5 * s
    d2 = d1 - s
    diff = 0.5 * (erfcx(-d1 / _SQRT2) - erfcx(-d2 / _SQRT2))
    log_b = 0.5 * x - 0.5 * d1 * d1 + np.log(diff)
    q = 1.0 / (_SQRT2PI * diff)
    dq = q * d1 * d2 / s - q * q
    return log_b, q, dq


def implied_vol(price_coin, F, K, T, is_call) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Black-76 implied vol (fraction) of a coin price; NaN outside the no-arbitrage bounds.

    A price at or below intrinsic, at or above the upper bound (1 coin for a call, K/F for a put),
    T <= 0 or non-finite input gives NaN.
    """
    price, F, K, T, is_call = np.broadcast_arrays(
        np.asarray(price_coin, dtype=np.float64),
        np.asarray(F, dtype=np.float64),
        np.asarray(K, dtype=np.float64),
        np.asarray(T, dtype=np.float64),
        np.asarray(is_call, dtype=bool),
    )
    shape = price.shape
    price, F, K, T, is_call = (a.reshape(-1) for a in (price, F, K, T, is_call))
    out = np.full(price.shape, np.nan)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        k = K / F
        # out-of-the-money side via parity (c - p = 1 - k in coin)
        otm = price - np.where(is_call, np.maximum(1.0 - k, 0.0), np.maximum(k - 1.0, 0.0))
        x = -np.abs(np.log(k))
        beta = otm / np.sqrt(k)  # normalised price of the OTM call at x <= 0
        upper = np.exp(0.5 * x)
        ok = np.isfinite(beta) & np.isfinite(T) & (T > 0) & (beta > 0) & (beta < upper)
        idx = np.flatnonzero(ok)
        if idx.size:
            s = _solve_normalised(x[idx], beta[idx])
            out[idx] = s / np.sqrt(T[idx])
    return out.reshape(shape)


# Initial guesses come from two tables of the exact inverse, built once per process by evaluating
# b forward on a dense grid (no iteration): rows are ln a with a = |x| (fine near the money), columns are a
# price coordinate in [0, 1]. Bilinear interpolation lands within ~1e-5 of the root almost
# everywhere, so two Halley steps (cubic convergence) reach machine precision; the rare rest
# (extreme corners of the tables) goes through the bracketed loop.
_NT = 192  # rows (moneyness)
_NC = 256  # columns (price coordinate)
_LOG_A_MIN, _LOG_A_MAX = np.log(1e-7), np.log(20.0)  # outside, the bracketed loop finishes the job
_tables: tuple[np.ndarray, np.ndarray] | None = None


def _build_tables() -> tuple[np.ndarray, np.ndarray]:
    """convex[i, j]: (s / s_c)^2 at rho = ln b_c / ln beta; concave[i, j]: 1 / (1 + s - s_c) at
    tau = (beta - b_c) / (e^(x/2) - b_c). Both monotone in the column coordinate."""
    a = np.exp(np.linspace(_LOG_A_MIN, _LOG_A_MAX, _NT))
    cols = np.linspace(0.0, 1.0, _NC)
    dense = 4000
    y = np.linspace(0.0, 1.0, dense + 1)[1:]  # (s/s_c)^2, convex side
    v = np.linspace(0.0, 1.0, dense + 1)[1:]  # 1/(1+s-s_c), concave side
    convex = np.empty((_NT, _NC))
    concave = np.empty((_NT, _NC))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        x = -a[:, None]
        s_c = np.sqrt(2.0 * a)[:, None]
        b_c = _b_concave(x, np.where(s_c > 0, s_c, 1.0))[0]
        b_c = np.where(s_c > 0, b_c, 0.0)
        # convex side
        s_cv = s_c * np.sqrt(y)[None, :]
        log_b = _log_b_convex(np.broadcast_to(x, s_cv.shape), np.where(s_cv > 0, s_cv, 1.0))[0]
        rho = np.log(b_c) / log_b
        # concave side
        s_cc = s_c + 1.0 / v[None, :] - 1.0
        b = _b_concave(np.broadcast_to(x, s_cc.shape), s_cc)[0]
        tau = (b - b_c) / (np.exp(0.5 * x) - b_c)
    for i in range(_NT):  # once per process, over table rows (not options)
        r = np.concatenate([[0.0], rho[i]])
        yy = np.concatenate([[0.0], y])
        good = np.isfinite(r)
        convex[i] = np.interp(cols, np.maximum.accumulate(r[good]), yy[good])
        tt = np.concatenate([tau[i][::-1], [0.0]])  # v descending -> tau ascending, v=1 is tau=0
        vv = np.concatenate([v[::-1], [1.0]])
        order = np.argsort(tt, kind="stable")
        tt, vv = tt[order], vv[order]
        good = np.isfinite(tt)
        concave[i] = np.interp(cols, np.maximum.accumulate(tt[good]), vv[good])
    return convex, concave


def _lookup(table: np.ndarray, a: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a table at row coordinate ln a (a = |x|) and column coordinate c."""
    with np.errstate(divide="ignore"):
        t = (np.clip(np.log(a), _LOG_A_MIN, _LOG_A_MAX) - _LOG_A_MIN) * ((_NT - 1) / (_LOG_A_MAX - _LOG_A_MIN))
    u = np.clip(c, 0.0, 1.0) * (_NC - 1)
    i = np.minimum(t.astype(np.intp), _NT - 2)
    j = np.minimum(u.astype(np.intp), _NC - 2)
    ft, fu = t - i, u - j
    flat = table.reshape(-1)
    k = i * _NC + j
    top = flat[k] * (1.0 - fu) + flat[k + 1] * fu
    bottom = flat[k + _NC] * (1.0 - fu) + flat[k + _NC + 1] * fu
    return top * (1.0 - ft) + bottom * ft


def _halley_concave(x: np.ndarray, s: np.ndarray, beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Halley step on b(s) - beta; returns (step, f) (f < 0 means s is too low)."""
    b, b1, b2 = _b_concave(x, s)
    f = b - beta
    newton = -f / b1
    return newton / np.maximum(1.0 + 0.5 * newton * b2 / b1, 0.5), f


def _halley_convex(x: np.ndarray, s: np.ndarray, inv_log_beta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One Halley step on h = 1/ln b(s) - 1/ln beta; returns (step, -h) (so < 0 means s too low)."""
    log_b, q, dq = _log_b_convex(x, s)
    inv = 1.0 / log_b
    h = inv - inv_log_beta
    h1 = -q * inv * inv
    h2 = (-dq + 2.0 * q * q * inv) * inv * inv
    newton = -h / h1
    return newton / np.maximum(1.0 + 0.5 * newton * h2 / h1, 0.5), -h


def _solve_normalised(x: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """s = sigma sqrt(T) with b(x, s) = beta, for x <= 0 and 0 < beta < exp(x/2)."""
    global _tables
    if _tables is None:
        _tables = _build_tables()
    convex_table, concave_table = _tables
    a = -x
    s_c = np.sqrt(2.0 * a)
    b_c = _b_concave(x, np.where(s_c > 0, s_c, 1.0))[0]
    b_c = np.where(s_c > 0, b_c, 0.0)
    convex = beta < b_c
    s = np.empty_like(x)
    converged = np.zeros(x.shape, dtype=bool)

    iv = np.flatnonzero(convex)
    if iv.size:
        xv, scv = x[iv], s_c[iv]
        inv_lb = 1.0 / np.log(beta[iv])
        y = _lookup(convex_table, a[iv], np.log(b_c[iv]) * inv_lb)
        sv = scv * np.sqrt(np.clip(y, 1e-12, 1.0))
        for _ in range(2):
            step = _halley_convex(xv, sv, inv_lb)[0]
            sv = sv + step
        s[iv] = sv
        converged[iv] = np.isfinite(sv) & (np.abs(step) <= 1e-5 * sv) & (sv > 0) & (sv <= scv)
    ic = np.flatnonzero(~convex)
    if ic.size:
        xc, scc, bc = x[ic], s_c[ic], beta[ic]
        tau = (bc - b_c[ic]) / (np.exp(0.5 * xc) - b_c[ic])
        v = _lookup(concave_table, a[ic], tau)
        sc = scc + 1.0 / np.clip(v, 1e-3, 1.0) - 1.0
        for _ in range(2):
            step = _halley_concave(xc, sc, bc)[0]
            sc = sc + step
        s[ic] = sc
        converged[ic] = np.isfinite(sc) & (np.abs(step) <= 1e-5 * sc) & (sc >= scc)

    rest = np.flatnonzero(~converged)
    if rest.size:
        s[rest] = _bracketed(x[rest], beta[rest], s_c[rest], convex[rest])
    return s


def _bracketed(x: np.ndarray, beta: np.ndarray, s_c: np.ndarray, convex: np.ndarray) -> np.ndarray:
    """Safeguarded Halley: each option keeps a bracket [lo, hi] and bisects when a step leaves it."""
    inv_log_beta = 1.0 / np.log(beta)
    lo = np.where(convex, 0.0, s_c)
    hi = np.where(convex, s_c, np.inf)
    s = np.where(convex, 0.5 * s_c, s_c + 1.0)
    active = np.arange(x.size)
    for _ in range(_MAX_ITER):
        if active.size == 0:
            break
        xa, sa, cv = x[active], s[active], convex[active]
        step = np.empty(active.size)
        too_low = np.empty(active.size, dtype=bool)
        ic = np.flatnonzero(~cv)
        if ic.size:
            st, f = _halley_concave(xa[ic], sa[ic], beta[active[ic]])
            step[ic], too_low[ic] = st, f < 0
        iv = np.flatnonzero(cv)
        if iv.size:
            st, g = _halley_convex(xa[iv], sa[iv], inv_log_beta[active[iv]])
            step[iv], too_low[iv] = st, g < 0
        la, ha = lo[active], hi[active]
        la = np.where(too_low, np.maximum(la, sa), la)
        ha = np.where(too_low, ha, np.minimum(ha, sa))
        lo[active], hi[active] = la, ha
        new = sa + step
        bad = ~np.isfinite(new) | (new <= la) | (new >= ha)
        bisect = np.where(np.isfinite(ha), 0.5 * (la + ha), 2.0 * np.maximum(sa, la) + 1.0)
        new = np.where(bad, bisect, new)
        s[active] = new
        done = (np.abs(new - sa) <= _TOL * new + 1e-300) | (np.isfinite(ha) & (ha - la <= _TOL * ha))
        active = active[~done]
    return s


def black76_price_vega_live(k: np.ndarray, sqrt_t: np.ndarray, sigma: np.ndarray, sign: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(coin price, vega) for clean inputs only (k = K/F > 0, sqrt_t > 0, sigma > 0; sign +1 call, -1 put),
    sharing d1 and skipping black76_price's guards: the inner loop of a fit that checked its inputs once."""
    s = sigma * sqrt_t
    d1 = -np.log(k) / s + 0.5 * s
    wd1 = sign * d1
    price = sign * (ndtr(wd1) - k * ndtr(wd1 - sign * s))
    return price, _phi(d1) * sqrt_t
