"""config/calibration.yaml: every setting and its one built-in default."""

from __future__ import annotations

import hashlib
import json
import math
import re
from typing import TYPE_CHECKING, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from calreport.errors import CalreportError, excerpt
from calreport.model._base import (
    BAND_LABEL_RE,
    DEFAULT_SIGMA_MODE,
    SIGMA_MODES,
    UNDERLYING_RE,
    SigmaMode,
)

if TYPE_CHECKING:
    from calreport.model.applied import Multipliers

class _Section(BaseModel):
    """Every settings model: unknown keys refused, and strict types for every field, present and
    future (a config is input from outside): a number is a number (not "1.5", not yes/true), an integer is an integer,
    and NaN / infinity are refused wherever a float is expected."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


MAX_BOOTSTRAP_DRAWS = 10_000  # 400 by default; 1e6 took 44 s a run
MAX_SMILE_NODES = 41  # 7 by default; thousands made one fit run for minutes
MAX_SMILE_X = 50.0  # |x| of the outermost node (x is in standard deviations: 2.5 by default)
MAX_LOOKBACK_DAYS = 3660  # ten years of harvest
_DTE_RANGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*-\s*(\d+(?:\.\d+)?)\s*d?\s*$", re.IGNORECASE)  # as calibration/auto.py parses it
_LOOKBACK_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhdw])\s*$", re.IGNORECASE)
_LOOKBACK_DAYS = {"m": 1 / 1440, "h": 1 / 24, "d": 1.0, "w": 7.0}  # days per unit


def valid_lookback(text: str) -> bool:
    """A window length like 14d, 12h, 90m or 2w, above 0 and at most MAX_LOOKBACK_DAYS (config and --lookback)."""
    m = _LOOKBACK_RE.match(str(text))
    return bool(m) and 0 < float(m[1]) * _LOOKBACK_DAYS[m[2].lower()] <= MAX_LOOKBACK_DAYS


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

    @staticmethod
    def pillar_of(min_dte: float, max_dte: float) -> float:
        """Where the surface places a band's level: its midpoint in square-root time (days)."""
        return ((math.sqrt(min_dte) + math.sqrt(max_dte)) / 2.0) ** 2

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
    """Hard bounds on every multiplier calreport writes or reads: a value outside them
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

    min_mult: float = Field(default=0.7, gt=0, description="Lowest believable multiplier.")
    max_mult: float = Field(default=1.6, gt=0, description="Highest believable multiplier.")
    max_mae: float = Field(default=400.0, gt=0, description="Highest believable MAE (percent of the mark).")
    max_vega_mae: float = Field(default=200.0, gt=0, description="Highest believable vega-weighted MAE (percent).")

    @model_validator(mode="after")
    def _ordered(self) -> RealismConfig:
        _check_range(self.min_mult, self.max_mult, "min_mult < max_mult")
        return self


class PolicyConfig(_Section):
    """When a live run's smoothed multipliers are applied automatically."""

    min_samples: int = Field(default=50, ge=0, description="Fewest usable quotes for an automatic apply.")
    min_vega_sum: float = Field(
        default=1.0,
        ge=0,
        description="Least summed vega for an automatic apply (coin per 1.00 vol; ~20 for a full BTC chain).",
    )
    min_delta: float = Field(default=0.03, ge=0, description="Smallest change of the global or any band multiplier worth applying (absolute, e.g. 1.00 -> 1.03).")
    max_rel_step: float = Field(
        default=0.10, gt=0, le=10,
        description="Floor of the step cap, relative to the applied value (fraction): a step is capped at max(max_step_se x SE, this x applied).",
    )
    min_delta_se: float = Field(
        default=1.0, ge=0, description="A change must also exceed this many standard errors of the recommended multiplier (multiplier_se; 0 = off)."
    )
    significant_se: float = Field(
        default=2.0, ge=0, le=100, description="A recommended value further than max(min_delta, this x SE) from the applied one is applied whole, unsmoothed (0 = never)."
    )
    max_step_se: float = Field(
        default=6.0, ge=0, le=100, description="Step cap in standard errors: a step is capped at max(this x SE, max_rel_step x applied); unknown SE: the floor alone."
    )


class SmoothingConfig(_Section):
    alpha: float = Field(default=0.3, gt=0, le=1, description="EWMA weight of the newest recommendation (0 < alpha <= 1).")
    half_life_hours: float | None = Field(
        default=0.5, gt=0, description="When set, the EWMA weight is 1 - 0.5^(hours since the previous smoothed run / half_life_hours) instead of alpha."
    )


