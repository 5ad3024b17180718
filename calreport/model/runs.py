"""History rows (live runs, apply events, auto runs, alerts) and a live run's detail file."""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
)

from calreport import SCHEMA_VERSION
from calreport.model._base import (
    Decision,
    FlagCode,
    RealismStatus,
    SigmaMode,
    _Lenient,
)
from calreport.model.applied import Multipliers, Smile
from calreport.timeutil import parse_time


class DataQuality(_Lenient):
    """Data-quality verdict of an auto run, with the evidence the Data health panel shows."""

    status: RealismStatus | None = Field(default=None, description="ok, degraded or failed.")
    issues: list[str] = Field(default_factory=list, description="Why it is not ok, one sentence each.")
    schema_errors: int | None = Field(default=None, description="Unreadable lines in the window's harvest day files.")
    completeness: float | None = Field(default=None, description="Snapshots present / expected (fraction, 0..1).")
    expiries: int | None = Field(default=None, description="Expiries among the quotes used.")
    strikes: int | None = Field(default=None, description="Distinct strikes among the quotes used.")
    rv_returns: int | None = Field(default=None, description="Hourly returns behind RV_7d at the window end.")


class HistoryRow(_Lenient):
    """Fields every history line has. Optional fields listed in `_SPARSE` are written only by the
    writers that set them (so declaring them does not add nulls to every other row)."""

    _SPARSE: ClassVar[frozenset[str]] = frozenset()

    schema_version: int | None = Field(default=None, description="Row format version (1).")
    type: str = Field(description="live_run, apply or auto_run; other types are kept as they are.")
    run_id: str | None = Field(
        default=None, description="ULID (26 characters, sorts by time) or legacy-<12 hex> for imported records."
    )
    ts: str | None = Field(default=None, description="ISO 8601 UTC time of the row (see each row type).")
    underlying: str | None = Field(default=None, description="BTC, ETH, ...")

    def to_json_dict(self) -> dict[str, Any]:
        unset = {name for name in self._SPARSE if name not in self.model_fields_set}
        return self.model_dump(by_alias=True, mode="json", exclude_none=False, exclude=unset or None)

    @property
    def time(self) -> datetime | None:
        try:
            return parse_time(self.ts) if self.ts else None
        except ValueError:
            return None


class GroupMetrics(_Lenient):
    """Metrics of one slice of a run's quotes (an option type or a DTE band)."""

    samples: int | None = Field(default=None, description="Quotes in the slice.")
    mae_pct: float | None = Field(default=None, description="Mean |synthetic - mark| / mark (percent).")
    bias_pct: float | None = Field(default=None, description="Mean (synthetic - mark) / mark (percent).")
    vega_weighted_mae_pct: float | None = Field(default=None, description="Vega-weighted MAE (percent).")
    mae_vol_points: float | None = Field(default=None, description="Mean |synthetic IV - market IV| (vol points).")
    recommended: float | None = Field(default=None, description="Multiplier fitted on the slice alone (4 decimals).")
    on_bound: bool | None = Field(default=None, description="The slice's fit sits on a search bound.")


class DeltaBucket(_Lenient):
    """One delta bucket of a band's out-of-the-money quotes (calibration/desk.py); vega-weighted means."""

    samples: int | None = Field(default=None, description="OTM quotes in the bucket.")
    market_iv_pct: float | None = Field(default=None, description="Vega-weighted mean sigma_mark (percent).")
    synthetic_iv_pct: float | None = Field(default=None, description="Vega-weighted mean synthetic sigma (percent).")
    gap_vp: float | None = Field(default=None, description="Vega-weighted mean (synthetic - market) IV (vol points, signed).")
    price_error_pct: float | None = Field(default=None, description="Vega-weighted mean |synthetic - mark| / mark (percent).")


