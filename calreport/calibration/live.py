"""Live calibration: the synthetic engine's prices against one Deribit snapshot.

The synthetic price of an option is Black-76 in coin units (pricing.py) with F = underlying_price,
T = time to 08:00 UTC of the expiry date in 365-day years, sigma = RV_7d x multiplier(band). The
snapshot's "now" is its newest creation_timestamp, never the wall clock.

Reusable pieces (auto.py uses them on harvested quotes; all vectorised, no per-option loops):

    select_quotes(q: QuoteArrays, now_ms, filters, underlying) -> Selection
        filters in a fixed order, each dropped quote counted once under the first reason
        (bad_name, other_underlying, linear, option_type, dte_range, non_finite, min_mark_price,
        moneyness, open_interest, spread). `Selection.quotes` keeps every quote that passes.
    vega_weights(F, K, T, market_iv, fallback_sigma) -> coin vega per 1.00 vol at the market's IV
        (weights do not depend on the multiplier being tried, so the objective is well defined).
    fit_multiplier(F, K, T, is_call, mark, base_sigma, weights, *, bounds=(0.5, 3.0)) -> FitResult
        minimises the vega-weighted mean |synthetic - mark| / mark over sigma = base_sigma x m:
        the objective is evaluated on a geometric grid of m for all quotes at once (2-D
        broadcasting, chunked to bound memory), then refined by bounded Brent around the best
        grid point. `base_sigma` may be a scalar RV or one RV per quote. `on_bound` is True
        when the optimum sits on a bound.
    group_metrics(mark, synthetic, weights, market_iv, synthetic_iv) -> GroupMetrics
        samples, mae_pct, bias_pct, vega_weighted_mae_pct, mae_vol_points.
    multipliers_for_dte(dte, entry_or_multipliers, bands) -> per-quote multiplier, the engine's
        rule: the band's multiplier if present for the option's DTE band, else global.

Entry point for the CLI (via actions.calibrate):
    run_live_calibration(root, underlying, snapshot, *, prices=None, rv=None) -> LiveRun
    describe_run(run) -> str
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

from calreport.calibration.policy import decide
from calreport.calibration.pricing import (
    black76_price,
    black76_vega,
    implied_vol,
    year_fraction,
)
from calreport.calibration.realism import assess_calibration_realism
from calreport.errors import CalreportError
from calreport.market.deribit import QuoteArrays, load_snapshot
from calreport.market.rv import RealisedVol, rv_from_chart_file, rv_from_harvest
from calreport.store import applied as apply_mod
from calreport.store.config import Band, CalibrationConfig, FilterConfig, load_config
from calreport.store.files import atomic_write
from calreport.store.history import append_row, iter_rows_reversed, new_run_id
from calreport.store.models import (
    AppliedEntry,
    ExpirySummary,
    GroupMetrics,
    LiveRun,
    Multipliers,
    QuoteDetail,
    RunDetail,
    iso_utc,
)
from calreport.store.paths import Root

MS_PER_DAY = 86_400_000
ATM_TARGET_DAYS = 7.0
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
_GRID_POINTS = 33  # geometric step ~5.8 % over [0.5, 3.0]; Brent refines inside the best cell
_MAX_GRID_CELLS = 2_000_000  # grid points x quotes evaluated at once


# --------------------------------------------------------------------------- selection


@dataclass
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
    dte = T * 365.0
    from calreport.market.deribit import parse_instrument_names

    base = parse_instrument_names(q.instrument).base
    F, K, mark = q.underlying_price, q.strike, q.mark_price
    with np.errstate(invalid="ignore", divide="ignore"):
        log_m = np.abs(np.log(K / F))
        both = np.isfinite(q.bid) & np.isfinite(q.ask) & (q.bid > 0) & (q.ask > 0)
        mid = 0.5 * (q.bid + q.ask)
        rel_spread = np.where(both, (q.ask - q.bid) / mid, 0.0)
        types = set(t.upper() for t in filters.option_types)
        type_ok = (q.is_call & ("C" in types)) | (~q.is_call & ("P" in types))
        oi = q.open_interest
        checks = {
            "bad_name": q.valid_name,
            "other_underlying": base == underlying.upper(),
            "linear": ~_is_linear(q.instrument),
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
    for reason in DROP_REASONS:
        ok = checks[reason]
        lost = keep & ~ok
        dropped[reason] = int(np.count_nonzero(lost))
        keep &= ok
    return Selection(quotes=q.take(keep), T=T[keep], dte=dte[keep], dropped=dropped, total=n)


# --------------------------------------------------------------------------- pricing helpers


def vega_weights(F, K, T, market_iv, fallback_sigma) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Vega (coin per 1.00 vol) at the market's IV; at fallback_sigma where the IV is unusable."""
    iv = np.asarray(market_iv, dtype=np.float64)
    sigma = np.where(np.isfinite(iv) & (iv > 0), iv, fallback_sigma)
    return black76_vega(F, K, T, sigma)


