"""Is a calibration result believable?

A multiplier pinned at 0.5 with MAE 4,668,684 % is `failed`, never `ok`, whatever the data
quality said. The thresholds are `RealismConfig` (config/calibration.yaml's `realism` section);
its model holds the defaults, and MIN_MULT, MAX_MULT, MAX_MAE and MAX_VEGA_MAE are read from it,
so `assess_calibration_realism(multiplier, mae_pct, vega_weighted_mae_pct, data_quality_status)`
works as written in the original request while the runs pass the root's configured thresholds.

Pure: used by the calibration core (live and auto runs), so it opens no file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np

from calreport.calibration.smile import entry_surface, smile_problems, surface_tau
from calreport.calibration.surface import ArbReport, chain_violations, grid_violations
from calreport.model import (
    REALISM_STATUSES,
    AppliedEntry,
    ArbitrageCheck,
    Multipliers,
    RealismConfig,
    RealismStatus,
    Smile,
    SmileConfig,
)

_DEFAULTS = RealismConfig()
MIN_MULT: float = _DEFAULTS.min_mult  # 0.7
MAX_MULT: float = _DEFAULTS.max_mult  # 1.6
MAX_MAE: float = _DEFAULTS.max_mae  # 400.0 (percent)
MAX_VEGA_MAE: float = _DEFAULTS.max_vega_mae  # 200.0 (percent)

REASON_DATA_FAILED = "Data quality failed (schema/coverage issues)"
REASON_UNREALISTIC = "Unrealistic auto-calibration: multiplier or MAE outside sane range"
REASON_UNREALISTIC_LIVE = "Unrealistic live calibration: multiplier or MAE outside sane range"
REASON_DEGRADED = "Data quality degraded; use with caution"
REASON_OK = "Calibration within thresholds"

Verdict = tuple[RealismStatus, str]


def _bad(x: float | None) -> bool:
    return x is not None and not math.isfinite(x)


def assess_calibration_realism(
    multiplier: float | None,
    mae_pct: float | None,
    vega_weighted_mae_pct: float | None,
    data_quality_status: str | None,
    *,
    thresholds: RealismConfig | None = None,
    kind: Literal["auto", "live"] = "auto",
) -> Verdict:
    """Return (status, reason) with status in ok / degraded / failed.

    Order: data quality failed -> failed; multiplier outside [min, max] or MAE / vega MAE above
    their caps -> failed; data quality degraded -> degraded; else ok. A missing or non-finite
    multiplier, or a non-finite error, is unrealistic too: there is nothing sane to apply.
    `thresholds` defaults to RealismConfig() (MIN_MULT ... MAX_VEGA_MAE). `data_quality_status`
    is one of ok / degraded / failed, or None when it was never recorded (a legacy record:
    judged on its numbers alone); anything else is a ValueError, because a typo would otherwise
    read as "ok". `kind="live"` only changes the wording of the unrealistic reason for live runs.
    """
    if data_quality_status is not None and data_quality_status not in REALISM_STATUSES:
        raise ValueError(
            f"data_quality_status must be one of {', '.join(REALISM_STATUSES)} or None, not {data_quality_status!r}"
        )
    t = thresholds if thresholds is not None else _DEFAULTS
    if data_quality_status == "failed":
        return "failed", REASON_DATA_FAILED
    if (
        multiplier is None
        or _bad(multiplier)
        or multiplier < t.min_mult
        or multiplier > t.max_mult
        or _bad(mae_pct)
        or _bad(vega_weighted_mae_pct)
        or (mae_pct is not None and mae_pct > t.max_mae)
        or (vega_weighted_mae_pct is not None and vega_weighted_mae_pct > t.max_vega_mae)
    ):
        return "failed", REASON_UNREALISTIC_LIVE if kind == "live" else REASON_UNREALISTIC
    if data_quality_status == "degraded":
        return "degraded", REASON_DEGRADED
    return "ok", REASON_OK


def recommended_problem(multiplier: float | None, on_bound: bool | None, *, thresholds: RealismConfig) -> str | None:
    """Why a *recommended* multiplier is unbelievable (None when it is fine).

    Why: the smoothed value can sit inside the sane range while the fit behind it is pinned on a
    search bound (USD marks give 3.0 on the bound, smoothed 1.56): judging only the smoothed value
    let such a run pass as ok and be force-applied.
    """
    t = thresholds
    if multiplier is None or _bad(multiplier):
        return "no finite recommended multiplier"
    if on_bound:
        return f"recommended {multiplier:.4f} on the fit bound"
    if multiplier < t.min_mult or multiplier > t.max_mult:
        return f"recommended {multiplier:.4f} outside [{t.min_mult:g}, {t.max_mult:g}]"
    return None


def smile_realism(smile: Smile | None, deviations: Mapping[str, Sequence[float]], config: SmileConfig, which: str) -> list[str]:
    """Why a smile is unbelievable, one reason per smile naming the node: a value outside smile.bounds,
    or call prices on the node grid rising with strike / a negative butterfly at the ATM total
    deviations (base x m x sqrt(T)) the run's quotes span. Empty when fine or when there is no smile."""
    if smile is None:
        return []
    curves = {"global": list(smile.global_), **{b: list(v) for b, v in smile.bands.items()}}
    dev = {name: deviations.get(name, deviations.get("global", ())) for name in curves}
    return [f"{which} {p}" for p in smile_problems(curves, smile.nodes, (config.bounds[0], config.bounds[1]), dev)]