class FilterConfig(_Section):
    """Which quotes a calibration uses; each drop is counted per reason."""

    min_dte: float = Field(default=1.0, ge=0, description="Shortest DTE used (days).")
    max_dte: float = Field(default=90.0, gt=0, description="Longest DTE used (days).")
    min_mark_price: float = Field(default=0.0005, ge=0, description="Smallest mark used (base coin; 5 ticks of 0.0001).")
    max_abs_log_moneyness: float = Field(default=0.5, gt=0, description="Largest |ln(K/F)| used.")
    min_open_interest: float = Field(default=0.0, ge=0, description="Smallest open interest used (contracts; 0 = no filter).")
    max_rel_spread: float = Field(
        default=2.0, gt=0, description="Widest (ask - bid) / mid used (fraction), checked only where both sides exist."
    )
    option_types: list[str] = Field(default_factory=lambda: ["C", "P"], description="Option types used: C, P.")

    @field_validator("option_types")
    @classmethod
    def _types(cls, v: list[str]) -> list[str]:
        if not v or len(set(v)) != len(v) or any(t not in ("C", "P") for t in v):
            raise ValueError(f"option_types must be C, P or both, each once, got {excerpt(v, 40)}")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> FilterConfig:
        _check_range(self.min_dte, self.max_dte, "min_dte < max_dte")
        return self


class FitConfig(_Section):
    """Bounded search for the multiplier that minimises vega-weighted absolute % error."""

    min_mult: float = Field(default=0.5, gt=0, description="Lower bound of the multiplier search.")
    max_mult: float = Field(default=3.0, gt=0, description="Upper bound of the multiplier search.")
    band_min_samples: int = Field(default=10, ge=1, description="Fewest quotes in a band (or option type) to fit it separately.")
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
    bootstrap_draws: int = Field(default=400, ge=0, le=MAX_BOOTSTRAP_DRAWS, description="Draws of the bootstrap over expiries behind multiplier_se (0 = no bootstrap).")
    bootstrap_seed: int = Field(default=11, ge=0, lt=2**32, description="Seed of that bootstrap (same data and seed, same standard error).")
    surface_se: Literal["flat", "wild"] = Field(
        default="flat",
        description="The surface's standard errors (levels and smile nodes). flat (default): the flat fit's bootstrap over expiries, shown as 'flat-fit SE, not the surface SE' (0.3-3x the surface's own on the shared snapshots; nodes carry none). wild: the wild cluster bootstrap over a balanced sign design (every expiry kept, its residuals flipped whole or not; 16 refits with 5-8 expiries, 24 with 9-12), within 10 % of the wild bootstrap over all sign patterns on the shared snapshots, at 16-24 warm-started fits a run (+1.3-3.1 s a live calibrate on the shared snapshots (quiet machine; 3.5-4.5 s at load 2-4), ~12 s on the demo's generated chains, and as much per backtest decision); see CALIBRATION_NOTES.",
    )
    refit_draws: int = Field(
        default=0, ge=0, le=MAX_BOOTSTRAP_DRAWS,
        description="Draws of the opt-in bootstrap that refits the applied surface (levels and smile nodes) per resample of expiries with replacement (each draw one warm-started fit of 0.07-0.43 s); 2 or more take precedence over surface_se. Its SD is not pinned even by 1000 draws (a resample that misses both expiries around a pillar leaves it unidentified); see CALIBRATION_NOTES.",
    )
    min_distinct_resamples: int = Field(
        default=20, ge=2,
        description="Fewest distinct draws of the expiries informing a level or node for its 95 % interval to be shown: resamples (3 expiries give at most 10) or, under the wild bootstrap, sign patterns (k expiries give 2^k: 20 needs 5).",
    )

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
        if len(n) > MAX_SMILE_NODES or abs(n[0]) > MAX_SMILE_X or abs(n[-1]) > MAX_SMILE_X:
            raise ValueError(f"smile.nodes: at most {MAX_SMILE_NODES} nodes within [-{MAX_SMILE_X:g}, {MAX_SMILE_X:g}] (got {len(n)} from {n[0]:g} to {n[-1]:g})")
        if len(self.bounds) != 2 or not 0 < self.bounds[0] <= 1.0 <= self.bounds[1]:
            raise ValueError("smile.bounds must be [lo, hi] with 0 < lo <= 1 <= hi")
        return self


