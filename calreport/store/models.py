"""Pydantic models: the schema of every file calreport reads or writes (docs/FILES.md describes
each file; `calreport schema NAME` prints a model's JSON Schema).

- `AppliedDocument` is config/applied_multipliers.yaml (strict: misspelt keys, non-numeric or
  non-finite multipliers are errors).
- `CalibrationConfig` is config/calibration.yaml (strict; every setting has a built-in default, and
  this is the only home of those defaults). Reading the file is store/config.py's job.
- `LiveRun`, `ApplyEvent`, `AutoRun` are history rows (lenient: rows from older versions load with
  missing fields as None; unknown extra fields are kept and re-emitted).
- `RunDetail` is history/runs/<run_id>.json; `HarvestRow` one line of a harvest day file.
- `StateDocument` is the state API document.

Models do no I/O: the pure calibration core may import them.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from calreport import SCHEMA_VERSION
from calreport.errors import CalreportError, excerpt
from calreport.numbers import as_float, is_number
from calreport.timeutil import iso_utc, parse_time, utc_now  # noqa: F401 - re-exported for the store's users

UNDERLYING_RE = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
BAND_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,31}$")

ApplySource = Literal["policy", "force", "rollback", "init"]
SigmaMode = Literal["rv", "atm_iv", "mark_iv"]  # what the multiplier multiplies (calibration/sigma.py)
SIGMA_MODES: tuple[str, ...] = ("rv", "atm_iv", "mark_iv")
DEFAULT_SIGMA_MODE = "rv"
RealismStatus = Literal["ok", "degraded", "failed"]
DisplayStatus = Literal["applied", "superseded", "held", "failed"]  # derived by store.state, never stored


def _strict_multiplier(value: Any) -> float:
    """A multiplier is a finite positive number written as a number (not '1e-3', not yes/no)."""
    if not is_number(value):
        raise ValueError(f"multiplier must be a number, got {type(value).__name__} {excerpt(value, 60)}")
    v = as_float(value)
    if v is None or v <= 0:
        raise ValueError(f"multiplier must be finite and > 0, got {excerpt(value, 60)}")
    return v


def _strict_number(value: Any) -> Any:
    """A JSON number as written (a string or a boolean is never a number); null passes to the type."""
    if value is not None and not is_number(value):
        raise ValueError(f"must be a number, got {type(value).__name__} {excerpt(value, 40)}")
    return value


def _strict_str(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"must be a string, got {type(value).__name__} {excerpt(value, 60)}")  # noqa: TRY004 - pydantic wants ValueError
    return value


def _iso_string(value: Any) -> str:
    if isinstance(value, datetime):
        return iso_utc(value)
    if not isinstance(value, str):
        raise ValueError(f"must be an ISO 8601 time string, got {excerpt(value, 60)}")  # noqa: TRY004 - pydantic wants ValueError
    parse_time(value)
    return value


Multiplier = Annotated[float, BeforeValidator(_strict_multiplier), Field(gt=0)]
StrictNumber = Annotated[float, BeforeValidator(_strict_number)]
StrictName = Annotated[str, BeforeValidator(_strict_str)]
IsoTime = Annotated[str, BeforeValidator(_iso_string)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class _Lenient(BaseModel):
    """History rows: keep unknown fields (newer writers), default missing ones (older writers)."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


# --------------------------------------------------------------------------- applied multipliers

APPLIED_SCHEMA_VERSION = 2  # 2: entries may carry a smile; a version-1 file reads as flat smiles


class Smile(_Strict):
    """Smile multipliers at nodes of normalised moneyness x = ln(K/F) / (base x m_band x sqrt(T))
    (calibration/smile.py): linear between nodes, flat beyond, 1 at x = 0. A band without its own
    smile takes `global`; an entry without a smile is flat (today's model)."""

    nodes: list[StrictNumber] = Field(description="The node grid x, strictly increasing, including 0 (dimensionless).")
    global_: list[Multiplier] = Field(alias="global", description="Smile multiplier at each node for every band without its own (dimensionless, > 0).")
    bands: dict[StrictName, list[Multiplier]] = Field(
        default_factory=dict, description="DTE band label -> smile multiplier at each node; a band's smile wins over global."
    )

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_validator(mode="after")
    def _shape(self) -> Smile:
        n = self.nodes
        if len(n) < 3 or any(not (b > a) for a, b in zip(n, n[1:])) or 0.0 not in n:
            raise ValueError("smile.nodes must be at least 3 strictly increasing numbers including 0")
        for label, values in [("global", self.global_), *self.bands.items()]:
            if len(values) != len(n):
                raise ValueError(f"smile {label}: {len(values)} values for {len(n)} nodes")
            if abs(values[n.index(0.0)] - 1.0) > 1e-9:
                raise ValueError(f"smile {label}: the value at x=0 must be 1")
        for label in self.bands:
            if not BAND_LABEL_RE.match(label):
                raise ValueError(f"bad band label {excerpt(label, 40)}")
        return self

    def for_band(self, label: str | None) -> list[float]:
        """The smile a band uses: its own, else the global one."""
        return list(self.bands.get(label, self.global_)) if label is not None else list(self.global_)

    def rounded(self, ndigits: int = 4) -> Smile:
        r = lambda vs: [round(float(v), ndigits) for v in vs]  # noqa: E731
        return Smile(nodes=list(self.nodes), global_=r(self.global_), bands={k: r(v) for k, v in self.bands.items()})


