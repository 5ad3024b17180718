"""The multiplier fit and the error metrics, on arrays (all vectorised, no per-option loops).

    vega_weights(F, K, T, market_iv, fallback_sigma) -> coin vega per 1.00 vol at the market's IV
        (weights do not depend on the multiplier being tried, so the objective is well defined).
    market_iv(q, T) -> IV of each mark (Deribit's rounded mark_iv where inversion fails).
    fit_multiplier(F, K, T, is_call, mark, base_sigma, weights, *, bounds=(0.5, 3.0)) -> FitResult
        minimises the vega-weighted mean |synthetic - mark| / mark over sigma = base_sigma x m:
        the objective is evaluated on a geometric grid of m for all quotes at once (2-D
        broadcasting, chunked to bound memory), then refined by bounded Brent around the best
        grid point. `base_sigma` may be a scalar RV or one RV per quote. `on_bound` is True
        when the optimum sits on a bound.
    group_metrics(mark, synthetic, weights, market_iv, synthetic_iv) -> GroupMetrics
        samples, mae_pct, bias_pct, vega_weighted_mae_pct, mae_vol_points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from calreport.calibration.pricing import black76_price, black76_vega, implied_vol
from calreport.market.quotes import QuoteArrays
from calreport.model import GroupMetrics

GRID_POINTS = 33  # geometric step ~5.8 % over [0.5, 3.0]; Brent refines inside the best cell
MAX_GRID_CELLS = 2_000_000  # grid points x quotes evaluated at once


def vega_weights(F, K, T, market_iv, fallback_sigma) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Vega (coin per 1.00 vol) at the market's IV; at fallback_sigma where the IV is unusable."""
    iv = np.asarray(market_iv, dtype=np.float64)
    sigma = np.where(np.isfinite(iv) & (iv > 0), iv, fallback_sigma)
    return black76_vega(F, K, T, sigma)


def market_iv(q: QuoteArrays, T: np.ndarray) -> np.ndarray:
    """IV of the mark itself (exactly the price compared); Deribit's rounded mark_iv where it fails."""
    iv = implied_vol(q.mark_price, q.underlying_price, q.strike, T, q.is_call)
    return np.where(np.isfinite(iv), iv, q.mark_iv)


def group_metrics(
    mark: np.ndarray,
    synthetic: np.ndarray,
    weights: np.ndarray,
    market_iv_: np.ndarray | None = None,
    synthetic_iv: np.ndarray | None = None,
    *,
    recommended: float | None = None,
    on_bound: bool | None = None,
) -> GroupMetrics:
    """Errors of synthetic vs mark, in percent of the mark (vol points for the IV gap)."""
    n = int(mark.size)
    if n == 0:
        return GroupMetrics(samples=0, recommended=recommended, on_bound=on_bound)
    rel = (synthetic - mark) / mark * 100.0
    wsum = float(weights.sum())
    vmae = float((np.abs(rel) * weights).sum() / wsum) if wsum > 0 else None
    vol_pts = None
    if market_iv_ is not None and synthetic_iv is not None:
        gap = np.abs(synthetic_iv - market_iv_) * 100.0
        gap = gap[np.isfinite(gap)]
        vol_pts = float(gap.mean()) if gap.size else None
    return GroupMetrics(
        samples=n,
        mae_pct=float(np.abs(rel).mean()),
        bias_pct=float(rel.mean()),
        vega_weighted_mae_pct=vmae,
        mae_vol_points=vol_pts,
        recommended=recommended,
        on_bound=on_bound,
    )


@dataclass(frozen=True)
class FitResult:
    multiplier: float | None  # None when there is nothing to fit (no quotes or zero vega)
    on_bound: bool
    objective: float | None  # vega-weighted MAE % at the optimum
    samples: int


