"""The dashboard's IV error per expiry: what the engine quotes under the applied YAML, against the latest
live run's marks (pure: view objects from the files of record, no I/O).

For the latest live run of each underlying, its detail file's quotes (strike K, forward F, days to expiry,
mark_iv, vega at the market IV) are priced with the applied entry exactly as the engine quotes them
(calibration.smile.sigma_for: the surface on the variance clock counted from the run's time for a schema-3
entry, else the step model), on the base of the configured sigma mode (RV_7d, the expiry's ATM IV, or the
quote's own mark IV); values fitted in another mode are not used, so the base alone is what is quoted.
Per expiry, over the OTM quotes (calls K >= F, puts K < F):

    IV error (vp) = sum(vega |sigma - mark_iv|) / sum(vega) x 100
    IV bias  (vp) = sum(vega (sigma - mark_iv)) / sum(vega) x 100

with the number of OTM quotes; `vega` is the detail's Black-76 vega at the market IV (coin per 1.00 vol).
The detail's front quotes (nearer than filters.min_dte: never fitted, but quoted by the engine) are priced the
same way and shown first, marked, outside the "all fitted" figures. Templates only loop and print these strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from calreport import fmt
from calreport.calibration.desk import otm_mask
from calreport.calibration.sigma import atm_iv_grouped, mode_of
from calreport.calibration.smile import sigma_for
from calreport.model import (
    AppliedEntry,
    CalibrationConfig,
    FrontQuote,
    LiveRun,
    QuoteDetail,
    RunDetail,
    default_entry,
    quoted_in_mode,
    quoted_surface,
)
from calreport.timeutil import time_ms


@dataclass(frozen=True)
class ExpiryErrorRow:
    expiry: str  # the instruments' expiry code, e.g. 15DEC25
    dte: str
    quotes: str  # OTM quotes of this expiry
    iv_error_vp: str
    iv_bias_vp: str
    note: str = ""  # "not fitted (DTE < 1)" for an expiry nearer than filters.min_dte


@dataclass(frozen=True)
class ExpiryErrorSection:
    underlying: str
    run_id: str = fmt.MISSING
    time: str = fmt.MISSING
    model: str = ""  # "surface" or "step model": how the applied entry is quoted
    rows: list[ExpiryErrorRow] = field(default_factory=list)
    total_quotes: str = fmt.MISSING
    total_iv_error_vp: str = fmt.MISSING
    note: str = ""
    # the "all fitted" row as numbers: the applied calibration's OTM IV error and bias on the run's marks (vp);
    # the first screen's headline error reads them (views.build_overview)
    iv_error_vp: float | None = None
    iv_bias_vp: float | None = None


@dataclass(frozen=True)
class ExpiryError:
    """One expiry's figures (numbers, for tests and the view)."""

    expiry: str
    dte: float
    quotes: int
    iv_error_vp: float
    iv_bias_vp: float
    fitted: bool = True  # False: nearer than filters.min_dte, quoted by the engine but never fitted