class AppliedEntry(_Strict):
    """The multipliers the engine uses for one underlying."""

    global_: Multiplier = Field(
        alias="global", description="Multiplier of RV_7d for every DTE without a band value (dimensionless, > 0)."
    )
    bands: dict[StrictName, Multiplier] = Field(
        default_factory=dict,
        description="DTE band label (defined in config/calibration.yaml) -> multiplier; a band's value wins over global.",
    )
    updated_at: IsoTime | None = Field(default=None, description="When these values were written (ISO 8601 UTC).")
    source: ApplySource = Field(default="init", description="How they were applied: policy, force, rollback or init.")
    run_id: StrictName | None = Field(default=None, description="The live run the values came from (null for init).")
    reason: StrictName | None = Field(default=None, description="Why they were applied (the policy's or the user's reason).")
    sigma_mode: SigmaMode | None = Field(
        default=None, description="The sigma mode these values were fitted in (rv, atm_iv, mark_iv); absent means rv."
    )
    smile: Smile | None = Field(default=None, description="Smile multipliers per node, global and per band (schema_version 2); absent = flat.")

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("bands")
    @classmethod
    def _band_labels(cls, v: dict[str, float]) -> dict[str, float]:
        for label in v:
            if not BAND_LABEL_RE.match(label):
                raise ValueError(f"bad band label {excerpt(label, 40)}")
        return v

    def multipliers(self) -> Multipliers:
        return Multipliers(global_=self.global_, bands=dict(self.bands), smile=self.smile)


DEFAULT_MULTIPLIER = 1.0


def default_entry() -> AppliedEntry:
    """What a missing underlying means: multiplier 1.0, never an error."""
    return AppliedEntry(global_=DEFAULT_MULTIPLIER, bands={}, source="init")


