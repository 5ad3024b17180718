"""What changes the multipliers the engine uses: the rules, and the transactions that apply them.

The one module that decides what config/applied_multipliers.yaml holds. Three ways change it:

- a live run's policy decision (`decide_run`, applied by `apply_live_run` inside the transaction);
- `calreport force-apply` (`force_values`, applied by `force_apply`);
- `calreport rollback` (`rollback_target`, applied by `rollback`).

Every rule is a pure function of rows and config that returns the values to apply or a `Refused`
with its reason; the policy's rules are also a table (`RULES`) whose templates give both the hold
reasons and the dashboard's policy panel, so the two cannot drift apart. The transactions take the
store's primitives as parameters (an `AppliedTransaction` already holding the file's lock, an
`ApplyStore` that opens one): nothing here imports file, lock or network code, so the pure core
(calibration/backtest.py replays the policy) may import this module.

The policy, in the order of RULES; the first rule that fails holds the run and its reason names
the rule and the numbers:

1. realism not failed                    "Realism failed: <realism reason>"
2. fitted in the configured sigma mode   "Sigma mode mismatch: fitted in rv, configured atm_iv"
3. a smoothed global multiplier exists   "No smoothed multiplier (<run reason>)"
4. samples >= min_samples                "Sample size too small (47 < 50)"
5. summed vega > 0 and >= min_vega_sum   "Summed vega too small (0.0000 < 1)"
6. RV_7d not thin (`thin_rv`); before the change rule because thin RV's standard error would
   otherwise hide the real reason       "Thin RV: RV_7d from 11 hourly returns (< 120)"
7. |smoothed - applied| >= max(min_delta, min_delta_se x SE) for global, any band or smile node
                                         "Change too small (global d=0.0026 < 0.03; bands: none)"
Otherwise apply:                         "global d=0.0840; bands changed: 7-30d; samples=91"
   the whole smoothed entry is written, so every value that moved by less than its limit is named too:
   "global d=0.0065; bands changed: none; moved within their change limit, written smoothed: 0-7d 0.9185 ->
   0.8652 (d=0.0533 < 0.0664 = 1 x SE); samples=337; smile nodes changed: ...; smile nodes moved within ..."
8. a step larger than max_rel_step of the applied value is capped, never held (holding for it
   deadlocked the policy once the smoothed value had drifted away): "; capped at 25 % (...)"
9. values beyond config.limits hold      "Held: global multiplier 9.0 above limits.max_mult 5"
A run fitted in another sigma mode than the applied values' applies after rule 6 without rules 7
and 8 (they compare numbers that multiply different bases).

Per underlying (ETH is compared with ETH's applied entry, never BTC's). Bands are compared by what
the engine would use (calibration.bands.band_value: a band's multiplier if the entry has it, else
the entry's global); only bands present on either side are reported.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Literal, NamedTuple, NoReturn, Protocol, TypeVar

from calreport import fmt
from calreport.calibration.bands import band_value
from calreport.calibration.smile import flat, node_label, regrid
from calreport.calibration.surface import quoting_model
from calreport.errors import RefusedError, excerpt
from calreport.realism import arbitrage_problem, surface_checks
from calreport.model import (
    DEFAULT_SIGMA_MODE,
    NOTE_MAX_CHARS,
    AppliedEntry,
    ApplyEvent,
    AutoRun,
    CalibrationConfig,
    LiveRun,
    Multipliers,
    PolicyConfig,
    Smile,
    surface_changes,
)
from calreport.numbers import is_number

Decision = tuple[Literal["apply", "hold"], str]
_EPS = 1e-12
FORCED_REASON = "Forced by user"
ROLLBACK_REASON = "Rollback to run {run_id}"

T = TypeVar("T")


# --------------------------------------------------------------------------- refusals


@dataclass(frozen=True)
class Refused:
    """A rule said no; `reason` is the one line the user reads."""

    reason: str

    def raise_(self) -> NoReturn:
        raise RefusedError(self.reason)


def accepted(result: T | Refused) -> T:
    """The values a rule returned, or its refusal raised as a RefusedError (exit code 4)."""
    if isinstance(result, Refused):
        result.raise_()
    return result


# --------------------------------------------------------------------------- the rule table


@dataclass(frozen=True)
class Rule:
    """One rule of the update policy: what the dashboard's panel shows and how a hold reads.

    `keys` are the config settings it reads (dotted paths); `value` and `description` are
    str.format templates over the config `c`; `hold` is the template of the reason of a run the
    rule holds (over the run's numbers), empty for rules that never hold; `within`, of the part of
    an applied run's reason naming the values the rule let through under its limit (a run is applied
    whole once one value passes, so the others are written too and the reason must say so).
    """

    name: str
    keys: tuple[str, ...]
    value: str | Callable[[CalibrationConfig], str]
    description: str
    hold: str = ""
    within: str = ""  # how an applied run's reason names the values written though under the rule's limit

    def panel_row(self, config: CalibrationConfig) -> tuple[str, str, str]:
        """(label, value, what it means) for the policy panel, from the config in force."""
        value = self.value(config) if callable(self.value) else self.value.format(c=config)
        return self.name, value, self.description.format(c=config)


def _sigma_modes(c: CalibrationConfig) -> str:
    if isinstance(c.sigma_mode, str):
        return c.sigma_mode
    return ", ".join(f"{u} {m}" for u, m in sorted(c.sigma_mode.items())) + f" (else {DEFAULT_SIGMA_MODE})"


def _quoting_models(c: CalibrationConfig) -> str:
    if not (c.surface.enabled and c.smile.enabled):
        return "step model (surface off)" if c.smile.enabled else "step model (flat: smile off)"
    s = c.surface
    return f"surface in rv mode (weekend weight {s.weekend_weight:g}, wing cap {s.wing_slope_cap:g}); step model otherwise"


def _no_weight_setting(c: CalibrationConfig) -> str:
    h = c.smoothing.half_life_hours
    return "off (no half-life: every run has weight alpha)" if h is None else f"on (half-life {h:g} h)"


def _smoothing_weight(c: CalibrationConfig) -> str:
    s = c.smoothing
    if s.half_life_hours is None:
        return f"alpha {s.alpha:g}, the same for every run"
    return f"half-life {s.half_life_hours:g} h: alpha = 1 - 0.5^(hours since the previous smoothed run / half-life)"


REALISM = Rule(
    "Sane multiplier", ("realism.min_mult", "realism.max_mult"), "{c.realism.min_mult:.2f} - {c.realism.max_mult:.2f}",
    "outside: realism failed and the run is held (so is a recommended value on a fit bound)",
    "Realism failed: {reason}",
)
REALISM_MAE = Rule("Max MAE", ("realism.max_mae",), "{c.realism.max_mae:g} %", "above: realism failed and the run is held")
REALISM_VEGA_MAE = Rule(
    "Max vega MAE", ("realism.max_vega_mae",), "{c.realism.max_vega_mae:g} %", "above: realism failed and the run is held"
)
SIGMA_MODE = Rule(
    "Sigma mode", ("sigma_mode",), _sigma_modes,
    "a run fitted in another sigma mode than the configured one is never applied (nor forced, nor rolled back to)",
    "Sigma mode mismatch: fitted in {fitted}, configured {configured}",
)
SMOOTHED = Rule(
    "Smoothed value", ("smoothing.alpha", "smoothing.half_life_hours"), _smoothing_weight,
    "smoothed = alpha x recommended + (1 - alpha) x the previous smoothed value (that of the last live run that fed "
    "smoothing: not failed, not thin RV, not held for samples; the applied value when there is none)",
    "No smoothed multiplier ({reason})",
)
NO_WEIGHT = Rule(
    "Newer snapshot", ("smoothing.half_life_hours",), _no_weight_setting,
    "a run whose snapshot is not newer than the previous smoothed run's gets no weight (alpha 0) and is held",
    "No weight: the snapshot is not newer than the previous smoothed {source} (smoothing.half_life_hours: alpha 0)",
)
MIN_SAMPLES = Rule(
    "Min samples", ("policy.min_samples",), "{c.policy.min_samples}", "a run with fewer usable quotes is held",
    "Sample size too small ({samples} < {limit})",
)
MIN_VEGA = Rule(
    "Min vega sum", ("policy.min_vega_sum",), "{c.policy.min_vega_sum:.2f}", "total vega of the quotes used; less: held",
    "Summed vega too small ({vega:.4f} < {limit})",
)
THIN_RV = Rule(
    "Min RV returns", ("fit.min_rv_returns",), "{c.fit.min_rv_returns}",
    "RV_7d from fewer hourly returns: the run is held (thin RV; a manual --rv or an IV sigma mode is never thin)",
    "Thin RV: RV_7d from {returns} hourly returns (< {limit})",
)
MIN_CHANGE = Rule(
    "Min change", ("policy.min_delta",), "{c.policy.min_delta:g}",
    "held when |smoothed - applied| is smaller for the global, every band and every smile node (no churn)",
    "Change too small (global d={d:.4f} < {limit}; bands: {bands}{smile})",
    "{what}moved within their change limit, written smoothed: {moves}",
)
MIN_CHANGE_SE = Rule(
    "Min change in SE", ("policy.min_delta_se",), "{c.policy.min_delta_se:.2f}",
    "the change must also exceed this many standard errors (multiplier_se)",
)
SIGNIFICANT = Rule(
    "Significant change", ("policy.significant_se",), "{c.policy.significant_se:g} SE",
    "a recommended value further than max(min_delta, this x SE) from the applied one is applied whole (no smoothing): "
    "a sound fit converges in one apply; a first apply over the untouched defaults takes the fit whole",
)
MAX_STEP = Rule(
    "Max step", ("policy.max_step_se", "policy.max_rel_step"), "max({c.policy.max_step_se:g} SE, {c.policy.max_rel_step:.0%})",
    "larger moves are capped at this step and applied (never held for it): max(this many SE, this fraction of the "
    "applied value); unknown SE: the fraction",
)
QUOTING_MODEL = Rule(
    "Quoting model", ("surface.enabled", "surface.weekend_weight", "surface.wing_slope_cap", "bands"), _quoting_models,
    "a run fitted under another quoting model than the applied one (surface on or off, its pillars, weekend weight or "
    "wing cap) is applied whole, without the change rule or step cap: its levels sit on another clock; a run that "
    "could not fit the configured model is held",
    "Quoting model mismatch (fitted -> configured: {changes})",
)
ARBITRAGE = Rule(
    "No static arbitrage", ("surface.enabled",), "listed strikes and K/F 0.3-3 x 1d-1y",
    "a surface with a negative butterfly, call spread or calendar spread is never applied (nor forced, nor rolled back to)",
    "Realism failed: {problem}",
)
LIMITS = Rule(
    "Limits", ("limits.min_multiplier", "limits.max_multiplier"), "{c.limits.min_multiplier:g} - {c.limits.max_multiplier:g}",
    "values outside are never written: the run is held, force-apply and rollback are refused", "Held: {problem}",
)

ROUTINE_HOLDS: tuple[Rule, ...] = (MIN_CHANGE, NO_WEIGHT)  # everyday holds: nothing new for a human to review


def routine_hold(reason: str | None) -> bool:
    """Is `reason` the hold of a routine rule (a change too small, a snapshot given no weight)? The alert
    adapter raises no "held for review" for these."""
    return any((reason or "").startswith(rule.hold.split("{", 1)[0]) for rule in ROUTINE_HOLDS)


RULES: tuple[Rule, ...] = (
    REALISM, REALISM_MAE, REALISM_VEGA_MAE, SIGMA_MODE, SMOOTHED, NO_WEIGHT, MIN_SAMPLES, MIN_VEGA, THIN_RV,
    MIN_CHANGE, MIN_CHANGE_SE, SIGNIFICANT, MAX_STEP, QUOTING_MODEL, ARBITRAGE, LIMITS,
)


# --------------------------------------------------------------------------- single rules


def thin_rv(sigma_mode: str | None, rv_source: str | None, rv_returns: int | None, min_rv_returns: int) -> bool:
    """RV_7d rests on fewer hourly returns than configured (fit.min_rv_returns). A manual --rv is
    never thin, nor is a run whose base is an IV (its sigma mode does not rest on RV), nor one
    that did not record a count. The one home of this rule: policy, flags, live, backtest, banner."""
    if (sigma_mode or DEFAULT_SIGMA_MODE) != DEFAULT_SIGMA_MODE:
        return False
    if (rv_source or "").lower() == "manual" or rv_returns is None:
        return False
    return rv_returns < min_rv_returns


def run_thin_rv(run: LiveRun, min_rv_returns: int) -> bool:
    """thin_rv of a live run's row."""
    return thin_rv(run.sigma_mode, run.rv_source, run.rv_returns, min_rv_returns)


