"""Run flags: the things a desk wants pointed out, each with its numbers (thresholds: config `flags`).

    THIN_RV               RV_7d from fewer than fit.min_rv_returns hourly returns (apply.thin_rv)
    IV_DRIFT              the 7-day ATM IV moved more than flags.iv_drift_vp since the applied run
    ATM_RV_RANGE          ATM IV / RV_7d outside [flags.atm_rv_min, flags.atm_rv_max]
    ON_FIT_BOUND          the global or a band's fit sits on a search bound
    DEGRADED_APPLIED      a run whose data quality is degraded was applied
    WING_GAP              a band's <10D bucket (put or call) is more than flags.wing_gap_vp from market
    SHORT_EXPIRY_OUTLIER  an expiry's vMAE is more than flags.expiry_outlier_ratio x its band's
    FIT_NOT_CONVERGED     the surface fit's last IRLS round stopped at its step cap (surface_fit.MAX_STEPS)

    live_flags(run, expiries, config, *, applied_atm_iv) -> list[RunFlag]
    auto_flags(run, config) -> list[RunFlag]
    new_flags(current, previous) -> codes in current but not in previous

Pure: rows and config in, flags out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calreport.apply import thin_rv
from calreport.calibration.bands import band_index
from calreport.calibration.surface_fit import IRLS_ROUNDS, MAX_STEPS
from calreport.model import (
    AutoRun,
    CalibrationConfig,
    ExpirySummary,
    LiveRun,
    RunFlag,
)

WINGS = (("put_lt10", "<10D put"), ("call_lt10", "<10D call"))


def _thin_rv(sigma_mode: str | None, rv_source: str | None, returns: int | None, cfg: CalibrationConfig) -> RunFlag | None:
    if not thin_rv(sigma_mode, rv_source, returns, cfg.fit.min_rv_returns):  # the policy's own rule
        return None
    return RunFlag(code="THIN_RV", message=f"RV_7d from {returns} hourly returns (< {cfg.fit.min_rv_returns})")


def _wing_gaps(by_bucket: dict | None, cfg: CalibrationConfig) -> list[RunFlag]:  # type: ignore[type-arg]
    out: list[RunFlag] = []
    groups = by_bucket or {}
    for band, rows in groups.items():
        if band == "all" and len(groups) > 1:  # per band when there are bands (live); "all" for auto
            continue
        for key, label in WINGS:
            b = rows.get(key)
            gap = getattr(b, "gap_vp", None)
            if b is not None and (b.samples or 0) > 0 and gap is not None and abs(gap) > cfg.flags.wing_gap_vp:
                out.append(RunFlag(code="WING_GAP", message=f"{band} {label}: model {gap:+.1f} vp from market (> {cfg.flags.wing_gap_vp:g})"))
    return out


def live_flags(
    run: LiveRun, expiries: Sequence[ExpirySummary], cfg: CalibrationConfig, *, applied_atm_iv: float | None = None
) -> list[RunFlag]:
    """Flags of a decided live run; `expiries` from its detail, `applied_atm_iv` the ATM IV of the
    run whose values are applied (None: no such run, no IV_DRIFT)."""
    f = cfg.flags
    flags: list[RunFlag] = []
    if thin := _thin_rv(run.sigma_mode, run.rv_source, run.rv_returns, cfg):
        flags.append(thin)
    if run.atm_iv is not None and applied_atm_iv is not None:
        drift = (run.atm_iv - applied_atm_iv) * 100.0
        if abs(drift) > f.iv_drift_vp:
            flags.append(RunFlag(code="IV_DRIFT", message=(
                f"ATM IV 7d {run.atm_iv * 100:.1f} % vs {applied_atm_iv * 100:.1f} % at the applied run "
                f"({drift:+.1f} vp, > {f.iv_drift_vp:g})")))
    if run.atm_ratio is not None and not (f.atm_rv_min <= run.atm_ratio <= f.atm_rv_max):
        flags.append(RunFlag(code="ATM_RV_RANGE", message=f"ATM IV / RV_7d = {run.atm_ratio:.3f} outside [{f.atm_rv_min:g}, {f.atm_rv_max:g}]"))
    bound = ["global"] if run.recommended_on_bound else []
    bound += [name for name, g in (run.by_band or {}).items() if g.on_bound]
    if bound:
        flags.append(RunFlag(code="ON_FIT_BOUND", message=f"fit on a search bound: {', '.join(bound)}"))
    if run.decision == "apply" and run.status == "degraded":
        flags.append(RunFlag(code="DEGRADED_APPLIED", message=f"applied with degraded data: {run.reason or '-'}"))
    flags += _wing_gaps(run.by_delta_bucket, cfg)
    flags += _expiry_outliers(run, expiries, cfg)
    if run.surface_fit_capped:
        flags.append(RunFlag(code="FIT_NOT_CONVERGED", message=(
            f"surface fit stopped at its {MAX_STEPS}-step cap in the last of {IRLS_ROUNDS} IRLS rounds, still descending: "
            "the recommended values are where it stopped, not a converged optimum")))
    return flags


def _expiry_outliers(run: LiveRun, expiries: Sequence[ExpirySummary], cfg: CalibrationConfig) -> list[RunFlag]:
    f = cfg.flags
    if not expiries or not run.by_band:
        return []
    idx = band_index(np.array([e.dte for e in expiries]), cfg.bands)
    out: list[RunFlag] = []
    for e, i in zip(expiries, idx.tolist(), strict=True):  # a handful of expiries
        if i < 0 or e.vega_weighted_mae_pct is None or e.samples < f.expiry_outlier_min_samples:
            continue
        name = cfg.bands[i].name
        band = run.by_band.get(name)
        ref = band.vega_weighted_mae_pct if band else None
        if ref and e.vega_weighted_mae_pct > f.expiry_outlier_ratio * ref:
            out.append(RunFlag(code="SHORT_EXPIRY_OUTLIER", message=(
                f"expiry {e.expiry[:10]} ({e.dte:.1f}d): vMAE {e.vega_weighted_mae_pct:.1f} % vs {name} band "
                f"{ref:.1f} % (> {f.expiry_outlier_ratio:g}x)")))
    return out


def auto_flags(run: AutoRun, cfg: CalibrationConfig) -> list[RunFlag]:
    """The flags an auto run's row can show: THIN_RV (at the window end), ON_FIT_BOUND, WING_GAP."""
    flags: list[RunFlag] = []
    dq = run.data_quality
    if dq is not None and run.samples and (thin := _thin_rv(run.sigma_mode, None, dq.rv_returns, cfg)):
        flags.append(thin)
    if run.multiplier_on_bound:
        flags.append(RunFlag(code="ON_FIT_BOUND", message=f"fit on a search bound: {run.multiplier}"))
    flags += _wing_gaps(run.by_delta_bucket, cfg)
    return flags


def new_flags(current: Sequence[RunFlag] | None, previous: Sequence[RunFlag] | None) -> list[str]:
    """Codes raised now that the previous run of the same underlying did not have (in order, once)."""
    before = {f.code for f in (previous or [])}
    return list(dict.fromkeys(f.code for f in (current or []) if f.code not in before))
