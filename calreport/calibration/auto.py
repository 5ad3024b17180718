"""Auto-calibrate: fit one multiplier over a DTE range on the harvest, judge it, record it. Never apply.

A run reads the harvest of one underlying in (as_of - lookback, as_of], keeps the quotes whose DTE
(at their own harvest time) lies in the DTE range and that pass the live calibration's filters,
and fits one multiplier with calibrate.py's fit: synthetic = Black-76(sigma = RV_7d x multiplier)
in coin units against the coin mark, minimising vega-weighted absolute % error.

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
(status, reason) is what the history row says. Nothing here imports apply.py: an auto run can only
append to history/auto_calibrate.jsonl.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

import numpy as np

from calreport.calibration.live import (
    Selection,
    fit_multiplier,
    group_metrics,
    market_iv,
    select_quotes,
    vega_weights,
)
from calreport.calibration.pricing import black76_price
from calreport.calibration.realism import assess_calibration_realism
from calreport.errors import CalreportError
from calreport.market.harvest import (
    MS_PER_DAY,
    day_files,
    harvest_dir_of,
    index_price_per_snapshot,
    load_harvest,
)
from calreport.market.rv import WINDOW_DAYS, realised_vol
from calreport.store.config import CalibrationConfig, load_config
from calreport.store.history import append_row, new_run_id
from calreport.store.models import AutoRun, DataQuality, iso_utc, utc_now
from calreport.store.paths import Root

MS_PER_HOUR = 3_600_000
FULL_WEEK_RETURNS = int(WINDOW_DAYS * 24)
MOST_LINES_BAD = 0.5  # above this share of unreadable lines (or impossible marks) the harvest is broken
PROGRESS_MIN_BYTES = 32 << 20  # draw a progress bar only for harvests this large (and on a TTY)

_LOOKBACK_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$", re.IGNORECASE)
_UNIT_MS = {"m": 60_000, "h": MS_PER_HOUR, "d": MS_PER_DAY, "w": 7 * MS_PER_DAY}
_DTE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*d?\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------- arguments


def parse_lookback(text: str) -> tuple[str, int]:
    """'14d' / '12h' / '90m' / '2w' -> (normalised label, milliseconds)."""
    m = _LOOKBACK_RE.match(str(text))
    if not m or float(m[1]) <= 0:
        raise CalreportError(f"--lookback: expected a length like 14d, 1d, 12h or 90m, got {text!r}")
    value, unit = float(m[1]), m[2].lower()
    label = f"{value:g}{unit}"
    return label, int(value * _UNIT_MS[unit])


def parse_dte_range(text: str) -> tuple[float, float]:
    """'3-10' (or '3-10d') -> (3.0, 10.0): quotes with 3 <= DTE <= 10."""
    m = _DTE_RE.match(str(text))
    if not m:
        raise CalreportError(f"--dte: expected a DTE range like 3-10, got {text!r}")
    lo, hi = float(m[1]), float(m[2])
    if hi <= lo:
        raise CalreportError(f"--dte: the range must go from low to high, got {text!r}")
    return lo, hi


# --------------------------------------------------------------------------- progress


class ProgressBar:
    """A one-line bar on stderr, only when stderr is a terminal (cron logs stay clean)."""

    def __init__(self, stream: TextIO, label: str) -> None:
        self.stream = stream
        self.label = label
        self.drawn = False

    def __call__(self, done: int, total: int, name: str) -> None:
        width = 30
        filled = width * done // max(total, 1)
        self.stream.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name:<22}")
        self.stream.flush()
        self.drawn = True

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r" + " " * 80 + "\r")
            self.stream.flush()


def _progress_for(root: Root, underlying: str, start_ms: int, end_ms: int, stream: TextIO | None) -> ProgressBar | None:
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        return None
    files = day_files(harvest_dir_of(root, underlying), start_ms, end_ms)
    if sum(p.stat().st_size for p in files) < PROGRESS_MIN_BYTES:
        return None
    return ProgressBar(stream, f"reading {underlying} harvest")


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


def fit_selection(sel: Selection, base_sigma: np.ndarray, cfg: CalibrationConfig) -> AutoFit:
    """calibrate.py's fit on the selected quotes, one RV_7d per quote (its snapshot's)."""
    q = sel.quotes
    if sel.n == 0:
        return AutoFit(None, False, None, None, None, None)
    F, K, T, mark = q.underlying_price, q.strike, sel.T, q.mark_price
    miv = market_iv(q, T)
    w = vega_weights(F, K, T, miv, base_sigma)
    fit = fit_multiplier(F, K, T, q.is_call, mark, base_sigma, w, bounds=(cfg.fit.min_mult, cfg.fit.max_mult))
    if fit.multiplier is None:
        return AutoFit(None, False, None, None, None, None)
    sigma = base_sigma * fit.multiplier
    gm = group_metrics(mark, black76_price(F, K, T, sigma, q.is_call), w, miv, sigma)
    return AutoFit(fit.multiplier, fit.on_bound, gm.mae_pct, gm.vega_weighted_mae_pct, gm.bias_pct, gm.mae_vol_points)


# --------------------------------------------------------------------------- data quality


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


def assess_data_quality(ev: Evidence, cfg: CalibrationConfig) -> DataQuality:
    """ok / degraded / failed with every issue named; thresholds from config.auto (and fit.min_rv_returns)."""
    a = cfg.auto
    failed: list[str] = []
    degraded: list[str] = []
    completeness = min(1.0, ev.snapshots / ev.snapshots_expected) if ev.snapshots_expected else 0.0
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
    if ev.snapshots and ev.snapshots_without_rv >= ev.snapshots:
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


def run_auto_calibration(
    root: Root,
    underlying: str,
    *,
    dte: str | None = None,
    lookback: str | None = None,
    as_of: datetime | None = None,
    progress_stream: TextIO | None = None,
    now: Callable[[], datetime] = utc_now,
) -> AutoRun:
    """One auto-calibrate run: appends an AutoRun row to root.auto_history and returns it.

    No data in the window is a `failed` row with a data-quality reason, never an exception; bad
    arguments (a malformed --dte or --lookback, an unknown underlying) are one-line errors.
    """

    started = time.perf_counter()
    cfg = load_config(root)
    name = cfg.check_underlying(underlying)
    dte_min, dte_max = parse_dte_range(dte or cfg.auto.dte_ranges[0])
    lb_label, lb_ms = parse_lookback(lookback or cfg.auto.lookbacks[0])
    end_dt = as_of or now()
    if end_dt.tzinfo is None:  # a naive time is UTC, like every timestamp calreport writes
        end_dt = end_dt.replace(tzinfo=UTC)
    end_ms = int(end_dt.timestamp() * 1000)
    start_ms = end_ms - lb_ms
    window = f"{iso_utc(_dt(start_ms))} - {iso_utc(_dt(end_ms))}"

    # one read covers the window and the 7 days of index history RV needs before it
    bar = _progress_for(root, name, start_ms - int(WINDOW_DAYS * MS_PER_DAY), end_ms, progress_stream)
    try:
        hist = load_harvest(root, name, start_ms - int(WINDOW_DAYS * MS_PER_DAY), end_ms, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    idx_t, idx_p = index_price_per_snapshot(hist)
    in_window = hist.harvested_at > start_ms
    frame = hist.take(in_window)
    # schema errors: count the window's day files only (the RV pre-read is not what is judged)
    win_files = set(day_files(harvest_dir_of(root, name), start_ms, end_ms))

    times = frame.snapshot_times()
    srv = rv_per_snapshot(idx_t, idx_p, times)
    rv_ok = np.isfinite(srv.rv) & (srv.n_returns >= cfg.auto.min_rv_returns)
    end_rv = realised_vol(idx_t, idx_p, end_ms)

    # rows in the DTE range whose snapshot has an RV; then the live calibration's own filters
    dte_rows = frame.dte()
    in_range = (dte_rows >= dte_min) & (dte_rows <= dte_max)
    snap_of_row = np.searchsorted(times, frame.harvested_at)
    pre = in_range & (rv_ok[snap_of_row] if len(frame) else np.zeros(0, dtype=bool))
    filters = cfg.filters.model_copy(update={"min_dte": dte_min, "max_dte": dte_max})
    quotes = frame.to_quotes(pre)
    sel = select_quotes(quotes, quotes.creation_ms, filters, name)
    fit = fit_selection(sel, srv.rv[np.searchsorted(times, sel.quotes.creation_ms)], cfg)

    used_t = sel.quotes.creation_ms
    expiries = int(np.unique(sel.quotes.expiry_ms).size)
    strikes = int(np.unique(sel.quotes.strike).size)
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(frame.is_call, 1.0, frame.strike / frame.underlying_price)
        above = int(np.count_nonzero(in_range & (frame.mark_price > bound * (1 + 1e-6))))
    lines, schema_errors, bad_names = (
        sum(c[i] for p, c in hist.file_counts.items() if p in win_files) for i in range(3)
    )
    expected = int(lb_ms // int(cfg.auto.expected_interval_minutes * 60_000))
    ev = Evidence(
        lines=lines,
        schema_errors=schema_errors,
        bad_names=bad_names,
        snapshots=int(times.size),
        snapshots_expected=max(expected, 1),
        expiries=expiries,
        strikes=strikes,
        samples=sel.n,
        rv_returns=int(end_rv.n_returns),
        snapshots_without_rv=int(np.count_nonzero(~rv_ok)),
        above_bound=above,
        in_range=int(np.count_nonzero(in_range)),
        dte_label=f"{dte_min:g}-{dte_max:g}",
        window=window,
    )
    dq = assess_data_quality(ev, cfg)
    status, reason = assess_calibration_realism(
        fit.multiplier, fit.mae_pct, fit.vega_weighted_mae_pct, dq.status, thresholds=cfg.realism
    )
    if status in ("failed", "degraded") and dq.status == status and dq.issues:
        more = f" (+{len(dq.issues) - 1} more)" if len(dq.issues) > 1 else ""
        reason = f"{reason}: {dq.issues[0]}{more}"
    elif status == "failed" and fit.multiplier is not None:
        reason = (
            f"{reason} (multiplier {fit.multiplier:.4f}{' on the fit bound' if fit.on_bound else ''}, "
            f"MAE {_fmt_pct(fit.mae_pct)}, vega MAE {_fmt_pct(fit.vega_weighted_mae_pct)})"
        )
    run = AutoRun(
        schema_version=1,
        run_id=new_run_id(),
        ts=iso_utc(now()),
        underlying=name,
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
        as_of=iso_utc(end_dt),
        harvest_start=iso_utc(_dt(int(times[0]))) if times.size else None,
        harvest_end=iso_utc(_dt(int(times[-1]))) if times.size else None,
        snapshots_used=int(np.unique(used_t).size),
        snapshots_expected=ev.snapshots_expected,
        settings_hash=cfg.settings_hash(),
        bias_pct=_round(fit.bias_pct, 2),
        mae_vol_points=_round(fit.mae_vol_points, 2),
        rows_read=len(frame),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    append_row(root.auto_history, run)
    return run


def _fmt_pct(x: float | None) -> str:
    return "-" if x is None or not math.isfinite(x) else f"{x:,.2f}%"


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def describe_auto_run(run: AutoRun) -> str:
    """The CLI's summary: one line of verdict, one of numbers, one per data-quality issue."""
    dq = run.data_quality or DataQuality()
    m = "-" if run.multiplier is None else f"{run.multiplier:.4f}"
    rv = "-" if run.rv_7d is None else f"{100 * run.rv_7d:.1f}%"
    lines = [
        (
            f"{run.underlying} auto-calibrate {run.dte_min:g}-{run.dte_max:g}d over {run.lookback} to {run.as_of}: "
            f"{(run.status or '-').upper()} - {run.reason}"
        ),
        (
            f"    multiplier {m}{' (on fit bound)' if run.multiplier_on_bound else ''}, MAE {_fmt_pct(run.mae_pct)}, "
            f"vega MAE {_fmt_pct(run.vega_weighted_mae_pct)}, samples {run.samples or 0:,}, RV_7d {rv}, "
            f"snapshots {run.snapshots_used or 0}/{run.snapshots_expected or 0}; data quality {dq.status}"
        ),
    ]
    lines += [f"    - {issue}" for issue in dq.issues]
    lines.append(f"    run {run.run_id} (history only; the applied multipliers are unchanged)")
    return "\n".join(lines)