def sigma_mode_refusal(fitted: str | None, configured: str, what: str) -> Refused | None:
    """Values fitted in another sigma mode multiply another base: never applied, forced or rolled
    back to. `what` names the values in the reason ("latest BTC live run R1")."""
    mode = fitted or DEFAULT_SIGMA_MODE
    if mode == configured:
        return None
    return Refused(f"{what} was fitted in sigma_mode {mode}, configured is {configured}")


def no_weight(run: LiveRun) -> bool:
    """The half-life EWMA gave this run no weight: its snapshot is not newer than the previous smoothed run's
    (a replayed older snapshot, or a second run of the same instant), so its smoothed values are that run's."""
    return run.smoothing_alpha == 0.0 and (run.smoothed_from or "").startswith("run ")


def feeds_smoothing(run: LiveRun, policy: PolicyConfig, min_rv_returns: int = 0) -> bool:
    """May this run's smoothed value seed the next run's EWMA? Never when failed, thin-RV or too small. A run
    given no weight still does: its smoothed values are the previous ones, and a demo or a backfill replayed
    over an existing root moves on from its snapshots' times (its next run gets weight again)."""
    return run.status != "failed" and not run_thin_rv(run, min_rv_returns) and int(run.samples or 0) >= policy.min_samples


def band_deltas(smoothed: Multipliers, applied: AppliedEntry) -> dict[str, tuple[float, float]]:
    """label -> (new effective, old effective) for bands present in either the run or the YAML."""
    labels = list(dict.fromkeys([*applied.bands, *smoothed.bands]))
    return {label: (band_value(smoothed, label), band_value(applied, label)) for label in labels}


