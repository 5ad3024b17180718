"""The update policy: does a live run's smoothed multipliers replace the applied ones?

Per underlying (ETH is compared with ETH's applied entry, never BTC's), and always against the
values on disk at the moment of the apply (the caller decides inside the apply transaction).
Rules, in this order; the first that fails holds the run and its reason names the rule and the
numbers:

1. realism not failed                    "Realism failed: <realism reason>"
1b. fitted in the configured sigma mode  "Sigma mode mismatch: fitted in rv, configured atm_iv"
2. a smoothed global multiplier exists   "No smoothed multiplier (<run reason>)"
3. samples >= min_samples                "Sample size too small (47 < 50)"
4. summed vega > 0 and >= min_vega_sum   "Summed vega too small (0.0000 < 1)"
5. RV_7d from >= min_rv_returns hourly returns (a manual --rv counts as enough); before the change
   rule because thin RV's standard error would otherwise hide the real reason
                                         "Thin RV: RV_7d from 11 hourly returns (< 120)"
6. |smoothed - applied| >= max(min_delta, min_delta_se x SE) for global or any band, SE being
   the run's multiplier_se of that value (calibration/uncertainty.py; rows without it: min_delta)
                                         "Change too small (global d=0.0026 < 0.03; bands: none)"
                                         "Change too small (global d=0.0400 < 0.0613 = 1 x SE; ...)"
Otherwise apply:                         "global d=0.0840; bands changed: 7-30d; samples=91"
A run fitted in another sigma mode than the applied values' applies after rule 5 without rules 6
and the step cap (they compare numbers that multiply different bases).

A step larger than max_rel_step of the applied value never holds (holding for it deadlocked the
policy once the smoothed value had drifted away): the value applied is capped at that step and
the reason ends "; capped at 25 % (global 1.3964 -> 1.2500)". decide_values returns the values
to apply; decide keeps the (decision, reason) shape.

Bands are compared by what the engine would use (calibration.bands.band_value: a band's
multiplier if the entry has it, else the entry's global). Only bands explicitly present on either
side are reported, so a change of global is not listed once per band.
"""

from __future__ import annotations

from typing import Literal

from calreport import fmt
from calreport.calibration.bands import band_value
from calreport.calibration.smile import flat, node_label, regrid
from calreport.model import (
    DEFAULT_SIGMA_MODE,
    AppliedEntry,
    LiveRun,
    Multipliers,
    PolicyConfig,
    Smile,
)

Decision = tuple[Literal["apply", "hold"], str]
_EPS = 1e-12


def band_deltas(smoothed: Multipliers, applied: AppliedEntry) -> dict[str, tuple[float, float]]:
    """label -> (new effective, old effective) for bands present in either the run or the YAML."""
    labels = list(dict.fromkeys([*applied.bands, *smoothed.bands]))
    return {label: (band_value(smoothed, label), band_value(applied, label)) for label in labels}


def thin_rv(run: LiveRun, min_rv_returns: int) -> bool:
    """RV_7d rests on fewer hourly returns than configured (a manual --rv is never thin; an IV
    sigma mode does not rest on RV at all)."""
    if (run.sigma_mode or DEFAULT_SIGMA_MODE) != DEFAULT_SIGMA_MODE:
        return False
    return run.rv_source != "manual" and run.rv_returns is not None and run.rv_returns < min_rv_returns


def feeds_smoothing(run: LiveRun, policy: PolicyConfig, min_rv_returns: int = 0) -> bool:
    """May this run's smoothed value seed the next run's EWMA? Never when failed, thin-RV or too small."""
    return run.status != "failed" and not thin_rv(run, min_rv_returns) and int(run.samples or 0) >= policy.min_samples


def decide(
    run: LiveRun, applied: AppliedEntry, policy: PolicyConfig, *, min_rv_returns: int = 0, sigma_mode: str | None = None
) -> Decision:
    """(decision, reason) with decision "apply" or "hold"."""
    decision, reason, _ = decide_values(run, applied, policy, min_rv_returns=min_rv_returns, sigma_mode=sigma_mode)
    return decision, reason


def _se(run: LiveRun, band: str | None) -> float | None:
    """The run's standard error of its global (band None) or a band's recommended multiplier."""
    se = run.multiplier_se
    if se is None:
        return None
    return se.global_ if band is None else se.bands.get(band)


def change_limit(policy: PolicyConfig, se: float | None) -> tuple[float, str]:
    """(smallest change applied, how it reads): max(min_delta, min_delta_se x SE)."""
    base = policy.min_delta
    if se is None or policy.min_delta_se <= 0 or policy.min_delta_se * se <= base:
        return base, fmt.limit(base)
    limit = policy.min_delta_se * se
    return limit, f"{limit:.4f} = {fmt.limit(policy.min_delta_se)} x SE"


def _capped(new: float, old: float, max_rel_step: float) -> float:
    if old <= 0:
        return new
    lo, hi = old * (1 - max_rel_step), old * (1 + max_rel_step)
    return round(min(max(new, lo), hi), 4)


