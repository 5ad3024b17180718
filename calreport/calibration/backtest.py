"""Walk-forward backtest: replay a harvest through the live calibration and the policy, score out of sample.

Pure core (arrays and settings in, values out). At each decision time D, for each variant:

1. the snapshot a live run would have seen: the latest harvested snapshot at or before D (skipped
   when it is older than `max_staleness_ms`, or is the one the previous decision already used);
2. RV_7d as of that snapshot from the same sources, in the same order, as `calreport calibrate`
   (the fixed `rv`; the root's price store; the harvest's index series), nothing read past it;
3. the SAME code as `calreport calibrate`: evaluate_live (fit, EWMA from the previous seeding run,
   realism) then calreport.apply.decide_run against the simulated applied values; an apply replaces them
   with the entry the YAML writer would write (`make_entry`, calreport.apply.new_entry by default);
4. the simulated applied calibration after the decision is scored with live.score_applied (the
   same pricing and desk measures as a live run) on the decision's own snapshot (horizon 0,
   in-sample) and on the snapshot nearest D + h for each horizon h (within `max_staleness_ms`),
   with RV as of that snapshot: what the engine would have quoted then.

Time honesty: steps 1-3 read only rows with harvested_at <= the decision's snapshot time; only the
scoring in step 4 looks ahead, by design. tests/test_backtest.py alters every later row and checks
the decisions do not change.

    run_backtest(market, underlying=..., decisions_ms=..., horizons_ms=..., variants=...,
                 make_entry=..., ...) -> BacktestResult
    summarize(result, ...) -> per variant and horizon: mean / median / p90 errors, applies per
        day, mean |step|, thin-RV share, holds by reason.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from calreport.apply import decide_run, new_entry, run_thin_rv
from calreport.calibration.bands import band_value
from calreport.calibration.desk import DeskErrors
from calreport.calibration.live import evaluate_live, live_history, score_applied
from calreport.calibration.pricing import black76_vega, year_fraction
from calreport.calibration.sigma import BaseHold
from calreport.calibration.smile import sigma_for
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import RealisedVol, realised_vol
from calreport.model import AppliedEntry, CalibrationConfig, LiveRun, Multipliers
from calreport.timeutil import DAYS_PER_YEAR, MS_PER_DAY, MS_PER_HOUR, iso_ms

MakeEntry = Callable[..., AppliedEntry]  # (values, config, *, updated_at, source, run_id, reason, sigma_mode)
Progress = Callable[[int, int], None]  # (steps done, steps total)

MEASURES = ("iv_error_vp", "otm_vega_weighted_mae_pct", "all_vega_weighted_mae_pct")
IN_SAMPLE = "0h"
DEFAULT_MAX_STALENESS_MS = 30 * 60 * 1000


@dataclass(frozen=True)
class Market:
    """The harvest as arrays: every quote, sorted by harvest time, with creation_ms = its harvest
    time (HarvestFrame.to_quotes), and the index proxy per snapshot for RV."""

    quotes: QuoteArrays
    index_ms: np.ndarray
    index_price: np.ndarray
    # the true surface sigma(t_ms, ln K/F, T) when the market is generated (market/sample.py); None for a harvest
    truth: Callable[[int, np.ndarray, np.ndarray], np.ndarray] | None = None
    # t -> RV_7d exactly as rv_from_harvest computes it from the rows harvested in [t - 7 days, t]
    # (Deribit's index only when every snapshot of that window recorded it, labelled so). None:
    # nothing recorded the index, and the forward proxy per snapshot above is the same for any window.
    window_rv: Callable[[int], RealisedVol] | None = None

    def snapshots(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(times, first row, end row) of each snapshot, ascending."""
        t = np.asarray(self.quotes.creation_ms, dtype=np.int64)
        if t.size and np.any(np.diff(t) < 0):
            raise ValueError("market quotes must be sorted by harvest time")
        times, first = np.unique(t, return_index=True)
        ends = np.append(first[1:], t.size)
        return times, first, ends