class SurfaceConfig(_Section):
    """The quoted surface (calibration/surface.py): band levels and smiles as pillars of a continuous,
    arbitrage-checked surface on a variance clock. enabled: false keeps the step model (a band's level
    constant within it). Used with smile.enabled and sigma_mode rv; the applied entry records these
    settings (its surface block), so editing them changes what is quoted only at the next apply."""

    enabled: bool = Field(default=True, description="Fit, apply and quote the surface model; false: the step model.")
    weekend_weight: float = Field(
        default=0.35, ge=0, le=1,
        description="Variance of a weekend hour relative to a weekday hour (1 = calendar time); 0.35 minimises the error on the shared snapshots (CALIBRATION_NOTES).",
    )
    wing_slope_cap: float = Field(default=1.8, gt=0, lt=2, description="Largest |d total variance / d ln(K/F)| of the wings (Lee's bound is 2).")


class AutoConfig(_Section):
    """Auto-calibrate defaults and the daily job's list of runs."""

    underlyings: list[str] = Field(default_factory=lambda: ["BTC", "ETH"], description="Underlyings the daily job runs.")
    dte_ranges: list[str] = Field(default_factory=lambda: ["3-10"], description="DTE ranges in days, 'MIN-MAX'.")
    lookbacks: list[str] = Field(default_factory=lambda: ["14d"], description="Window lengths: 90m, 12h, 14d, 1w.")
    expected_interval_minutes: float = Field(default=5.0, gt=0, description="Harvest interval the coverage is measured against (minutes).")
    min_snapshot_coverage: float = Field(default=0.5, ge=0, le=1, description="Fewer snapshots than this share of the expected degrades a run (fraction).")
    min_rv_returns: int = Field(default=24, ge=0, description="Snapshots whose RV_7d rests on fewer hourly returns are left out.")
    max_schema_error_rate: float = Field(
        default=0.01, ge=0, le=1, description="Data quality degraded above this share of unreadable harvest lines (fraction)."
    )
    min_expiries: int = Field(default=2, ge=0, description="Fewer expiries in the DTE range degrade a run.")
    min_strikes: int = Field(default=10, ge=0, description="Fewer distinct strikes in the DTE range degrade a run.")
    min_snapshots_used: int = Field(default=12, ge=0, description="Fewer snapshots contributing quotes degrade a run.")
    min_span_hours: float = Field(
        default=12.0, ge=0, description="A run whose snapshots used span less than this (hours; at most half the lookback) is degraded: "
        "a '14d' lookback resting on two hours of snapshots is not two weeks of evidence.")

    @field_validator("underlyings")
    @classmethod
    def _underlying_names(cls, v: list[str]) -> list[str]:
        return _check_underlyings(v)

    @field_validator("dte_ranges")
    @classmethod
    def _dte_ranges(cls, v: list[str]) -> list[str]:
        for text in v:
            m = _DTE_RANGE_RE.match(text)
            if not m or float(m[2]) <= float(m[1]):
                raise ValueError(f"bad DTE range {excerpt(text, 40)} (MIN-MAX days with MIN < MAX, e.g. 3-10)")
        return v

    @field_validator("lookbacks")
    @classmethod
    def _lookbacks(cls, v: list[str]) -> list[str]:
        for text in v:
            if not valid_lookback(text):
                raise ValueError(f"bad lookback {excerpt(text, 40)} (a length like 14d, 12h or 90m, at most {MAX_LOOKBACK_DAYS} days)")
        return v


class DashboardConfig(_Section):
    max_rows: int = Field(default=50, ge=1, description="History rows on the dashboard's first page.")
    page_size: int = Field(default=500, ge=1, description="History rows per page of the full tables.")
    mae_warn_pct: float = Field(default=40.0, gt=0, description="A latest live run MAE above this shows a warning banner (percent).")
    stale_after_hours: float = Field(
        default=2.0, gt=0, description="A latest live run older than this (against the render time) shows a staleness banner; so does a latest auto run whose window ends this long after its last snapshot (hours)."
    )
    poll_seconds: float = Field(
        default=30.0, gt=0, description="Under `calreport serve`, how often the page asks for the applied state and refreshes its panels when it changed (seconds)."
    )
    min_rv_returns: int = Field(
        default=120,
        description="Unused, still accepted so older configs load: the thin-RV banner follows fit.min_rv_returns and the sigma mode (the policy's own rule).",
    )