def change_limit(policy: PolicyConfig, se: float | None) -> tuple[float, str]:
    """(smallest change applied, how it reads): max(min_delta, min_delta_se x SE)."""
    base = policy.min_delta
    if se is None or policy.min_delta_se <= 0 or policy.min_delta_se * se <= base:
        return base, fmt.limit(base)
    limit = policy.min_delta_se * se
    return limit, f"{limit:.4f} = {fmt.limit(policy.min_delta_se)} x SE"


def _se(run: LiveRun, band: str | None) -> float | None:
    """The run's standard error of its global (band None) or a band's recommended multiplier."""
    se = run.multiplier_se
    if se is None:
        return None
    return se.global_ if band is None else se.bands.get(band)


def _capped(new: float, old: float, max_rel_step: float, se: float | None = None, max_step_se: float = 0.0) -> float:
    """`new` with its step from `old` capped at max(max_step_se x SE, max_rel_step x old) (SE unknown: the fraction)."""
    if old <= 0:
        return new
    cap = max(old * max_rel_step, max_step_se * se if se is not None and math.isfinite(se) else 0.0)
    return round(min(max(new, old - cap), old + cap), 4)


def untouched(applied: AppliedEntry) -> bool:
    """The applied entry is the initial default (calreport init, or no entry), never applied by a run."""
    return applied.run_id is None and applied.source == "init"


def node_se(run: LiveRun) -> NodeSE:
    """The run's standard error of each recommended smile node, per curve (calibration/live.py's surface
    refit: run.uncertainty[label].nodes); None for a curve without them (older rows, the step model)."""
    unc = run.uncertainty or {}

    def of(label: str) -> list[float | None] | None:
        e = unc.get(label)
        nodes = getattr(e, "nodes", None) if e is not None else None
        return [n.se for n in nodes] if nodes else None

    return of


def _significant_smile(rec: Smile | None, smoothed: Smile | None, applied: Smile | None, se_of: NodeSE, policy: PolicyConfig) -> tuple[Smile | None, list[str]]:
    """The smoothed smile with every curve that has a node significant against its SE replaced by the
    recommended curve (applied whole, as a level is), and those curves' labels."""
    if rec is None or smoothed is None or list(rec.nodes) != list(smoothed.nodes):
        return smoothed, []
    curves = {label: list(v) for label, v, _ in _smile_pairs(smoothed, applied)}
    whole = []
    for label, new, old in _smile_pairs(rec, applied):  # global + a handful of bands
        se = se_of(label)
        if se is not None and label in curves and any(_significant(v, o, s, policy) for v, o, s in zip(new, old, se)):
            curves[label] = list(new)
            whole.append(f"smile {label}")
    if not whole:
        return smoothed, []
    return Smile(nodes=list(smoothed.nodes), global_=curves["global"], bands={b: curves[b] for b in smoothed.bands}), whole