@dataclass(frozen=True)
class Variant:
    """One calibration setup to replay: its name, settings, and the applied values it starts from."""

    name: str
    config: CalibrationConfig
    start: AppliedEntry
    source: str = ""  # where the settings came from (the root's config, a file)


def step_of(before: Multipliers, after: Multipliers, bands: Sequence[str]) -> float:
    """How far an apply moved what the engine quotes: the largest |after - before| over the bands' levels
    (each band's own multiplier, else the global: calibration.bands.band_value). The global alone missed a
    band-only move and, under the surface with every band present, measured a level nothing is quoted at."""
    if not bands:  # no band configured: everything is quoted at the global
        return abs(float(after.global_ or 1.0) - float(before.global_ or 1.0))
    return max(abs(band_value(after, b) - band_value(before, b)) for b in bands)


@dataclass
class Decision:
    """One decision time of one variant: what the live path decided, and how the applied values scored."""

    variant: str
    decision_ms: int
    snapshot_ms: int | None
    skipped: str | None = None  # why no run happened (no fresh snapshot)
    run: LiveRun | None = None
    thin_rv: bool = False
    applied_before: Multipliers | None = None
    applied_after: Multipliers | None = None
    step: float | None = None  # when applied: the largest |new - old| of a band's quoted level (step_of)
    entry: AppliedEntry | None = None  # the simulated applied entry after an apply
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)  # horizon label -> score

    @property
    def applied(self) -> bool:
        return self.run is not None and self.run.decision == "apply"

    def to_row(self) -> dict[str, Any]:
        """The decisions.jsonl line (model.BacktestDecision)."""
        r = self.run
        return {
            "variant": self.variant,
            "decision_ts": iso_ms(self.decision_ms),
            "snapshot_ts": iso_ms(self.snapshot_ms) if self.snapshot_ms is not None else None,
            "skipped": self.skipped,
            "status": r.status if r else None,
            "reason": r.reason if r else None,
            "decision": r.decision if r else None,
            "decision_reason": r.decision_reason if r else None,
            "rv_7d": r.rv_7d if r else None,
            "rv_returns": r.rv_returns if r else None,
            "rv_source": r.rv_source if r else None,
            "thin_rv": self.thin_rv,
            "samples": r.samples if r else None,
            "recommended": _mult(r.recommended) if r else None,
            "smoothed": _mult(r.smoothed) if r else None,
            "applied_before": _mult(self.applied_before),
            "applied_after": _mult(self.applied_after),
            "step": self.step,
            "scores": self.scores,
        }


def _mult(m: Multipliers | None) -> dict[str, Any] | None:
    """{global, bands} (and the smile when there is one), as history rows write multipliers."""
    return None if m is None else m.model_dump(by_alias=True, mode="json")


@dataclass
class BacktestResult:
    decisions: list[Decision]
    horizons: list[str]  # labels, in-sample first
    n_snapshots: int
    n_rows: int


def horizon_label(ms: int) -> str:
    """0 -> '0h', 3_600_000 -> '1h', 5_400_000 -> '90m', 2 days -> '48h'."""
    if ms % MS_PER_HOUR == 0:
        return f"{ms // MS_PER_HOUR}h"
    return f"{ms // 60_000}m"


def _score_fields(errs: dict[str, DeskErrors]) -> dict[str, Any]:
    out: dict[str, Any] = {k: getattr(errs["all"], k) for k in MEASURES}
    out["otm_samples"] = errs["all"].otm_samples
    out["by_band"] = {
        band: {k: getattr(e, k) for k in MEASURES} | {"otm_samples": e.otm_samples}
        for band, e in errs.items()
        if band != "all"
    }
    return out