class RunFlag(_Lenient):
    """One thing a desk should look at (calibration/flags.py; thresholds in config `flags`)."""

    code: FlagCode = Field(description="THIN_RV, IV_DRIFT, ATM_RV_RANGE, ON_FIT_BOUND, DEGRADED_APPLIED, WING_GAP, SHORT_EXPIRY_OUTLIER or FIT_NOT_CONVERGED.")
    message: str = Field(description="The numbers behind it, one sentence.")


class UncertaintyEntry(_Lenient):
    """The standard error of one fitted multiplier and its parts (calibration/uncertainty.py)."""

    se: float | None = Field(default=None, description="sqrt(se_expiry^2 + se_rv^2) (multiplier units).")
    se_expiry: float | None = Field(default=None, description="Sd of the refitted multiplier over the draws of the expiries (resampled whole, or under the wild cluster bootstrap their residuals flipped whole).")
    se_rv: float | None = Field(default=None, description="m / sqrt(2 n): RV_7d's sampling error from n returns (null: manual RV or an IV base).")
    ci95: list[float] | None = Field(
        default=None,
        description="[m exp(-q se / m), m exp(q se / m)]: q = 1.96 (flat grid bootstrap) or Student's t with expiries - 1 dof (surface refit, wild cluster); null when refused.",
    )
    expiries: int | None = Field(default=None, description="Expiries drawn (for a surface level: the expiries that inform its pillar).")
    draws: int | None = Field(default=None, description="Bootstrap draws used (wild cluster: the design's refits).")
    method: str | None = Field(
        default=None,
        description='"wild cluster" (fit.surface_se wild): every run of a balanced sign design refits the applied surface and the global smile on the data with each expiry\'s residuals kept or flipped; "surface refit" (fit.refit_draws >= 2): every draw refits them on the resampled expiries; absent: the flat grid bootstrap (the default fit.surface_se flat, older rows, the step model, auto runs).',
    )
    distinct: int | None = Field(default=None, description="Distinct draws of the expiries that inform this value: resamples among the draws, or 2^k sign patterns of k expiries (wild cluster).")
    refused: str | None = Field(default=None, description="Why no interval is shown (too few distinct resamples, sign patterns or expiries); the SE is still given.")
    nodes: list[NodeUncertainty] | None = Field(default=None, description="Per smile node of this level's curve: its standard error and interval (surface refit and wild cluster only).")


class NodeUncertainty(_Lenient):
    """The standard error of one applied smile node (dimensionless; no RV term: a node is a ratio at fixed x)."""

    x: float = Field(description="The node (normalised moneyness).")
    value: float | None = Field(default=None, description="The recommended node value.")
    se: float | None = Field(default=None, description="Sd of the refitted node over the draws or the wild design's runs (null at x = 0, fixed at 1).")
    ci95: list[float] | None = Field(default=None, description="[v exp(-t se / v), v exp(t se / v)], t of Student with expiries - 1 dof; null when refused.")
    distinct: int | None = Field(default=None, description="Distinct draws of the expiries informing the node's pillar (resamples, or 2^k sign patterns).")
    refused: str | None = Field(default=None, description="Why no interval is shown.")


class Interval95(_Lenient):
    """95 % intervals of a global multiplier and its bands ({"global": [lo, hi], "bands": {...}})."""

    global_: list[float] | None = Field(default=None, alias="global", description="[low, high] of the global multiplier.")
    bands: dict[str, list[float]] = Field(default_factory=dict, description="Band label -> [low, high].")


_SE_DOC = "bootstrap over expiries combined with RV's sampling error m / sqrt(2 n); see CALIBRATION_NOTES.md"


class ArbitrageCheck(_Lenient):
    """Static-arbitrage checks of a surface (calibration/surface.py): counts and the first violation named."""

    butterflies: int = Field(default=0, description="Negative butterflies (call price not convex in strike).")
    call_spreads: int = Field(default=0, description="Call spreads of negative value (call price rising with strike, or falling faster than the forward).")
    calendars: int = Field(default=0, description="Calendar spreads of negative value (total variance at fixed K/F falling with maturity).")
    first: str | None = Field(default=None, description="The first violation, named (null when clean).")

    @property
    def total(self) -> int:
        return self.butterflies + self.call_spreads + self.calendars


