"""EWMA smoothing of the recommended multipliers, and which earlier run may continue it
(live.live_history finds that run in the one pass a live run makes over the history).

The EWMA continues from the previous live run's *smoothed* values (same underlying, usable
quotes, realism not failed), else from the applied values. A run that failed realism (e.g. marks
in USD pinning the fit at a bound) never feeds the EWMA, so one bad snapshot cannot drag the next
healthy runs.
"""

from __future__ import annotations

from calreport.apply import untouched
from calreport.calibration.smile import flat, regrid, zero_index
from calreport.model import (
    DEFAULT_SIGMA_MODE,
    AppliedEntry,
    LiveRun,
    Multipliers,
    Smile,
    SmoothingConfig,
    SurfaceSpec,
    surface_changes,
)
from calreport.timeutil import MS_PER_HOUR

APPLIED_SOURCE = "applied"
RESTART_SOURCE = "restart"  # nothing of the configured sigma mode and quoting model to continue from


def seeds_smoothing(run: LiveRun, underlying: str) -> bool:
    """Can `run` be the EWMA's previous value for `underlying`? Not when failed, nor when its
    decision said it must not (thin RV, held for sample size: `feeds_smoothing` false)."""
    return (
        run.underlying == underlying
        and run.is_live
        and run.status != "failed"
        and run.feeds_smoothing is not False
        and run.smoothed is not None
        and run.smoothed.global_ is not None
        and (run.samples or 0) > 0
    )


def continues_ewma(run: LiveRun, underlying: str, sigma_mode: str | None, quoting: SurfaceSpec | None) -> bool:
    """seeds_smoothing, in `sigma_mode` (None: any) and quoted by `quoting` (the configured surface block,
    None the step model): values of another mode multiply another base, and levels of another quoting
    model sit on another clock (pillars, weekend weight) or are not pillars at all."""
    if sigma_mode is not None and (run.sigma_mode or DEFAULT_SIGMA_MODE) != sigma_mode:
        return False
    return seeds_smoothing(run, underlying) and not surface_changes(run.smoothed.surface if run.smoothed else None, quoting)


def restart_or_applied(applied: AppliedEntry, sigma_mode: str | None, quoting: SurfaceSpec | None) -> tuple[Multipliers, str, int | None]:
    """Where the EWMA starts when no run continues it: the applied values, or (applied in another
    sigma mode, or quoted by another model than `quoting`) a global of None, and the EWMA restarts.
    The untouched defaults are no model's fit: the EWMA starts from them (and takes the fit whole)."""
    if sigma_mode is not None and (applied.sigma_mode or DEFAULT_SIGMA_MODE) != sigma_mode:
        return Multipliers(global_=None), f"{RESTART_SOURCE} (applied values are sigma_mode {applied.sigma_mode or DEFAULT_SIGMA_MODE})", None
    changed = surface_changes(applied.surface, quoting)
    if changed and not untouched(applied):
        what = "; ".join(f"{w} {a} -> {b}" for w, a, b in changed)
        return Multipliers(global_=None), f"{RESTART_SOURCE} (applied values are quoted by another model: {what})", None
    return applied.multipliers(), APPLIED_SOURCE, None


def smoothing_alpha(config: SmoothingConfig, previous_ms: int | None, now_ms: int) -> float:
    """The EWMA weight: 1 - 0.5^(dt / half_life) with smoothing.half_life_hours (dt since the
    previous smoothed run), so a burst of runs does not dominate; the per-run alpha otherwise."""
    h = config.half_life_hours
    if h is None or previous_ms is None:
        return config.alpha
    dt_hours = max(now_ms - previous_ms, 0) / MS_PER_HOUR
    return 1.0 - 0.5 ** (dt_hours / h)


def ewma(recommended: Multipliers, previous: Multipliers, alpha: float, band_names: list[str]) -> Multipliers:
    """alpha x recommended + (1 - alpha) x previous, for global and each band.

    A band recommended now starts from its previous smoothed value, else from the previous
    global; a band not recommended now keeps its previous smoothed value (a thin run does not
    wipe a band out).
    """
    if recommended.global_ is None or previous.global_ is None:
        raise ValueError("ewma needs a global multiplier on both sides")
    g = alpha * recommended.global_ + (1 - alpha) * previous.global_
    bands: dict[str, float] = {}
    for label in band_names:
        if label in recommended.bands:
            prev = previous.bands.get(label, previous.global_)
            bands[label] = alpha * recommended.bands[label] + (1 - alpha) * prev
        elif label in previous.bands:
            bands[label] = previous.bands[label]
    smile = ewma_smile(recommended.smile, previous.smile, alpha, band_names)
    # the run's own quoting model: its levels are pillars of that surface (None: the step model); the previous
    # block is never carried over to values fitted under another model (the EWMA restarts across models)
    surface = recommended.surface
    return Multipliers(global_=g, bands=bands, smile=smile, surface=surface).rounded(4)


def ewma_smile(recommended: Smile | None, previous: Smile | None, alpha: float, band_names: list[str]) -> Smile | None:
    """The EWMA node by node, on the recommended node grid (a previous smile on another grid is read
    at these nodes; no previous smile is flat). Bands follow the multipliers' rule: a band recommended
    now starts from its previous smile, else the previous global one; a band not recommended keeps its own."""
    if recommended is None:
        return previous
    nodes = list(recommended.nodes)
    z = zero_index(nodes)

    def prev_of(label: str | None) -> list[float]:
        if previous is None:
            return flat(nodes)
        return regrid(previous.nodes, previous.for_band(label), nodes)

    def mix(new: list[float], old: list[float]) -> list[float]:
        out = [alpha * a + (1 - alpha) * b for a, b in zip(new, old)]
        out[z] = 1.0  # the smile is 1 at the money by definition (no rounding drift)
        return out

    g = mix(list(recommended.global_), prev_of(None))
    bands: dict[str, list[float]] = {}
    for label in band_names:
        if label in recommended.bands:
            old = prev_of(label) if previous is not None and label in previous.bands else prev_of(None)
            bands[label] = mix(list(recommended.bands[label]), old)
        elif previous is not None and label in previous.bands:
            bands[label] = regrid(previous.nodes, previous.bands[label], nodes)
    return Smile(nodes=nodes, global_=g, bands=bands)