# The fixed grid the applied surface is compared with the truth on: ln(K/F) x maturity (days).
TRUTH_LOG_K = np.linspace(-0.5, 0.5, 21)
TRUTH_DAYS = np.array([2.0, 7.0, 14.0, 30.0, 60.0, 90.0])


def truth_error_vp(
    truth: Callable[[int, np.ndarray, np.ndarray], np.ndarray], t_ms: int, applied: AppliedEntry, config: CalibrationConfig, hold: BaseHold
) -> float | None:
    """How far the applied surface (with the held base) sits from the true surface at t: vega-weighted
    mean |sigma_applied - sigma_true| over the fixed grid, in vol points. None when the mode has no
    base on a grid (mark_iv: a base per listed instrument only)."""
    x, days = np.meshgrid(TRUTH_LOG_K, TRUTH_DAYS)
    x, days = x.ravel(), days.ravel()
    T = days / DAYS_PER_YEAR
    if hold.mode == "mark_iv":
        return None
    base = hold.at_maturity(T, t_ms)
    true = np.asarray(truth(int(t_ms), x, T), dtype=np.float64)
    sigma = sigma_for(applied, config.bands, days, x, T, base, use_smile=config.smile.enabled, now_ms=t_ms)  # a surface is quoted on the clock from t
    w = black76_vega(np.ones_like(x), np.exp(x), T, true)
    ok = np.isfinite(sigma) & np.isfinite(true) & np.isfinite(w) & (w > 0)
    if not ok.any():
        return None
    return float(np.sum(w[ok] * np.abs(sigma[ok] - true[ok])) / np.sum(w[ok]) * 100)


def harvest_rv_at(market: Market) -> Callable[[int], RealisedVol]:
    """RV_7d at t from the harvest's index series, as rv_from_harvest computes it from the rows
    harvested in [t - 7 days, t]: nothing after t is read."""
    idx_t = np.asarray(market.index_ms, dtype=np.int64)
    idx_p = np.asarray(market.index_price, dtype=np.float64)

    def at(t_ms: int) -> RealisedVol:
        if market.window_rv is not None:
            return market.window_rv(t_ms)
        k = int(np.searchsorted(idx_t, t_ms, side="right"))  # index ticks at or before t only
        return realised_vol(idx_t[:k], idx_p[:k], t_ms, source="harvest")

    return at


@dataclass(frozen=True)
class Plan:
    """Which snapshot each decision uses and which it is scored on: the same for every variant
    (a pure function of the snapshot times), so variants can run anywhere, in any order."""

    decisions_ms: list[int]
    picks: list[int | None]  # snapshot index per decision; None when skipped
    skipped: list[str | None]
    horizons_ms: list[int]  # 0 (in-sample) first
    labels: list[str]
    targets: list[list[int | None]]  # per decision, per horizon: the snapshot scored (None: none near)


def plan_decisions(times: np.ndarray, decisions_ms: Sequence[int], horizons_ms: Sequence[int], max_staleness_ms: int) -> Plan:
    """Step 1 of the module docstring for every decision, and the snapshot nearest D + h per horizon."""
    horizons = [0, *(int(h) for h in horizons_ms if int(h) > 0)]

    def latest_at_or_before(t_ms: int) -> int | None:
        i = int(np.searchsorted(times, t_ms, side="right")) - 1
        return i if i >= 0 and t_ms - int(times[i]) <= max_staleness_ms else None

    def nearest(t_ms: int) -> int | None:
        i = int(np.searchsorted(times, t_ms))
        best = min((j for j in (i - 1, i) if 0 <= j < times.size), key=lambda j: abs(int(times[j]) - t_ms), default=None)
        return best if best is not None and abs(int(times[best]) - t_ms) <= max_staleness_ms else None

    picks: list[int | None] = []
    skipped: list[str | None] = []
    targets: list[list[int | None]] = []
    last_used: int | None = None
    for d_ms in (int(d) for d in decisions_ms):  # decision times: hundreds to thousands, no per-quote work
        i = latest_at_or_before(d_ms)
        why = None
        if i is None:
            why = f"no snapshot within {max_staleness_ms // 60_000} min before"
        elif i == last_used:
            why = "no new snapshot since the previous decision"
        picks.append(None if why else i)
        skipped.append(why)
        targets.append([] if why else [i if h == 0 else nearest(d_ms + h) for h in horizons])
        if not why:
            last_used = i
    return Plan([int(d) for d in decisions_ms], picks, skipped, horizons, [horizon_label(h) for h in horizons], targets)