class SmileFitStats(_Lenient):
    """How one smile of a run was fitted (calibration/smile.py), per band and "global"."""

    source: Literal["fitted", "global"] | None = Field(
        default=None, description='"fitted": its own smile; "global": too few OTM quotes, the band takes the global smile (its level is fitted).'
    )
    samples: int | None = Field(default=None, description="OTM quotes the fit used.")
    quotes_per_node: list[int] | None = Field(default=None, description="Quotes informing each node (x between its neighbours), in node order.")
    objective: float | None = Field(default=None, description="The configured objective at the fit, without the penalty (vol points or percent).")
    iv_error_vp: float | None = Field(default=None, description="Vega-weighted mean |sigma_fit - sigma_mark| over those quotes (vol points).")


_DESK_DOC = "at the tested multipliers for a live run, at the fitted multiplier for an auto run"


_LEGACY_FIELDS = ("imported_from", "legacy_source", "legacy_applied", "legacy_applied_reason", "legacy")


class RunMeasures(HistoryRow):
    """What live and auto runs both measure and record: the realism verdict, the errors at the
    calibration tested (live) or fitted (auto), RV provenance, flags and uncertainty, and the
    fields of an imported legacy record. One home, so the two row types cannot drift apart."""

    mae_pct: float | None = Field(default=None, description="Mean |synthetic - mark| / mark at the tested multipliers (percent).")
    bias_pct: float | None = Field(default=None, description="Mean (synthetic - mark) / mark (percent).")
    mae_vol_points: float | None = Field(default=None, description="Mean |synthetic IV - market IV| (vol points).")
    vega_weighted_mae_pct: float | None = Field(default=None, description="Vega-weighted MAE (percent).")
    samples: int | None = Field(default=None, description="Quotes that passed the filters.")
    status: RealismStatus | None = Field(default=None, description="Realism verdict: ok, degraded or failed.")
    reason: str | None = Field(default=None, description="Why that status.")
    rv_7d: float | None = Field(default=None, description="Realised vol over the 7 days before the snapshot (fraction, annualised).")
    rv_source: str | None = Field(default=None, description="Where RV_7d came from: manual, chart:<file>, prices:<U>-PERPETUAL (the price store) or harvest.")
    settings_hash: str | None = Field(default=None, description="12 hex digits of the SHA-256 of every setting used.")
    otm_samples: int | None = Field(default=None, description="Out-of-the-money quotes (calls K >= F, puts K < F): each strike once.")
    otm_vega_weighted_mae_pct: float | None = Field(
        default=None, description=f"Vega-weighted mean |synthetic - mark| / mark over OTM quotes (percent), {_DESK_DOC}."
    )
    iv_error_vp: float | None = Field(
        default=None, description=f"Vega-weighted mean |sigma_model - sigma_mark| over OTM quotes (vol points), {_DESK_DOC}."
    )
    iv_bias_vp: float | None = Field(default=None, description="Vega-weighted mean (sigma_model - sigma_mark) over OTM quotes (vol points, signed).")
    by_delta_bucket: dict[str, dict[str, DeltaBucket]] | None = Field(
        default=None, description='Band name (and "all") -> delta bucket (put_lt10, put_10_25, atm, call_10_25, call_lt10) -> errors.'
    )
    fit_objective: str | None = Field(default=None, description="What the fit minimised: price_vega_rel or otm_iv_vega.")
    flags: list[RunFlag] | None = Field(default=None, description="Active flags of the run (code + message); see CALIBRATION_NOTES.md.")
    sigma_mode: SigmaMode | None = Field(default=None, description="What the multiplier multiplies: rv, atm_iv or mark_iv (null: rv, older rows).")
    uncertainty: dict[str, UncertaintyEntry] | None = Field(default=None, description='"global" and band label -> standard error and its parts.')
    imported_from: str | None = Field(default=None, description="Legacy import: the record's file name.")
    legacy_source: str | None = Field(default=None, description='Legacy import: the old system\'s source ("live" or "harvested").')
    legacy_applied: bool | None = Field(default=None, description="Legacy import: whether the old system applied it.")
    legacy_applied_reason: str | None = Field(default=None, description="Legacy import: the old system's reason.")
    legacy: dict[str, Any] | None = Field(default=None, description="Legacy import: the old record as read.")