# --------------------------------------------------------------------------- static arbitrage of a surface


class Chain:
    """The listed strikes and expiries a surface is checked on (each option of a snapshot's chain)."""

    def __init__(self, forward: np.ndarray, strike: np.ndarray, T: np.ndarray, expiry_ms: np.ndarray, names: Sequence[str] | np.ndarray, now_ms: float) -> None:
        keep = np.isfinite(strike) & np.isfinite(forward) & (forward > 0) & (strike > 0) & (T > 0)
        self.F, self.K, self.T, self.expiry = forward[keep], strike[keep], T[keep], expiry_ms[keep]
        self.names = np.asarray(names)[keep]
        self.now_ms = now_ms


def _check(report: ArbReport) -> ArbitrageCheck:
    return ArbitrageCheck(butterflies=report.butterflies, call_spreads=report.call_spreads, calendars=report.calendars, first=report.first)


def surface_checks(values: Multipliers | AppliedEntry | None, base: float, chain: Chain | None) -> dict[str, ArbitrageCheck] | None:
    """Butterflies, call spreads and calendars of the surface `values` quote (None: not a surface), on the
    dense grid (K/F 0.3-3 x 1 day-1 year) and, with `chain`, on every listed strike and expiry."""
    surface = entry_surface(values, base) if values is not None else None
    if surface is None:
        return None
    out = {"grid": _check(grid_violations(surface))}
    if chain is not None and chain.K.size:
        tau = surface_tau(chain.T, chain.now_ms, values.surface.weekend_weight)  # type: ignore[union-attr]
        out["listed"] = _check(chain_violations(surface, chain.F, chain.K, tau, chain.expiry, names=chain.names))
    return out


def arbitrage_problem(checks: Mapping[str, ArbitrageCheck] | None, which: str) -> str | None:
    """The first static-arbitrage violation of a surface, as a realism reason (None when clean)."""
    for where in ("listed", "grid"):
        c = (checks or {}).get(where)
        if c is not None and c.total:
            return (
                f"{which} surface has static arbitrage on the {where} strikes ({c.butterflies} butterflies, "
                f"{c.call_spreads} call spreads, {c.calendars} calendars; first: {c.first})"
            )
    return None


def quoted_arbitrage(
    sigma_of: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], F: np.ndarray, K: np.ndarray, T: np.ndarray,
    expiry_ms: np.ndarray, names: Sequence[str] | np.ndarray,
) -> dict[str, ArbitrageCheck]:
    """The checks on what a quoting function `sigma_of(K, F, T)` (calendar T) quotes, whatever its model:
    on the listed strikes and expiries (each option of the chain) and on the dense grid (`calreport price`)."""
    def w_cal(k: np.ndarray, t: np.ndarray) -> np.ndarray:
        k, t = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(t, dtype=np.float64))
        sig = np.asarray(sigma_of(np.exp(k).reshape(-1), np.ones(k.size), t.reshape(-1)), dtype=np.float64)
        return (sig * sig * t.reshape(-1)).reshape(k.shape)

    F, K, T = (np.asarray(a, dtype=np.float64) for a in (F, K, T))
    keep = np.isfinite(K) & np.isfinite(F) & (F > 0) & (K > 0) & (T > 0)
    listed = chain_violations(w_cal, F[keep], K[keep], T[keep], np.asarray(expiry_ms)[keep], names=np.asarray(names)[keep])
    return {"listed": _check(listed), "grid": _check(grid_violations(w_cal))}