@dataclass(frozen=True)
class Replay:
    """Everything one variant's replay needs besides the variant: picklable, so a process pool or a
    Dask worker can run it (`replay_variant`)."""

    market: Market
    plan: Plan
    rvs: dict[int, RealisedVol]  # snapshot time -> RV_7d as of it (the decision snapshots)
    underlying: str
    make_entry: MakeEntry = new_entry


def replay_variant(job: Replay, variant: Variant, tick: Callable[[], None] | None = None) -> list[Decision]:
    """One variant over every decision time, in order (its applied values and EWMA carry over);
    `tick` after each decision (progress)."""
    market, plan, underlying = job.market, job.plan, job.underlying
    times, first, ends = market.snapshots()
    q = market.quotes

    def snapshot(i: int) -> QuoteArrays:
        return q.take(slice(int(first[i]), int(ends[i])))  # type: ignore[arg-type]

    cfg = variant.config
    mode = cfg.sigma_mode_for(underlying)
    applied = variant.start
    runs: list[LiveRun] = []
    out: list[Decision] = []
    for n, d_ms in enumerate(plan.decisions_ms):
        i = plan.picks[n]
        if i is None:
            out.append(Decision(variant.name, d_ms, _skip_snapshot(plan, n, times), skipped=plan.skipped[n]))
            if tick is not None:
                tick()
            continue
        s_ms = int(times[i])
        chain = snapshot(i)
        rvi = job.rvs[s_ms]
        dec = _decide(variant, applied, runs, d_ms, s_ms, chain, rvi, n, underlying, job.make_entry)
        out.append(dec)
        if dec.entry is not None:
            applied = dec.entry
        # what the engine holds until the next decision: these values, and the base of THIS chain
        valid = chain.valid_name
        hold = BaseHold.freeze(mode, rvi.rv, chain.take(valid), year_fraction(chain.expiry_ms[valid], s_ms))
        for j, label in zip(plan.targets[n], plan.labels):
            if j is None:
                dec.scores[label] = {"snapshot_ts": None}
                continue
            t_j = int(times[j])
            errs = score_applied(snapshot(j), underlying=underlying, now_ms=t_j, rv=rvi, applied=applied, config=cfg, hold=hold)
            score: dict[str, Any] = {"snapshot_ts": iso_ms(t_j), "rv_7d": rvi.rv, **(_score_fields(errs) if errs else {})}
            if market.truth is not None:
                score["truth_error_vp"] = truth_error_vp(market.truth, t_j, applied, cfg, hold)
            dec.scores[label] = score
        if tick is not None:
            tick()
    return out


def _skip_snapshot(plan: Plan, n: int, times: np.ndarray) -> int | None:
    """The snapshot a skipped decision saw (the previous decision's), for its row."""
    if plan.skipped[n] is None or plan.skipped[n].startswith("no snapshot within"):  # type: ignore[union-attr]
        return None
    i = int(np.searchsorted(times, plan.decisions_ms[n], side="right")) - 1
    return int(times[i])


Mapper = Callable[[Callable[[Variant], list[Decision]], Sequence[Variant]], list[list[Decision]]]


def in_process(fn: Callable[[Variant], list[Decision]], variants: Sequence[Variant]) -> list[list[Decision]]:
    """Run every variant here, one after the other (the reference every parallel runner must equal)."""
    return [fn(v) for v in variants]