class LiveRun(RunMeasures):
    """One live calibration against Deribit marks. Its display status is derived, never stored.

    Written by calibration/live.py (`calreport calibrate`); imported legacy records (source
    "legacy") by commands/legacy.py. `ts` is the snapshot's time, never the wall clock.
    """

    _SPARSE: ClassVar[frozenset[str]] = frozenset({*_LEGACY_FIELDS, "smile_fit"})

    type: Literal["live_run"] = "live_run"
    source: str | None = Field(
        default="live", description='"live": a run calreport made; "legacy": an imported record (never applied by force-apply).'
    )

    @property
    def is_live(self) -> bool:
        """A run calreport made against Deribit (not an imported legacy record): the only kind
        force-apply picks and the EWMA follows."""
        return (self.source or "live") == "live"

    multiplier_tested: float | None = Field(default=None, description="Applied global multiplier the metrics were measured at.")
    atm_iv: float | None = Field(default=None, description="ATM mark IV interpolated to 7 days (fraction).")
    atm_ratio: float | None = Field(default=None, description="atm_iv / rv_7d.")
    recommended: Multipliers | None = Field(default=None, description="Fitted multipliers (4 decimals).")
    smoothed: Multipliers | None = Field(default=None, description="EWMA of the recommendations: what the policy would apply.")
    vega_sum: float | None = Field(default=None, description="Summed vega of those quotes (coin per 1.00 vol).")
    decision: Decision | None = Field(default=None, description="The update policy's decision.")
    decision_reason: str | None = Field(default=None, description="Why that decision.")
    # provenance and detail (all optional: older rows lack them and render as "-")
    snapshot_ts: str | None = Field(default=None, description="The snapshot's time: its newest creation_timestamp (ISO 8601 UTC).")
    rv_returns: int | None = Field(default=None, description="Hourly returns behind RV_7d (a full week is 168).")
    rv_warning: str | None = Field(default=None, description="Set when RV_7d fell back to the harvest's forwards instead of a price series.")
    deribit_hv: float | None = Field(default=None, description="Deribit's own historical volatility at the snapshot, from the price store (fraction): a cross-check of RV_7d.")
    deribit_hv_ts: str | None = Field(default=None, description="Time of that Deribit reading (ISO 8601 UTC).")
    atm_source: str | None = Field(default=None, description="How the 7-day ATM IV was obtained (interpolated, flat, none).")
    recommended_on_bound: bool | None = Field(default=None, description="The global fit sits on a search bound.")
    dropped: dict[str, int] | None = Field(default=None, description="Filter reason -> quotes dropped, each counted under its first reason.")
    by_type: dict[str, GroupMetrics] | None = Field(default=None, description="C / P -> metrics.")
    by_band: dict[str, GroupMetrics] | None = Field(default=None, description="Band label -> metrics (legacy band names for imported records).")
    by_type_band: dict[str, dict[str, GroupMetrics]] | None = Field(
        default=None, description="C / P -> band -> metrics of the OTM quotes only, each with its own fit (the skew view)."
    )
    detail_file: str | None = Field(default=None, description="Quote-level detail, relative to the root: history/runs/<run_id>.json.")
    # what the run was measured against and how its numbers came about (calibration/live.py)
    tested: Multipliers | None = Field(default=None, description="The applied global + bands the metrics were computed at.")
    snapshot_file: str | None = Field(
        default=None, description="File name of the snapshot; for a chain fetched by the run, its path in the root (data/snapshots/<U>/<time>.json.gz)."
    )
    quotes_total: int | None = Field(default=None, description="Rows in the snapshot, before the filters.")
    smoothed_from: str | None = Field(default=None, description='The EWMA\'s previous value: "run <id>" or "applied".')
    fit_vega_weighted_mae_pct: float | None = Field(
        default=None, description="Vega-weighted MAE over every quote at the recommended calibration, bands and smile included (percent)."
    )
    fit_otm_vega_weighted_mae_pct: float | None = Field(
        default=None, description="Vega-weighted mean |synthetic - mark| / mark over OTM quotes at the recommended calibration, smile included (percent)."
    )
    fit_iv_error_vp: float | None = Field(
        default=None, description="Vega-weighted mean |sigma_model - sigma_mark| over OTM quotes at the recommended calibration, smile included (vol points)."
    )
    data_quality_status: RealismStatus | None = Field(default=None, description="ok, degraded (thin RV history, no ATM IV, a few marks above the no-arbitrage bound) or failed (marks in USD or mostly above the bound).")
    data_quality_issues: list[str] | None = Field(default=None, description="Why data quality is degraded.")
    applied_values: Multipliers | None = Field(
        default=None, description="What the policy applies: the smoothed values, each step capped at policy.max_rel_step."
    )
    feeds_smoothing: bool | None = Field(
        default=None, description="Whether this run's smoothed value may seed the next EWMA (false: failed, thin RV or too few samples)."
    )
    smoothing_alpha: float | None = Field(default=None, description="The EWMA weight this run used (fraction).")
    # uncertainty (calibration/uncertainty.py)
    multiplier_se: Multipliers | None = Field(default=None, description=f"Standard error of the recommended global and band multipliers: {_SE_DOC}.")
    multiplier_ci95: Interval95 | None = Field(default=None, description="95 % interval of the recommended global and band multipliers.")
    # the smile (calibration/smile.py); the fitted values are in recommended.smile
    arbitrage: dict[str, ArbitrageCheck] | None = Field(
        default=None,
        description="Static-arbitrage checks of the recommended and smoothed surfaces: '<which> listed' (the run's strikes and expiries) and '<which> grid' (K/F 0.3-3 x 1 day-1 year).",
    )
    surface_fit_s: float | None = Field(default=None, description="Seconds the joint surface fit took (levels + smiles).")
    surface_fit_capped: bool | None = Field(
        default=None,
        description="True when the surface fit's last IRLS round stopped at its step cap still descending (not a converged optimum; flag FIT_NOT_CONVERGED); null: no surface fit or an older row.",
    )
    smile_fit: dict[str, SmileFitStats] | None = Field(
        default=None, description='"global" and band name -> how its smile was fitted (null when smile.enabled is false).'
    )