class FlagsConfig(_Section):
    """Thresholds of the run flags (calibration/flags.py): what a desk wants pointed out."""

    iv_drift_vp: float = Field(default=5.0, gt=0, description="IV_DRIFT when the 7-day ATM IV moved more than this since the applied run (vol points).")
    atm_rv_min: float = Field(default=0.7, gt=0, description="ATM_RV_RANGE when ATM IV / RV_7d is below this.")
    atm_rv_max: float = Field(default=1.4, gt=0, description="ATM_RV_RANGE when ATM IV / RV_7d is above this.")
    wing_gap_vp: float = Field(default=5.0, gt=0, description="WING_GAP when a band's <10D bucket is further than this from the market (vol points).")
    expiry_outlier_ratio: float = Field(default=2.0, gt=1, description="SHORT_EXPIRY_OUTLIER when an expiry's vega-weighted MAE exceeds this multiple of its band's.")
    expiry_outlier_min_samples: int = Field(default=5, ge=1, description="Fewest quotes of an expiry for SHORT_EXPIRY_OUTLIER.")

    @model_validator(mode="after")
    def _ordered(self) -> FlagsConfig:
        _check_range(self.atm_rv_min, self.atm_rv_max, "atm_rv_min < atm_rv_max")
        return self


class AlertsConfig(_Section):
    """Who hears about failed runs, runs held for review and new flags (commands/adapters/alerts.py)."""

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
    surface: SurfaceConfig = Field(default_factory=SurfaceConfig)
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
        if not v:
            raise ValueError("at least one underlying is required (e.g. [BTC])")
        return _check_underlyings(v)

    @field_validator("sigma_mode", mode="before")
    @classmethod
    def _sigma_mode_named(cls, v: object) -> object:
        """One readable line for a misspelt mode ('atm-iv'), where the union's own errors name its
        member types; and a mapping keyed by an underlying's exact name: sigma_mode_for looks up the
        upper-case name, so {btc: atm_iv} would leave BTC in rv without a word."""
        modes = ", ".join(SIGMA_MODES)
        if isinstance(v, dict):
            for name, mode in v.items():
                if not isinstance(name, str) or not UNDERLYING_RE.match(name):
                    raise ValueError(f"bad underlying {excerpt(name, 40)} (upper-case letters and digits, e.g. BTC)")
                if mode not in SIGMA_MODES:
                    raise ValueError(f"{name}: must be one of {modes}, got {excerpt(mode, 40)}")
        elif v not in SIGMA_MODES:
            raise ValueError(f"must be one of {modes} or a mapping underlying -> mode (e.g. {{BTC: atm_iv}}), got {excerpt(v, 40)}")
        return v

    @model_validator(mode="after")
    def _sigma_mode_underlyings(self) -> CalibrationConfig:
        if isinstance(self.sigma_mode, dict):
            unknown = sorted(set(self.sigma_mode) - set(self.underlyings) - set(self.auto.underlyings))
            if unknown:
                raise ValueError(
                    f"sigma_mode: {excerpt(unknown[0], 40)} is not a configured underlying ({', '.join(self.underlyings)}), "
                    "so its mode would never be used"
                )
        return self

    @model_validator(mode="after")
    def _fit_within_limits(self) -> CalibrationConfig:
        lim = self.limits
        if self.fit.min_mult < lim.min_multiplier or self.fit.max_mult > lim.max_multiplier:
            raise ValueError(
                f"fit: the search range [{self.fit.min_mult:g}, {self.fit.max_mult:g}] must lie within the "
                f"limits [{lim.min_multiplier:g}, {lim.max_multiplier:g}]"
            )
        return self

    @model_validator(mode="after")
    def _pillars_increase(self) -> CalibrationConfig:
        """The surface interpolates between band pillars in the listed order: they must increase."""
        if self.surface.enabled and self.smile.enabled:
            days = [Band.pillar_of(b.min_dte, b.max_dte) for b in self.bands]
            if any(b <= a for a, b in zip(days, days[1:])):
                listed = ", ".join(f"{b.name} {d:.4g} d" for b, d in zip(self.bands, days))
                raise ValueError(
                    f"bands: with surface.enabled their pillars (midpoints in square-root time) must increase in the listed order; got {listed}"
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

    def band_gaps(self) -> list[tuple[float, float]]:
        """DTE ranges [lo, hi) between the bands that no band covers (below the first band's min_dte and past the
        last band's max_dte are not gaps: there the global multiplier is meant). The band lookup then finds no
        band, so a step-model entry quotes such an option at the global multiplier."""
        spans = sorted((b.min_dte, b.max_dte) for b in self.bands)
        gaps, reach = [], spans[0][1] if spans else 0.0
        for lo, hi in spans[1:]:  # a handful of bands
            if lo > reach:
                gaps.append((reach, lo))
            reach = max(reach, hi)
        return gaps

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
