"""Pydantic models: the schema of every file calreport reads or writes.

- `AppliedDocument` is config/applied_multipliers.yaml (strict: misspelt keys, non-numeric or
  non-finite multipliers are errors).
- `LiveRun`, `ApplyEvent`, `AutoRun` are history rows (lenient: rows from older versions load with
  missing fields as None; unknown extra fields are kept and re-emitted).
- `StateDocument` is the state API document.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from calreport import SCHEMA_VERSION
from calreport.timeutil import iso_utc, parse_time, utc_now  # noqa: F401 - re-used by the validators

UNDERLYING_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
BAND_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")

ApplySource = Literal["policy", "force", "rollback", "init"]
RealismStatus = Literal["ok", "degraded", "failed"]
DisplayStatus = Literal["applied", "superseded", "held", "failed"]


def _strict_multiplier(value: Any) -> float:
    """A multiplier is a finite positive number written as a number (not '1e-3', not yes/no)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"multiplier must be a number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"multiplier must be finite and > 0, got {value!r}")
    return v


def _strict_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__} {value!r}")
    return value


def _iso_string(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value)
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time string, got {value!r}")
    parse_time(value)
    return value


Multiplier = Annotated[float, BeforeValidator(_strict_multiplier)]
StrictName = Annotated[str, BeforeValidator(_strict_str)]
IsoTime = Annotated[str, BeforeValidator(_iso_string)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Lenient(BaseModel):
    """History rows: keep unknown fields (newer writers), default missing ones (older writers)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- applied multipliers


class AppliedEntry(_Strict):
    """The multipliers the engine uses for one underlying."""

    global_: Multiplier = Field(alias="global")
    bands: dict[StrictName, Multiplier] = Field(default_factory=dict)
    updated_at: IsoTime | None = None
    source: ApplySource = "init"
    run_id: StrictName | None = None
    reason: StrictName | None = None

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("bands")
    @classmethod
    def _band_labels(cls, v: dict[str, float]) -> dict[str, float]:
        for label in v:
            if not BAND_LABEL_RE.match(label):
                raise ValueError(f"bad band label {label!r}")
        return v

    def multipliers(self) -> "Multipliers":
        return Multipliers(global_=self.global_, bands=dict(self.bands))


DEFAULT_MULTIPLIER = 1.0


def default_entry() -> AppliedEntry:
    """What a missing underlying means: multiplier 1.0, never an error."""
    return AppliedEntry(global_=DEFAULT_MULTIPLIER, bands={}, source="init")


class AppliedDocument(_Strict):
    schema_version: Literal[1] = SCHEMA_VERSION
    underlyings: dict[StrictName, AppliedEntry] = Field(default_factory=dict)

    @field_validator("underlyings", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("underlyings")
    @classmethod
    def _underlying_names(cls, v: dict[str, AppliedEntry]) -> dict[str, AppliedEntry]:
        for name in v:
            if not UNDERLYING_RE.match(name):
                raise ValueError(f"bad underlying name {name!r}")
        return v

    def entry(self, underlying: str) -> AppliedEntry:
        return self.underlyings.get(underlying) or default_entry()


class StateDocument(_Strict):
    """The state API: exactly the YAML's entries plus when the document was generated."""

    schema_version: Literal[1] = SCHEMA_VERSION
    underlyings: dict[str, AppliedEntry]
    generated_at: IsoTime

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


# --------------------------------------------------------------------------- history rows


class Multipliers(_Lenient):
    """A global multiplier plus optional per-DTE-band multipliers ({"global": x, "bands": {...}})."""

    global_: float | None = Field(default=None, alias="global")
    bands: dict[str, float] = Field(default_factory=dict)

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    def rounded(self, ndigits: int = 4) -> "Multipliers":
        g = None if self.global_ is None else round(self.global_, ndigits)
        return Multipliers(global_=g, bands={k: round(v, ndigits) for k, v in self.bands.items()})


class DataQuality(_Lenient):
    """Data-quality verdict of an auto run, with the evidence the Data health panel shows."""

    status: RealismStatus | None = None
    issues: list[str] = Field(default_factory=list)
    schema_errors: int | None = None
    completeness: float | None = None  # snapshots present / expected, 0..1
    expiries: int | None = None
    strikes: int | None = None
    rv_returns: int | None = None


class HistoryRow(_Lenient):
    schema_version: int | None = None
    type: str
    run_id: str | None = None
    ts: str | None = None
    underlying: str | None = None

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json", exclude_none=False)

    @property
    def time(self) -> datetime | None:
        try:
            return parse_time(self.ts) if self.ts else None
        except ValueError:
            return None


class GroupMetrics(_Lenient):
    """Metrics of one slice of a run's quotes (an option type or a DTE band)."""

    samples: int | None = None
    mae_pct: float | None = None
    bias_pct: float | None = None
    vega_weighted_mae_pct: float | None = None
    mae_vol_points: float | None = None
    recommended: float | None = None
    on_bound: bool | None = None


class LiveRun(HistoryRow):
    """One live calibration against Deribit marks. Its display status is derived, never stored."""

    type: Literal["live_run"] = "live_run"
    source: str | None = "live"

    @property
    def is_live(self) -> bool:
        """A run calreport made against Deribit (not an imported legacy record): the only kind
        force-apply picks and the EWMA follows."""
        return (self.source or "live") == "live"
    multiplier_tested: float | None = None
    rv_7d: float | None = None
    atm_iv: float | None = None
    atm_ratio: float | None = None
    recommended: Multipliers | None = None
    smoothed: Multipliers | None = None
    mae_pct: float | None = None
    bias_pct: float | None = None
    mae_vol_points: float | None = None
    vega_weighted_mae_pct: float | None = None
    samples: int | None = None
    vega_sum: float | None = None
    status: RealismStatus | None = None
    reason: str | None = None
    decision: Literal["apply", "hold"] | None = None
    decision_reason: str | None = None
    # provenance and detail (all optional: older rows lack them and render as "-")
    snapshot_ts: str | None = None
    rv_source: str | None = None
    rv_returns: int | None = None
    atm_source: str | None = None
    recommended_on_bound: bool | None = None
    dropped: dict[str, int] | None = None
    by_type: dict[str, GroupMetrics] | None = None
    by_band: dict[str, GroupMetrics] | None = None
    settings_hash: str | None = None
    detail_file: str | None = None
    # what the run was measured against and how its numbers came about (calibrate.py)
    tested: Multipliers | None = None  # the applied global + bands the metrics were computed at
    snapshot_file: str | None = None
    quotes_total: int | None = None  # rows in the snapshot, before the filters
    smoothed_from: str | None = None  # "run <id>" or "applied": the EWMA's previous value
    fit_vega_weighted_mae_pct: float | None = None  # vega MAE % at the recommended global multiplier
    data_quality_status: RealismStatus | None = None
    data_quality_issues: list[str] | None = None


class ApplyEvent(HistoryRow):
    """A write of config/applied_multipliers.yaml, appended by apply.py in the same transaction."""

    type: Literal["apply"] = "apply"
    previous: Multipliers | None = None
    applied: Multipliers | None = None
    source: str | None = None
    reason: str | None = None
    previous_run_id: str | None = None


class AutoRun(HistoryRow):
    """One auto-calibrate run over harvested snapshots. It can never be applied."""

    type: Literal["auto_run"] = "auto_run"
    dte_min: float | None = None
    dte_max: float | None = None
    lookback: str | None = None
    multiplier: float | None = None
    mae_pct: float | None = None
    vega_weighted_mae_pct: float | None = None
    samples: int | None = None
    data_quality: DataQuality | None = None
    status: RealismStatus | None = None
    reason: str | None = None
    multiplier_on_bound: bool | None = None
    rv_7d: float | None = None
    as_of: str | None = None
    harvest_start: str | None = None
    harvest_end: str | None = None
    snapshots_used: int | None = None
    snapshots_expected: int | None = None
    settings_hash: str | None = None
    bias_pct: float | None = None  # errors at the fitted multiplier, like mae_pct
    mae_vol_points: float | None = None
    rows_read: int | None = None  # harvest rows in the window
    elapsed_s: float | None = None


class UnknownRow(HistoryRow):
    """A row of a type this version does not know; kept so nothing is dropped."""


ROW_TYPES: dict[str, type[HistoryRow]] = {"live_run": LiveRun, "apply": ApplyEvent, "auto_run": AutoRun}


# --------------------------------------------------------------------------- per-run detail file


class QuoteDetail(_Lenient):
    """One quote of a live run (history/runs/<run_id>.json), for the latest-run table."""

    instrument: str
    dte: float
    strike: float
    type: Literal["C", "P"]
    mark: float  # coin
    synthetic: float  # coin, at the multiplier tested
    diff_pct: float  # (synthetic - mark) / mark * 100
    vega: float  # coin per 1.00 vol
    mark_iv: float | None = None  # fraction
    synthetic_iv: float | None = None  # fraction
    band: str | None = None


class ExpirySummary(_Lenient):
    """Per-expiry summary of a live run, for the ATM IV vs synthetic IV chart."""

    expiry: str
    dte: float
    samples: int
    atm_mark_iv: float | None = None  # fraction
    synthetic_iv: float | None = None  # fraction (RV_7d x multiplier tested)
    mae_pct: float | None = None
    vega_weighted_mae_pct: float | None = None


class RunDetail(_Lenient):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    underlying: str
    ts: str
    quotes: list[QuoteDetail] = Field(default_factory=list)
    expiries: list[ExpirySummary] = Field(default_factory=list)