def _quoted_gaps(
    qs: Sequence[QuoteDetail] | Sequence[FrontQuote], run: LiveRun, entry: AppliedEntry, config: CalibrationConfig, now_ms: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(expiry code, DTE, group per expiry, vega, gap = sigma - mark_iv in vp, NaN where unusable) of what `entry`
    quotes for `qs` in the configured sigma mode, over the OTM quotes (others NaN)."""
    K = np.array([q.strike for q in qs], dtype=np.float64)
    F = np.array([q.forward for q in qs], dtype=np.float64)
    dte = np.array([q.dte for q in qs], dtype=np.float64)
    iv = np.array([q.mark_iv for q in qs], dtype=np.float64)
    vega = np.array([q.vega for q in qs], dtype=np.float64)
    is_call = np.array([q.type == "C" for q in qs])
    code = np.array([q.instrument.split("-")[1] if q.instrument.count("-") >= 3 else f"{q.dte:g}d" for q in qs])
    T = dte / 365.0
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k = np.log(K / F)
    _, group = np.unique(dte, return_inverse=True)
    mode = config.sigma_mode_for(run.underlying or "")  # the engine quotes in the configured mode (EngineView.sigma_in_mode)
    if mode == "atm_iv":
        base: np.ndarray | float = atm_iv_grouped(group, F, K, iv, is_call)
    elif mode == "mark_iv":
        base = iv
    else:
        base = float(run.rv_7d) if run.rv_7d else float("nan")
    if quoted_in_mode(entry.sigma_mode, mode):
        sigma = sigma_for(entry, config.bands, dte, log_k, T, base, use_smile=config.smile.enabled, now_ms=now_ms)
    else:  # values fitted in another mode are not used: the engine quotes the base alone
        sigma = np.broadcast_to(np.asarray(base, dtype=np.float64), T.shape).astype(np.float64)
    otm = otm_mask(F, K, is_call)
    ok = otm & np.isfinite(sigma) & np.isfinite(iv) & (iv > 0) & np.isfinite(vega) & (vega > 0) & (T > 0)
    gap = np.where(ok, (sigma - iv) * 100.0, np.nan)
    return code, dte, group, vega, gap


def _per_expiry(code: np.ndarray, dte: np.ndarray, group: np.ndarray, vega: np.ndarray, gap: np.ndarray, fitted: bool) -> list[ExpiryError]:
    ok = np.isfinite(gap)
    out = []
    for g in np.unique(group[ok]):  # per expiry (a dozen), each a vectorised reduction
        m = ok & (group == g)
        w = vega[m] / vega[m].sum()
        out.append(ExpiryError(str(code[m][0]), float(dte[m][0]), int(m.sum()), float(np.sum(w * np.abs(gap[m]))), float(np.sum(w * gap[m])), fitted))
    return out


def expiry_errors(
    detail: RunDetail, run: LiveRun, entry: AppliedEntry, config: CalibrationConfig
) -> tuple[list[ExpiryError], tuple[int, float, float] | None]:
    """Per expiry (nearest first) the vega-weighted OTM IV error and bias of what `entry` quotes against the
    detail's mark IVs, and the whole run's (OTM quotes, IV error, IV bias) over its fitted expiries; empty when
    nothing is usable. The expiries nearer than filters.min_dte (the detail's front quotes, not fitted but
    quoted by the engine) come first, `fitted` False, and stay out of the whole run's figures."""
    qs = [q for q in detail.quotes if q.forward is not None and q.mark_iv is not None]
    now_ms = time_ms(run.ts or detail.ts)
    if not qs or now_ms is None:
        return [], None
    code, dte, group, vega, gap = _quoted_gaps(qs, run, entry, config, now_ms)
    ok = np.isfinite(gap)
    if not ok.any():
        return [], None
    out = _per_expiry(code, dte, group, vega, gap, True)
    if detail.front_quotes:
        out = _per_expiry(*_quoted_gaps(detail.front_quotes, run, entry, config, now_ms), False) + out
    w = vega[ok] / vega[ok].sum()
    return out, (int(ok.sum()), float(np.sum(w * np.abs(gap[ok]))), float(np.sum(w * gap[ok])))


def build_expiry_errors(
    names: Sequence[str], latest: dict[str, LiveRun], details: dict[str, RunDetail], applied: dict[str, AppliedEntry] | None,
    config: CalibrationConfig,
) -> list[ExpiryErrorSection]:
    """One section per underlying: the per-expiry table of its latest live run, or why there is none."""
    out = []
    for name in names:
        run = latest.get(name)
        detail = details.get(run.run_id or "") if run is not None else None
        if run is None or detail is None:
            out.append(ExpiryErrorSection(name, note="No live run with quote detail yet."))
            continue
        if applied is None:
            out.append(ExpiryErrorSection(name, fmt.text(run.run_id), fmt.time(run.ts), note="The applied YAML is unreadable."))
            continue
        entry = applied.get(name) or default_entry()
        rows, total = expiry_errors(detail, run, entry, config)
        mode = config.sigma_mode_for(name)
        model = (
            "surface" if quoted_surface(entry, config.smile.enabled) is not None else "step model"
        ) if quoted_in_mode(entry.sigma_mode, mode) else f"values not used (fitted in sigma_mode {mode_of(entry.sigma_mode)}, configured {mode}: sigma = base alone)"
        if not rows or total is None:
            out.append(ExpiryErrorSection(name, fmt.text(run.run_id), fmt.time(run.ts), model, note="No OTM quote with a mark IV and a base."))
            continue
        out.append(ExpiryErrorSection(
            name, fmt.text(run.run_id), fmt.time(run.ts), model,
            [ExpiryErrorRow(r.expiry, fmt.num(r.dte, 2), fmt.integer(r.quotes), fmt.num(r.iv_error_vp, 2), fmt.num(r.iv_bias_vp, 2),
                            "" if r.fitted else f"not fitted (DTE < {fmt.limit(config.filters.min_dte)})") for r in rows],
            fmt.integer(total[0]), fmt.num(total[1], 2), iv_error_vp=total[1], iv_bias_vp=total[2],
        ))
    return out