def _significant(new: float | None, old: float, se: float | None, policy: PolicyConfig) -> bool:
    """A recommended value beyond max(min_delta, significant_se x SE) of the applied one (SE needed)."""
    if new is None or se is None or not math.isfinite(se) or policy.significant_se <= 0:
        return False
    return abs(new - old) >= max(policy.min_delta, policy.significant_se * se) - _EPS


def _smile_pairs(new: Smile, old: Smile | None) -> list[tuple[str, list[float], list[float]]]:
    """(label, new values, old effective values on the new grid) for global and every band either side has."""
    nodes = list(new.nodes)

    def old_of(label: str | None) -> list[float]:
        return flat(nodes) if old is None else regrid(old.nodes, old.for_band(label), nodes)

    labels = list(dict.fromkeys([*new.bands, *(old.bands if old is not None else {})]))
    return [("global", list(new.global_), old_of(None))] + [(b, new.for_band(b), old_of(b)) for b in labels]


NodeSE = Callable[[str], "list[float | None] | None"]  # curve label ("global" or a band) -> SE per node


def _node_limit(se: list[float | None] | None, i: int, base: float, k: float) -> float:
    """max(base, k x SE of node i) (SE unknown: base)."""
    v = se[i] if se is not None and i < len(se) else None
    return base if v is None or not math.isfinite(v) else max(base, k * v)


def smile_nodes_moved(new: Smile | None, old: Smile | None, min_delta: float, se_of: NodeSE | None = None, min_delta_se: float = 0.0) -> list[str]:
    """'global x=-2.50/-1.50', '7-30d x=2.50': per smile, the nodes whose value would move by at least
    max(min_delta, min_delta_se x the node's SE)."""
    return [f"{label} x={'/'.join(xs)}" for label, xs in _nodes_moved(new, old, min_delta, se_of, min_delta_se).items()]


def _nodes_moved(new: Smile | None, old: Smile | None, min_delta: float, se_of: NodeSE | None, min_delta_se: float) -> dict[str, list[str]]:
    """curve label -> the nodes ('-2.50') of smile_nodes_moved, curves with none left out."""
    if new is None:
        return {}
    out = {}
    for label, a, b in _smile_pairs(new, old):  # global + a handful of bands
        se = se_of(label) if se_of is not None else None
        moved = [node_label(x).removeprefix("x=") for i, (x, va, vb) in enumerate(zip(new.nodes, a, b))
                 if abs(va - vb) >= _node_limit(se, i, min_delta, min_delta_se) - _EPS]
        if moved:
            out[label] = moved
    return out


def capped_smile(
    new: Smile | None, old: Smile | None, max_rel_step: float, *, whole_curve: bool = False,
    se_of: NodeSE | None = None, max_step_se: float = 0.0,
) -> tuple[Smile | None, list[tuple[str, float, float]]]:
    """The smile with each node's step capped at max_rel_step of the applied node value, and the capped nodes.
    `whole_curve` (the surface): one fraction of the step per curve, the largest that keeps every node within
    its cap, so a capped curve is a blend of the applied and the new one (its shape is kept; capping nodes one
    by one bends it, and a bent curve can put butterflies in the quotes)."""
    if new is None:
        return None, []
    capped: list[tuple[str, float, float]] = []
    out: dict[str, list[float]] = {}
    for label, a, b in _smile_pairs(new, old):
        se = se_of(label) if se_of is not None else None
        if whole_curve:  # each node's cap: max(max_rel_step x applied, max_step_se x its SE)
            caps = [_node_limit(se, i, max_rel_step * abs(vb), max_step_se) / abs(va - vb)
                    for i, (va, vb) in enumerate(zip(a, b)) if abs(va - vb) > _EPS and vb > 0]
            lam = min([1.0, *caps])
            values = [round(vb + lam * (va - vb), 4) for va, vb in zip(a, b)]
        else:
            values = [_capped(va, vb, max_rel_step, se[i] if se is not None and i < len(se) else None, max_step_se)
                      for i, (va, vb) in enumerate(zip(a, b))]
        capped += [(f"smile {label} {node_label(x)}", va, v) for x, va, v in zip(new.nodes, a, values) if abs(va - v) > _EPS]
        out[label] = values
    bands = {b: out[b] for b in new.bands}
    return Smile(nodes=list(new.nodes), global_=out["global"], bands=bands), capped


# --------------------------------------------------------------------------- the policy decision


def decide(
    run: LiveRun, applied: AppliedEntry, policy: PolicyConfig, *, min_rv_returns: int = 0, sigma_mode: str | None = None
) -> Decision:
    """(decision, reason) with decision "apply" or "hold"."""
    decision, reason, _ = decide_values(run, applied, policy, min_rv_returns=min_rv_returns, sigma_mode=sigma_mode)
    return decision, reason