def run_backtest(
    market: Market,
    *,
    underlying: str,
    decisions_ms: Sequence[int],
    horizons_ms: Sequence[int],
    variants: Sequence[Variant],
    make_entry: MakeEntry = new_entry,
    max_staleness_ms: int = DEFAULT_MAX_STALENESS_MS,
    rv: float | None = None,
    rv_at: Callable[[int], RealisedVol] | None = None,
    progress: Progress | None = None,
    mapper: Mapper | None = None,
) -> BacktestResult:
    """Replay every variant over the decision times (see the module docstring). RV_7d at a time t:
    the fixed `rv`, else `rv_at(t)` (the command passes calibrate's own source order), else the
    harvest's index series up to t (harvest_rv_at). `mapper` runs the variants (in_process by
    default; the command passes a process pool or a Dask client): the results do not depend on it."""
    times, _, _ = market.snapshots()
    plan = plan_decisions(times, decisions_ms, horizons_ms, max_staleness_ms)
    from_harvest = harvest_rv_at(market)

    def rv_of(t_ms: int) -> RealisedVol:
        if rv is not None:
            return RealisedVol(float(rv), 0, "manual")
        return rv_at(t_ms) if rv_at is not None else from_harvest(t_ms)

    # RV as of each decision snapshot, computed once here (it may read the root's price store)
    rvs = {int(times[i]): rv_of(int(times[i])) for i in dict.fromkeys(i for i in plan.picks if i is not None)}
    job = Replay(market, plan, rvs, underlying, make_entry)
    total = len(variants) * len(plan.decisions_ms)
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(done, total)  # type: ignore[misc]

    if mapper is None:  # here: progress per decision
        per_variant = in_process(partial(replay_variant, job, tick=tick if progress is not None else None), list(variants))
    else:  # elsewhere: the runner reports whole variants
        per_variant = mapper(partial(replay_variant, job), list(variants))
        if progress is not None:
            progress(total, total)
    out = [d for rows in per_variant for d in rows]
    return BacktestResult(out, plan.labels, int(times.size), len(market.quotes))


def _decide(
    variant: Variant,
    applied: AppliedEntry,
    runs: list[LiveRun],
    d_ms: int,
    s_ms: int,
    quotes: QuoteArrays,
    rvi: RealisedVol,
    n: int,
    underlying: str,
    make_entry: MakeEntry,
) -> Decision:
    """One live run exactly as `calreport calibrate` makes it, against the simulated applied values."""
    cfg = variant.config
    run_id = f"bt-{re.sub(r'[^A-Za-z0-9_-]', '_', variant.name)}-{n:05d}"
    previous = live_history(reversed(runs), underlying, applied, cfg).previous
    run = evaluate_live(
        quotes, underlying=underlying, now_ms=s_ms, rv=rvi, applied=applied, previous=previous, config=cfg,
        run_id=run_id, snapshot_file=f"harvest@{iso_ms(s_ms)}", detail_file="",
    ).run
    run = decide_run(run, applied, cfg, underlying)  # as run_live_calibration: against the values "on disk"
    runs.append(run)
    dec = Decision(
        variant.name, d_ms, s_ms, run=run, thin_rv=run_thin_rv(run, cfg.fit.min_rv_returns),
        applied_before=applied.multipliers(), applied_after=applied.multipliers(),
    )
    values = run.applied_values or run.smoothed
    if run.decision == "apply" and values is not None:
        entry = make_entry(
            values, cfg, updated_at=run.ts, source="policy", run_id=run.run_id, reason=run.decision_reason or "", sigma_mode=run.sigma_mode
        )
        dec.applied_after = entry.multipliers()
        dec.step = step_of(applied.multipliers(), entry.multipliers(), [b.name for b in cfg.bands])
        dec.entry = entry
    return dec


# --------------------------------------------------------------------------- the summary


