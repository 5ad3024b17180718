"""Auto-calibrate: fit one multiplier over a DTE range of harvested quotes and judge it. Never apply.

A run takes the harvest of one underlying in (as_of - lookback, as_of], keeps the quotes whose DTE
(at their own harvest time) lies in the DTE range and that pass the live calibration's filters,
and fits one multiplier with the live calibration's fit (calibration.fit): synthetic =
Black-76(sigma = RV_7d x multiplier) in coin units against the coin mark, minimising
vega-weighted absolute % error.

RV choice: each snapshot is priced with the RV_7d *as of that snapshot* (from the harvest's own
index series, completed hours before the snapshot's hour, so nothing from the future leaks in),
exactly what the engine would have used at that time. With a 14-day lookback the vol regime moves;
pricing two-week-old quotes with today's RV would blame the multiplier for an RV change. The row's
`rv_7d` is the RV as of the window end (what the engine uses now). Snapshots whose RV rests on
fewer than auto.min_rv_returns hourly returns are left out and reported, never priced with a
made-up constant.

Data quality (models.DataQuality) collects the evidence: schema errors, snapshots present vs
expected (auto.expected_interval_minutes), expiries and strikes covered, RV history; its status
and the fit's multiplier / MAE / vega MAE go through realism.assess_calibration_realism, whose
(status, reason) is what the history row says.

    evaluate_auto(frame, index_ticks, index_price, ...) -> AutoRun   (pure: arrays in, the row out)

Loading the harvest and appending the row is the use case's job
(calreport.commands.usecases.run_auto_calibration); nothing here can reach the applier.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING

import numpy as np

from calreport import fmt
from calreport.calibration.desk import desk_errors, mark_sigma, otm_mask
from calreport.calibration.fit import (
    fit_multiplier,
    fit_multiplier_iv,
    group_metrics,
    market_iv,
    vega_weights,
)
from calreport.calibration.pricing import black76_price
from calreport.calibration.select import Selection, select_quotes
from calreport.calibration.sigma import atm_iv_grouped
from calreport.calibration.smile import fit_smile
from calreport.calibration.uncertainty import (
    Uncertainty,
    bootstrap_se,
    combine,
    iv_terms,
    price_terms,
    rv_se,
)
from calreport.errors import CalreportError, excerpt
from calreport.market.rv import FULL_WEEK_RETURNS, realised_vol
from calreport.model import (
    AutoRun,
    CalibrationConfig,
    DataQuality,
    Smile,
    SmileFitStats,
)
from calreport.realism import assess_calibration_realism
from calreport.timeutil import (
    MS_PER_DAY,
    MS_PER_HOUR,
    MS_PER_MIN,
    iso_ms,
    iso_utc,
    utc_now,
)

if TYPE_CHECKING:  # the frame is only read through its attributes and methods
    from calreport.market.harvest import HarvestFrame

MOST_LINES_BAD = 0.5  # above this share of unreadable lines (or impossible marks) the harvest is broken

_LOOKBACK_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$", re.IGNORECASE)
_UNIT_MS = {"m": MS_PER_MIN, "h": MS_PER_HOUR, "d": MS_PER_DAY, "w": 7 * MS_PER_DAY}
_DTE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*d?\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- arguments


def parse_lookback(text: str) -> tuple[str, int]:
    """'14d' / '12h' / '90m' / '2w' -> (normalised label, milliseconds)."""
    m = _LOOKBACK_RE.match(str(text))
    if not m or float(m[1]) <= 0:
        raise CalreportError(f"--lookback: expected a length like 14d, 1d, 12h or 90m, got {excerpt(text, 40)}")
    value, unit = float(m[1]), m[2].lower()
    label = f"{value:g}{unit}"
    return label, int(value * _UNIT_MS[unit])


def parse_dte_range(text: str) -> tuple[float, float]:
    """'3-10' (or '3-10d') -> (3.0, 10.0): quotes with 3 <= DTE <= 10."""
    m = _DTE_RE.match(str(text))
    if not m:
        raise CalreportError(f"--dte: expected a DTE range like 3-10, got {excerpt(text, 40)}")
    lo, hi = float(m[1]), float(m[2])
    if hi <= lo:
        raise CalreportError(f"--dte: the range must go from low to high, got {excerpt(text, 40)}")
    return lo, hi


# --------------------------------------------------------------------------- RV per snapshot


@dataclass(frozen=True)
class SnapshotRV:
    times: np.ndarray  # int64 snapshot times (ms), ascending
    rv: np.ndarray  # float64 RV_7d as of each snapshot (NaN when too little history)
    n_returns: np.ndarray  # int64 returns behind each value


def rv_per_snapshot(index_ticks: np.ndarray, index_price: np.ndarray, times: np.ndarray) -> SnapshotRV:
    """RV_7d for each snapshot time from completed hours before its hour (rv.realised_vol, once per hour)."""
    hours = np.unique(times // MS_PER_HOUR)
    rv_h = np.full(hours.size, np.nan)
    n_h = np.zeros(hours.size, dtype=np.int64)
    for i, h in enumerate(hours):  # one call per clock hour (<= 24 x lookback days), not per quote
        r = realised_vol(index_ticks, index_price, int(h) * MS_PER_HOUR - 1)
        n_h[i] = r.n_returns
        if r.rv is not None:
            rv_h[i] = r.rv
    j = np.searchsorted(hours, times // MS_PER_HOUR)
    return SnapshotRV(times=times, rv=rv_h[j], n_returns=n_h[j])


# --------------------------------------------------------------------------- the fit


@dataclass(frozen=True)
class AutoFit:
    """The fitted multiplier and the errors *at that multiplier* (what the auto history shows)."""

    multiplier: float | None
    on_bound: bool
    mae_pct: float | None
    vega_weighted_mae_pct: float | None
    bias_pct: float | None
    mae_vol_points: float | None
    desk: dict[str, object] | None = None  # calibration/desk.py fields at the fitted multiplier
    uncertainty: Uncertainty | None = None  # calibration/uncertainty.py: multiplier_se and its parts
    smile: dict[str, object] | None = None  # smile, smile_multiplier, smile_fit (smile.enabled only)


NO_FIT = AutoFit(None, False, None, None, None, None)


def fit_selection(sel: Selection, base_sigma: np.ndarray, cfg: CalibrationConfig, rv_returns: int | None = None) -> AutoFit:
    """The live calibration's fit on the selected quotes, one RV_7d per quote (its snapshot's).

    `rv_returns` (the median return count behind the quotes' RV) sets the RV part of multiplier_se."""
    q = sel.quotes
    if sel.n == 0:
        return NO_FIT
    F, K, T, mark = q.underlying_price, q.strike, sel.T, q.mark_price
    miv = market_iv(q, T)
    w = vega_weights(F, K, T, miv, base_sigma)
    smark = mark_sigma(q.mark_iv, mark, F, K, T, q.is_call)
    bounds = (cfg.fit.min_mult, cfg.fit.max_mult)
    if cfg.fit.objective == "otm_iv_vega":
        otm = otm_mask(F, K, q.is_call)
        fit = fit_multiplier_iv(base_sigma[otm], smark[otm], w[otm], bounds=bounds)
    else:
        fit = fit_multiplier(F, K, T, q.is_call, mark, base_sigma, w, bounds=bounds)
    if fit.multiplier is None:
        return NO_FIT
    sigma = base_sigma * fit.multiplier
    gm = group_metrics(mark, black76_price(F, K, T, sigma, q.is_call), w, miv, sigma)
    desk = {**desk_errors(F, K, T, q.is_call, mark, smark, sigma).to_fields(), "fit_objective": cfg.fit.objective}
    # The bootstrap resamples expiries; an even stride of at most SE_MAX_QUOTES quotes keeps every
    # expiry's share and costs a fixed time however long the window (all 2.9M quotes took 4.7 s).
    s = _even_stride(sel.n, SE_MAX_QUOTES)
    if cfg.fit.objective == "otm_iv_vega":
        otm = otm_mask(F[s], K[s], q.is_call[s])
        ok = otm & np.isfinite(smark[s]) & (smark[s] > 0)
        terms, den = iv_terms(base_sigma[s], smark[s], np.where(otm, w[s], 0.0)), np.where(ok, w[s], 0.0)
    else:
        terms, den = price_terms(F[s], K[s], T[s], q.is_call[s], mark[s], base_sigma[s], w[s]), w[s]
    se_e, n_exp, n_draws = bootstrap_se(
        terms, den, q.expiry_ms[s], bounds=bounds, draws=cfg.fit.bootstrap_draws, seed=cfg.fit.bootstrap_seed
    )
    unc = combine(fit.multiplier, se_e, rv_se(fit.multiplier, rv_returns, manual=False), expiries=n_exp, draws=n_draws)
    smile = _smile_fields(sel, base_sigma, smark, w, cfg, fit.multiplier) if cfg.smile.enabled else None
    return AutoFit(
        fit.multiplier, fit.on_bound, gm.mae_pct, gm.vega_weighted_mae_pct, gm.bias_pct, gm.mae_vol_points, desk,
        smile=smile, uncertainty=unc,
    )


SMILE_MAX_QUOTES = 50_000  # an auto window holds up to millions of quotes: the smile fit takes an even stride
SE_MAX_QUOTES = 100_000  # the same for the expiry bootstrap of multiplier_se


def _even_stride(n: int, cap: int) -> slice:
    """Every k-th of n items so that at most `cap` remain (all of them when n <= cap)."""
    return slice(None, None, max(1, int(np.ceil(n / cap))))


def _smile_fields(
    sel: Selection, base_sigma: np.ndarray, smark: np.ndarray, w: np.ndarray, cfg: CalibrationConfig, start: float
) -> dict[str, object] | None:
    """The window's global smile (recorded, never applied): level and node values over its OTM quotes,
    each quote at its own snapshot's RV_7d as base."""
    q = sel.quotes
    idx = np.flatnonzero(otm_mask(q.underlying_price, q.strike, q.is_call))
    idx = idx[_even_stride(idx.size, SMILE_MAX_QUOTES)]
    if idx.size == 0:
        return None
    F, K = q.underlying_price[idx], q.strike[idx]
    sc = cfg.smile
    price_inputs = (F, K, q.is_call[idx], q.mark_price[idx]) if cfg.fit.objective == "price_vega_rel" else None
    fit = fit_smile(
        np.log(K / F), np.sqrt(sel.T[idx]), base_sigma[idx], smark[idx], w[idx], nodes=sc.nodes, penalty=sc.penalty,
        bounds=(sc.bounds[0], sc.bounds[1]), mult_bounds=(cfg.fit.min_mult, cfg.fit.max_mult), objective=cfg.fit.objective,
        price_inputs=price_inputs, start_multiplier=start,
    )
    if fit.multiplier is None:
        return None
    stats = SmileFitStats(source="fitted", samples=fit.samples, quotes_per_node=list(fit.quotes_per_node), objective=fit.objective)
    return {
        "smile": Smile(nodes=list(sc.nodes), global_=list(fit.values)).rounded(4),
        "smile_multiplier": round(fit.multiplier, 4),
        "smile_fit": stats,
    }


# --------------------------------------------------------------------------- data quality


@dataclass(frozen=True)
class HarvestCounts:
    """What reading the window's day files found (whole files: a bad line has no time to place it)."""

    lines: int = 0
    schema_errors: int = 0
    bad_names: int = 0
    unreadable: tuple[str, ...] = ()  # "file: what could not be read of it"


@dataclass(frozen=True)
class Evidence:
    """What the data-quality verdict is based on (all counts over the window)."""

    lines: int
    schema_errors: int
    bad_names: int
    snapshots: int
    snapshots_expected: int
    expiries: int
    strikes: int
    samples: int
    rv_returns: int  # at the window end
    snapshots_without_rv: int
    above_bound: int  # marks above the no-arbitrage bound (1 coin for a call, K/F for a put)
    in_range: int  # harvested quotes in the DTE range (before the filters)
    dte_label: str
    window: str
    needs_rv: bool = True  # sigma_mode rv; an IV base does not rest on RV history
    unreadable: tuple[str, ...] = ()
    window_label: str = ""  # the lookback as configured ("14d")
    snapshots_used: int | None = None  # snapshots that contributed quotes (None: not counted)
    span_hours: float | None = None  # their real span
    lookback_hours: float | None = None


def required_span_hours(min_span_hours: float, lookback_hours: float | None) -> float:
    """The real span a run must cover: auto.min_span_hours, but at most half a shorter lookback (a 90m
    window can only span 90 minutes)."""
    return min(min_span_hours, 0.5 * lookback_hours) if lookback_hours is not None else min_span_hours


def assess_data_quality(ev: Evidence, cfg: CalibrationConfig) -> DataQuality:
    """ok / degraded / failed with every issue named; thresholds from config.auto (and fit.min_rv_returns)."""
    a = cfg.auto
    failed: list[str] = []
    degraded: list[str] = []
    completeness = min(1.0, ev.snapshots / ev.snapshots_expected) if ev.snapshots_expected else 0.0
    for problem in ev.unreadable:  # a file read as nothing is missing data, never an empty harvest
        (failed if ev.snapshots == 0 else degraded).append(f"unreadable harvest file {problem}")
    if ev.snapshots == 0:
        failed.append(f"no harvested snapshots in the window {ev.window}")
    if ev.lines and ev.schema_errors / ev.lines > MOST_LINES_BAD:
        failed.append(f"most harvest lines are unreadable ({ev.schema_errors} of {ev.lines})")
    elif ev.schema_errors and ev.schema_errors / max(ev.lines, 1) > a.max_schema_error_rate:
        degraded.append(f"schema errors: {ev.schema_errors} of {ev.lines} lines ({100 * ev.schema_errors / ev.lines:.1f}%)")
    if ev.snapshots and completeness < a.min_snapshot_coverage:
        degraded.append(
            f"snapshots: {ev.snapshots} of {ev.snapshots_expected} expected ({100 * completeness:.0f}% coverage)"
        )
    if not ev.needs_rv:
        pass
    elif ev.snapshots and ev.snapshots_without_rv >= ev.snapshots:
        failed.append(
            f"RV history too short: no snapshot has {a.min_rv_returns} hourly returns before it "
            f"({ev.rv_returns} at the window end)"
        )
    else:
        if ev.snapshots and ev.rv_returns < cfg.fit.min_rv_returns:
            degraded.append(f"RV_7d from {ev.rv_returns} hourly returns (< {cfg.fit.min_rv_returns}; a full week is {FULL_WEEK_RETURNS})")
        if ev.snapshots_without_rv:
            degraded.append(f"{ev.snapshots_without_rv} snapshots left out: RV history < {a.min_rv_returns} returns")
    if ev.snapshots and not failed and ev.samples == 0:
        failed.append(f"no quotes with DTE {ev.dte_label} passed the filters")
    elif ev.samples:
        if ev.expiries < a.min_expiries:
            degraded.append(f"expiries covered: {ev.expiries} (< {a.min_expiries}) in DTE {ev.dte_label}")
        if ev.strikes < a.min_strikes:
            degraded.append(f"strikes covered: {ev.strikes} (< {a.min_strikes})")
    # thin evidence first: the reason a run names is its first issue, and this one decides what the run means
    thin: list[str] = []
    if ev.samples and ev.snapshots_used is not None and ev.snapshots_used < a.min_snapshots_used:
        thin.append(f"rests on {ev.snapshots_used} snapshots (< auto.min_snapshots_used {a.min_snapshots_used})")
    need_span = required_span_hours(a.min_span_hours, ev.lookback_hours)
    if ev.samples and ev.span_hours is not None and ev.span_hours < need_span:
        thin.append(f"snapshots used span {ev.span_hours:.1f} h of the {ev.window_label} lookback (< {need_span:g} h, auto.min_span_hours)")
    degraded[:0] = thin
    if ev.above_bound:
        text = f"{ev.above_bound} of {ev.in_range} marks above the no-arbitrage bound (prices not in coin?)"
        (failed if ev.above_bound > MOST_LINES_BAD * ev.in_range else degraded).append(text)
    status = "failed" if failed else "degraded" if degraded else "ok"
    return DataQuality(
        status=status,
        issues=failed + degraded,
        schema_errors=ev.schema_errors,
        completeness=round(completeness, 4),
        expiries=ev.expiries,
        strikes=ev.strikes,
        rv_returns=ev.rv_returns,
    )


# --------------------------------------------------------------------------- the run


def _round(x: float | None, nd: int = 4) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


def _verdict(fit: AutoFit, dq: DataQuality, cfg: CalibrationConfig) -> tuple[str, str]:
    """Realism's (status, reason), with the first data-quality issue or the fit's numbers named."""
    status, reason = assess_calibration_realism(
        fit.multiplier, fit.mae_pct, fit.vega_weighted_mae_pct, dq.status, thresholds=cfg.realism
    )
    if status in ("failed", "degraded") and dq.status == status and dq.issues:
        more = f" (+{len(dq.issues) - 1} more)" if len(dq.issues) > 1 else ""
        return status, f"{reason}: {dq.issues[0]}{more}"
    if status == "failed" and fit.multiplier is not None:
        return status, (
            f"{reason} (multiplier {fmt.mult(fit.multiplier)}{' on the fit bound' if fit.on_bound else ''}, "
            f"MAE {fmt.pct(fit.mae_pct)}, vega MAE {fmt.pct(fit.vega_weighted_mae_pct)})"
        )
    return status, reason


def evaluate_auto(
    frame: HarvestFrame,
    index_ticks: np.ndarray,
    index_price: np.ndarray,
    *,
    underlying: str,
    dte_range: tuple[float, float],
    lookback: tuple[str, int],
    as_of: datetime,
    counts: HarvestCounts,
    config: CalibrationConfig,
    run_id: str,
    now: Callable[[], datetime] = utc_now,
    started: float | None = None,
) -> AutoRun:
    """One auto-calibrate run over the harvested rows of the window, as its history row.

    `frame` holds the window's rows (as_of - lookback, as_of]; `index_ticks` / `index_price` the
    index proxy of the window and the week before it (for RV). No data is a `failed` row with a
    data-quality reason, never an exception. `started` (time.perf_counter() when the command began)
    lets elapsed_s cover the harvest read too; `now` stamps the row.
    """
    started = time.perf_counter() if started is None else started
    cfg = config
    dte_min, dte_max = dte_range
    lb_label, lb_ms = lookback
    end_ms = int(as_of.timestamp() * 1000)
    start_ms = end_ms - lb_ms

    times = frame.snapshot_times()
    srv = rv_per_snapshot(index_ticks, index_price, times)
    mode = cfg.sigma_mode_for(underlying)
    rv_ok = np.isfinite(srv.rv) & (srv.n_returns >= cfg.auto.min_rv_returns)
    if mode != "rv":  # an IV base needs no RV history: no snapshot is left out for it
        rv_ok = np.ones(times.size, dtype=bool)
    end_rv = realised_vol(index_ticks, index_price, end_ms)

    # rows in the DTE range whose snapshot has an RV; then the live calibration's own filters
    dte_rows = frame.dte()
    in_range = (dte_rows >= dte_min) & (dte_rows <= dte_max)
    snap_of_row = np.searchsorted(times, frame.harvested_at)
    pre = in_range & (rv_ok[snap_of_row] if len(frame) else np.zeros(0, dtype=bool))
    filters = cfg.filters.model_copy(update={"min_dte": dte_min, "max_dte": dte_max})
    quotes = frame.to_quotes(pre)
    sel = select_quotes(quotes, quotes.creation_ms, filters, underlying)
    sel, base, snap_of_sel = _auto_base(sel, times, srv, mode)
    used_returns = srv.n_returns[snap_of_sel]
    rv_n = int(np.median(used_returns)) if used_returns.size and mode == "rv" else None
    fit = fit_selection(sel, base, cfg, rv_n)

    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(frame.is_call, 1.0, frame.strike / frame.underlying_price)
        above = int(np.count_nonzero(in_range & (frame.mark_price > bound * (1 + 1e-6))))
    expected = int(lb_ms // int(cfg.auto.expected_interval_minutes * MS_PER_MIN))
    ev = Evidence(
        lines=counts.lines,
        schema_errors=counts.schema_errors,
        bad_names=counts.bad_names,
        snapshots=int(times.size),
        snapshots_expected=max(expected, 1),
        expiries=int(np.unique(sel.quotes.expiry_ms).size),
        strikes=int(np.unique(sel.quotes.strike).size),
        samples=sel.n,
        rv_returns=int(end_rv.n_returns),
        snapshots_without_rv=int(np.count_nonzero(~rv_ok)),
        needs_rv=mode == "rv",
        above_bound=above,
        in_range=int(np.count_nonzero(in_range)),
        dte_label=f"{dte_min:g}-{dte_max:g}",
        window=f"{iso_ms(start_ms)} - {iso_ms(end_ms)}",
        unreadable=counts.unreadable,
    )
    used = np.unique(sel.quotes.creation_ms)
    honest = window_honesty(times, rv_ok, used, srv.n_returns)
    ev = replace(ev, snapshots_used=int(used.size), span_hours=honest["span_hours"], lookback_hours=lb_ms / MS_PER_HOUR, window_label=lb_label)  # type: ignore[arg-type]
    dq = assess_data_quality(ev, cfg)
    status, reason = _verdict(fit, dq, cfg)
    return AutoRun(
        schema_version=1,
        run_id=run_id,
        ts=iso_utc(now()),
        underlying=underlying,
        dte_min=dte_min,
        dte_max=dte_max,
        lookback=lb_label,
        multiplier=_round(fit.multiplier),
        mae_pct=_round(fit.mae_pct, 2),
        vega_weighted_mae_pct=_round(fit.vega_weighted_mae_pct, 2),
        samples=ev.samples,
        data_quality=dq,
        status=status,  # type: ignore[arg-type]
        reason=reason,
        multiplier_on_bound=fit.on_bound if fit.multiplier is not None else None,
        rv_7d=_round(end_rv.rv),
        as_of=iso_utc(as_of),
        harvest_start=iso_ms(int(times[0])) if times.size else None,
        harvest_end=iso_ms(int(times[-1])) if times.size else None,
        snapshots_expected=ev.snapshots_expected,
        settings_hash=cfg.settings_hash(),
        bias_pct=_round(fit.bias_pct, 2),
        mae_vol_points=_round(fit.mae_vol_points, 2),
        rows_read=len(frame),
        elapsed_s=round(time.perf_counter() - started, 3),
        **(fit.desk or {}),  # type: ignore[arg-type]
        **_uncertainty_fields(fit.uncertainty),  # type: ignore[arg-type]
        **honest,  # type: ignore[arg-type]
        sigma_mode=mode,
        **(fit.smile or {}),  # type: ignore[arg-type]
    )


def _auto_base(sel: Selection, times: np.ndarray, srv: SnapshotRV, mode: str) -> tuple[Selection, np.ndarray, np.ndarray]:
    """(selection, base sigma per quote, snapshot index per quote) under the sigma mode: each
    snapshot's RV_7d (rv), the ATM IV of the quote's snapshot x expiry (atm_iv, from that
    snapshot's selected quotes), or the quote's own mark IV (mark_iv). Quotes without a base are
    dropped and counted under dropped["no_base_sigma"]."""
    q = sel.quotes
    snap = np.searchsorted(times, q.creation_ms)
    if mode == "rv":
        return sel, srv.rv[snap], snap
    if mode == "atm_iv":
        _, exp_idx = np.unique(q.expiry_ms, return_inverse=True)
        group = snap.astype(np.int64) * (int(exp_idx.max(initial=0)) + 1) + exp_idx
        base = atm_iv_grouped(group, q.underlying_price, q.strike, q.mark_iv, q.is_call)
    else:
        base = mark_sigma(q.mark_iv, q.mark_price, q.underlying_price, q.strike, sel.T, q.is_call)
    ok = np.isfinite(base) & (base > 0)
    if bool(ok.all()):
        return sel, base, snap
    dropped = {**sel.dropped, "no_base_sigma": int(np.count_nonzero(~ok))}
    kept = Selection(quotes=q.take(ok), T=sel.T[ok], dte=sel.dte[ok], dropped=dropped, total=sel.total)
    return kept, base[ok], snap[ok]


RV_SOURCE = "harvest: nearest-expiry forward per snapshot, hourly closes, RV_7d as of each snapshot"


def window_honesty(times: np.ndarray, rv_ok: np.ndarray, used: np.ndarray, n_returns: np.ndarray) -> dict[str, object]:
    """What the window really used: the snapshots priced, their real span and why the others were left out.

    Why: a "14d" lookback once rested on about 2 hours of snapshots (252 of 276 dropped for thin RV).
    Dropped reasons: `rv_history` (RV_7d from fewer than auto.min_rv_returns returns before the
    snapshot), `no_usable_quotes` (no quote in the DTE range passed the filters).
    """
    t = np.asarray(times, dtype=np.int64)
    u = np.asarray(used, dtype=np.int64)
    in_used = np.isin(t, u)
    dropped = {
        "rv_history": int(np.count_nonzero(~rv_ok)),
        "no_usable_quotes": int(np.count_nonzero(rv_ok & ~in_used)),
    }
    span_h = float(u[-1] - u[0]) / MS_PER_HOUR if u.size else None
    used_returns = np.asarray(n_returns)[in_used]
    med = int(np.median(used_returns)) if u.size else None
    return {
        "snapshots_used": int(u.size),
        "first_snapshot": iso_ms(int(u[0])) if u.size else None,
        "last_snapshot": iso_ms(int(u[-1])) if u.size else None,
        "span_hours": None if span_h is None else round(span_h, 3),
        "snapshots_in_window": int(t.size),
        "snapshots_dropped": dropped,
        "rv_source": RV_SOURCE,
        "rv_returns_median": med,
        "rv_returns_min": int(used_returns.min()) if u.size else None,
        "rv_returns_max": int(used_returns.max()) if u.size else None,
    }


def _uncertainty_fields(u: Uncertainty | None) -> dict[str, object]:
    """multiplier_se, multiplier_ci95 and the breakdown of the auto fit (nothing without a fit)."""
    if u is None:
        return {}
    return {
        "multiplier_se": _round(u.se),
        "multiplier_ci95": [round(u.ci95[0], 4), round(u.ci95[1], 4)] if u.ci95 else None,
        "uncertainty": {"global": u.to_entry()},
    }
