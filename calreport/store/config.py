"""config/calibration.yaml: policy, realism, bands, filters, smoothing, dashboard settings.

The file is optional; every setting has a built-in default. Unknown keys are errors so a
misspelt threshold is never silently ignored.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from calreport.errors import CalreportError
from calreport.store.paths import Root
from calreport.store.yamlio import load_strict, validation_problem


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Band(_Section):
    """A DTE band [min_dte, max_dte): an option of DTE d belongs to the band with min <= d < max."""

    name: str
    min_dte: float = Field(ge=0)
    max_dte: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self) -> "Band":
        if self.max_dte <= self.min_dte:
            raise ValueError(f"band {self.name!r}: max_dte must exceed min_dte")
        return self


class RealismConfig(_Section):
    """Thresholds of assess_calibration_realism (contract section 7)."""

    min_mult: float = 0.7
    max_mult: float = 1.6
    max_mae: float = 400.0
    max_vega_mae: float = 200.0


class PolicyConfig(_Section):
    """When a live run's smoothed multipliers are applied automatically."""

    min_samples: int = 50
    min_vega_sum: float = 1.0  # coin per 1.00 vol, summed over the samples (~20 for a full BTC chain)
    min_delta: float = 0.03
    max_rel_step: float = 0.25


class SmoothingConfig(_Section):
    alpha: float = Field(default=0.3, gt=0, le=1)


class FilterConfig(_Section):
    """Which quotes a calibration uses; each drop is counted per reason."""

    min_dte: float = 1.0
    max_dte: float = 90.0
    min_mark_price: float = 0.0005
    max_abs_log_moneyness: float = 0.5
    min_open_interest: float = 0.0
    max_rel_spread: float = 2.0
    option_types: list[str] = Field(default_factory=lambda: ["C", "P"])


class FitConfig(_Section):
    """Bounded search for the multiplier that minimises vega-weighted absolute % error."""

    min_mult: float = 0.5
    max_mult: float = 3.0
    band_min_samples: int = 10
    # a live run with fewer usable quotes than this is a failed run (nothing is fitted)
    min_samples: int = Field(default=10, ge=1)
    # RV_7d from fewer hourly returns than this (a full week is 168) degrades a live run
    min_rv_returns: int = Field(default=120, ge=0)


class AutoConfig(_Section):
    """Auto-calibrate defaults and the daily job's list of runs."""

    underlyings: list[str] = Field(default_factory=lambda: ["BTC", "ETH"])
    dte_ranges: list[str] = Field(default_factory=lambda: ["3-10"])
    lookbacks: list[str] = Field(default_factory=lambda: ["14d"])
    expected_interval_minutes: float = 5.0
    min_snapshot_coverage: float = 0.5
    min_rv_returns: int = 24
    # data quality of an auto run: degraded above this share of unreadable harvest lines,
    # or with fewer expiries / distinct strikes than these in the DTE range
    max_schema_error_rate: float = Field(default=0.01, ge=0, le=1)
    min_expiries: int = Field(default=2, ge=0)
    min_strikes: int = Field(default=10, ge=0)


class DashboardConfig(_Section):
    max_rows: int = Field(default=50, ge=1)
    page_size: int = Field(default=500, ge=1)
    mae_warn_pct: float = 40.0
    min_rv_returns: int = 120


class CalibrationConfig(_Section):
    schema_version: int = 1
    underlyings: list[str] = Field(default_factory=lambda: ["BTC", "ETH"])
    bands: list[Band] = Field(
        default_factory=lambda: [
            Band(name="0-7d", min_dte=0, max_dte=7),
            Band(name="7-30d", min_dte=7, max_dte=30),
            Band(name="30-90d", min_dte=30, max_dte=90),
        ]
    )
    realism: RealismConfig = Field(default_factory=RealismConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    smoothing: SmoothingConfig = Field(default_factory=SmoothingConfig)
    filters: FilterConfig = Field(default_factory=FilterConfig)
    fit: FitConfig = Field(default_factory=FitConfig)
    auto: AutoConfig = Field(default_factory=AutoConfig)
    dashboard: DashboardConfig = Field(default_factory=DashboardConfig)
    git_commit: bool = False

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

    def check_underlying(self, underlying: str) -> str:
        """Unknown underlyings are a one-line error, not a silent 1.0."""
        name = underlying.upper()
        if name not in self.underlyings:
            raise CalreportError(
                f"unknown underlying {underlying!r} (configured: {', '.join(self.underlyings)})"
            )
        return name


def load_config(root: Root) -> CalibrationConfig:
    path: Path = root.calibration_config
    if not path.exists():
        return CalibrationConfig()
    data = load_strict(path)
    if data is None:
        return CalibrationConfig()
    if not isinstance(data, dict):
        raise CalreportError("expected a mapping at the top level", path)
    try:
        return CalibrationConfig.model_validate(data)
    except ValidationError as exc:
        raise CalreportError(f"invalid settings: {validation_problem(exc)}", path) from None


DEFAULT_CONFIG_TEXT = """\
# calreport settings. Every key is optional; these are the built-in defaults.
schema_version: 1
underlyings: [BTC, ETH]
# DTE bands [min_dte, max_dte): per-band multipliers apply to options whose DTE falls inside.
bands:
  - {name: 0-7d, min_dte: 0, max_dte: 7}
  - {name: 7-30d, min_dte: 7, max_dte: 30}
  - {name: 30-90d, min_dte: 30, max_dte: 90}
# assess_calibration_realism thresholds (multiplier range; MAE and vega-weighted MAE in percent).
realism: {min_mult: 0.7, max_mult: 1.6, max_mae: 400.0, max_vega_mae: 200.0}
# Update policy for live runs.
policy: {min_samples: 50, min_vega_sum: 1.0, min_delta: 0.03, max_rel_step: 0.25}
smoothing: {alpha: 0.3}
filters:
  min_dte: 1.0
  max_dte: 90.0
  min_mark_price: 0.0005      # in the base coin (5 ticks of 0.0001)
  max_abs_log_moneyness: 0.5
  min_open_interest: 0.0
  max_rel_spread: 2.0         # (ask - bid) / mid, only where both sides exist
  option_types: [C, P]
fit: {min_mult: 0.5, max_mult: 3.0, band_min_samples: 10, min_samples: 10, min_rv_returns: 120}
auto:
  underlyings: [BTC, ETH]
  dte_ranges: ['3-10']
  lookbacks: [14d]
  expected_interval_minutes: 5.0
  min_snapshot_coverage: 0.5
  min_rv_returns: 24
  max_schema_error_rate: 0.01   # data quality degraded above 1% unreadable harvest lines
  min_expiries: 2
  min_strikes: 10
dashboard: {max_rows: 50, page_size: 500, mae_warn_pct: 40.0, min_rv_returns: 120}
git_commit: false
"""