def decide_values(
    run: LiveRun, applied: AppliedEntry, policy: PolicyConfig, *, min_rv_returns: int = 0, sigma_mode: str | None = None
) -> tuple[Literal["apply", "hold"], str, Multipliers | None]:
    """(decision, reason, values to apply): the smoothed values, each step capped at max_rel_step.

    `sigma_mode` is the configured mode; a run fitted in another one is never applied."""
    if run.status == "failed":
        return "hold", REALISM.hold.format(reason=run.reason or "no reason recorded"), None
    fitted = run.sigma_mode or DEFAULT_SIGMA_MODE
    if sigma_mode is not None and sigma_mode_refusal(fitted, sigma_mode, f"run {run.run_id}") is not None:
        return "hold", SIGMA_MODE.hold.format(fitted=fitted, configured=sigma_mode), None
    smoothed = run.smoothed
    if smoothed is None or smoothed.global_ is None:
        return "hold", SMOOTHED.hold.format(reason=run.reason or "no usable quotes"), None
    samples = int(run.samples or 0)
    if samples < policy.min_samples:
        return "hold", MIN_SAMPLES.hold.format(samples=samples, limit=policy.min_samples), None
    vega = float(run.vega_sum or 0.0)
    if not vega > 0 or vega < policy.min_vega_sum:
        return "hold", MIN_VEGA.hold.format(vega=vega, limit=fmt.limit(max(policy.min_vega_sum, 0.0))), None
    if run_thin_rv(run, min_rv_returns):
        return "hold", THIN_RV.hold.format(returns=run.rv_returns, limit=min_rv_returns), None
    if no_weight(run):
        return "hold", NO_WEIGHT.hold.format(source=run.smoothed_from), None

    fit = run.recommended
    if untouched(applied) and fit is not None and fit.global_ is not None and (
        abs(fit.global_ - applied.global_) >= policy.min_delta - _EPS
        or any(abs(new - old) >= policy.min_delta - _EPS for new, old in band_deltas(fit, applied).values())
        or smile_nodes_moved(fit.smile, applied.smile, policy.min_delta)
    ):  # the defaults were never a fit: nothing to smooth towards, no step to cap
        return "apply", f"first apply over the untouched defaults: the fit whole; samples={samples}", fit.rounded(4)
    d_global = abs(float(smoothed.global_) - applied.global_)
    bands = band_deltas(smoothed, applied)
    d_bands = {label: abs(new - old) for label, (new, old) in bands.items()}
    old_mode = applied.sigma_mode or DEFAULT_SIGMA_MODE
    if old_mode != fitted:  # another base: neither the change rule nor a step cap compares across modes
        reason = f"sigma mode {old_mode} -> {fitted}: applied without the change rule or step cap; samples={samples}"
        return "apply", reason, smoothed.rounded(4)
    model_change = surface_changes(applied.surface, smoothed.surface)
    if model_change:  # another quoting model: levels on another clock (or not pillars at all) compare with nothing
        what = ", ".join(f"{w} {a} -> {b}" for w, a, b in model_change)
        reason = f"quoting model changed ({what}): applied without the change rule or step cap; samples={samples}"
        return "apply", reason, smoothed.rounded(4)
    g_limit = change_limit(policy, _se(run, None))
    limits = {label: change_limit(policy, _se(run, label)) for label in d_bands}
    changed = [label for label, d in d_bands.items() if d >= limits[label][0] - _EPS]
    se_of = node_se(run)
    nodes_moved = smile_nodes_moved(smoothed.smile, applied.smile, policy.min_delta, se_of, policy.min_delta_se)
    if d_global < g_limit[0] - _EPS and not changed and not nodes_moved:
        listed = ", ".join(
            f"{label} d={d:.4f}" + (f" < {limits[label][1]}" if "SE" in limits[label][1] else "") for label, d in d_bands.items()
        ) or "none"
        smile_part = "; smile nodes: none" if smoothed.smile is not None else ""
        return "hold", MIN_CHANGE.hold.format(d=d_global, limit=g_limit[1], bands=listed, smile=smile_part), None

    # a change significant against its standard error is applied whole (the recommended value, not smoothed)
    rec = run.recommended
    target_g = float(smoothed.global_)
    target_bands = dict(smoothed.bands)
    whole: list[str] = []
    if rec is not None and rec.global_ is not None:
        if _significant(rec.global_, applied.global_, _se(run, None), policy):
            target_g = float(rec.global_)
            whole.append("global")
        for label, v in rec.bands.items():
            if _significant(v, band_value(applied, label), _se(run, label), policy):
                target_bands[label] = v
                whole.append(label)
    target_smile = smoothed.smile
    if rec is not None:
        target_smile, whole_smiles = _significant_smile(rec.smile, smoothed.smile, applied.smile, se_of, policy)
        whole += whole_smiles
    step, step_se = policy.max_rel_step, policy.max_step_se
    g = _capped(target_g, applied.global_, step, _se(run, None), step_se)
    new_bands = {label: _capped(v, band_value(applied, label), step, _se(run, label), step_se) for label, v in target_bands.items()}
    capped = [("global", target_g, g)] + [(k, target_bands[k], v) for k, v in new_bands.items()]
    capped = [(label, a, b) for label, a, b in capped if abs(a - b) > _EPS]
    new_smile, smile_capped = capped_smile(
        target_smile, applied.smile, step, whole_curve=smoothed.surface is not None, se_of=se_of, max_step_se=step_se
    )
    capped += smile_capped

    # the reason names what is written: the values past their limit, and those written (smoothed) though under it
    small = [(label, old, new, d, limit[1]) for label, old, new, d, limit in [
        ("global", applied.global_, g, d_global, g_limit),
        *((label, bands[label][1], v, d_bands[label], limits[label]) for label, v in new_bands.items()),
    ] if d < limit[0] - _EPS and label not in whole and round(new, 4) != round(old, 4)]
    reason = f"global d={d_global:.4f}; bands changed: {', '.join(changed) or 'none'}"
    if small:
        moves = ", ".join(f"{label} {fmt.mult(old)} -> {fmt.mult(new)} (d={d:.4f} < {limit})" for label, old, new, d, limit in small)
        reason += f"; {MIN_CHANGE.within.format(what='', moves=moves)}"
    reason += f"; samples={samples}"
    if smoothed.smile is not None:
        reason += f"; smile nodes changed: {', '.join(nodes_moved) or 'none'}"
        whole_curves = {w.removeprefix("smile ") for w in whole if w.startswith("smile ")}
        passed = _nodes_moved(smoothed.smile, applied.smile, policy.min_delta, se_of, policy.min_delta_se)
        small_nodes = [
            f"{label} x={'/'.join(rest)}"
            for label, xs in _nodes_moved(new_smile, applied.smile, 0.0001, None, 0.0).items()  # a move 4 decimals show
            if label not in whole_curves and (rest := [x for x in xs if x not in passed.get(label, [])])
        ]
        if small_nodes:
            reason += f"; {MIN_CHANGE.within.format(what='smile nodes ', moves=', '.join(small_nodes))}"
    if whole:
        reason += f"; significant (> {fmt.limit(policy.significant_se)} SE), applied whole: {', '.join(whole)}"
    if capped:
        listed = ", ".join(f"{label} {a:.4f} -> {b:.4f}" for label, a, b in capped)
        reason += f"; capped at max({fmt.limit(step_se)} SE, {fmt.limit(step * 100)} %) ({listed})"
    return "apply", reason, Multipliers(global_=g, bands=new_bands, smile=new_smile, surface=smoothed.surface)