def market_iv(q: QuoteArrays, T: np.ndarray) -> np.ndarray:
    """IV of the mark itself (exactly the price compared); Deribit's rounded mark_iv where it fails."""
    iv = implied_vol(q.mark_price, q.underlying_price, q.strike, T, q.is_call)
    return np.where(np.isfinite(iv), iv, q.mark_iv)


def band_index(dte: np.ndarray, bands: list[Band]) -> np.ndarray:
    """Index of the first band with min <= dte < max, -1 outside every band."""
    idx = np.full(np.shape(dte), -1, dtype=np.int64)
    for i in reversed(range(len(bands))):  # first matching band wins (engine's rule)
        b = bands[i]
        idx[(dte >= b.min_dte) & (dte < b.max_dte)] = i
    return idx


def multipliers_for_dte(dte: np.ndarray, values: AppliedEntry | Multipliers, bands: list[Band]) -> np.ndarray:
    """Per-quote multiplier by the engine's rule: band value if present for the DTE's band, else global."""
    g = values.global_ if values.global_ is not None else 1.0
    out = np.full(np.shape(dte), float(g))
    for b in reversed(bands):
        if b.name in values.bands:
            out[(dte >= b.min_dte) & (dte < b.max_dte)] = float(values.bands[b.name])
    return out


# --------------------------------------------------------------------------- metrics and fit