NOTE_MAX_CHARS = 500  # a user's --note: one line, never cut


class ApplyEvent(HistoryRow):
    """A write of config/applied_multipliers.yaml, appended by store/applied.py in the same
    transaction. `ts` is the wall-clock time of the apply (the YAML's updated_at)."""

    _SPARSE: ClassVar[frozenset[str]] = frozenset({"recovered", "schema_upgrade", "sigma_mode", "note"})

    type: Literal["apply"] = "apply"
    previous: Multipliers | None = Field(default=None, description="The values before the apply.")
    applied: Multipliers | None = Field(default=None, description="The values written to the YAML.")
    source: str | None = Field(default=None, description="policy, force, rollback (or init, when recovered).")
    reason: str | None = Field(default=None, description="Why they were applied.")
    previous_run_id: str | None = Field(default=None, description="run_id of the values replaced.")
    recovered: bool | None = Field(
        default=None,
        description="Present and true when this event was recorded later, for a YAML write whose writer stopped before appending it.",
    )
    sigma_mode: SigmaMode | None = Field(default=None, description="Present when the values were fitted in a sigma mode other than rv (atm_iv, mark_iv).")
    schema_upgrade: str | None = Field(
        default=None, description='Present when this apply rewrote the applied YAML in a newer format: "1 -> 2" (schema_version).'
    )
    note: str | None = Field(
        default=None, description="Present when the user gave one: the --note of force-apply or rollback (or the dashboard dialog's), one line."
    )