def decide_run(run: LiveRun, applied: AppliedEntry, config: CalibrationConfig, underlying: str) -> LiveRun:
    """The one decision of a live run, against `applied` (the values on disk, read under the lock):
    the policy in the configured sigma mode, then values beyond config.limits hold, so no row says
    "apply" without an apply event. Also settles whether the run feeds the EWMA. A run that could
    not be fitted keeps its hold. `calreport calibrate` and the backtest both take this."""
    min_rv = config.fit.min_rv_returns
    if run.recommended is None:
        return run.model_copy(update={"decision": "hold", "decision_reason": run.decision_reason or run.reason, "feeds_smoothing": False})
    feeds = feeds_smoothing(run, config.policy, min_rv)
    decision, reason, values = decide_values(
        run, applied, config.policy, min_rv_returns=min_rv, sigma_mode=config.sigma_mode_for(underlying)
    )
    beyond = config.limits.problem_of(values or run.smoothed) if decision == "apply" else None
    configured = quoting_model(config, config.sigma_mode_for(underlying))
    written = (values or run.smoothed or Multipliers()).surface
    mismatch = surface_changes(written, configured) if decision == "apply" else []
    if mismatch:  # the run could not fit the configured model (e.g. no surface fit): it must not switch the engine
        what = ", ".join(f"{w} {a} -> {b}" for w, a, b in mismatch)
        decision, reason = "hold", QUOTING_MODEL.hold.format(changes=what)
    elif beyond:
        decision, reason = "hold", LIMITS.hold.format(problem=beyond)
    elif decision == "apply":
        problem = arbitrage_of(values or run.smoothed, run.rv_7d, "applied")
        if problem is not None:  # what would be written is checked, not only what the run fitted
            decision, reason = "hold", ARBITRAGE.hold.format(problem=problem)
    return run.model_copy(
        update={"decision": decision, "decision_reason": reason, "applied_values": values, "feeds_smoothing": feeds}
    )


def arbitrage_of(values: Multipliers | None, rv: float | None, which: str) -> str | None:
    """Static arbitrage of the surface `values` quote on the dense grid, as a reason (None: clean or no surface).
    The base is the run's RV_7d (surfaces are fitted in rv mode only)."""
    if values is None or values.surface is None or rv is None or not rv > 0:
        return None
    return arbitrage_problem(surface_checks(values, float(rv), None), which)


# --------------------------------------------------------------------------- bounds of what is written


# why values naming a band the config lacks exist at all: a run fitted before the bands were edited
OTHER_BANDS = " (values fitted under other bands; the next live run fits the configured ones)"


def checked_values(values: Multipliers, config: CalibrationConfig) -> Multipliers | Refused:
    """`values` as the YAML would hold them (4 decimals, bands in config order, the smile), or why
    they can never be written: a non-finite or non-positive value, one outside config.limits, a band
    the config does not define."""
    g = values.global_
    if not is_number(g) or not math.isfinite(g) or g <= 0:  # type: ignore[arg-type]
        return Refused(f"refusing to apply a global multiplier that is not a finite positive number ({excerpt(g, 40)})")
    problem = config.limits.problem(g)  # type: ignore[arg-type]
    if problem:
        return Refused(f"refusing to apply global multiplier {problem}")
    known = config.band_names()
    bands: dict[str, float] = {}
    for label in known:  # config order, so the YAML lists bands in DTE order
        if label in values.bands:
            v = values.bands[label]
            if not is_number(v) or not math.isfinite(v) or v <= 0:
                return Refused(f"refusing to apply band {label} multiplier {excerpt(v, 40)}")
            problem = config.limits.problem(v)
            if problem:
                return Refused(f"refusing to apply band {label} multiplier {problem}")
            bands[label] = v
    extra = sorted(set(values.bands) - set(known))
    if extra:
        return Refused(f"band {excerpt(extra[0], 40)} is not defined in config/calibration.yaml{OTHER_BANDS}")
    smile = _checked_smile(values.smile, config)
    if isinstance(smile, Refused):
        return smile
    surface = values.surface
    if surface is not None:
        extra = sorted(set(surface.pillars) - set(known))
        if extra:
            return Refused(f"surface pillar {excerpt(extra[0], 40)} is not a band defined in config/calibration.yaml{OTHER_BANDS}")
    return Multipliers(global_=g, bands=bands, smile=smile, surface=surface).rounded(4)


def _checked_smile(smile: Smile | None, config: CalibrationConfig) -> Smile | None | Refused:
    if smile is None:
        return None
    known = config.band_names()
    extra = sorted(set(smile.bands) - set(known))
    if extra:
        return Refused(f"smile band {excerpt(extra[0], 40)} is not defined in config/calibration.yaml{OTHER_BANDS}")
    for label, vs in [("global", smile.global_), *smile.bands.items()]:
        if not all(math.isfinite(v) and v > 0 for v in vs):
            return Refused(f"refusing to apply smile {label} with a non-finite or non-positive value")
    ordered = {label: smile.bands[label] for label in known if label in smile.bands}
    return Smile(nodes=smile.nodes, global_=smile.global_, bands=ordered).rounded(4)