class AppliedDocument(_Strict):
    """config/applied_multipliers.yaml: the single source of truth for the engine's multipliers."""

    schema_version: Literal[1, 2] = APPLIED_SCHEMA_VERSION
    underlyings: dict[StrictName, AppliedEntry] = Field(
        default_factory=dict, description="Underlying (BTC, ETH, ...) -> its applied multipliers; missing means 1.0."
    )

    @field_validator("underlyings", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @field_validator("underlyings")
    @classmethod
    def _underlying_names(cls, v: dict[str, AppliedEntry]) -> dict[str, AppliedEntry]:
        for name in v:
            if not UNDERLYING_RE.match(name):
                raise ValueError(f"bad underlying name {excerpt(name, 40)}")
        return v

    def entry(self, underlying: str) -> AppliedEntry:
        return self.underlyings.get(underlying) or default_entry()


class StateDocument(_Strict):
    """The state API: exactly the YAML's entries plus when the document was generated."""

    schema_version: Literal[1, 2] = APPLIED_SCHEMA_VERSION
    underlyings: dict[str, AppliedEntry] = Field(description="The applied YAML's entries, numbers unchanged.")
    generated_at: IsoTime = Field(description="When this document was generated (ISO 8601 UTC).")

    def to_json_dict(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, mode="json")


# --------------------------------------------------------------------------- calibration config


class _Section(BaseModel):
    """Every settings model: unknown keys refused, and strict types for every field, present and
    future (issue 10): a number is a number (not "1.5", not yes/true), an integer is an integer,
    and NaN / infinity are refused wherever a float is expected."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _check_underlyings(names: list[str]) -> list[str]:
    for name in names:
        if not UNDERLYING_RE.match(name):
            raise ValueError(f"bad underlying {excerpt(name, 40)} (upper-case letters and digits, e.g. BTC)")
    return names


def _check_range(low: float, high: float, names: str) -> None:
    """`names` is "min_x < max_x"; the error's location already names the section."""
    if not low < high:
        lo, hi = names.split(" < ")
        raise ValueError(f"{lo} ({low:g}) must be below {hi} ({high:g})")


class Band(_Section):
    """A DTE band [min_dte, max_dte): an option of DTE d belongs to the band with min <= d < max."""

    name: str = Field(description="Band label, used as the key in the applied YAML's bands (letters, digits, _ . + -; at most 32).")
    min_dte: float = Field(ge=0, description="Lower DTE bound in days (inclusive).")
    max_dte: float = Field(gt=0, description="Upper DTE bound in days (exclusive).")

    @field_validator("name")
    @classmethod
    def _label(cls, v: str) -> str:
        if not BAND_LABEL_RE.match(v):
            raise ValueError(f"bad band name {excerpt(v, 40)} (letters, digits, _ . + -; at most 32; e.g. 7-30d)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if self.max_dte <= self.min_dte:
            raise ValueError(f"band {self.name!r}: max_dte must exceed min_dte")
        return self


class LimitsConfig(_Section):
    """Hard bounds on every multiplier calreport writes or reads (issue 10): a value outside them
    is refused, whatever produced it (a fit, a hand-edited history row, a hand-edited YAML)."""

    min_multiplier: float = Field(default=0.05, gt=0, description="Smallest multiplier ever applied or accepted in the applied YAML.")
    max_multiplier: float = Field(default=20.0, gt=0, description="Largest multiplier ever applied or accepted in the applied YAML.")

    @model_validator(mode="after")
    def _ordered(self) -> LimitsConfig:
        _check_range(self.min_multiplier, self.max_multiplier, "min_multiplier < max_multiplier")
        return self

    def problem(self, value: float) -> str | None:
        """Why `value` is not an acceptable multiplier, or None."""
        if not (self.min_multiplier <= value <= self.max_multiplier):
            return f"{value:.6g} is outside the limits [{self.min_multiplier:g}, {self.max_multiplier:g}] (config limits)"
        return None

    def problem_of(self, values: Multipliers | None) -> str | None:
        """Why a global + bands set is not acceptable ("global: ...", "bands.7-30d: ..."), or None."""
        if values is None or values.global_ is None:
            return "no global multiplier"
        for where, value in (("global", values.global_), *((f"bands.{k}", v) for k, v in values.bands.items())):
            problem = self.problem(value)
            if problem:
                return f"{where} {problem}"
        return None


class RealismConfig(_Section):
    """Thresholds of assess_calibration_realism; the one home of their defaults."""

    min_mult: float = Field(default=0.7, description="Lowest believable multiplier.")
    max_mult: float = Field(default=1.6, description="Highest believable multiplier.")
    max_mae: float = Field(default=400.0, description="Highest believable MAE (percent of the mark).")
    max_vega_mae: float = Field(default=200.0, description="Highest believable vega-weighted MAE (percent).")

    @model_validator(mode="after")
    def _ordered(self) -> RealismConfig:
        _check_range(self.min_mult, self.max_mult, "min_mult < max_mult")
        return self


class PolicyConfig(_Section):
    """When a live run's smoothed multipliers are applied automatically."""

    min_samples: int = Field(default=50, description="Fewest usable quotes for an automatic apply.")
    min_vega_sum: float = Field(
        default=1.0,
        description="Least summed vega for an automatic apply (coin per 1.00 vol; ~20 for a full BTC chain).",
    )
    min_delta: float = Field(default=0.03, description="Smallest change of the global or any band multiplier worth applying (absolute, e.g. 1.00 -> 1.03).")
    max_rel_step: float = Field(default=0.25, description="Largest step applied at once, relative to the applied value (fraction: 0.25 = 25%).")
    min_delta_se: float = Field(
        default=1.0, ge=0, description="A change must also exceed this many standard errors of the recommended multiplier (multiplier_se; 0 = off)."
    )


class SmoothingConfig(_Section):
    alpha: float = Field(default=0.3, gt=0, le=1, description="EWMA weight of the newest recommendation (0 < alpha <= 1).")
    half_life_hours: float | None = Field(
        default=None, gt=0, description="When set, the EWMA weight is 1 - 0.5^(hours since the previous smoothed run / half_life_hours) instead of alpha."
    )


class FilterConfig(_Section):
    """Which quotes a calibration uses; each drop is counted per reason."""

    min_dte: float = Field(default=1.0, description="Shortest DTE used (days).")
    max_dte: float = Field(default=90.0, description="Longest DTE used (days).")
    min_mark_price: float = Field(default=0.0005, description="Smallest mark used (base coin; 5 ticks of 0.0001).")
    max_abs_log_moneyness: float = Field(default=0.5, description="Largest |ln(K/F)| used.")
    min_open_interest: float = Field(default=0.0, description="Smallest open interest used (contracts; 0 = no filter).")
    max_rel_spread: float = Field(
        default=2.0, description="Widest (ask - bid) / mid used (fraction), checked only where both sides exist."
    )
    option_types: list[str] = Field(default_factory=lambda: ["C", "P"], description="Option types used: C, P.")


class FitConfig(_Section):
    """Bounded search for the multiplier that minimises vega-weighted absolute % error."""

    min_mult: float = Field(default=0.5, gt=0, description="Lower bound of the multiplier search.")
    max_mult: float = Field(default=3.0, gt=0, description="Upper bound of the multiplier search.")
    band_min_samples: int = Field(default=10, description="Fewest quotes in a band (or option type) to fit it separately.")
    min_samples: int = Field(
        default=10, ge=1, description="A live run with fewer usable quotes is a failed run (nothing is fitted)."
    )
    min_rv_returns: int = Field(
        default=120, ge=0, description="RV_7d from fewer hourly returns degrades a live run (a full week is 168)."
    )
    objective: Literal["price_vega_rel", "otm_iv_vega"] = Field(
        default="price_vega_rel",
        description="What the fit minimises: vega-weighted |price error| / mark over all quotes, or vega-weighted |IV gap| over OTM quotes.",
    )
    bootstrap_draws: int = Field(default=400, ge=0, description="Draws of the bootstrap over expiries behind multiplier_se (0 = no bootstrap).")
    bootstrap_seed: int = Field(default=11, description="Seed of that bootstrap (same data and seed, same standard error).")

    @model_validator(mode="after")
    def _ordered(self) -> FitConfig:
        _check_range(self.min_mult, self.max_mult, "min_mult < max_mult")
        return self


class SmileConfig(_Section):
    """The smile on top of each band's flat sigma (calibration/smile.py); enabled: false is the flat model."""

    enabled: bool = Field(default=True, description="Fit, apply and price with the smile; false gives the flat model exactly.")
    nodes: list[float] = Field(
        default_factory=lambda: [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5],
        description="Nodes of normalised moneyness x = ln(K/F) / (base x m_band x sqrt(T)); strictly increasing, must include 0.",
    )
    penalty: float = Field(default=1.0, ge=0, description="Weight of the sum of squared slope changes at the nodes, in the objective's units (vp or percent).")
    bounds: list[float] = Field(default_factory=lambda: [0.5, 3.0], description="Lowest and highest node value [lo, hi] (dimensionless).")
    min_quotes_per_band: int = Field(default=20, ge=1, description="A band with fewer OTM quotes takes the global smile.")
    skew_flag_vp: float = Field(default=2.0, gt=0, description="SKEW_NOT_APPLIED when fitted and applied smiles differ by more than this at any node (vol points).")

    @model_validator(mode="after")
    def _valid_grid(self) -> SmileConfig:
        n = self.nodes
        if len(n) < 3 or any(b <= a for a, b in zip(n, n[1:])) or 0.0 not in n:
            raise ValueError("smile.nodes must be at least 3 strictly increasing numbers including 0")
        if len(self.bounds) != 2 or not 0 < self.bounds[0] <= 1.0 <= self.bounds[1]:
            raise ValueError("smile.bounds must be [lo, hi] with 0 < lo <= 1 <= hi")
        return self


class AutoConfig(_Section):
    """Auto-calibrate defaults and the daily job's list of runs."""

    underlyings: list[str] = Field(default_factory=lambda: ["BTC", "ETH"], description="Underlyings the daily job runs.")
    dte_ranges: list[str] = Field(default_factory=lambda: ["3-10"], description="DTE ranges in days, 'MIN-MAX'.")
    lookbacks: list[str] = Field(default_factory=lambda: ["14d"], description="Window lengths: 90m, 12h, 14d, 1w.")
    expected_interval_minutes: float = Field(default=5.0, gt=0, description="Harvest interval the coverage is measured against (minutes).")
    min_snapshot_coverage: float = Field(default=0.5, description="Fewer snapshots than this share of the expected degrades a run (fraction).")
    min_rv_returns: int = Field(default=24, description="Snapshots whose RV_7d rests on fewer hourly returns are left out.")
    max_schema_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Data quality degraded above this share of unreadable harvest lines (fraction)."
    )
    min_expiries: int = Field(default=2, ge=0, description="Fewer expiries in the DTE range degrade a run.")
    min_strikes: int = Field(default=10, ge=0, description="Fewer distinct strikes in the DTE range degrade a run.")

    @field_validator("underlyings")
    @classmethod
    def _underlying_names(cls, v: list[str]) -> list[str]:
        return _check_underlyings(v)


class DashboardConfig(_Section):
    max_rows: int = Field(default=50, ge=1, description="History rows on the dashboard's first page.")
    page_size: int = Field(default=500, ge=1, description="History rows per page of the full tables.")
    mae_warn_pct: float = Field(default=40.0, description="A latest live run MAE above this shows a warning banner (percent).")
    min_rv_returns: int = Field(default=120, description="A latest live run whose RV_7d rests on fewer hourly returns shows a warning banner.")


class FlagsConfig(_Section):
    """Thresholds of the run flags (calibration/flags.py): what a desk wants pointed out."""

    iv_drift_vp: float = Field(default=5.0, gt=0, description="IV_DRIFT when the 7-day ATM IV moved more than this since the applied run (vol points).")
    atm_rv_min: float = Field(default=0.7, gt=0, description="ATM_RV_RANGE when ATM IV / RV_7d is below this.")
    atm_rv_max: float = Field(default=1.4, gt=0, description="ATM_RV_RANGE when ATM IV / RV_7d is above this.")
    wing_gap_vp: float = Field(default=5.0, gt=0, description="WING_GAP when a band's <10D bucket is further than this from the market (vol points).")
    expiry_outlier_ratio: float = Field(default=2.0, gt=1, description="SHORT_EXPIRY_OUTLIER when an expiry's vega-weighted MAE exceeds this multiple of its band's.")
    expiry_outlier_min_samples: int = Field(default=5, ge=1, description="Fewest quotes of an expiry for SHORT_EXPIRY_OUTLIER.")


class AlertsConfig(_Section):
    """Who hears about failed runs, runs held for review and new flags (commands/alerts.py)."""

    command: str | list[str] | None = Field(
        default=None, description="Program run with the event JSON on stdin (a string is split like a shell line, never run by a shell)."
    )
    webhook: str | None = Field(default=None, description="http(s) URL the event JSON is POSTed to.")
    timeout_s: float = Field(default=5.0, gt=0, le=60, description="Longest wait per delivery (seconds); the command's process group is killed after it.")

    @field_validator("webhook")
    @classmethod
    def _http_only(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://[^\s/]+", v):
            raise ValueError(f"webhook must be an http:// or https:// URL, got {v[:60]!r}")
        return v


class CalibrationConfig(_Section):
    """config/calibration.yaml: every key optional; these defaults are the built-in settings."""

    schema_version: int = 1
    underlyings: list[str] = Field(default_factory=lambda: ["BTC", "ETH"], description="Configured underlyings.")
    bands: list[Band] = Field(
        default_factory=lambda: [
            Band(name="0-7d", min_dte=0, max_dte=7),
            Band(name="7-30d", min_dte=7, max_dte=30),
            Band(name="30-90d", min_dte=30, max_dte=90),
        ],
        description="DTE bands, first match wins; per-band multipliers apply inside them.",
    )
    realism: RealismConfig = Field(default_factory=RealismConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    smile: SmileConfig = Field(default_factory=SmileConfig)
    auto: AutoConfig = Field(default_factory=AutoConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    git_commit: bool = Field(default=False, description="Commit the applied YAML to git after each apply (when the root is in a git work tree).")
    flags: FlagsConfig = Field(default_factory=FlagsConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    sigma_mode: SigmaMode | dict[str, SigmaMode] = Field(
        default="rv",
        description="What the multiplier multiplies: rv (RV_7d), atm_iv (the expiry's ATM IV, total-variance interpolated) or mark_iv (the option's own mark IV); one mode, or underlying -> mode (unlisted: rv).",
    )
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @field_validator("underlyings")
    @classmethod
    def _underlying_names(cls, v: list[str]) -> list[str]:
        return _check_underlyings(v)

    @model_validator(mode="after")
    def _fit_within_limits(self) -> CalibrationConfig:
        lim = self.limits
        if self.fit.min_mult < lim.min_multiplier or self.fit.max_mult > lim.max_multiplier:
            raise ValueError(
                f"fit: the search range [{self.fit.min_mult:g}, {self.fit.max_mult:g}] must lie within the "
                f"limits [{lim.min_multiplier:g}, {lim.max_multiplier:g}]"
            )
        return self

    @field_validator("bands")
    @classmethod
    def _unique_bands(cls, v: list[Band]) -> list[Band]:
        names = [b.name for b in v]
        if len(set(names)) != len(names):
            raise ValueError("band names must be unique")
        return v

    def band_names(self) -> list[str]:
        return [b.name for b in self.bands]

    def settings_hash(self) -> str:
        """A short hash of every setting, so a run can be reproduced with the same config."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def sigma_mode_for(self, underlying: str) -> str:
        """The configured sigma mode of `underlying` (rv when not listed)."""
        if isinstance(self.sigma_mode, str):
            return self.sigma_mode
        return self.sigma_mode.get(underlying.upper(), DEFAULT_SIGMA_MODE)

    def check_underlying(self, underlying: str) -> str:
        """Unknown underlyings are a one-line error, not a silent 1.0."""
        name = underlying.upper()
        if name not in self.underlyings:
            raise CalreportError(
                f"unknown underlying {excerpt(underlying, 40)} (configured: {', '.join(self.underlyings)})"
            )
        return name


# --------------------------------------------------------------------------- history rows


class Multipliers(_Lenient):
    """A global multiplier plus optional per-DTE-band multipliers ({"global": x, "bands": {...}})."""

    global_: StrictNumber | None = Field(default=None, alias="global", description="Global multiplier (dimensionless).")
    bands: dict[str, StrictNumber] = Field(default_factory=dict, description="Band label -> multiplier.")
    smile: Smile | None = Field(default=None, description="Smile multipliers per node (global and per band); written only when present.")

    @field_validator("bands", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return {} if v is None else v

    @model_serializer(mode="wrap")
    def _no_null_smile(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A flat (smile-less) value is written exactly as before the smile existed."""
        out = handler(self)
        if isinstance(out, dict) and out.get("smile", 0) is None:
            out.pop("smile")
        return out

    def rounded(self, ndigits: int = 4) -> Multipliers:
        g = None if self.global_ is None else round(self.global_, ndigits)
        smile = None if self.smile is None else self.smile.rounded(ndigits)
        return Multipliers(global_=g, bands={k: round(v, ndigits) for k, v in self.bands.items()}, smile=smile)


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


FLAG_CODES = ("THIN_RV", "IV_DRIFT", "ATM_RV_RANGE", "ON_FIT_BOUND", "DEGRADED_APPLIED", "WING_GAP", "SHORT_EXPIRY_OUTLIER")


class RunFlag(_Lenient):
    """One thing a desk should look at (calibration/flags.py; thresholds in config `flags`)."""

    code: str = Field(description="THIN_RV, IV_DRIFT, ATM_RV_RANGE, ON_FIT_BOUND, DEGRADED_APPLIED, WING_GAP or SHORT_EXPIRY_OUTLIER.")
    message: str = Field(description="The numbers behind it, one sentence.")


class UncertaintyEntry(_Lenient):
    """The standard error of one fitted multiplier and its parts (calibration/uncertainty.py)."""

    se: float | None = Field(default=None, description="sqrt(se_expiry^2 + se_rv^2) (multiplier units).")
    se_expiry: float | None = Field(default=None, description="Sd of the refitted multiplier over draws resampling whole expiries.")
    se_rv: float | None = Field(default=None, description="m / sqrt(2 n): RV_7d's sampling error from n returns (null: manual RV or an IV base).")
    ci95: list[float] | None = Field(default=None, description="[m exp(-1.96 se / m), m exp(1.96 se / m)].")
    expiries: int | None = Field(default=None, description="Expiries resampled.")
    draws: int | None = Field(default=None, description="Bootstrap draws used.")


class Interval95(_Lenient):
    """95 % intervals of a global multiplier and its bands ({"global": [lo, hi], "bands": {...}})."""

    global_: list[float] | None = Field(default=None, alias="global", description="[low, high] of the global multiplier.")
    bands: dict[str, list[float]] = Field(default_factory=dict, description="Band label -> [low, high].")


_SE_DOC = "bootstrap over expiries combined with RV's sampling error m / sqrt(2 n); see CALIBRATION_NOTES.md"


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


class LiveRun(HistoryRow):
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
    rv_7d: float | None = Field(default=None, description="Realised vol over the 7 days before the snapshot (fraction, annualised).")
    atm_iv: float | None = Field(default=None, description="ATM mark IV interpolated to 7 days (fraction).")
    atm_ratio: float | None = Field(default=None, description="atm_iv / rv_7d.")
    recommended: Multipliers | None = Field(default=None, description="Fitted multipliers (4 decimals).")
    smoothed: Multipliers | None = Field(default=None, description="EWMA of the recommendations: what the policy would apply.")
    mae_pct: float | None = Field(default=None, description="Mean |synthetic - mark| / mark at the tested multipliers (percent).")
    bias_pct: float | None = Field(default=None, description="Mean (synthetic - mark) / mark (percent).")
    mae_vol_points: float | None = Field(default=None, description="Mean |synthetic IV - market IV| (vol points).")
    vega_weighted_mae_pct: float | None = Field(default=None, description="Vega-weighted MAE (percent).")
    samples: int | None = Field(default=None, description="Quotes that passed the filters.")
    vega_sum: float | None = Field(default=None, description="Summed vega of those quotes (coin per 1.00 vol).")
    status: RealismStatus | None = Field(default=None, description="Realism verdict: ok, degraded or failed.")
    reason: str | None = Field(default=None, description="Why that status.")
    decision: Literal["apply", "hold"] | None = Field(default=None, description="The update policy's decision.")
    decision_reason: str | None = Field(default=None, description="Why that decision.")
    # provenance and detail (all optional: older rows lack them and render as "-")
    snapshot_ts: str | None = Field(default=None, description="The snapshot's time: its newest creation_timestamp (ISO 8601 UTC).")
    rv_source: str | None = Field(default=None, description="Where RV_7d came from: manual, chart:<file>, prices:<U>-PERPETUAL (the price store) or harvest.")
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
    settings_hash: str | None = Field(default=None, description="12 hex digits of the SHA-256 of every setting used.")
    detail_file: str | None = Field(default=None, description="Quote-level detail, relative to the root: history/runs/<run_id>.json.")
    # what the run was measured against and how its numbers came about (calibration/live.py)
    tested: Multipliers | None = Field(default=None, description="The applied global + bands the metrics were computed at.")
    snapshot_file: str | None = Field(
        default=None, description="File name of the snapshot; for a chain fetched by the run, its path in the root (data/snapshots/<U>/<time>.json.gz)."
    )
    quotes_total: int | None = Field(default=None, description="Rows in the snapshot, before the filters.")
    smoothed_from: str | None = Field(default=None, description='The EWMA\'s previous value: "run <id>" or "applied".')
    fit_vega_weighted_mae_pct: float | None = Field(default=None, description="Vega-weighted MAE at the recommended global multiplier (percent).")
    data_quality_status: RealismStatus | None = Field(default=None, description="ok, degraded (thin RV history, no ATM IV, a few marks above the no-arbitrage bound) or failed (marks in USD or mostly above the bound).")
    data_quality_issues: list[str] | None = Field(default=None, description="Why data quality is degraded.")
    applied_values: Multipliers | None = Field(
        default=None, description="What the policy applies: the smoothed values, each step capped at policy.max_rel_step."
    )
    feeds_smoothing: bool | None = Field(
        default=None, description="Whether this run's smoothed value may seed the next EWMA (false: failed, thin RV or too few samples)."
    )
    smoothing_alpha: float | None = Field(default=None, description="The EWMA weight this run used (fraction).")
    # desk measures (calibration/desk.py, issue 11)
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
    sigma_mode: str | None = Field(default=None, description="What the multiplier multiplies: rv, atm_iv or mark_iv (null: rv, older rows).")
    flags: list[RunFlag] | None = Field(default=None, description="Active flags of the run (code + message); see CALIBRATION_NOTES.md.")
    # uncertainty (calibration/uncertainty.py, issue 11)
    multiplier_se: Multipliers | None = Field(default=None, description=f"Standard error of the recommended global and band multipliers: {_SE_DOC}.")
    multiplier_ci95: Interval95 | None = Field(default=None, description="95 % interval of the recommended global and band multipliers.")
    uncertainty: dict[str, UncertaintyEntry] | None = Field(default=None, description='"global" and band label -> standard error and its parts.')
    # the smile (calibration/smile.py, issue 12); the fitted values are in recommended.smile
    smile_fit: dict[str, SmileFitStats] | None = Field(
        default=None, description='"global" and band name -> how its smile was fitted (null when smile.enabled is false).'
    )
    # imported legacy records only (commands/legacy.py)
    imported_from: str | None = Field(default=None, description="Legacy import: the record's file name.")
    legacy_source: str | None = Field(default=None, description='Legacy import: the old system\'s source ("live" or "harvested").')
    legacy_applied: bool | None = Field(default=None, description="Legacy import: whether the old system applied it.")
    legacy_applied_reason: str | None = Field(default=None, description="Legacy import: the old system's reason.")
    legacy: dict[str, Any] | None = Field(default=None, description="Legacy import: the old record as read.")


class ApplyEvent(HistoryRow):
    """A write of config/applied_multipliers.yaml, appended by store/applied.py in the same
    transaction. `ts` is the wall-clock time of the apply (the YAML's updated_at)."""

    _SPARSE: ClassVar[frozenset[str]] = frozenset({"recovered", "schema_upgrade", "sigma_mode"})

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
    sigma_mode: str | None = Field(default=None, description="Present when the values were fitted in a sigma mode other than rv (atm_iv, mark_iv).")
    schema_upgrade: str | None = Field(
        default=None, description='Present when this apply rewrote the applied YAML in a newer format: "1 -> 2" (schema_version).'
    )


class AutoRun(HistoryRow):
    """One auto-calibrate run over harvested snapshots. It can never be applied.

    Written by calibration/auto.py (`calreport auto-calibrate`, scripts/auto_calibrate_iv.py);
    imported legacy "harvested" records by commands/legacy.py. `ts` is the wall-clock run time.
    """

    _SPARSE: ClassVar[frozenset[str]] = frozenset({"smoothed_multiplier", "smile", "smile_multiplier", "smile_fit", *_LEGACY_FIELDS})

    type: Literal["auto_run"] = "auto_run"
    dte_min: float | None = Field(default=None, description="DTE range start (days, inclusive).")
    dte_max: float | None = Field(default=None, description="DTE range end (days, inclusive).")
    lookback: str | None = Field(default=None, description="Window length as given: 14d, 12h, 90m, 1w.")
    multiplier: float | None = Field(default=None, description="Fitted multiplier (4 decimals).")
    mae_pct: float | None = Field(default=None, description="MAE at the fitted multiplier (percent).")
    vega_weighted_mae_pct: float | None = Field(default=None, description="Vega-weighted MAE at the fitted multiplier (percent).")
    samples: int | None = Field(default=None, description="Quotes used (each quote of each snapshot counts once).")
    data_quality: DataQuality | None = Field(default=None, description="Data-quality verdict and evidence.")
    status: RealismStatus | None = Field(default=None, description="Realism verdict: ok, degraded or failed.")
    reason: str | None = Field(default=None, description="Why that status.")
    multiplier_on_bound: bool | None = Field(default=None, description="The fit sits on a search bound.")
    rv_7d: float | None = Field(default=None, description="RV_7d as of the window end (fraction, annualised).")
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
    rv_source: str | None = Field(default=None, description="Where each snapshot's RV_7d came from.")
    rv_returns_median: int | None = Field(default=None, description="Median hourly returns behind the RV_7d of the snapshots used.")
    snapshots_expected: int | None = Field(default=None, description="Snapshots the window should hold at the expected interval.")
    settings_hash: str | None = Field(default=None, description="12 hex digits of the SHA-256 of every setting used.")
    bias_pct: float | None = Field(default=None, description="Mean signed error at the fitted multiplier (percent).")
    mae_vol_points: float | None = Field(default=None, description="Mean |synthetic IV - market IV| (vol points).")
    rows_read: int | None = Field(default=None, description="Harvest rows in the window.")
    elapsed_s: float | None = Field(default=None, description="Run time (seconds).")
    # desk measures (calibration/desk.py, issue 11)
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
    sigma_mode: str | None = Field(default=None, description="What the multiplier multiplied: rv, atm_iv or mark_iv (null: rv, older rows).")
    multiplier_se: float | None = Field(default=None, description=f"Standard error of the fitted multiplier: {_SE_DOC}.")
    multiplier_ci95: list[float] | None = Field(default=None, description="95 % interval [low, high] of the fitted multiplier.")
    uncertainty: dict[str, UncertaintyEntry] | None = Field(default=None, description='"global" -> standard error and its parts.')
    # the window's smile (calibration/smile.py, issue 12): recorded only, never applied; written when smile.enabled
    smile: Smile | None = Field(default=None, description="The window's global smile (node values), fitted over its OTM quotes.")
    smile_multiplier: float | None = Field(default=None, description="The level m fitted jointly with that smile (4 decimals).")
    smile_fit: SmileFitStats | None = Field(default=None, description="How that smile was fitted: OTM quotes used, quotes per node, objective.")
    # imported legacy records only (commands/legacy.py)
    smoothed_multiplier: float | None = Field(default=None, description="Legacy import: the old system's smoothed global multiplier.")
    imported_from: str | None = Field(default=None, description="Legacy import: the record's file name.")
    legacy_source: str | None = Field(default=None, description='Legacy import: the old system\'s source ("harvested").')
    legacy_applied: bool | None = Field(default=None, description="Legacy import: whether the old system applied it.")
    legacy_applied_reason: str | None = Field(default=None, description="Legacy import: the old system's reason.")
    legacy: dict[str, Any] | None = Field(default=None, description="Legacy import: the old record as read.")


class AlertDelivery(_Lenient):
    """One attempt to deliver an alert event."""

    channel: Literal["command", "webhook"] = Field(description="command or webhook.")
    target: str = Field(description="The program (first word) or the webhook URL.")
    ok: bool = Field(description="Delivered: the command exited 0, the webhook answered 2xx.")
    error: str | None = Field(default=None, description="Why not, one line (exit status, HTTP status, timeout, connection error).")
    elapsed_s: float | None = Field(default=None, description="Time the delivery took (seconds).")


class AlertEvent(HistoryRow):
    """history/alerts.jsonl: an alert raised for a run and how its delivery went (commands/alerts.py).
    `ts` is the wall-clock time of the delivery; `run_id` the run it is about."""

    type: Literal["alert"] = "alert"
    kind: str | None = Field(default=None, description="live or auto.")
    triggers: list[str] = Field(default_factory=list, description="failed, held_for_review and / or new_flags.")
    event: dict[str, Any] | None = Field(default=None, description="The JSON event delivered (what the command read on stdin / the webhook received).")
    deliveries: list[AlertDelivery] = Field(default_factory=list, description="One entry per channel configured.")


class UnknownRow(HistoryRow):
    """A row of a type this version does not know; kept so nothing is dropped."""


ROW_TYPES: dict[str, type[HistoryRow]] = {"live_run": LiveRun, "apply": ApplyEvent, "auto_run": AutoRun, "alert": AlertEvent}


# --------------------------------------------------------------------------- per-run detail file


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
    mark_iv: float | None = Field(default=None, description="IV of the mark (fraction).")
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


class RunDetail(_Lenient):
    """history/runs/<run_id>.json: the quote-level detail of one live run (calibration/live.py)."""

    schema_version: int = SCHEMA_VERSION
    run_id: str = Field(description="The live run's run_id.")
    underlying: str
    ts: str = Field(description="The run's ts (snapshot time, ISO 8601 UTC).")
    quotes: list[QuoteDetail] = Field(default_factory=list, description="Every quote used (empty for a failed run).")
    expiries: list[ExpirySummary] = Field(default_factory=list, description="One summary per expiry.")


# --------------------------------------------------------------------------- harvest line


class HarvestRow(_Lenient):
    """One line of data/harvest/<UNDERLYING>/YYYY-MM-DD.jsonl(.gz): a Deribit book-summary row
    (Deribit's field names and units) plus `harvested_at`. Written by market/harvest.py
    (`calreport harvest`) and market/sample.py; read by market/harvest.py, which counts a line
    that breaks these rules as a schema error and skips it. Other Deribit fields are kept."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"anyOf": [{"required": ["harvested_at"]}, {"required": ["creation_timestamp"]}]},
    )

    instrument_name: str = Field(description="Deribit option name, e.g. BTC-27DEC24-60000-C (expires 08:00 UTC that day).")
    mark_price: StrictNumber = Field(ge=0, description="Mark price (base coin).")
    mark_iv: StrictNumber = Field(ge=0, description="IV of the mark (percent, as Deribit sends it).")
    underlying_price: StrictNumber = Field(gt=0, description="The expiry's forward (USD).")
    underlying_index: str | None = Field(default=None, description="The forward's index name (early harvests).")
    bid_price: StrictNumber | None = Field(default=None, description="Best bid (base coin); null or absent when there is none.")
    ask_price: StrictNumber | None = Field(default=None, description="Best ask (base coin); null or absent when there is none.")
    open_interest: StrictNumber | None = Field(default=None, description="Open interest (contracts).")
    creation_timestamp: StrictNumber | None = Field(default=None, description="Deribit's time of the row (ms since the epoch).")
    harvested_at: StrictNumber | None = Field(
        default=None,
        description="When the snapshot was harvested: its newest creation_timestamp (ms since the epoch); older "
        "harvesters wrote only creation_timestamp.",
    )
    index_price: StrictNumber | None = Field(
        default=None,
        description="Deribit's index (public/get_index_price, USD) fetched with the snapshot by `calreport harvest "
        "--every`; RV uses it when every snapshot of the series has it.",
    )

    @model_validator(mode="after")
    def _has_time(self) -> HarvestRow:
        if self.harvested_at is None and self.creation_timestamp is None:
            raise ValueError("a harvest row needs harvested_at or creation_timestamp")
        return self


# --------------------------------------------------------------------------- harvest errors sidecar


class RejectedLine(_Lenient):
    """One harvest line compaction set aside, kept verbatim (up to 2000 characters)."""

    line: int = Field(ge=1, description="Its number among the log's non-blank lines.")
    reason: Literal["schema error", "bad name"] = Field(description="Why the reader skips it.")
    text: str = Field(description="The line as it was (invalid UTF-8 replaced), cut at 2000 characters.")
    truncated_chars: int | None = Field(default=None, description="Characters cut from `text`, when it was cut.")


class RejectedSource(_Lenient):
    """The lines set aside from one compacted log file."""

    lines: int = Field(ge=0, description="Non-blank lines compaction read from the log.")
    rejected: list[RejectedLine] = Field(default_factory=list, description="Every line set aside, in order.")


class HarvestErrors(_Lenient):
    """data/harvest/<UNDERLYING>/YYYY-MM-DD.errors.json: what compaction (market/compact.py) did not put
    into the day's Parquet file, so no line is dropped silently. Counts match the Parquet footer's."""

    schema_version: Literal[1] = 1
    underlying: str
    date: str = Field(description="The UTC day, YYYY-MM-DD.")
    schema_errors: int = Field(ge=0, description="Lines that are not a valid harvest row, over every compaction of the day.")
    bad_names: int = Field(ge=0, description="Rows whose instrument is not an option of the underlying.")
    sources: dict[str, RejectedSource] = Field(
        description="Per compacted log, keyed `<file name>@<first 16 hex of its sha256>` (a re-run rewrites its entry)."
    )


# --------------------------------------------------------------------------- backtests (calreport backtest)


class BacktestScore(_Lenient):
    """The applied calibration after one decision, scored on one snapshot (calibration/live.score_applied)."""

    snapshot_ts: str | None = Field(default=None, description="The snapshot scored (ISO 8601 UTC); null when none was near the horizon.")
    rv_7d: float | None = Field(default=None, description="RV_7d as of that snapshot (fraction), the engine's base vol then.")
    iv_error_vp: float | None = Field(default=None, description="OTM vega-weighted mean |sigma_syn - sigma_mark| (vol points).")
    otm_vega_weighted_mae_pct: float | None = Field(default=None, description="OTM vega-weighted mean |P_syn - mark| / mark (percent).")
    all_vega_weighted_mae_pct: float | None = Field(default=None, description="The same over every quote (percent).")
    otm_samples: int | None = Field(default=None, description="OTM quotes scored.")
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
    step: float | None = Field(default=None, description="|global after - global before| when applied.")
    scores: dict[str, BacktestScore] = Field(default_factory=dict, description="Horizon label ('0h' in-sample, '1h', ...) -> score.")


class BacktestSummary(_Lenient):
    """backtests/<id>/summary.json: settings and per-variant results of one `calreport backtest`."""

    schema_version: int = 1
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
        "{iv_error_vp, otm_vega_weighted_mae_pct, all_vega_weighted_mae_pct: {n, mean, median, p90}, by_band}.",
    )