def _stats(values: list[float]) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=np.float64)
    if v.size == 0:
        return {"n": 0, "mean": None, "median": None, "p90": None}
    return {"n": int(v.size), "mean": float(v.mean()), "median": float(np.median(v)), "p90": float(np.percentile(v, 90))}


def hold_kind(reason: str | None) -> str:
    """The policy rule a hold reason names: 'Thin RV: RV_7d from 11 ...' -> 'Thin RV'."""
    text = (reason or "no reason").strip()
    return re.split(r"[:(]", text, maxsplit=1)[0].strip() or text


def summarize(result: BacktestResult, variants: Sequence[Variant], span_ms: int) -> dict[str, Any]:
    """Per variant: decisions, applies (and per day over `span_ms`), mean |step| (step_of: the largest move
    of a band's quoted level), thin-RV share, holds by rule, and per horizon mean / median / p90 of each measure
    (plus the mean per band)."""
    days = max(span_ms / MS_PER_DAY, 1e-9)
    out: dict[str, Any] = {}
    for v in variants:
        rows = [d for d in result.decisions if d.variant == v.name]
        ran = [d for d in rows if d.run is not None]
        applies = [d for d in ran if d.applied]
        holds: dict[str, int] = {}
        for d in ran:
            if not d.applied:
                k = hold_kind(d.run.decision_reason if d.run else None)
                holds[k] = holds.get(k, 0) + 1
        skipped: dict[str, int] = {}
        for d in rows:
            if d.skipped:
                skipped[d.skipped] = skipped.get(d.skipped, 0) + 1
        steps = [d.step for d in applies if d.step is not None]
        horizons: dict[str, Any] = {}
        for label in result.horizons:
            scored = [d.scores.get(label, {}) for d in ran]
            h: dict[str, Any] = {k: _stats([s.get(k) for s in scored]) for k in MEASURES}  # type: ignore[misc]
            h["decisions"] = h["iv_error_vp"]["n"]  # the decisions behind this row
            if any(s.get("truth_error_vp") is not None for s in scored):
                h["truth_error_vp"] = _stats([s.get("truth_error_vp") for s in scored])  # type: ignore[misc]
            bands = sorted({b for s in scored for b in (s.get("by_band") or {})}, key=[b.name for b in v.config.bands].index)
            paired = [
                d.scores[IN_SAMPLE].get("iv_error_vp")
                for d in ran
                if d.scores.get(label, {}).get("iv_error_vp") is not None and IN_SAMPLE in d.scores
            ]
            h["paired_in_sample_mean"] = _stats(paired)["mean"]  # in-sample over the same decisions
            h["by_band"] = {
                b: {k: _stats([(s.get("by_band") or {}).get(b, {}).get(k) for s in scored])["mean"] for k in MEASURES}
                for b in bands
            }
            horizons[label] = h
        thin = sum(1 for d in ran if d.thin_rv)
        out[v.name] = {
            "source": v.source,
            "settings_hash": v.config.settings_hash(),
            "decisions": len(rows),
            "runs": len(ran),
            "skipped": skipped,
            "applies": len(applies),
            "applies_per_day": len(applies) / days,
            "holds": dict(sorted(holds.items(), key=lambda kv: -kv[1])),
            "mean_abs_step": float(np.mean(steps)) if steps else None,
            "thin_rv_runs": thin,
            "thin_rv_share": thin / len(ran) if ran else None,
            "start": _mult(v.start.multipliers()),
            "end": _mult(next((d.applied_after for d in reversed(ran)), v.start.multipliers())),
            "horizons": horizons,
        }
    return out


# --------------------------------------------------------------------------- paired differences between variants

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 20_251_212  # fixed: the same backtest gives the same intervals
MIN_PAIRED_DECISIONS = 10  # fewer paired decisions: no interval (shown greyed)
MIN_BLOCKS = 4  # and at least this many independent blocks
NO_EVIDENCE = "no evidence of a difference"