def group_metrics(
    mark: np.ndarray,
    synthetic: np.ndarray,
    weights: np.ndarray,
    market_iv_: np.ndarray | None = None,
    synthetic_iv: np.ndarray | None = None,
) -> GroupMetrics:
    """Errors of synthetic vs mark, in percent of the mark (vol points for the IV gap)."""
    n = int(mark.size)
    if n == 0:
        return GroupMetrics(samples=0)
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
    step = max(1, _MAX_GRID_CELLS // max(n, 1))
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
    grid_points: int = _GRID_POINTS,
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


# --------------------------------------------------------------------------- ATM IV


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
    keep = Ts * 365.0 >= min_dte
    Ts, ivs = Ts[keep], ivs[keep]
    if Ts.size == 0:
        return None, "none: no expiry with strikes on both sides of the forward"
    t7 = ATM_TARGET_DAYS / 365.0
    order = np.argsort(Ts)
    Ts, ivs = Ts[order], ivs[order]
    if Ts.size == 1 or t7 <= Ts[0] or t7 >= Ts[-1]:
        j = 0 if t7 <= Ts[0] else Ts.size - 1
        if abs(Ts[j] - t7) < 1e-9:
            return float(ivs[j]), f"expiry {Ts[j] * 365:.1f}d"
        return float(ivs[j]), f"flat from nearest expiry {Ts[j] * 365:.1f}d (7d outside {Ts[0] * 365:.1f}-{Ts[-1] * 365:.1f}d)"
    j = int(np.searchsorted(Ts, t7))
    t0, t1 = Ts[j - 1], Ts[j]
    w0, w1 = ivs[j - 1] ** 2 * t0, ivs[j] ** 2 * t1
    w = w0 + (w1 - w0) * (t7 - t0) / (t1 - t0)
    return float(math.sqrt(max(w, 0.0) / t7)), f"interpolated {t0 * 365:.1f}d-{t1 * 365:.1f}d"


# --------------------------------------------------------------------------- smoothing


def previous_smoothed(root: Root, underlying: str, applied: AppliedEntry) -> tuple[Multipliers, str]:
    """The previous live run's smoothed values (same underlying, usable quotes, realism not failed);
    else the applied ones.

    A run that failed realism (e.g. marks in USD pinning the fit at a bound) never feeds the EWMA,
    so one bad snapshot cannot drag the next healthy runs. Scans the history backwards.
    """
    for run in iter_rows_reversed(root.live_history, LiveRun):
        if run.underlying != underlying or (run.source or "live") != "live":
            continue
        if run.status == "failed":
            continue
        if run.smoothed is not None and run.smoothed.global_ is not None and (run.samples or 0) > 0:
            return run.smoothed, f"run {run.run_id}"
    return applied.multipliers(), "applied"


def ewma(recommended: Multipliers, previous: Multipliers, alpha: float, band_names: list[str]) -> Multipliers:
    """alpha x recommended + (1 - alpha) x previous, for global and each band.

    A band recommended now starts from its previous smoothed value, else from the previous
    global; a band not recommended now keeps its previous smoothed value (a thin run does not
    wipe a band out).
    """
    assert recommended.global_ is not None and previous.global_ is not None
    g = alpha * recommended.global_ + (1 - alpha) * previous.global_
    bands: dict[str, float] = {}
    for label in band_names:
        if label in recommended.bands:
            prev = previous.bands.get(label, previous.global_)
            bands[label] = alpha * recommended.bands[label] + (1 - alpha) * prev
        elif label in previous.bands:
            bands[label] = previous.bands[label]
    return Multipliers(global_=g, bands=bands).rounded(4)


# --------------------------------------------------------------------------- the live run


@dataclass
class _Evaluated:
    """Quote-level arrays of one run at the tested multipliers."""

    sel: Selection
    mult: np.ndarray
    sigma: np.ndarray
    synthetic: np.ndarray
    weights: np.ndarray
    miv: np.ndarray
    band: np.ndarray  # index into config.bands, -1 outside


def _resolve_rv(
    root: Root, underlying: str, now_ms: int, prices: Path | None, rv: float | None
) -> RealisedVol:
    if rv is not None:
        if not (isinstance(rv, (int, float)) and math.isfinite(rv) and 0 < rv < 10):
            raise CalreportError(f"--rv must be an annualised vol as a fraction in (0, 10), e.g. 0.43; got {rv!r}")
        return RealisedVol(float(rv), 0, "manual")
    if prices is not None:
        return rv_from_chart_file(prices, now_ms)
    try:
        return rv_from_harvest(root, underlying, now_ms)
    except CalreportError as exc:
        return RealisedVol(None, 0, f"harvest (unreadable: {exc.problem})")


def run_live_calibration(
    root: Root,
    underlying: str,
    snapshot: Path,
    *,
    prices: Path | None = None,
    rv: float | None = None,
) -> LiveRun:
    """One live run: history row (before any apply), detail file, policy decision, apply if told."""
    cfg = load_config(root)
    underlying = cfg.check_underlying(underlying)
    rows, meta = load_snapshot(snapshot, underlying)
    applied_doc = apply_mod.read_applied(root, cfg)
    applied = applied_doc.entry(underlying)
    now_ms = meta.now_ms
    ts = iso_utc(datetime.fromtimestamp(now_ms / 1000.0, tz=timezone.utc))
    run_id = new_run_id()
    rvi = _resolve_rv(root, underlying, now_ms, prices, rv)

    q = QuoteArrays.from_rows(rows)
    all_T = year_fraction(q.expiry_ms, now_ms)
    atm, atm_source = atm_iv_7d(q.take(q.valid_name), all_T[q.valid_name], cfg.filters.min_dte)
    sel = select_quotes(q, now_ms, cfg.filters, underlying)

    run = LiveRun(
        schema_version=1,
        run_id=run_id,
        ts=ts,
        underlying=underlying,
        source="live",
        multiplier_tested=applied.global_,
        rv_7d=rvi.rv,
        atm_iv=atm,
        atm_ratio=(atm / rvi.rv) if (atm is not None and rvi.rv) else None,
        samples=sel.n,
        snapshot_ts=ts,
        rv_source=rvi.source,
        rv_returns=rvi.n_returns,
        atm_source=atm_source,
        dropped=sel.dropped,
        settings_hash=cfg.settings_hash(),
        snapshot_file=str(Path(snapshot).name),
        quotes_total=sel.total,
        tested=applied.multipliers(),
    )

    failure = None
    if rvi.rv is None:
        failure = (
            f"No RV_7d: {rvi.n_returns} hourly returns in the 7 days before the snapshot from {rvi.source} "
            "(need >= 2); pass --prices FILE or --rv X"
        )
    elif sel.n < cfg.fit.min_samples:
        failure = f"Too few usable quotes to fit ({sel.n} < {cfg.fit.min_samples}); dropped: " + _dropped_text(sel.dropped)
    ev: _Evaluated | None = None
    if failure is None:
        assert rvi.rv is not None
        ev = _evaluate(sel, rvi.rv, applied, cfg)
        run.vega_sum = float(ev.weights.sum())
        if not run.vega_sum > 0:
            failure = "Summed vega is zero: no quote carries any sensitivity to the multiplier"
    if failure is not None or ev is None:
        run.status, run.reason = "failed", failure
        run.decision, run.decision_reason = "hold", failure
        _write_detail(root, run, None, cfg)
        append_row(root.live_history, run)
        return run

    assert rvi.rv is not None
    _fill_metrics(run, ev, rvi.rv, cfg)
    prev, prev_source = previous_smoothed(root, underlying, applied)
    run.smoothed = ewma(run.recommended, prev, cfg.smoothing.alpha, cfg.band_names())  # type: ignore[arg-type]
    run.smoothed_from = prev_source
    run.recommended = run.recommended.rounded(4)  # type: ignore[union-attr]  # the YAML's precision

    issues = []
    if rvi.source != "manual" and rvi.n_returns < cfg.fit.min_rv_returns:
        issues.append(f"RV_7d from {rvi.n_returns} hourly returns (< {cfg.fit.min_rv_returns}; a full week is 168)")
    if atm is None:
        issues.append("no ATM IV")
    run.data_quality_status = "degraded" if issues else "ok"
    run.data_quality_issues = issues
    status, reason = assess_calibration_realism(
        run.smoothed.global_, run.mae_pct, run.vega_weighted_mae_pct, run.data_quality_status,
        thresholds=cfg.realism, kind="live",
    )
    if status == "degraded" and issues:
        reason = f"{reason}: {'; '.join(issues)}"
    run.status, run.reason = status, reason  # type: ignore[assignment]
    run.decision, run.decision_reason = decide(run, applied, cfg.policy)  # type: ignore[assignment]

    _write_detail(root, run, ev, cfg)
    append_row(root.live_history, run)  # the row first: the apply event follows its run
    if run.decision == "apply":
        apply_mod.apply_values(
            root, underlying, run.smoothed, source="policy", run_id=run.run_id, reason=run.decision_reason or ""
        )
    return run


def _evaluate(sel: Selection, rv: float, applied: AppliedEntry, cfg: CalibrationConfig) -> _Evaluated:
    q = sel.quotes
    mult = multipliers_for_dte(sel.dte, applied, cfg.bands)
    sigma = rv * mult
    synthetic = black76_price(q.underlying_price, q.strike, sel.T, sigma, q.is_call)
    miv = market_iv(q, sel.T)
    weights = vega_weights(q.underlying_price, q.strike, sel.T, miv, sigma)
    return _Evaluated(sel, mult, sigma, synthetic, weights, miv, band_index(sel.dte, cfg.bands))


def _fit(ev: _Evaluated, mask: np.ndarray, rv: float, cfg: CalibrationConfig) -> FitResult:
    q = ev.sel.quotes
    return fit_multiplier(
        q.underlying_price[mask], q.strike[mask], ev.sel.T[mask], q.is_call[mask], q.mark_price[mask],
        rv, ev.weights[mask], bounds=(cfg.fit.min_mult, cfg.fit.max_mult),
    )


def _metrics(ev: _Evaluated, mask: np.ndarray) -> GroupMetrics:
    return group_metrics(
        ev.sel.quotes.mark_price[mask], ev.synthetic[mask], ev.weights[mask], ev.miv[mask], ev.sigma[mask]
    )


def _fill_metrics(run: LiveRun, ev: _Evaluated, rv: float, cfg: CalibrationConfig) -> None:
    everything = np.ones(ev.sel.n, dtype=bool)
    overall = _metrics(ev, everything)
    run.mae_pct, run.bias_pct = overall.mae_pct, overall.bias_pct
    run.vega_weighted_mae_pct, run.mae_vol_points = overall.vega_weighted_mae_pct, overall.mae_vol_points

    fit = _fit(ev, everything, rv, cfg)
    assert fit.multiplier is not None
    run.recommended_on_bound = fit.on_bound
    run.fit_vega_weighted_mae_pct = fit.objective
    bands: dict[str, float] = {}
    by_band: dict[str, GroupMetrics] = {}
    for i, b in enumerate(cfg.bands):  # per configured band (a handful)
        mask = ev.band == i
        gm = _metrics(ev, mask)
        if int(mask.sum()) >= cfg.fit.band_min_samples:
            bf = _fit(ev, mask, rv, cfg)
            if bf.multiplier is not None:
                gm.recommended, gm.on_bound = round(bf.multiplier, 4), bf.on_bound
                bands[b.name] = bf.multiplier
        by_band[b.name] = gm
    by_type: dict[str, GroupMetrics] = {}
    for label, mask in (("C", ev.sel.quotes.is_call), ("P", ~ev.sel.quotes.is_call)):
        gm = _metrics(ev, mask)
        if int(mask.sum()) >= cfg.fit.band_min_samples:
            tf = _fit(ev, mask, rv, cfg)
            if tf.multiplier is not None:
                gm.recommended, gm.on_bound = round(tf.multiplier, 4), tf.on_bound
        by_type[label] = gm
    run.by_band, run.by_type = by_band, by_type
    # keep full precision for smoothing; the row stores 4 decimals
    run.recommended = Multipliers(global_=fit.multiplier, bands=bands)


def _dropped_text(dropped: dict[str, int]) -> str:
    parts = [f"{k} {v}" for k, v in dropped.items() if v]
    return ", ".join(parts) or "none"


def _expiry_summaries(ev: _Evaluated) -> list[ExpirySummary]:
    q = ev.sel.quotes
    out: list[ExpirySummary] = []
    exps, _, atm = atm_iv_by_expiry(q, ev.sel.T)
    atm_of = dict(zip(exps.tolist(), atm.tolist()))
    for e in np.unique(q.expiry_ms):  # per expiry (a handful)
        mask = q.expiry_ms == e
        gm = _metrics(ev, mask)
        out.append(
            ExpirySummary(
                expiry=iso_utc(datetime.fromtimestamp(int(e) / 1000.0, tz=timezone.utc)),
                dte=round(float(ev.sel.dte[mask][0]), 4),
                samples=int(mask.sum()),
                atm_mark_iv=atm_of.get(int(e)),
                synthetic_iv=float(ev.sigma[mask][0]),
                mae_pct=gm.mae_pct,
                vega_weighted_mae_pct=gm.vega_weighted_mae_pct,
            )
        )
    return out


def _write_detail(root: Root, run: LiveRun, ev: _Evaluated | None, cfg: CalibrationConfig) -> None:
    """history/runs/<run_id>.json: quote-level rows for the latest-run table (atomic write)."""
    quotes: list[QuoteDetail] = []
    expiries: list[ExpirySummary] = []
    if ev is not None:
        q = ev.sel.quotes
        names = cfg.band_names()
        diff = (ev.synthetic - q.mark_price) / q.mark_price * 100.0
        cols = zip(
            q.instrument.tolist(), ev.sel.dte.tolist(), q.strike.tolist(), q.is_call.tolist(),
            q.mark_price.tolist(), ev.synthetic.tolist(), diff.tolist(), ev.weights.tolist(),
            ev.miv.tolist(), ev.sigma.tolist(), ev.band.tolist(),
        )
        quotes = [
            QuoteDetail(
                instrument=name, dte=round(d, 4), strike=k, type="C" if c else "P", mark=m, synthetic=s,
                diff_pct=df, vega=v, mark_iv=(iv if math.isfinite(iv) else None), synthetic_iv=sg,
                band=names[b] if b >= 0 else None,
            )
            for name, d, k, c, m, s, df, v, iv, sg, b in cols
        ]
        expiries = _expiry_summaries(ev)
    detail = RunDetail(run_id=run.run_id or "", underlying=run.underlying or "", ts=run.ts or "", quotes=quotes, expiries=expiries)
    path = root.run_detail(run.run_id or "")
    atomic_write(path, detail.model_dump_json(by_alias=True).encode("utf-8"))
    run.detail_file = str(path.relative_to(root.path))


# --------------------------------------------------------------------------- summary


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}%"


