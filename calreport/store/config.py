"""Reading config/calibration.yaml (the settings model, CalibrationConfig, lives in store/models.py).

The file is optional; every setting has a built-in default. Unknown keys are errors so a
misspelt threshold is never silently ignored.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from calreport.errors import CalreportError
from calreport.model import CalibrationConfig
from calreport.store.files import present
from calreport.store.paths import Root
from calreport.store.yamlio import load_strict, validation_problem


def load_config(root: Root) -> CalibrationConfig:
    """The root's settings, or the built-in defaults when the file is absent or empty."""
    path: Path = root.calibration_config
    if not present(path):
        return CalibrationConfig()
    return load_config_file(path)


def load_config_file(path: Path) -> CalibrationConfig:
    """A settings file anywhere (a backtest variant), through the same strict reading and validation
    as the root's config/calibration.yaml; an empty file is the built-in defaults."""
    if not path.exists():
        raise CalreportError("no such settings file", path)
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
# Update policy for live runs: a change beyond significant_se standard errors is applied whole; a step
# is capped at max(max_step_se x SE, max_rel_step x applied); smoothing in calendar time (half-life).
policy: {min_samples: 50, min_vega_sum: 1.0, min_delta: 0.03, max_rel_step: 0.1, min_delta_se: 1.0, significant_se: 2.0,
         max_step_se: 6.0}
smoothing: {alpha: 0.3, half_life_hours: 0.5}   # alpha only when half_life_hours is null
filters:
  min_dte: 1.0
  max_dte: 90.0
  min_mark_price: 0.0005      # in the base coin (5 ticks of 0.0001)
  max_abs_log_moneyness: 0.5
  min_open_interest: 0.0
  max_rel_spread: 2.0         # (ask - bid) / mid, only where both sides exist
  option_types: [C, P]
# fit.surface_se: flat (the flat fit's bootstrap) or wild (the surface's own SE: 16-24 refits a run, 1-3 s a calibrate)
fit: {min_mult: 0.5, max_mult: 3.0, band_min_samples: 10, min_samples: 10, min_rv_returns: 120, objective: price_vega_rel,
      bootstrap_draws: 400, bootstrap_seed: 11, surface_se: flat, refit_draws: 0,
      min_distinct_resamples: 20}
# The smile per band (multiplier curve of x = ln(K/F) / (base x m_band x sqrt(T))); enabled: false = flat model.
smile:
  enabled: true
  nodes: [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
  penalty: 1.0                # x sum of squared slope changes, in the objective's units
  bounds: [0.5, 3.0]
  min_quotes_per_band: 20     # fewer OTM quotes: the band takes the global smile
  skew_flag_vp: 2.0           # SKEW_NOT_APPLIED above this fitted-vs-applied gap at any node (vol points)
# The quoted surface: band levels and smiles as pillars of one continuous surface on a variance clock
# (rv sigma mode, smile on); enabled: false = the step model. Recorded in each applied entry.
surface: {enabled: true, weekend_weight: 0.35, wing_slope_cap: 1.8}
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
  min_snapshots_used: 12        # an auto run resting on fewer snapshots is degraded
  min_span_hours: 12.0          # ... or on snapshots spanning less (at most half a shorter lookback)
dashboard: {max_rows: 50, page_size: 500, stale_after_hours: 2.0, poll_seconds: 30.0, mae_warn_pct: 40.0, min_rv_returns: 120}
git_commit: false
# Run flags (shown in the dashboard banner; vp = vol points).
flags: {iv_drift_vp: 5.0, atm_rv_min: 0.7, atm_rv_max: 1.4, wing_gap_vp: 5.0, expiry_outlier_ratio: 2.0,
  expiry_outlier_min_samples: 5}
# Alerts on failed runs, runs held for review and new flags: a command reading the event JSON on
# stdin and / or a webhook URL the JSON is POSTed to; each delivery bounded by timeout_s.
alerts: {command: null, webhook: null, timeout_s: 5.0}
# What the multiplier multiplies: rv (RV_7d), atm_iv (the expiry's ATM IV) or mark_iv (the option's
# own mark IV); one mode, or per underlying: {BTC: atm_iv} (unlisted: rv).
sigma_mode: rv
# Hard bounds on every multiplier applied or read from config/applied_multipliers.yaml.
limits: {min_multiplier: 0.05, max_multiplier: 20.0}
"""