def _objective_grid(F, K, T, is_call, mark, base_sigma, w, grid) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Vega-weighted MAE % for every multiplier in `grid`, all quotes at once (chunked)."""
    n = mark.size
    out = np.empty(grid.size)
    step = max(1, MAX_GRID_CELLS // max(n, 1))
    wsum = w.sum()
    for lo in range(0, grid.size, step):  # loop over grid chunks, not options
        m = grid[lo : lo + step, None]
        syn = black76_price(F[None, :], K[None, :], T[None, :], base_sigma[None, :] * m, is_call[None, :])
        out[lo : lo + step] = (np.abs(syn - mark[None, :]) / mark[None, :] * w[None, :]).sum(axis=1) / wsum * 100.0
    return out


def fit_multiplier(
    F: np.ndarray,
    K: np.ndarray,
    T: np.ndarray,
    is_call: np.ndarray,
    mark: np.ndarray,
    base_sigma: np.ndarray | float,
    weights: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.5, 3.0),
    grid_points: int = GRID_POINTS,
) -> FitResult:
    """The multiplier m in [lo, hi] minimising the vega-weighted mean |BS(base_sigma m) - mark| / mark."""
    F, K, T, mark, w = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (F, K, T, mark, weights))
    is_call = np.asarray(is_call, dtype=bool).reshape(-1)
    base = np.broadcast_to(np.asarray(base_sigma, dtype=np.float64), F.shape).reshape(-1)
    n = int(mark.size)
    ok = np.isfinite(w) & (w >= 0)
    w = np.where(ok, w, 0.0)
    if n == 0 or not w.sum() > 0:
        return FitResult(None, False, None, n)
    lo, hi = float(bounds[0]), float(bounds[1])
    grid = np.geomspace(lo, hi, grid_points)
    values = _objective_grid(F, K, T, is_call, mark, base, w, grid)
    i = int(np.nanargmin(values))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]

    def f(m: float) -> float:
        return float(_objective_grid(F, K, T, is_call, mark, base, w, np.array([m]))[0])

    res = minimize_scalar(f, bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    best_m, best_v = (float(res.x), float(res.fun)) if res.fun <= values[i] else (float(grid[i]), float(values[i]))
    on_bound = best_m - lo <= 1e-4 * lo or hi - best_m <= 1e-4 * hi
    return FitResult(best_m, bool(on_bound), best_v, n)


OBJECTIVES = ("price_vega_rel", "otm_iv_vega")


def fit_multiplier_iv(
    base_sigma: np.ndarray | float,
    market_sigma: np.ndarray,
    weights: np.ndarray,
    *,
    bounds: tuple[float, float] = (0.5, 3.0),
) -> FitResult:
    """The multiplier m in [lo, hi] minimising the vega-weighted mean |base_sigma m - market_sigma|.

    Why closed form: sum w |b m - s| = sum (w b) |m - s / b|, so the optimum is the weighted median of
    s / b with weights w b (exact, no grid), then clipped to the bounds (the objective is convex).
    The caller passes the quotes it wants (the OTM ones for fit.objective = otm_iv_vega).
    `objective` is the vega-weighted mean |IV gap| in vol points at the optimum.
    """
    s = np.asarray(market_sigma, dtype=np.float64).reshape(-1)
    b = np.broadcast_to(np.asarray(base_sigma, dtype=np.float64), s.shape).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    ok = np.isfinite(s) & (s > 0) & np.isfinite(b) & (b > 0) & np.isfinite(w) & (w > 0)
    n = int(s.size)
    if not ok.any():
        return FitResult(None, False, None, n)
    ratio, ww = s[ok] / b[ok], w[ok] * b[ok]
    order = np.argsort(ratio, kind="stable")
    ratio, ww = ratio[order], ww[order]
    cum = np.cumsum(ww)
    m = float(ratio[int(np.searchsorted(cum, 0.5 * cum[-1]))])
    lo, hi = float(bounds[0]), float(bounds[1])
    m = min(max(m, lo), hi)
    objective = float((w[ok] * np.abs(b[ok] * m - s[ok])).sum() / w[ok].sum() * 100.0)
    on_bound = m - lo <= 1e-4 * lo or hi - m <= 1e-4 * hi
    return FitResult(m, bool(on_bound), objective, n)