def decide_values(
    run: LiveRun, applied: AppliedEntry, policy: PolicyConfig, *, min_rv_returns: int = 0, sigma_mode: str | None = None
) -> tuple[Literal["apply", "hold"], str, Multipliers | None]:
    """(decision, reason, values to apply): the smoothed values, each step capped at max_rel_step.

    `sigma_mode` is the configured mode; a run fitted in another one is never applied."""
    if run.status == "failed":
        return "hold", f"Realism failed: {run.reason or 'no reason recorded'}", None
    fitted = run.sigma_mode or DEFAULT_SIGMA_MODE
    if sigma_mode is not None and fitted != sigma_mode:
        return "hold", f"Sigma mode mismatch: fitted in {fitted}, configured {sigma_mode}", None
    smoothed = run.smoothed
    if smoothed is None or smoothed.global_ is None:
        return "hold", f"No smoothed multiplier ({run.reason or 'no usable quotes'})", None
    samples = int(run.samples or 0)
    if samples < policy.min_samples:
        return "hold", f"Sample size too small ({samples} < {policy.min_samples})", None
    vega = float(run.vega_sum or 0.0)
    if not vega > 0 or vega < policy.min_vega_sum:
        return "hold", f"Summed vega too small ({vega:.4f} < {fmt.limit(max(policy.min_vega_sum, 0.0))})", None

    if thin_rv(run, min_rv_returns):
        return "hold", f"Thin RV: RV_7d from {run.rv_returns} hourly returns (< {min_rv_returns})", None
    d_global = abs(float(smoothed.global_) - applied.global_)
    bands = band_deltas(smoothed, applied)
    d_bands = {label: abs(new - old) for label, (new, old) in bands.items()}
    old_mode = applied.sigma_mode or DEFAULT_SIGMA_MODE
    if old_mode != fitted:  # another base: neither the change rule nor a step cap compares across modes
        reason = f"sigma mode {old_mode} -> {fitted}: applied without the change rule or step cap; samples={samples}"
        return "apply", reason, smoothed.rounded(4)
    g_limit = change_limit(policy, _se(run, None))
    limits = {label: change_limit(policy, _se(run, label)) for label in d_bands}
    changed = [label for label, d in d_bands.items() if d >= limits[label][0] - _EPS]
    nodes_moved = smile_nodes_moved(smoothed.smile, applied.smile, policy.min_delta)
    if d_global < g_limit[0] - _EPS and not changed and not nodes_moved:
        listed = ", ".join(
            f"{label} d={d:.4f}" + (f" < {limits[label][1]}" if "SE" in limits[label][1] else "") for label, d in d_bands.items()
        ) or "none"
        smile_part = "; smile nodes: none" if smoothed.smile is not None else ""
        return "hold", f"Change too small (global d={d_global:.4f} < {g_limit[1]}; bands: {listed}{smile_part})", None

    reason = f"global d={d_global:.4f}; bands changed: {', '.join(changed) or 'none'}; samples={samples}"
    if smoothed.smile is not None:
        reason += f"; smile nodes changed: {', '.join(nodes_moved) or 'none'}"
    step = policy.max_rel_step
    g = _capped(float(smoothed.global_), applied.global_, step)
    new_bands = {label: _capped(v, band_value(applied, label), step) for label, v in smoothed.bands.items()}
    capped = [("global", float(smoothed.global_), g)] + [(k, smoothed.bands[k], v) for k, v in new_bands.items()]
    capped = [(label, a, b) for label, a, b in capped if abs(a - b) > _EPS]
    new_smile, smile_capped = capped_smile(smoothed.smile, applied.smile, step)
    capped += smile_capped
    if capped:
        listed = ", ".join(f"{label} {a:.4f} -> {b:.4f}" for label, a, b in capped)
        reason += f"; capped at {fmt.limit(step * 100)} % ({listed})"
    return "apply", reason, Multipliers(global_=g, bands=new_bands, smile=new_smile)


def _smile_pairs(new: Smile, old: Smile | None) -> list[tuple[str, list[float], list[float]]]:
    """(label, new values, old effective values on the new grid) for global and every band either side has."""
    nodes = list(new.nodes)

    def old_of(label: str | None) -> list[float]:
        return flat(nodes) if old is None else regrid(old.nodes, old.for_band(label), nodes)

    labels = list(dict.fromkeys([*new.bands, *(old.bands if old is not None else {})]))
    return [("global", list(new.global_), old_of(None))] + [(b, new.for_band(b), old_of(b)) for b in labels]


def smile_nodes_moved(new: Smile | None, old: Smile | None, min_delta: float) -> list[str]:
    """'global x=-2.50/-1.50', '7-30d x=2.50': per smile, the nodes whose value would move by at least min_delta."""
    if new is None:
        return []
    out = []
    for label, a, b in _smile_pairs(new, old):  # global + a handful of bands
        moved = [node_label(x).removeprefix("x=") for x, va, vb in zip(new.nodes, a, b) if abs(va - vb) >= min_delta - _EPS]
        if moved:
            out.append(f"{label} x={'/'.join(moved)}")
    return out


def capped_smile(new: Smile | None, old: Smile | None, max_rel_step: float) -> tuple[Smile | None, list[tuple[str, float, float]]]:
    """The smile with each node's step capped at max_rel_step of the applied node value, and the capped nodes."""
    if new is None:
        return None, []
    capped: list[tuple[str, float, float]] = []
    out: dict[str, list[float]] = {}
    for label, a, b in _smile_pairs(new, old):
        values = [_capped(va, vb, max_rel_step) for va, vb in zip(a, b)]
        capped += [(f"smile {label} {node_label(x)}", va, v) for x, va, v in zip(new.nodes, a, values) if abs(va - v) > _EPS]
        out[label] = values
    bands = {b: out[b] for b in new.bands}
    return Smile(nodes=list(new.nodes), global_=out["global"], bands=bands), capped