class AutoRun(RunMeasures):
    """One auto-calibrate run over harvested snapshots. It can never be applied.

    Written by calibration/auto.py (`calreport auto-calibrate`, scripts/auto_calibrate_iv.py);
    imported legacy "harvested" records by commands/legacy.py. `ts` is the wall-clock run time.
    """

    _SPARSE: ClassVar[frozenset[str]] = frozenset(
        {"smoothed_multiplier", "smile", "smile_multiplier", "smile_fit", "by_delta_bucket", "uncertainty", "detail_file", *_LEGACY_FIELDS}
    )
    # What no table, chart or state document shows: written to the run's detail file, not the row
    # (rows written before kept them inline and still load; see AutoRunDetail).
    DETAIL_FIELDS: ClassVar[tuple[str, ...]] = ("by_delta_bucket", "uncertainty", "smile", "smile_multiplier", "smile_fit")

    type: Literal["auto_run"] = "auto_run"
    dte_min: float | None = Field(default=None, description="DTE range start (days, inclusive).")
    dte_max: float | None = Field(default=None, description="DTE range end (days, inclusive).")
    lookback: str | None = Field(default=None, description="Window length as given: 14d, 12h, 90m, 1w.")
    multiplier: float | None = Field(default=None, description="Fitted multiplier (4 decimals); null when nothing was fitted (a failed run; an imported legacy record over 0 samples).")
    data_quality: DataQuality | None = Field(default=None, description="Data-quality verdict and evidence.")
    multiplier_on_bound: bool | None = Field(default=None, description="The fit sits on a search bound.")
    as_of: str | None = Field(default=None, description="Window end (ISO 8601 UTC).")
    harvest_start: str | None = Field(default=None, description="First snapshot in the window (ISO 8601 UTC).")
    harvest_end: str | None = Field(default=None, description="Last snapshot in the window (ISO 8601 UTC).")
    snapshots_used: int | None = Field(default=None, description="Snapshots that contributed quotes.")
    first_snapshot: str | None = Field(default=None, description="The first snapshot that contributed quotes (ISO 8601 UTC).")
    last_snapshot: str | None = Field(default=None, description="The last snapshot that contributed quotes (ISO 8601 UTC).")
    span_hours: float | None = Field(default=None, description="last_snapshot - first_snapshot: the window the fit really covers (hours).")
    snapshots_in_window: int | None = Field(default=None, description="Snapshots harvested in the lookback window.")
    snapshots_dropped: dict[str, int] | None = Field(
        default=None, description="Reason -> snapshots left out: rv_history (RV_7d from < auto.min_rv_returns returns), no_usable_quotes."
    )
    rv_returns_median: int | None = Field(default=None, description="Median hourly returns behind the RV_7d of the snapshots used.")
    rv_returns_min: int | None = Field(default=None, description="Fewest hourly returns behind the RV_7d of a snapshot used.")
    rv_returns_max: int | None = Field(default=None, description="Most hourly returns behind the RV_7d of a snapshot used.")
    snapshots_expected: int | None = Field(default=None, description="Snapshots the window should hold at the expected interval.")
    rows_read: int | None = Field(default=None, description="Harvest rows in the window.")
    elapsed_s: float | None = Field(default=None, description="Run time (seconds).")
    # uncertainty (calibration/uncertainty.py)
    multiplier_se: float | None = Field(default=None, description=f"Standard error of the fitted multiplier: {_SE_DOC}.")
    multiplier_ci95: list[float] | None = Field(default=None, description="95 % interval [low, high] of the fitted multiplier.")
    # the window's smile (calibration/smile.py): recorded only, never applied; written when smile.enabled
    smile: Smile | None = Field(default=None, description="The window's global smile (node values), fitted over its OTM quotes.")
    smile_multiplier: float | None = Field(default=None, description="The level m fitted jointly with that smile (4 decimals).")
    smile_fit: SmileFitStats | None = Field(default=None, description="How that smile was fitted: OTM quotes used, quotes per node, objective.")
    detail_file: str | None = Field(
        default=None, description="The run's detail (delta buckets, uncertainty, smile), relative to the root: history/runs/<run_id>.json."
    )
    # imported legacy records only (commands/legacy.py)
    smoothed_multiplier: float | None = Field(default=None, description="Legacy import: the old system's smoothed global multiplier.")

    def split_detail(self, detail_file: str) -> tuple["AutoRun", "AutoRunDetail"]:
        """(the history row, its detail file): the row keeps what the dashboard shows and names the file."""
        detail = AutoRunDetail(
            run_id=self.run_id or "", underlying=self.underlying or "", ts=self.ts or "",
            **{name: getattr(self, name) for name in self.DETAIL_FIELDS},
        )
        data = {k: v for k, v in self.__dict__.items() if k not in self.DETAIL_FIELDS}
        fields_set = (self.model_fields_set - set(self.DETAIL_FIELDS)) | {"detail_file"}
        row = AutoRun.model_construct(fields_set, **{**data, "detail_file": detail_file, **(self.model_extra or {})})
        return row, detail