def _vol(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def _mults(m: Multipliers | None) -> str:
    if m is None or m.global_ is None:
        return "-"
    bands = ", ".join(f"{k} {v:.4f}" for k, v in m.bands.items())
    return f"{m.global_:.4f}" + (f" (bands: {bands})" if bands else "")


def describe_run(run: LiveRun) -> str:
    """The one-paragraph summary `calreport calibrate` prints."""
    dropped = _dropped_text(run.dropped or {})
    rv_part = f"RV_7d {_vol(run.rv_7d)} ({run.rv_source}" + (
        f", {run.rv_returns} hourly returns)" if run.rv_source != "manual" else ")"
    )
    head = (
        f"{run.underlying} live run {run.run_id} at {run.ts}: {run.samples} quotes used (dropped: {dropped}); "
        f"{rv_part}, ATM IV 7d {_vol(run.atm_iv)}"
        + (f" (ratio {run.atm_ratio:.3f})" if run.atm_ratio is not None else "")
        + ". "
    )
    if run.recommended is None:
        return head + f"Status {run.status}: {run.reason}. Decision: {run.decision} ({run.decision_reason})."
    tested = f"{run.multiplier_tested:.4f}" if run.multiplier_tested is not None else "-"
    bound = " (on the search bound)" if run.recommended_on_bound else ""
    return head + (
        f"At the applied multiplier {tested}: MAE {_pct(run.mae_pct)}, vega-weighted MAE {_pct(run.vega_weighted_mae_pct)}, "
        f"bias {_pct(run.bias_pct)}, IV gap {run.mae_vol_points:.2f} vol pts. "
        if run.mae_vol_points is not None
        else f"At the applied multiplier {tested}: MAE {_pct(run.mae_pct)}, vega-weighted MAE {_pct(run.vega_weighted_mae_pct)}. "
    ) + (
        f"Recommended {_mults(run.recommended)}{bound}; smoothed {_mults(run.smoothed)}. "
        f"Status {run.status}: {run.reason}. Decision: {run.decision} ({run.decision_reason})."
    )