def new_entry(
    values: Multipliers, config: CalibrationConfig, *, updated_at: str, source: str, run_id: str | None, reason: str,
    sigma_mode: str | None = None,
) -> AppliedEntry:
    """The applied entry a write of `values` puts in the YAML (checked_values; a refusal raises),
    without writing anything: the one rule both the writer and the backtest use."""
    new = accepted(checked_values(values, config))
    mode = None if sigma_mode in (None, DEFAULT_SIGMA_MODE) else sigma_mode  # rv: the line is left out
    return AppliedEntry(
        global_=new.global_, bands=new.bands, updated_at=updated_at, source=source, run_id=run_id, reason=reason, smile=new.smile,
        surface=new.surface,
        sigma_mode=mode,  # type: ignore[arg-type]
    )


# --------------------------------------------------------------------------- force-apply and rollback


def force_values(
    run: LiveRun | None, underlying: str, config: CalibrationConfig, *, allow_unrealistic: bool = False, where: str = "the history"
) -> Multipliers | Refused:
    """The values `force-apply` writes: the latest live run's smoothed values, unless there is no
    such run, it has nothing smoothed, it failed realism (without --allow-unrealistic) or it was
    fitted in another sigma mode than the configured one. Auto runs are never candidates."""
    if run is None:
        return Refused(f"no live run for {underlying} in {where}; run `calreport calibrate` first")
    if run.smoothed is None or run.smoothed.global_ is None:
        return Refused(f"latest {underlying} live run {run.run_id} has no smoothed multiplier (no usable quotes)")
    if run.status == "failed" and not allow_unrealistic:
        return Refused(
            f"latest {underlying} live run {run.run_id} failed realism ({run.reason}); pass --allow-unrealistic to apply it anyway"
        )
    mode = sigma_mode_refusal(run.sigma_mode, config.sigma_mode_for(underlying), f"latest {underlying} live run {run.run_id}")
    if mode is not None:
        return Refused(f"{mode.reason}; run `calreport calibrate` in the configured mode")
    arb = [c for k, c in (run.arbitrage or {}).items() if k.startswith("smoothed") and c.total]
    problem = arbitrage_of(run.smoothed, run.rv_7d, "smoothed") or (arb[0].first if arb else None)
    if problem is not None:  # never, whatever --allow-unrealistic says: the desk would trade it
        return Refused(f"latest {underlying} live run {run.run_id}: {problem}; static arbitrage is never applied")
    return run.smoothed


ALREADY_APPLIED = "already applied"


def already_applied(
    values: Multipliers, entry: AppliedEntry, config: CalibrationConfig, *, sigma_mode: str | None, what: str
) -> Refused | None:
    """A force-apply or rollback that would write exactly what the YAML holds (global, bands, smile,
    surface block, sigma mode, as the YAML rounds them) is refused: its apply event would change nothing
    and read as a change. `what` names the values in the reason ("run R1's smoothed values"). The surface
    block is compared too: values that would add it to (or drop it from) an entry change how it quotes."""
    new = checked_values(values, config)
    if isinstance(new, Refused):  # never written anyway: that refusal is the one to read
        return None
    old = Multipliers(global_=entry.global_, bands=dict(entry.bands), smile=entry.smile, surface=entry.surface).rounded(4)
    if new != old or (sigma_mode or DEFAULT_SIGMA_MODE) != (entry.sigma_mode or DEFAULT_SIGMA_MODE):
        return None
    since = f" since {entry.updated_at}" if entry.updated_at else ""
    return Refused(
        f"{ALREADY_APPLIED}: {what} are the applied values (global {fmt.mult(entry.global_)}, "
        f"run {entry.run_id or 'initial default'}{since}); nothing to change"
    )


def force_refusal(
    run: LiveRun | None, underlying: str, entry: AppliedEntry, config: CalibrationConfig, *, allow_unrealistic: bool = False
) -> Refused | None:
    """Why `force-apply` would be refused now against `entry` (None: it would write): the dashboard
    hides its button on exactly this, with the realism override allowed (its dialog asks)."""
    values = force_values(run, underlying, config, allow_unrealistic=allow_unrealistic)
    if isinstance(values, Refused):
        return values
    checked = checked_values(values, config)
    if isinstance(checked, Refused):
        return checked
    assert run is not None
    return already_applied(values, entry, config, sigma_mode=run.sigma_mode, what=f"run {run.run_id}'s smoothed values")


class RollbackTarget(NamedTuple):
    run_id: str
    values: Multipliers
    sigma_mode: str | None = None  # the mode the values were fitted in (None: rv)


RunLookup = Callable[[str], "LiveRun | AutoRun | None"]


def rollback_target(
    events: Sequence[ApplyEvent], underlying: str, current_run_id: str | None, to: str | None = None, *,
    run_of: RunLookup = lambda _run_id: None, where: str = "the history",
) -> RollbackTarget | Refused:
    """The applied values a rollback re-applies, and the run they came from.

    `events` are the underlying's apply events, oldest first. With `to`: the latest apply event
    of that run. Without: the latest applied run other than the one the YAML holds now
    (`current_run_id`). Auto runs are never targets; `run_of` finds a run id that is not among
    the events, to say why it is not a target."""
    targets = [
        RollbackTarget(e.run_id, e.applied, getattr(e, "sigma_mode", None))
        for e in events
        if e.applied is not None and e.applied.global_ is not None and e.run_id
    ]
    if to is not None:
        other = run_of(to) if not any(t.run_id == to for t in targets) else None
        if isinstance(other, AutoRun):
            return Refused(f"run {to} is an auto-calibrate run; auto runs are never applied, so never rolled back to")
        matches = [t for t in targets if t.run_id == to]
        if matches:
            return matches[-1]
        if isinstance(other, LiveRun):
            return Refused(
                f"run {to} ({other.underlying}) was never applied to {underlying}; rollback only re-applies values that were "
                "applied (use `calreport log` to list them)"
            )
        return Refused(f"no run {to} in the {underlying} apply history (see `calreport log --underlying {underlying}`)")
    for t in reversed(targets):
        if t.run_id != current_run_id:
            return t
    return Refused(
        f"nothing to roll back to for {underlying}: no applied run other than the current one "
        f"({current_run_id or 'initial default'}) in {where}"
    )


