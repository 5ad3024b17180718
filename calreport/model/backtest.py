"""`calreport backtest` results: one decision line and the summary."""

from __future__ import annotations

from typing import Any

from pydantic import (
    Field,
)

from calreport.model._base import _Lenient


class BacktestScore(_Lenient):
    """The applied calibration after one decision, scored on one snapshot (calibration/live.score_applied)."""

    snapshot_ts: str | None = Field(default=None, description="The snapshot scored (ISO 8601 UTC); null when none was near the horizon.")
    rv_7d: float | None = Field(default=None, description="RV_7d the engine holds from the decision (fraction): bases are frozen at the decision's chain.")
    iv_error_vp: float | None = Field(default=None, description="OTM vega-weighted mean |sigma_syn - sigma_mark| (vol points).")
    otm_vega_weighted_mae_pct: float | None = Field(default=None, description="OTM vega-weighted mean |P_syn - mark| / mark (percent).")
    all_vega_weighted_mae_pct: float | None = Field(default=None, description="The same over every quote (percent).")
    otm_samples: int | None = Field(default=None, description="OTM quotes scored.")
    truth_error_vp: float | None = Field(
        default=None, description="Generated markets only: vega-weighted mean |sigma_applied - sigma_true| over the fixed "
        "ln(K/F) x maturity grid (vol points), the base held from the decision.")
    by_band: dict[str, dict[str, Any]] = Field(default_factory=dict, description="band -> the three measures and otm_samples.")


class BacktestDecision(_Lenient):
    """One line of backtests/<id>/decisions.jsonl: one decision time of one variant (calibration/backtest.py)."""

    variant: str
    decision_ts: str = Field(description="The decision time (ISO 8601 UTC).")
    snapshot_ts: str | None = Field(default=None, description="The latest harvested snapshot at or before it.")
    skipped: str | None = Field(default=None, description="Why no run happened (no fresh snapshot); null when one ran.")
    status: str | None = Field(default=None, description="The live run's realism status (ok / degraded / failed).")
    reason: str | None = None
    decision: str | None = Field(default=None, description="apply or hold, as `calreport calibrate` would decide.")
    decision_reason: str | None = None
    rv_7d: float | None = Field(default=None, description="RV_7d of the run (fraction).")
    rv_returns: int | None = Field(default=None, description="Hourly returns behind RV_7d.")
    rv_source: str | None = Field(default=None, description="Where RV_7d came from, as a live run records it (manual, prices:..., harvest, harvest index).")
    thin_rv: bool = Field(default=False, description="RV_7d from fewer than fit.min_rv_returns returns.")
    samples: int | None = None
    recommended: dict[str, Any] | None = Field(default=None, description="{global, bands[, smile]} fitted by the run.")
    smoothed: dict[str, Any] | None = Field(default=None, description="{global, bands[, smile]} after the EWMA.")
    applied_before: dict[str, Any] | None = Field(default=None, description="Simulated applied {global, bands[, smile]} before the decision.")
    applied_after: dict[str, Any] | None = Field(default=None, description="... and after it.")
    step: float | None = Field(default=None, description="When applied: the largest |after - before| of a band's quoted level (its own multiplier, else the global; no band configured: the global's move).")
    scores: dict[str, BacktestScore] = Field(default_factory=dict, description="Horizon label ('0h' in-sample, '1h', ...) -> score.")


class BacktestDifference(_Lenient):
    """One paired difference between two variants at one horizon (calibration/backtest.paired_differences)."""

    a: str
    b: str
    horizon: str
    measure: str = Field(default="iv_error_vp", description="The score compared (OTM IV error, vp).")
    n: int = Field(description="Decisions both variants scored at this horizon (the pairs).")
    mean: float | None = Field(default=None, description="Mean of a - b over the pairs (negative: a's error is lower).")
    low: float | None = Field(default=None, description="95 % interval, lower end (null: too few decisions).")
    high: float | None = Field(default=None, description="95 % interval, upper end.")
    block: int | None = Field(default=None, description="Decisions per block of the circular moving-block bootstrap (1: plain).")
    verdict: str | None = Field(default=None, description="'no evidence of a difference' (interval covers 0), '<name> better', or why there is no interval.")


class BacktestSummary(_Lenient):
    """backtests/<id>/summary.json: settings and per-variant results of one `calreport backtest`."""

    schema_version: int = 2
    id: str = Field(description="The backtest id (a ULID); also the directory name.")
    underlying: str
    created: str = Field(description="When the backtest ran (ISO 8601 UTC, wall clock).")
    start: str = Field(description="First decision time (ISO 8601 UTC).")
    end: str = Field(description="Last decision time bound (ISO 8601 UTC).")
    every: str = Field(description="Time between decisions, e.g. 1h.")
    horizons: list[str] = Field(description="Horizon labels, in-sample '0h' first.")
    max_staleness_minutes: float = Field(description="A snapshot further than this from a decision or horizon time is not used.")
    rv: float | None = Field(default=None, description="Fixed RV_7d (--rv); null means RV_7d from the harvest as of each snapshot.")
    snapshots: int = Field(default=0, description="Harvested snapshots read.")
    rows: int = Field(default=0, description="Harvested rows read.")
    elapsed_s: float | None = None
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="name -> decisions, runs, skipped, applies, applies_per_day, holds (by policy rule), mean_abs_step, "
        "thin_rv_runs, thin_rv_share, start, end, settings_hash, source, config_file, and horizons: label -> "
        "{decisions, iv_error_vp, otm_vega_weighted_mae_pct, all_vega_weighted_mae_pct[, truth_error_vp]: {n, mean, median, p90}, by_band}.",
    )
    differences: list[BacktestDifference] = Field(
        default_factory=list, description="Paired differences of the OTM IV error between every two variants per horizon, "
        "with 95 % block-bootstrap intervals over decisions (schema 2; older summaries have none).")
    generated: dict[str, Any] | None = Field(
        default=None, description="When the market was generated (--generated): {days, seed, every_minutes}; null for a harvest.")
    sweep: dict[str, list[Any]] | None = Field(default=None, description="--sweep: config path -> values (the grid of variants).")
    workers: str | None = Field(default=None, description="What ran the variants: in-process, pool:N, or the Dask scheduler's address.")