class AlertDelivery(_Lenient):
    """One attempt to deliver an alert event."""

    channel: Literal["command", "webhook"] = Field(description="command or webhook.")
    target: str = Field(description="The program (first word) or the webhook URL.")
    ok: bool = Field(description="Delivered: the command exited 0, the webhook answered 2xx.")
    error: str | None = Field(default=None, description="Why not, one line (exit status, HTTP status, timeout, connection error).")
    elapsed_s: float | None = Field(default=None, description="Time the delivery took (seconds).")


class AlertEvent(HistoryRow):
    """history/alerts.jsonl: an alert raised for a run and how its delivery went (commands/adapters/alerts.py).
    `ts` is the wall-clock time of the delivery; `run_id` the run it is about."""

    type: Literal["alert"] = "alert"
    kind: str | None = Field(default=None, description="live or auto.")
    triggers: list[str] = Field(default_factory=list, description="failed, held_for_review and / or new_flags.")
    event: dict[str, Any] | None = Field(default=None, description="The JSON event delivered (what the command read on stdin / the webhook received).")
    deliveries: list[AlertDelivery] = Field(default_factory=list, description="One entry per channel configured.")


class UnknownRow(HistoryRow):
    """A row of a type this version does not know; kept so nothing is dropped."""


ROW_TYPES: dict[str, type[HistoryRow]] = {"live_run": LiveRun, "apply": ApplyEvent, "auto_run": AutoRun, "alert": AlertEvent}




class QuoteDetail(_Lenient):
    """One quote of a live run (history/runs/<run_id>.json), for the latest-run table."""

    instrument: str = Field(description="Deribit instrument name, e.g. BTC-27DEC24-60000-C.")
    dte: float = Field(description="Days to expiry at the snapshot (4 decimals).")
    strike: float = Field(description="Strike (quote currency, USD).")
    type: Literal["C", "P"] = Field(description="Call or put.")
    mark: float = Field(description="Deribit mark price (coin).")
    synthetic: float = Field(description="Black-76 price at RV_7d x the tested multiplier (coin).")
    diff_pct: float = Field(description="(synthetic - mark) / mark (percent).")
    vega: float = Field(description="Black-76 vega at the market IV (coin per 1.00 vol).")
    mark_iv: float | None = Field(default=None, description="Deribit's mark IV (fraction; the mark inverted where Deribit gives none): what the IV errors compare with. Files written before held the mark price's own IV.")
    synthetic_iv: float | None = Field(default=None, description="The synthetic sigma (fraction).")
    band: str | None = Field(default=None, description="DTE band label, null outside every band.")
    forward: float | None = Field(default=None, description="The expiry's forward, Deribit's underlying_price (USD); for the smile chart's moneyness.")