def rollback_values(
    target: RollbackTarget, underlying: str, config: CalibrationConfig, entry: AppliedEntry | None = None
) -> Multipliers | Refused:
    """A rollback target's values, unless they were fitted in another sigma mode than the configured
    one, or (given the current `entry`) they are what the YAML holds already."""
    mode = sigma_mode_refusal(target.sigma_mode, config.sigma_mode_for(underlying), f"run {target.run_id}'s values")
    if mode is not None:
        return Refused(f"{mode.reason}; not rolled back")
    if entry is not None:
        same = already_applied(target.values, entry, config, sigma_mode=target.sigma_mode, what=f"run {target.run_id}'s values")
        if same is not None:
            return same
    return target.values


# --------------------------------------------------------------------------- the transactions


class AppliedTransaction(Protocol):
    """The applied file as read under its lock, and the one way to replace it (store.applied.ApplyTransaction)."""

    def entry(self, underlying: str) -> AppliedEntry: ...

    def replace(
        self, underlying: str, values: Multipliers, *, source: str, run_id: str | None, reason: str,
        sigma_mode: str | None = None, note: str | None = None,
    ) -> ApplyEvent: ...


class ApplyStore(Protocol):
    """What force-apply and rollback read and how they open the transaction (store.applied.FileApplyStore)."""

    config: CalibrationConfig
    where: str  # the history file, as refusals name it

    def transaction(self) -> AbstractContextManager[AppliedTransaction]: ...

    def latest_live_run(self, underlying: str) -> LiveRun | None: ...

    def apply_events(self, underlying: str) -> Sequence[ApplyEvent]: ...

    def run_of(self, run_id: str) -> LiveRun | AutoRun | None: ...


def apply_live_run(
    tx: AppliedTransaction, run: LiveRun, config: CalibrationConfig, *, record: Callable[[LiveRun], LiveRun]
) -> tuple[LiveRun, ApplyEvent | None]:
    """Inside the open transaction: decide once against the values on disk (decide_run), record the
    row (`record` appends it and returns it as written: the row comes before its apply event), and
    write the values when the decision is apply."""
    name = config.check_underlying(run.underlying or "")
    run = record(decide_run(run, tx.entry(name), config, name))
    values = run.applied_values or run.smoothed
    if run.decision != "apply" or values is None:
        return run, None
    event = tx.replace(name, values, source="policy", run_id=run.run_id, reason=run.decision_reason or "", sigma_mode=run.sigma_mode)
    return run, event


def clean_note(note: str | None) -> str | None:
    """The user's note as an apply event records it: one line (whitespace collapsed), at most
    NOTE_MAX_CHARS; empty is no note. Longer is refused, never cut (it is the user's words)."""
    if note is None:
        return None
    text = " ".join(note.split())
    if len(text) > NOTE_MAX_CHARS:
        Refused(f"--note is {len(text)} characters; at most {NOTE_MAX_CHARS}").raise_()
    return text or None


def force_apply(
    store: ApplyStore, underlying: str, *, allow_unrealistic: bool = False, via: str | None = None, note: str | None = None,
    run_id: str | None = None,
) -> ApplyEvent:
    """Apply the smoothed values of the latest *live* run (reason "Forced by user"), in one transaction.

    "The latest" is read again under the apply lock: a `calibrate` holds that lock from its read to its
    write, so a force-apply that waited on one applies the run it added, never the run before it over
    the values its policy just wrote. `run_id` (the dashboard's confirmed run) must still be the latest
    then, else the force-apply is refused: the user reviewed another change."""
    cfg = store.config
    name = cfg.check_underlying(underlying)
    note = clean_note(note)

    def forced(run: LiveRun | None) -> tuple[LiveRun, Multipliers]:
        if run_id is not None and run is not None and run.run_id != run_id:
            Refused(f"the latest {name} live run is now {run.run_id}, not {run_id}; review the change again").raise_()
        values = accepted(force_values(run, name, cfg, allow_unrealistic=allow_unrealistic, where=store.where))
        accepted(checked_values(values, cfg))
        assert run is not None  # force_values refused otherwise
        return run, values

    run, values = forced(store.latest_live_run(name))  # refuse what can never be written before taking the lock
    with store.transaction() as tx:
        latest = store.latest_live_run(name)
        if latest is None or latest.run_id != run.run_id:  # a calibrate finished while this waited for the lock
            run, values = forced(latest)
        same = already_applied(values, tx.entry(name), cfg, sigma_mode=run.sigma_mode, what=f"run {run.run_id}'s smoothed values")
        if same is not None:
            same.raise_()
        return tx.replace(
            name, values, source="force", run_id=run.run_id, reason=FORCED_REASON + (f" ({via})" if via else ""),
            sigma_mode=run.sigma_mode, note=note,
        )


def rollback(
    store: ApplyStore, underlying: str, to: str | None = None, *, via: str | None = None, note: str | None = None
) -> ApplyEvent:
    """Re-apply an earlier applied run's values as a new apply event (source rollback).

    The target is chosen against the YAML read under the apply lock, so a concurrent apply cannot
    make "the previous values" mean something else between the choice and the write.
    """
    cfg = store.config
    name = cfg.check_underlying(underlying)
    note = clean_note(note)
    with store.transaction() as tx:
        target = accepted(rollback_target(
            store.apply_events(name), name, tx.entry(name).run_id, to, run_of=store.run_of, where=store.where
        ))
        values = accepted(rollback_values(target, name, cfg, tx.entry(name)))
        return tx.replace(
            name, values, source="rollback", run_id=target.run_id,
            reason=ROLLBACK_REASON.format(run_id=target.run_id) + (f" ({via})" if via else ""),
            sigma_mode=target.sigma_mode, note=note,
        )