def block_length(n: int, horizon_ms: int, every_ms: int) -> int:
    """Decisions closer than the horizon share scored snapshots and the applied values carry over
    between decisions, so neighbouring differences are correlated: blocks span the horizon in
    decisions, and at least n^(1/3) (the usual rate for a moving-block bootstrap)."""
    span = math.ceil(max(horizon_ms, every_ms) / max(every_ms, 1))
    return max(1, min(n, max(span, math.ceil(n ** (1 / 3)))))


def paired_bootstrap(d: np.ndarray, block: int, *, draws: int = BOOTSTRAP_DRAWS, seed: int = BOOTSTRAP_SEED) -> tuple[float, float]:
    """95 % percentile interval of the mean of `d` (in decision order) by a circular moving-block
    bootstrap with blocks of `block` decisions (block 1: the ordinary bootstrap). Vectorised over draws."""
    n = d.size
    rng = np.random.default_rng(seed)
    k = math.ceil(n / block)
    starts = rng.integers(0, n, size=(draws, k))
    idx = ((starts[:, :, None] + np.arange(block)) % n).reshape(draws, -1)[:, :n]
    means = d[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def paired_differences(result: BacktestResult, names: Sequence[str], every_ms: int, measure: str = "iv_error_vp") -> list[dict[str, Any]]:
    """Every pair of variants (a, b), every horizon: mean of a - b over the decisions both scored
    (lower error is better), its 95 % block-bootstrap interval, and a verdict; no interval from fewer
    than MIN_PAIRED_DECISIONS decisions or MIN_BLOCKS blocks (the row says why)."""
    by: dict[str, dict[str, dict[int, float]]] = {}
    for d in result.decisions:
        if d.run is None:
            continue
        for label, s in d.scores.items():
            v = s.get(measure)
            if v is not None and math.isfinite(v):
                by.setdefault(d.variant, {}).setdefault(label, {})[d.decision_ms] = float(v)
    out: list[dict[str, Any]] = []
    for label in result.horizons:
        h_ms = parse_horizon_label(label)
        for ia, a in enumerate(names):
            for b in names[ia + 1 :]:  # a handful of variants: pairs are few
                xa, xb = by.get(a, {}).get(label, {}), by.get(b, {}).get(label, {})
                common = sorted(set(xa) & set(xb))
                diff = np.array([xa[t] - xb[t] for t in common])
                n = int(diff.size)
                row: dict[str, Any] = {"a": a, "b": b, "horizon": label, "measure": measure, "n": n,
                                       "mean": float(diff.mean()) if n else None, "low": None, "high": None,
                                       "block": None, "verdict": None}
                if n == 0:
                    row["verdict"] = "no decision scored by both"
                    out.append(row)
                    continue
                block = block_length(n, h_ms, every_ms)
                row["block"] = block
                if n < MIN_PAIRED_DECISIONS or n / block < MIN_BLOCKS:
                    row["verdict"] = f"too few decisions for an interval ({n} paired, blocks of {block}; needs {MIN_PAIRED_DECISIONS} and {MIN_BLOCKS} blocks)"
                elif float(np.ptp(diff)) == 0.0:
                    row["low"] = row["high"] = row["mean"]
                    row["verdict"] = NO_EVIDENCE if row["mean"] == 0 else (f"{b} better" if row["mean"] > 0 else f"{a} better")
                else:
                    lo, hi = paired_bootstrap(diff, block)
                    row["low"], row["high"] = lo, hi
                    row["verdict"] = NO_EVIDENCE if lo <= 0 <= hi else (f"{b} better" if lo > 0 else f"{a} better")
                out.append(row)
    return out


def parse_horizon_label(label: str) -> int:
    """'24h' -> ms, '90m' -> ms (horizon_label's inverse)."""
    return int(label[:-1]) * (MS_PER_HOUR if label.endswith("h") else 60_000)
