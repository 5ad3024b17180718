"""The update policy: does a live run's smoothed multipliers replace the applied ones?

Per underlying (ETH is compared with ETH's applied entry, never BTC's), and always against the
values on disk at the moment of the apply (the caller decides inside the apply transaction).
Rules, in this order; the first that fails holds the run and its reason names the rule and the
numbers:

1. realism not failed                    "Realism failed: <realism reason>"
2. a smoothed global multiplier exists   "No smoothed multiplier (<run reason>)"
3. samples >= min_samples                "Sample size too small (47 < 50)"
4. summed vega > 0 and >= min_vega_sum   "Summed vega too small (0.0000 < 1)"
5. |smoothed - applied| >= min_delta for global or any band
                                         "Change too small (global d=0.0026 < 0.03; bands: none)"
6. every step within max_rel_step of the applied value
                                         "Step too large (global d=0.4000 > 25% of 1.0000)"
Otherwise apply:                         "global d=0.0840; bands changed: 7-30d; samples=91"

Bands are compared by what the engine would use (calibration.bands.band_value: a band's
multiplier if the entry has it, else the entry's global). Only bands explicitly present on either
side are reported, so a change of global is not listed once per band.
"""

from __future__ import annotations

from typing import Literal

from calreport import fmt
from calreport.calibration.bands import band_value
from calreport.store.models import AppliedEntry, LiveRun, Multipliers, PolicyConfig

Decision = tuple[Literal["apply", "hold"], str]
_EPS = 1e-12


def band_deltas(smoothed: Multipliers, applied: AppliedEntry) -> dict[str, tuple[float, float]]:
    """label -> (new effective, old effective) for bands present in either the run or the YAML."""
    labels = list(dict.fromkeys([*applied.bands, *smoothed.bands]))
    return {label: (band_value(smoothed, label), band_value(applied, label)) for label in labels}


def decide(run: LiveRun, applied: AppliedEntry, policy: PolicyConfig) -> Decision:
    """(decision, reason) with decision "apply" or "hold"."""
    if run.status == "failed":
        return "hold", f"Realism failed: {run.reason or 'no reason recorded'}"
    smoothed = run.smoothed
    if smoothed is None or smoothed.global_ is None:
        return "hold", f"No smoothed multiplier ({run.reason or 'no usable quotes'})"
    samples = int(run.samples or 0)
    if samples < policy.min_samples:
        return "hold", f"Sample size too small ({samples} < {policy.min_samples})"
    vega = float(run.vega_sum or 0.0)
    if not vega > 0 or vega < policy.min_vega_sum:
        return "hold", f"Summed vega too small ({vega:.4f} < {fmt.limit(max(policy.min_vega_sum, 0.0))})"

    d_global = abs(float(smoothed.global_) - applied.global_)
    bands = band_deltas(smoothed, applied)
    d_bands = {label: abs(new - old) for label, (new, old) in bands.items()}
    changed = [label for label, d in d_bands.items() if d >= policy.min_delta - _EPS]
    if d_global < policy.min_delta - _EPS and not changed:
        listed = ", ".join(f"{label} d={d:.4f}" for label, d in d_bands.items()) or "none"
        return "hold", f"Change too small (global d={d_global:.4f} < {fmt.limit(policy.min_delta)}; bands: {listed})"

    steps = [("global", d_global, applied.global_)] + [(label, d_bands[label], bands[label][1]) for label in d_bands]
    for label, d, old in steps:
        if old > 0 and d / old > policy.max_rel_step + _EPS:
            return "hold", f"Step too large ({label} d={d:.4f} > {fmt.limit(policy.max_rel_step * 100)}% of {old:.4f})"
    return "apply", f"global d={d_global:.4f}; bands changed: {', '.join(changed) or 'none'}; samples={samples}"