class ExpirySummary(_Lenient):
    """Per-expiry summary of a live run, for the ATM IV vs synthetic IV chart."""

    expiry: str = Field(description="Expiry time, 08:00 UTC (ISO 8601).")
    dte: float = Field(description="Days to expiry at the snapshot.")
    samples: int = Field(description="Quotes of this expiry used.")
    atm_mark_iv: float | None = Field(default=None, description="ATM mark IV (fraction).")
    synthetic_iv: float | None = Field(default=None, description="RV_7d x the tested multiplier (fraction).")
    mae_pct: float | None = Field(default=None, description="MAE (percent).")
    vega_weighted_mae_pct: float | None = Field(default=None, description="Vega-weighted MAE (percent).")


class FrontQuote(_Lenient):
    """A quote the engine prices but the run does not fit: its expiry is nearer than filters.min_dte (every other
    filter passed). Kept so the dashboard can show how the applied calibration quotes the very front."""

    instrument: str = Field(description="Deribit instrument name.")
    dte: float = Field(description="Days to expiry at the snapshot (4 decimals; below filters.min_dte).")
    strike: float = Field(description="Strike (quote currency, USD).")
    type: Literal["C", "P"] = Field(description="Call or put.")
    forward: float = Field(description="The expiry's forward, Deribit's underlying_price (USD).")
    mark_iv: float = Field(description="The desk's market IV (Deribit's mark_iv, the mark inverted where absent; fraction).")
    vega: float = Field(description="Black-76 vega at that IV (coin per 1.00 vol).")


class RunDetail(_Lenient):
    """history/runs/<run_id>.json: the quote-level detail of one live run (calibration/live.py)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(description="The live run's run_id.")
    underlying: str
    ts: str = Field(description="The run's ts (snapshot time, ISO 8601 UTC).")
    quotes: list[QuoteDetail] = Field(default_factory=list, description="Every quote used (empty for a failed run).")
    expiries: list[ExpirySummary] = Field(default_factory=list, description="One summary per expiry.")
    front_quotes: list[FrontQuote] = Field(
        default_factory=list,
        description="Quotes nearer than filters.min_dte that pass every other filter: not fitted, but quoted by the engine (empty in files written before).",
    )


class AutoRunDetail(_Lenient):
    """history/runs/<run_id>.json of an auto run (store/history.append_auto_run): what its row does not
    carry. Rows written before this file existed carry these fields inline (AutoRun keeps them)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(description="The auto run's run_id.")
    underlying: str
    ts: str = Field(description="The run's ts (wall-clock run time, ISO 8601 UTC).")
    by_delta_bucket: dict[str, dict[str, DeltaBucket]] | None = Field(
        default=None, description='"all" -> delta bucket (put_lt10, put_10_25, atm, call_10_25, call_lt10) -> errors at the fitted multiplier.'
    )
    uncertainty: dict[str, UncertaintyEntry] | None = Field(default=None, description='"global" -> standard error of the fitted multiplier and its parts.')
    smile: Smile | None = Field(default=None, description="The window's global smile (node values), fitted over its OTM quotes (null: smile.enabled false).")
    smile_multiplier: float | None = Field(default=None, description="The level m fitted jointly with that smile (4 decimals).")
    smile_fit: SmileFitStats | None = Field(default=None, description="How that smile was fitted: OTM quotes used, quotes per node, objective.")
