"""Live calibration: the synthetic engine's prices against one Deribit snapshot, as a pure function.

The synthetic price of an option is Black-76 in coin units (pricing.py) with F = underlying_price,
T = time to 08:00 UTC of the expiry date in 365-day years, sigma = RV_7d x multiplier(band). The
snapshot's "now" is its newest creation_timestamp, never the wall clock.

    live_history(runs_newest_first, underlying, applied, config) -> LiveHistory
        what a live run needs from the history (the EWMA's start, the previous run's flags, the
        applied run's ATM IV), in one pass over the rows, newest first.
    evaluate_live(quotes, ..., applied, previous, config, ...) -> LiveEvaluation(run, detail)
        the whole measured run (metrics at the applied multipliers, global/band/type fits, the
        errors at the recommended calibration, EWMA, realism) and its quote-level detail. It takes
        no decision: calreport/apply.py decides once, against the values read under the lock.

Reading the snapshot, the RV source, the history and the applied file, and writing the detail,
the row and the apply are the use case's job (calreport.commands.usecases.run_live_calibration).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from calreport.apply import thin_rv, untouched
from calreport.calibration.atm import atm_iv_7d, atm_iv_by_expiry
from calreport.calibration.bands import band_index, band_value
from calreport.calibration.desk import DeskErrors, desk_errors, mark_sigma, otm_mask
from calreport.calibration.fit import (
    FitResult,
    fit_multiplier,
    fit_multiplier_iv,
    group_metrics,
    market_iv,
    vega_weights,
)
from calreport.calibration.pricing import black76_price, implied_vol, year_fraction
from calreport.calibration.select import Selection, dropped_text, select_quotes
from calreport.calibration.sigma import BaseHold, base_sigma, quote_base
from calreport.calibration.smile import SmileFit, fit_smile, normalised_moneyness, sigma_for, smile_at, surface_tau
from calreport.calibration.surface import DAYS_PER_YEAR, Surface, quoting_model, surface_spec, uses_surface
from calreport.calibration.surface_fit import SurfaceFit, fit_surface
from calreport.calibration.smoothing import (
    APPLIED_SOURCE,
    continues_ewma,
    ewma,
    restart_or_applied,
    smoothing_alpha,
)
from calreport.calibration.uncertainty import (
    ParamUncertainty,
    Uncertainty,
    expiry_counts,
    param_uncertainty,
    refit_draws,
    wild_data,
    wild_design,
    wild_uncertainty,
    WILD_METHOD,
    bootstrap_se,
    entry_of,
    combine,
    iv_terms,
    price_terms,
    rv_se,
)
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import FULL_WEEK_RETURNS, RealisedVol
from calreport.model import (
    AppliedEntry,
    CalibrationConfig,
    ExpirySummary,
    FrontQuote,
    GroupMetrics,
    Interval95,
    LiveRun,
    Multipliers,
    NodeUncertainty,
    QuoteDetail,
    RunDetail,
    Smile,
    SmileFitStats,
    UncertaintyEntry,
)
from calreport.realism import (
    REASON_UNREALISTIC_LIVE,
    Chain,
    arbitrage_problem,
    assess_calibration_realism,
    recommended_problem,
    smile_realism,
    surface_checks,
)
from calreport.timeutil import iso_ms, time_ms


@dataclass(frozen=True)
class LiveEvaluation:
    """A live run and its quote-level detail (history/runs/<run_id>.json)."""

    run: LiveRun
    detail: RunDetail


@dataclass(frozen=True)
class _Priced:
    """Quote-level arrays of one run at the tested (applied) multipliers."""

    sel: Selection
    sigma: np.ndarray
    synthetic: np.ndarray
    weights: np.ndarray
    miv: np.ndarray
    band: np.ndarray  # index into config.bands, -1 outside
    sigma_mark: np.ndarray  # Deribit's mark_iv, the inverted mark where absent (desk.mark_sigma)
    otm: np.ndarray  # each strike once, on its out-of-the-money side
    atm_sigma: np.ndarray  # the synthetic vol at the money (x = 0: base x band multiplier, smile 1)
    base: np.ndarray  # the base sigma of each quote (calibration/sigma.py): sigma = base x m_band x smile
    mode: str = "rv"  # the sigma mode the base follows

    def metrics(self, mask: np.ndarray, fit: FitResult | None = None) -> GroupMetrics:
        """Errors of the quotes in `mask` at the tested multipliers, with the slice's own fit if given."""
        fitted = fit is not None and fit.multiplier is not None
        return group_metrics(
            self.sel.quotes.mark_price[mask], self.synthetic[mask], self.weights[mask], self.miv[mask], self.sigma[mask],
            recommended=round(fit.multiplier, 4) if fitted else None,  # type: ignore[union-attr, arg-type]
            on_bound=fit.on_bound if fitted else None,  # type: ignore[union-attr]
        )

    def fit(self, mask: np.ndarray, rv: float, config: CalibrationConfig) -> FitResult:
        """The slice's multiplier under fit.objective (OTM quotes only for otm_iv_vega)."""
        q = self.sel.quotes
        bounds = (config.fit.min_mult, config.fit.max_mult)
        if config.fit.objective == "otm_iv_vega":
            m = mask & self.otm
            return fit_multiplier_iv(self.base[m], self.sigma_mark[m], self.weights[m], bounds=bounds)
        return fit_multiplier(
            q.underlying_price[mask], q.strike[mask], self.sel.T[mask], q.is_call[mask], q.mark_price[mask],
            self.base[mask], self.weights[mask], bounds=(config.fit.min_mult, config.fit.max_mult),
        )

    def uncertainty(self, mask: np.ndarray, m: float, rv: RealisedVol, config: CalibrationConfig) -> Uncertainty:
        """The slice's multiplier_se: bootstrap over its expiries (same objective) + RV's sampling error."""
        q = self.sel.quotes
        f = config.fit
        if f.objective == "otm_iv_vega":
            sel = mask & self.otm
            terms = iv_terms(self.base[sel], self.sigma_mark[sel], self.weights[sel])
            ok = np.isfinite(self.sigma_mark[sel]) & (self.sigma_mark[sel] > 0)
            w = np.where(ok, self.weights[sel], 0.0)
        else:
            sel = mask
            terms = price_terms(
                q.underlying_price[sel], q.strike[sel], self.sel.T[sel], q.is_call[sel], q.mark_price[sel],
                self.base[sel], self.weights[sel],
            )
            w = self.weights[sel]
        se_e, n_exp, n_draws = bootstrap_se(
            terms, w, q.expiry_ms[sel], bounds=(f.min_mult, f.max_mult), draws=f.bootstrap_draws, seed=f.bootstrap_seed
        )
        no_rv_term = rv.source == "manual" or self.mode != "rv"  # an IV base carries no RV sampling error
        return combine(m, se_e, rv_se(m, rv.n_returns, manual=no_rv_term), expiries=n_exp, draws=n_draws)


def _price(sel: Selection, base: np.ndarray, applied: AppliedEntry, config: CalibrationConfig, mode: str, now_ms: int) -> _Priced:
    q = sel.quotes
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k = np.log(q.strike / q.underlying_price)
    sigma = sigma_for(applied, config.bands, sel.dte, log_k, sel.T, base, use_smile=config.smile.enabled, now_ms=now_ms)
    synthetic = black76_price(q.underlying_price, q.strike, sel.T, sigma, q.is_call)
    miv = market_iv(q, sel.T)
    weights = vega_weights(q.underlying_price, q.strike, sel.T, miv, sigma)
    smark = mark_sigma(q.mark_iv, q.mark_price, q.underlying_price, q.strike, sel.T, q.is_call)
    otm = otm_mask(q.underlying_price, q.strike, q.is_call)
    atm = sigma_for(applied, config.bands, sel.dte, np.zeros(sel.n), sel.T, base, use_smile=config.smile.enabled, now_ms=now_ms)
    return _Priced(sel, sigma, synthetic, weights, miv, band_index(sel.dte, config.bands), smark, otm, atm, base, mode)


def _with_base(sel: Selection, quotes: QuoteArrays, all_T: np.ndarray, rv: RealisedVol, mode: str) -> tuple[Selection, np.ndarray]:
    """The selection's base sigma under `mode` (calibration/sigma.py); quotes the mode has no base
    for (no ATM IV anywhere, no mark IV) are dropped and counted under "no_base_sigma"."""
    q = sel.quotes
    if mode == "rv":
        return sel, base_sigma(mode, rv=rv.rv, T=sel.T)
    valid = quotes.valid_name
    return _keep_based(sel, quote_base(mode, rv.rv, q, sel.T, quotes.take(valid), all_T[valid]))


def _keep_based(sel: Selection, base: np.ndarray) -> tuple[Selection, np.ndarray]:
    """Drop the quotes without a base (counted under "no_base_sigma")."""
    q = sel.quotes
    ok = np.isfinite(base) & (base > 0)
    if bool(ok.all()):
        return sel, base
    dropped = {**sel.dropped, "no_base_sigma": int(np.count_nonzero(~ok))}
    return Selection(quotes=q.take(ok), T=sel.T[ok], dte=sel.dte[ok], dropped=dropped, total=sel.total), base[ok]


def _selected(
    quotes: QuoteArrays, now_ms: int, rv: RealisedVol, config: CalibrationConfig, underlying: str
) -> tuple[np.ndarray, str, Selection, np.ndarray]:
    """(T of every quote, sigma mode, the quotes that pass the filters, their base sigma): what a
    run prices, shared by evaluate_live and score_applied so the two can never price differently."""
    all_T = year_fraction(quotes.expiry_ms, now_ms)
    mode = config.sigma_mode_for(underlying)
    sel, base = _with_base(select_quotes(quotes, now_ms, config.filters, underlying), quotes, all_T, rv, mode)
    return all_T, mode, sel, base


def _desk_fields(priced: _Priced, config: CalibrationConfig) -> dict[str, object]:
    """OTM and IV-space errors at the tested multipliers (calibration/desk.py), as LiveRun fields."""
    q = priced.sel.quotes
    d = desk_errors(
        q.underlying_price, q.strike, priced.sel.T, q.is_call, q.mark_price, priced.sigma_mark, priced.sigma,
        band_index=priced.band, band_names=config.band_names(),
    )
    return {**d.to_fields(), "fit_objective": config.fit.objective}


def _type_band_fits(priced: _Priced, rv: float, config: CalibrationConfig) -> dict[str, dict[str, GroupMetrics]]:
    """C / P -> band -> metrics of the OTM quotes with their own fit: the skew view (each strike once)."""
    enough = config.fit.band_min_samples
    calls = priced.sel.quotes.is_call
    out: dict[str, dict[str, GroupMetrics]] = {}
    for label, side in (("C", calls), ("P", ~calls)):  # 2 types x a handful of bands
        rows: dict[str, GroupMetrics] = {}
        for i, b in enumerate(config.bands):
            mask = side & priced.otm & (priced.band == i)
            fit = priced.fit(mask, rv, config) if int(mask.sum()) >= enough else None
            rows[b.name] = priced.metrics(mask, fit)
        out[label] = rows
    return out


def _slice_fits(
    priced: _Priced, rv: float, config: CalibrationConfig
) -> tuple[dict[str, GroupMetrics], dict[str, GroupMetrics], dict[str, float]]:
    """(by_band, by_type, band multipliers): each configured band and option type with its own fit
    where it has at least fit.band_min_samples quotes (bands and types are a handful: no per-quote loop).
    With the smile the band multipliers come from the smile fits (_smile_fits): no flat band fit here."""
    enough = config.fit.band_min_samples
    by_band: dict[str, GroupMetrics] = {}
    band_values: dict[str, float] = {}
    for i, b in enumerate(config.bands):
        mask = priced.band == i
        fit = priced.fit(mask, rv, config) if int(mask.sum()) >= enough and not config.smile.enabled else None
        by_band[b.name] = priced.metrics(mask, fit)
        if fit is not None and fit.multiplier is not None:
            band_values[b.name] = fit.multiplier
    calls = priced.sel.quotes.is_call
    by_type: dict[str, GroupMetrics] = {}
    for label, mask in (("C", calls), ("P", ~calls)):
        fit = priced.fit(mask, rv, config) if int(mask.sum()) >= enough else None
        by_type[label] = priced.metrics(mask, fit)
    return by_band, by_type, band_values


def _r(x: float | None, nd: int = 4) -> float | None:
    return None if x is None else round(float(x), nd)


def _uncertainty_fields(
    priced: _Priced, global_m: float, band_values: dict[str, float], rv: RealisedVol, config: CalibrationConfig
) -> dict[str, object]:
    """multiplier_se, multiplier_ci95 and the per-slice breakdown for the global fit and each fitted band."""
    everything = np.ones(priced.sel.n, dtype=bool)
    slices = {"global": priced.uncertainty(everything, global_m, rv, config)}
    names = config.band_names()
    for label, m in band_values.items():  # a handful of bands
        slices[label] = priced.uncertainty(priced.band == names.index(label), m, rv, config)
    g = slices.pop("global")
    se = Multipliers(global_=_r(g.se), bands={k: round(u.se, 4) for k, u in slices.items() if u.se is not None})
    ci = Interval95(
        global_=[round(g.ci95[0], 4), round(g.ci95[1], 4)] if g.ci95 else None,
        bands={k: [round(u.ci95[0], 4), round(u.ci95[1], 4)] for k, u in slices.items() if u.ci95},
    )
    return {
        "multiplier_se": se,
        "multiplier_ci95": ci,
        "uncertainty": {"global": g.to_entry(), **{k: u.to_entry() for k, u in slices.items()}},
    }


def _param_entry(u: ParamUncertainty, method: str, **extra: object) -> UncertaintyEntry:
    return entry_of(u, method=method, distinct=u.distinct, refused=u.refused, **extra)


def _node_entries(nodes: list[float], values: np.ndarray, samples: np.ndarray, stat: Callable[[float, np.ndarray], ParamUncertainty]) -> list[NodeUncertainty]:
    out = []
    for i, x in enumerate(nodes):  # a handful of nodes
        if x == 0.0:  # fixed at 1: no uncertainty
            out.append(NodeUncertainty(x=x, value=1.0, se=None, ci95=None, distinct=None, refused="fixed at 1"))
            continue
        u = stat(float(values[i]), samples[:, i])
        out.append(NodeUncertainty(
            x=x, value=round(float(values[i]), 4), se=_r(u.se), ci95=[round(u.ci95[0], 4), round(u.ci95[1], 4)] if u.ci95 else None,
            distinct=u.distinct, refused=u.refused,
        ))
    return out


def _global_wild_data(priced: _Priced, global_smile: SmileFit, config: CalibrationConfig, signs_of: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(mark, sigma_mark) of the run's quotes with each expiry's residuals against the global smile fit flipped by
    its sign (signs_of: the sign per quote, 1 outside the fit). The price objective flips the relative price
    residual in logs, mark* = P_fit (mark / P_fit)^v (v = 1 is the data; a flipped mark stays > 0); the IV
    objective flips sigma_mark - sigma_fit. None: no global level."""
    if global_smile.multiplier is None:
        return None
    q = priced.sel.quotes
    m = priced.otm
    level = priced.base[m] * global_smile.multiplier
    with np.errstate(divide="ignore", invalid="ignore"):
        x = normalised_moneyness(np.log(q.strike[m] / q.underlying_price[m]), np.sqrt(priced.sel.T[m]), level)
        sig = level * smile_at(x, list(config.smile.nodes), global_smile.values)
        mark, sm = q.mark_price.astype(np.float64).copy(), priced.sigma_mark.astype(np.float64).copy()
        if config.fit.objective == "price_vega_rel":
            fit_p = black76_price(q.underlying_price[m], q.strike[m], priced.sel.T[m], sig, q.is_call[m])
            flip = np.isfinite(fit_p) & (fit_p > 0) & np.isfinite(mark[m]) & (mark[m] > 0)  # else the quote keeps its mark
            mark[m] = np.where(flip, fit_p * np.exp(signs_of[m] * np.log(np.where(flip, mark[m] / fit_p, 1.0))), mark[m])
        else:
            sm[m] = sig + signs_of[m] * (sm[m] - sig)
    return mark, sm


def _surface_uncertainty(
    priced: _Priced, fitted: tuple[_SurfaceProblem, SurfaceFit], recommended: Multipliers, global_smile: SmileFit, rv: RealisedVol, config: CalibrationConfig
) -> dict[str, object] | None:
    """multiplier_se, multiplier_ci95 and per-level / per-node entries of the applied surface, plus RV's sampling
    error on the levels. Every run refits THAT model (the surface warm-started from the full fit, and the global
    level's smile fit) over a draw of the expiries:

    - fit.surface_se wild (opt-in, fit.refit_draws < 2): the wild cluster bootstrap on a balanced sign design (uncertainty.wild_design,
      16 refits with 8 expiries): every expiry kept, its residuals against the fit flipped whole or not, so no
      draw deletes a pillar's data;
    - fit.refit_draws >= 2 (opt-in): resampling whole expiries with replacement, that many draws.
    None: neither configured (the default: the flat fit's SE stands), no smile or global level, or fewer than 2
    expiries."""
    f = config.fit
    problem, full = fitted
    if recommended.smile is None or recommended.global_ is None or (f.refit_draws < 2 and f.surface_se != "wild"):
        return None  # no surface SE configured: the run keeps the flat fit's (labelled so)
    q = priced.sel.quotes
    labels = list(recommended.bands)
    nodes = list(recommended.smile.nodes)
    levels = np.array([recommended.bands[b] for b in labels])
    values = np.array([recommended.smile.for_band(b) for b in labels])
    everything = np.ones(priced.sel.n, dtype=bool)
    g_mask = priced.otm
    keys, inv = np.unique(q.expiry_ms[problem.mask | g_mask], return_inverse=True)
    e_of = np.full(priced.sel.n, -1)
    e_of[problem.mask | g_mask] = inv
    E = keys.size
    if E < 2:
        return None
    P, n = values.shape
    md = f.min_distinct_resamples

    if f.refit_draws >= 2:  # opt-in: resample whole expiries
        method = "surface refit"
        rows = expiry_counts(E, f.refit_draws, f.bootstrap_seed)

        def refit(c: np.ndarray) -> np.ndarray:
            mult = np.where(e_of >= 0, c[np.maximum(e_of, 0)], 0).astype(np.float64)
            sf = problem.fit(mult[problem.mask], start_from=full)
            gf = _smile_fit(priced, everything, priced.base, config, start=global_smile.multiplier,
                            start_values=list(global_smile.values), weights=priced.weights * mult)
            g = np.nan if gf.multiplier is None else gf.multiplier
            return np.concatenate([sf.levels, np.asarray(sf.values).reshape(-1), [g]])

        def stat_of(informs: np.ndarray) -> Callable[..., ParamUncertainty]:
            return lambda v, s, se_rv=None: param_uncertainty(v, s, rows[:, informs], se_rv=se_rv, min_distinct=md)
    else:  # fit.surface_se wild: the wild cluster bootstrap on a balanced design of signs
        method = WILD_METHOD
        rows = wild_design(E)
        fitted_sigma = np.sqrt(Surface.build(
            problem.base, problem.pillar_tau, full.levels, problem.nodes, full.values, wing_cap=problem.options["wing_cap"],  # type: ignore[arg-type]
        ).total_variance(problem.log_k, problem.tau) / problem.T)
        e_s = e_of[problem.mask]

        def refit(v: np.ndarray) -> np.ndarray:
            sf = dataclasses.replace(problem, sigma=wild_data(fitted_sigma, problem.sigma, e_s, v)).fit(start_from=full)
            data = _global_wild_data(priced, global_smile, config, np.where(e_of >= 0, v[np.maximum(e_of, 0)], 1.0))
            g = np.nan
            if data is not None:
                gf = _smile_fit(priced, everything, priced.base, config, start=global_smile.multiplier,
                                start_values=list(global_smile.values), mark=data[0], sigma_mark=data[1])
                g = np.nan if gf.multiplier is None else gf.multiplier
            return np.concatenate([sf.levels, np.asarray(sf.values).reshape(-1), [g]])

        def stat_of(informs: np.ndarray) -> Callable[..., ParamUncertainty]:
            k = int(np.count_nonzero(informs))
            return lambda v, s, se_rv=None: wild_uncertainty(v, s, k, se_rv=se_rv, min_distinct=md)

    draws = refit_draws(refit, rows)
    # the expiries that inform pillar p: those whose variance time lies between its neighbouring pillars
    pt = np.asarray(problem.pillar_tau)
    tau_e = np.full(E, np.nan)
    tau_e[e_of[problem.mask]] = problem.tau
    lo = np.clip(np.searchsorted(pt, tau_e) - 1, 0, P - 1)
    hi = np.clip(np.searchsorted(pt, tau_e), 0, P - 1)
    no_rv = rv.source == "manual" or priced.mode != "rv"
    g_m = float(recommended.global_)
    # smile.global is the best-quoted pillar's curve (_surface_fit): its nodes carry that pillar's SEs
    main = labels.index(next((b for b in labels if list(recommended.smile.bands.get(b, [])) == list(recommended.smile.global_)), labels[0]))
    out: dict[str, UncertaintyEntry] = {}
    g = stat_of(np.ones(E, dtype=bool))(g_m, draws[:, -1], rv_se(g_m, rv.n_returns, manual=no_rv))
    node_of: dict[str, list[NodeUncertainty]] = {}
    for p, b in enumerate(labels):  # a handful of pillars
        stat = stat_of(np.isfinite(tau_e) & ((lo == p) | (hi == p)))
        u = stat(float(levels[p]), draws[:, p], rv_se(float(levels[p]), rv.n_returns, manual=no_rv))
        node_of[b] = _node_entries(nodes, values[p], draws[:, P + p * n: P + (p + 1) * n], stat)
        out[b] = _param_entry(u, method, nodes=node_of[b])
    out = {"global": _param_entry(g, method, nodes=node_of[labels[main]]), **out}
    se = Multipliers(global_=_r(g.se), bands={b: round(e.se, 4) for b, e in out.items() if b != "global" and e.se is not None})
    ci = Interval95(global_=out["global"].ci95, bands={b: e.ci95 for b, e in out.items() if b != "global" and e.ci95})
    return {"multiplier_se": se, "multiplier_ci95": ci, "uncertainty": out}


@dataclass(frozen=True)
class _SmileFits:
    """The run's smile fits: global and per band (bands with enough quotes), and their records."""

    global_: SmileFit
    bands: dict[str, SmileFit]  # every band with a fitted level; own smile where stats say "fitted"
    stats: dict[str, SmileFitStats]
    deviations: dict[str, list[float]]  # label -> [min, max] of base x m x sqrt(T) over its quotes

    def multipliers(self, nodes: list[float]) -> Multipliers:
        own = {b: list(f.values) for b, f in self.bands.items() if self.stats[b].source == "fitted"}
        smile = Smile(nodes=nodes, global_=list(self.global_.values), bands=own)
        bands = {b: f.multiplier for b, f in self.bands.items() if f.multiplier is not None}
        return Multipliers(global_=self.global_.multiplier, bands=bands, smile=smile)


def _base_of(base: np.ndarray | float, m: np.ndarray) -> np.ndarray | float:
    """The quotes' base sigma under a mask (a per-quote base from the sigma mode, or one number)."""
    return base[m] if np.ndim(base) else base  # type: ignore[index]


def _smile_fit(priced: _Priced, mask: np.ndarray, base: np.ndarray | float, config: CalibrationConfig, *,
               fixed: list[float] | None = None, start: float | None = None,
               start_values: list[float] | None = None, weights: np.ndarray | None = None,
               mark: np.ndarray | None = None, sigma_mark: np.ndarray | None = None) -> SmileFit:
    """fit_smile on the OTM quotes of `mask` under fit.objective (base is explicit: the sigma mode's base);
    `mark` / `sigma_mark` (per quote of the run) replace the market's data (the wild bootstrap's draws)."""
    q = priced.sel.quotes
    m = mask & priced.otm
    sc = config.smile
    price_inputs = None
    if config.fit.objective == "price_vega_rel":
        price_inputs = (q.underlying_price[m], q.strike[m], q.is_call[m], (q.mark_price if mark is None else mark)[m])
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k = np.log(q.strike[m] / q.underlying_price[m])
    return fit_smile(
        log_k, np.sqrt(priced.sel.T[m]), _base_of(base, m), (priced.sigma_mark if sigma_mark is None else sigma_mark)[m], (priced.weights if weights is None else weights)[m],
        nodes=sc.nodes, penalty=sc.penalty, bounds=(sc.bounds[0], sc.bounds[1]),
        mult_bounds=(config.fit.min_mult, config.fit.max_mult), objective=config.fit.objective,
        price_inputs=price_inputs, start_multiplier=start, start_values=start_values, fixed_values=fixed,
    )


def _fit_stats(
    priced: _Priced, mask: np.ndarray, fit: SmileFit, base: np.ndarray | float, nodes: list[float], source: str
) -> SmileFitStats:
    q = priced.sel.quotes
    m = mask & priced.otm
    iv_err = None
    if fit.multiplier is not None and m.any():
        level = _base_of(base, m) * fit.multiplier
        with np.errstate(divide="ignore", invalid="ignore"):
            x = np.log(q.strike[m] / q.underlying_price[m]) / (level * np.sqrt(priced.sel.T[m]))
        gap = np.abs(level * smile_at(x, nodes, fit.values) - priced.sigma_mark[m])
        w = priced.weights[m]
        ok = np.isfinite(gap) & np.isfinite(w)
        iv_err = float((gap[ok] * w[ok]).sum() / w[ok].sum() * 100.0) if w[ok].sum() > 0 else None
    return SmileFitStats(
        source=source, samples=fit.samples, quotes_per_node=list(fit.quotes_per_node),
        objective=fit.objective, iv_error_vp=iv_err,
    )


def _deviation_range(priced: _Priced, mask: np.ndarray, base: np.ndarray | float, m: float | None) -> list[float]:
    """[min, max] ATM total deviation base x m x sqrt(T) over the quotes: where realism checks the smile."""
    if m is None or not mask.any():
        return []
    dev = _base_of(base, mask) * m * np.sqrt(priced.sel.T[mask])
    return [float(np.min(dev)), float(np.max(dev))]


def _smile_fits(priced: _Priced, base: np.ndarray | float, config: CalibrationConfig, start: float | None) -> _SmileFits:
    """Global smile on every OTM quote; per band (with >= fit.band_min_samples quotes) its own smile when
    it has >= smile.min_quotes_per_band OTM quotes, else the global smile with its own level."""
    nodes = list(config.smile.nodes)
    everything = np.ones(priced.sel.n, dtype=bool)
    g = _smile_fit(priced, everything, base, config, start=start)
    stats = {"global": _fit_stats(priced, everything, g, base, nodes, "fitted")}
    deviations = {"global": _deviation_range(priced, everything, base, g.multiplier)}
    bands: dict[str, SmileFit] = {}
    for i, b in enumerate(config.bands):  # a handful of bands
        mask = priced.band == i
        if int(mask.sum()) < config.fit.band_min_samples:
            continue
        own = int((mask & priced.otm).sum()) >= config.smile.min_quotes_per_band
        fit = _smile_fit(priced, mask, base, config, fixed=None if own else list(g.values), start=g.multiplier, start_values=list(g.values))
        if fit.multiplier is None:
            continue
        bands[b.name] = fit
        stats[b.name] = _fit_stats(priced, mask, fit, base, nodes, "fitted" if own else "global")
        deviations[b.name] = _deviation_range(priced, mask, base, fit.multiplier)
    return _SmileFits(g, bands, stats, deviations)


@dataclass(frozen=True)
class _SurfaceProblem:
    """The surface fit's inputs: the OTM quotes with a mark IV, as fit_surface takes them. Kept so the
    uncertainty refits exactly the model that is applied (same quotes, weights, pillars and options)."""

    mask: np.ndarray  # the quotes of the run that enter the fit
    log_k: np.ndarray
    T: np.ndarray
    tau: np.ndarray
    sigma: np.ndarray
    weights: np.ndarray
    base: float
    pillar_tau: list[float]
    nodes: list[float]
    options: dict[str, object]

    def fit(self, multiplicity: np.ndarray | None = None, *, start_levels=None, start_values=None, start_from: SurfaceFit | None = None) -> SurfaceFit:  # type: ignore[no-untyped-def]
        """fit_surface; `multiplicity` per quote (a resample of expiries: weights x count, 0 drops a quote).
        `start_from` (a bootstrap draw): start at that fit's values. Seeding the IRLS weights from it as well
        (one round instead of three) was measured to move the SEs by up to 2x: the three rounds from even
        weights are the model, so each draw repeats them."""
        w = self.weights if multiplicity is None else self.weights * multiplicity
        if start_from is not None:  # the same procedure as the full fit (its IRLS rounds from even weights), warm values
            start_levels, start_values = start_from.levels, start_from.values
        return fit_surface(
            self.log_k, self.T, self.tau, self.sigma, w, base=self.base, pillar_tau=self.pillar_tau, nodes=self.nodes,
            start_levels=start_levels, start_values=start_values, **self.options,  # type: ignore[arg-type]
        )


def _surface_problem(priced: _Priced, rv: float, config: CalibrationConfig, now_ms: int) -> _SurfaceProblem:
    q = priced.sel.quotes
    m = priced.otm & np.isfinite(priced.sigma_mark) & (priced.sigma_mark > 0)
    spec = surface_spec(config)
    T = priced.sel.T[m]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k = np.log(q.strike[m] / q.underlying_price[m])
    return _SurfaceProblem(
        m, log_k, T, surface_tau(T, now_ms, spec.weekend_weight), priced.sigma_mark[m], priced.weights[m], rv,
        [spec.pillars[b] / DAYS_PER_YEAR for b in spec.pillars], list(config.smile.nodes),
        {"bounds": (config.smile.bounds[0], config.smile.bounds[1]), "mult_bounds": (config.fit.min_mult, config.fit.max_mult),
         "wing_cap": spec.wing_slope_cap},
    )


def _surface_fit(
    priced: _Priced, rv: float, config: CalibrationConfig, now_ms: int, applied: AppliedEntry, flat: Multipliers
) -> tuple[Multipliers, dict[str, SmileFitStats], float, tuple[_SurfaceProblem, SurfaceFit]]:
    """(recommended values, per-band fit stats, seconds, the fit's inputs): surface_fit.fit_surface on the OTM
    quotes, warm-started from the applied surface when it has the same pillars and nodes. The global multiplier
    stays the flat fit's (a summary number for realism and the dashboard; every pillar has its own level)."""
    spec = surface_spec(config)
    labels = list(spec.pillars)
    nodes = list(config.smile.nodes)
    problem = _surface_problem(priced, rv, config, now_ms)
    start_levels = start_values = None
    if applied.surface is not None and list(applied.surface.pillars) == labels and applied.smile is not None and list(applied.smile.nodes) == nodes:
        start_levels = [band_value(applied, b) for b in labels]
        start_values = [applied.smile.for_band(b) for b in labels]
    t0 = time.perf_counter()
    f = problem.fit(start_levels=start_levels, start_values=start_values)
    seconds = time.perf_counter() - t0
    main = int(np.argmax(f.quotes_per_pillar)) if f.quotes_per_pillar else 0
    smile = Smile(nodes=nodes, global_=list(f.values[main]), bands={b: list(v) for b, v in zip(labels, f.values)})
    values = Multipliers(global_=flat.global_, bands=dict(zip(labels, f.levels)), smile=smile, surface=spec)
    stats = {
        b: SmileFitStats(source="fitted", samples=n, objective=f.objective_vp, iv_error_vp=f.objective_vp)
        for b, n in zip(labels, f.quotes_per_pillar)
    }
    return values, stats, seconds, (problem, f)


def _expiry_summaries(priced: _Priced) -> list[ExpirySummary]:
    q = priced.sel.quotes
    exps, _, atm = atm_iv_by_expiry(q, priced.sel.T)
    atm_of = dict(zip(exps.tolist(), atm.tolist()))
    out: list[ExpirySummary] = []
    for e in np.unique(q.expiry_ms):  # per expiry (a handful)
        mask = q.expiry_ms == e
        gm = priced.metrics(mask)
        out.append(
            ExpirySummary(
                expiry=iso_ms(int(e)),
                dte=round(float(priced.sel.dte[mask][0]), 4),
                samples=int(mask.sum()),
                atm_mark_iv=atm_of.get(int(e)),
                synthetic_iv=float(priced.atm_sigma[mask][0]),  # at the money: the chart compares with the ATM mark IV
                mae_pct=gm.mae_pct,
                vega_weighted_mae_pct=gm.vega_weighted_mae_pct,
            )
        )
    return out


def _quote_details(priced: _Priced, band_names: list[str]) -> list[QuoteDetail]:
    """One row per quote. Its mark_iv is the desk's market IV (sigma_mark: Deribit's mark_iv, the mark inverted
    where absent), the one every IV error compares with (desk.py), so the dashboard's IV error per expiry and
    headline, priced from this detail, measure what iv_error_vp measures; its vega is at the mark's own IV."""
    q = priced.sel.quotes
    diff = (priced.synthetic - q.mark_price) / q.mark_price * 100.0
    cols = zip(
        q.instrument.tolist(), priced.sel.dte.tolist(), q.strike.tolist(), q.is_call.tolist(),
        q.mark_price.tolist(), priced.synthetic.tolist(), diff.tolist(), priced.weights.tolist(),
        priced.sigma_mark.tolist(), priced.sigma.tolist(), priced.band.tolist(), q.underlying_price.tolist(),
    )
    return [  # one model per quote: the detail file is quote-level by design
        QuoteDetail(
            instrument=name, dte=round(d, 4), strike=k, type="C" if c else "P", mark=m, synthetic=s,
            diff_pct=df, vega=v, mark_iv=(iv if math.isfinite(iv) else None), synthetic_iv=sg,
            band=band_names[b] if b >= 0 else None, forward=f,
        )
        for name, d, k, c, m, s, df, v, iv, sg, b, f in cols
    ]


def _front_quotes(quotes: QuoteArrays, now_ms: int, config: CalibrationConfig, underlying: str) -> list[FrontQuote]:
    """The quotes nearer than filters.min_dte that pass every other filter: the engine quotes them (the
    surface's flat front level) though no run fits them, so the detail keeps what the dashboard needs to
    show how the applied calibration quotes the very front (report/expiry_errors.py)."""
    f = config.filters
    if f.min_dte <= 0:
        return []
    near = select_quotes(quotes, now_ms, f.model_copy(update={"min_dte": 0.0}), underlying)
    m = (near.dte > 0) & (near.dte < f.min_dte)
    if not m.any():
        return []
    q, T = near.quotes.take(m), near.T[m]
    iv = mark_sigma(q.mark_iv, q.mark_price, q.underlying_price, q.strike, T, q.is_call)
    vega = vega_weights(q.underlying_price, q.strike, T, iv, iv)
    ok = np.isfinite(iv) & (iv > 0) & np.isfinite(vega) & (vega > 0)
    cols = zip(q.instrument.tolist(), near.dte[m].tolist(), q.strike.tolist(), q.is_call.tolist(),
               q.underlying_price.tolist(), iv.tolist(), vega.tolist(), ok.tolist())
    return [  # one model per quote, as the detail's quotes: a front expiry has a few dozen
        FrontQuote(instrument=name, dte=round(d, 4), strike=k, type="C" if c else "P", forward=fw, mark_iv=v, vega=vg)
        for name, d, k, c, fw, v, vg, good in cols if good
    ]


def _failure(rv: RealisedVol, sel: Selection, config: CalibrationConfig, mode: str = "rv") -> str | None:
    if rv.rv is None and mode == "rv":
        return (
            f"No RV_7d: {rv.n_returns} hourly returns in the 7 days before the snapshot from {rv.source} "
            "(need >= 2); pass --prices FILE or --rv X"
        )
    if sel.n < config.fit.min_samples:
        return f"Too few usable quotes to fit ({sel.n} < {config.fit.min_samples}); dropped: " + dropped_text(sel.dropped)
    return None


MOST_MARKS_BAD = 0.5  # above this share of marks over the no-arbitrage bound the snapshot is broken
USD_LOOKING_COIN = 10.0  # no coin-quoted option mark comes near 10 coin; a USD mark always does


FRACTION_LOOKING_IV = 0.03  # Deribit's mark_iv is percent: every quote below 3 % (read: 0.03) is a fraction
PERCENT_SCALE_IV = 0.10  # ... unless the marks themselves imply vols that low (no crypto chain ever has)
IV_UNIT_ATM = 0.1  # |ln(K/F)| of the quotes whose marks are inverted for that comparison


def iv_unit_error(quotes: QuoteArrays) -> str | None:
    """Why the chain's mark_iv looks like a fraction where Deribit writes percent, or None.

    Every mark_iv under 3 (percent) while the near-the-money marks imply percent-scale vols (their
    median Black-76 implied vol above 10 %): the IVs were written as 0.55 for 55 %, and every check
    and fit that reads them (ATM IV, iv mode) would be off by a factor of 100."""
    iv = quotes.mark_iv[np.isfinite(quotes.mark_iv)]
    if iv.size == 0 or np.any(iv >= FRACTION_LOOKING_IV):
        return None
    with np.errstate(invalid="ignore", divide="ignore"):
        T = year_fraction(quotes.expiry_ms, quotes.creation_ms)
        near = (np.abs(np.log(quotes.strike / quotes.underlying_price)) < IV_UNIT_ATM) & (T > 0)
    implied = implied_vol(quotes.mark_price[near], quotes.underlying_price[near], quotes.strike[near], T[near], quotes.is_call[near])
    implied = implied[np.isfinite(implied)]
    if implied.size == 0 or float(np.median(implied)) <= PERCENT_SCALE_IV:
        return None
    return (f"mark_iv looks like a fraction: all {iv.size} are below {FRACTION_LOOKING_IV * 100:g} (percent) while the "
            f"marks imply {np.median(implied) * 100:.0f}% near the money; Deribit's mark_iv is in percent")


def mark_checks(quotes: QuoteArrays) -> tuple[list[str], list[str]]:
    """(failed, degraded) issues of the marks themselves, the checks auto-calibrate runs on the harvest.

    A coin mark never exceeds its no-arbitrage bound (1 coin for a call, K/F for a put); marks of
    10 coin or more are USD prices (the old system's unit error); mark_iv written as a fraction is
    the same kind of unit error (iv_unit_error).
    """
    n = len(quotes)
    if n == 0:
        return [], []
    mark = quotes.mark_price
    with np.errstate(invalid="ignore", divide="ignore"):
        bound = np.where(quotes.is_call, 1.0, quotes.strike / quotes.underlying_price)
        above = int(np.count_nonzero(mark > bound * (1 + 1e-6)))
        usd = int(np.count_nonzero(mark >= USD_LOOKING_COIN))
    failed: list[str] = []
    degraded: list[str] = []
    if usd:
        failed.append(f"{usd} of {n} marks look like USD prices (>= {USD_LOOKING_COIN:g} coin)")
    if above:
        text = f"{above} of {n} marks above the no-arbitrage bound (call > 1 coin, put > K/F)"
        (failed if above > MOST_MARKS_BAD * n else degraded).append(text)
    iv_unit = iv_unit_error(quotes)
    if iv_unit:
        failed.append(iv_unit)
    return failed, degraded


ZERO_VEGA = "Summed vega is zero: no quote carries any sensitivity to the multiplier"


def evaluate_live(
    quotes: QuoteArrays,
    *,
    underlying: str,
    now_ms: int,
    rv: RealisedVol,
    applied: AppliedEntry,
    previous: tuple[Multipliers, str] | tuple[Multipliers, str, int | None],
    config: CalibrationConfig,
    run_id: str,
    snapshot_file: str,
    detail_file: str,
) -> LiveEvaluation:
    """One live run over a snapshot's quotes, measured at `applied` (the values read under the lock).

    `previous` is the EWMA's starting point and where it came from (live_history). A run that
    cannot be fitted (no RV, too few quotes, no vega) is a `failed` run with the reason, never an
    exception. No decision: the row's decision fields are calreport/apply.py's (decide_run).
    """
    ts = iso_ms(now_ms)
    all_T, mode, sel, base = _selected(quotes, now_ms, rv, config, underlying)
    valid = quotes.valid_name
    atm, atm_source = atm_iv_7d(quotes.take(valid), all_T[valid], config.filters.min_dte)
    provenance = {
        "schema_version": 1,
        "run_id": run_id,
        "ts": ts,
        "underlying": underlying,
        "source": "live",
        "multiplier_tested": applied.global_,
        "rv_7d": rv.rv,
        "atm_iv": atm,
        "atm_ratio": (atm / rv.rv) if (atm is not None and rv.rv) else None,
        "samples": sel.n,
        "snapshot_ts": ts,
        "rv_source": rv.source,
        "rv_returns": rv.n_returns,
        "atm_source": atm_source,
        "dropped": sel.dropped,
        "settings_hash": config.settings_hash(),
        "snapshot_file": snapshot_file,
        "quotes_total": sel.total,
        "tested": applied.multipliers(),
        "detail_file": detail_file,
        "sigma_mode": mode,
    }
    empty_detail = RunDetail(run_id=run_id, underlying=underlying, ts=ts)

    failure = _failure(rv, sel, config, mode)
    if failure is not None:
        run = LiveRun(**provenance, status="failed", reason=failure)
        return LiveEvaluation(run, empty_detail)
    priced = _price(sel, base, applied, config, mode, now_ms)
    rv_value = float(rv.rv) if rv.rv is not None else float("nan")  # unused by the fits outside rv mode
    vega_sum = float(priced.weights.sum())
    everything = np.ones(sel.n, dtype=bool)
    fit = priced.fit(everything, rv_value, config) if vega_sum > 0 else None
    if fit is None or fit.multiplier is None:
        run = LiveRun(**provenance, vega_sum=vega_sum, status="failed", reason=ZERO_VEGA)
        return LiveEvaluation(run, empty_detail)

    overall = priced.metrics(everything)
    by_band, by_type, band_values = _slice_fits(priced, rv_value, config)
    recommended = Multipliers(global_=fit.multiplier, bands=band_values)  # full precision feeds the EWMA
    smiles = _smile_fits(priced, priced.base, config, fit.multiplier) if config.smile.enabled else None
    if smiles is not None and smiles.global_.multiplier is not None:
        # with the smile, a band's multiplier is its ATM level: fitted jointly with its smile
        recommended = smiles.multipliers(list(config.smile.nodes))
        fit = FitResult(smiles.global_.multiplier, smiles.global_.on_bound, smiles.global_.objective, smiles.global_.samples)
        by_band = {
            name: gm.model_copy(update={"recommended": round(smiles.bands[name].multiplier, 4), "on_bound": smiles.bands[name].on_bound})  # type: ignore[arg-type]
            if name in smiles.bands else gm
            for name, gm in by_band.items()
        }
    surface_s: float | None = None
    surface_capped: bool | None = None
    if smiles is not None and uses_surface(config, mode) and rv.rv is not None:
        # the quoted surface: every band's level and smile fitted jointly, as pillars of one surface
        recommended, surface_stats, surface_s, problem = _surface_fit(priced, float(rv.rv), config, now_ms, applied, recommended)
        surface_capped = problem[1].capped
        smiles = _SmileFits(smiles.global_, smiles.bands, {**smiles.stats, **surface_stats}, smiles.deviations)
        by_band = {
            name: gm.model_copy(update={"recommended": round(recommended.bands[name], 4), "on_bound": None}) if name in recommended.bands else gm
            for name, gm in by_band.items()
        }
    surface_unc = None
    if surface_s is not None and smiles is not None:  # the applied surface's own uncertainty: refit per resample
        surface_unc = _surface_uncertainty(priced, problem, recommended, smiles.global_, rv, config)
    prev_values, prev_source = previous[0], previous[1]
    if not config.smile.enabled and prev_values.smile is not None:
        prev_values = prev_values.model_copy(update={"smile": None})  # the flat model: no smile carried along
    prev_ms = previous[2] if len(previous) > 2 else None  # type: ignore[misc]
    alpha = smoothing_alpha(config.smoothing, prev_ms, now_ms)
    if prev_values.global_ is None:  # nothing fitted in this sigma mode before: the EWMA restarts here
        alpha = 1.0
        prev_values = recommended
    elif untouched(applied) and prev_source == APPLIED_SOURCE:  # over the untouched defaults: the fit itself
        alpha = 1.0
    smoothed = ewma(recommended, prev_values, alpha, config.band_names())

    marks_failed, marks_degraded = mark_checks(quotes.take(valid))
    issues = [*marks_failed, *marks_degraded]
    if thin_rv(mode, rv.source, rv.n_returns, config.fit.min_rv_returns):
        issues.append(f"RV_7d from {rv.n_returns} hourly returns (< {config.fit.min_rv_returns}; a full week is {FULL_WEEK_RETURNS})")
    if atm is None:
        issues.append("no ATM IV")
    dq_status = "failed" if marks_failed else "degraded" if issues else "ok"
    status, reason = assess_calibration_realism(
        smoothed.global_, overall.mae_pct, overall.vega_weighted_mae_pct, dq_status, thresholds=config.realism, kind="live"
    )
    if status in ("failed", "degraded") and dq_status == status and issues:
        reason = f"{reason}: {'; '.join(issues)}"
    rec_problem = recommended_problem(fit.multiplier, fit.on_bound, thresholds=config.realism)
    if rec_problem is not None:  # the recommended value is judged too, not only the smoothed one
        reason = f"{REASON_UNREALISTIC_LIVE}: {rec_problem}" if status != "failed" else f"{reason}; {rec_problem}"
        status = "failed"
    arbitrage = None
    if smiles is not None and recommended.surface is not None:  # the surfaces: bounds and static arbitrage, listed and grid
        chain = Chain(quotes.underlying_price[valid], quotes.strike[valid], all_T[valid], quotes.expiry_ms[valid], quotes.instrument[valid], now_ms)
        # bounds of both smiles (no deviations: the node-grid arbitrage check is the step model's)
        problems = smile_realism(recommended.smile, {}, config.smile, "recommended") + smile_realism(smoothed.smile, {}, config.smile, "smoothed")
        arbitrage = {}
        for which, values in (("recommended", recommended.rounded(4)), ("smoothed", smoothed)):
            checks = surface_checks(values, float(rv.rv), chain) or {}  # type: ignore[arg-type]
            arbitrage.update({f"{which} {k}": v for k, v in checks.items()})
            problem = arbitrage_problem(checks, which)
            if problem is not None:
                problems.append(problem)
        if problems:
            text = "; ".join(dict.fromkeys(problems))
            reason = f"{REASON_UNREALISTIC_LIVE}: {text}" if status != "failed" else f"{reason}; {text}"
            status = "failed"
    elif smiles is not None:  # the recommended and the smoothed smiles: bounds and no-arbitrage, per node
        problems = smile_realism(recommended.smile, smiles.deviations, config.smile, "recommended")
        problems += smile_realism(smoothed.smile, smiles.deviations, config.smile, "smoothed")
        if problems:
            text = "; ".join(dict.fromkeys(problems))
            reason = f"{REASON_UNREALISTIC_LIVE}: {text}" if status != "failed" else f"{reason}; {text}"
            status = "failed"
    run = LiveRun(
        **provenance,
        vega_sum=vega_sum,
        mae_pct=overall.mae_pct,
        bias_pct=overall.bias_pct,
        vega_weighted_mae_pct=overall.vega_weighted_mae_pct,
        mae_vol_points=overall.mae_vol_points,
        recommended=recommended.rounded(4),  # the YAML's precision
        recommended_on_bound=fit.on_bound,
        **_recommended_errors(priced, recommended.rounded(4), config, now_ms),
        by_band=by_band,
        by_type=by_type,
        by_type_band=_type_band_fits(priced, rv_value, config),
        **_desk_fields(priced, config),  # type: ignore[arg-type]
        **(surface_unc or _uncertainty_fields(priced, recommended.global_ or fit.multiplier, dict(recommended.bands), rv, config)),  # type: ignore[arg-type]
        smoothed=smoothed,
        **({"smile_fit": smiles.stats} if smiles is not None else {}),
        **({"arbitrage": arbitrage} if arbitrage is not None else {}),
        **({"surface_fit_s": round(surface_s, 4), "surface_fit_capped": surface_capped} if surface_s is not None else {}),
        smoothed_from=prev_source,
        smoothing_alpha=round(alpha, 6),
        status=status,
        reason=reason,
        data_quality_status=dq_status,
        data_quality_issues=issues,
    )
    detail = RunDetail(
        run_id=run_id, underlying=underlying, ts=ts,
        quotes=_quote_details(priced, config.band_names()), expiries=_expiry_summaries(priced),
        front_quotes=_front_quotes(quotes, now_ms, config, underlying),
    )
    return LiveEvaluation(run, detail)


def _recommended_errors(priced: _Priced, recommended: Multipliers, config: CalibrationConfig, now_ms: int) -> dict[str, float | None]:
    """The errors at the recommended calibration (global, bands and smile, as the YAML would hold
    them), beside the errors at the tested one: how well the calibration the run proposes fits.
    All quotes on the tested run's vega weights (so the two vMAEs compare), OTM and IV errors as
    desk_errors measures them."""
    q, sel = priced.sel.quotes, priced.sel
    entry = AppliedEntry(global_=recommended.global_, bands=dict(recommended.bands), smile=recommended.smile, surface=recommended.surface)  # type: ignore[arg-type]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_k = np.log(q.strike / q.underlying_price)
    sigma = sigma_for(entry, config.bands, sel.dte, log_k, sel.T, priced.base, use_smile=config.smile.enabled, now_ms=now_ms)
    synthetic = black76_price(q.underlying_price, q.strike, sel.T, sigma, q.is_call)
    everything = group_metrics(q.mark_price, synthetic, priced.weights)
    desk = desk_errors(q.underlying_price, q.strike, sel.T, q.is_call, q.mark_price, priced.sigma_mark, sigma)
    return {
        "fit_vega_weighted_mae_pct": everything.vega_weighted_mae_pct,
        "fit_otm_vega_weighted_mae_pct": desk.otm_vega_weighted_mae_pct,
        "fit_iv_error_vp": desk.iv_error_vp,
    }


@dataclass(frozen=True)
class LiveHistory:
    """What a live run reads from the history, found in one pass (live_history)."""

    previous: tuple[Multipliers, str, int | None]  # the EWMA's start: values, where from, its time (ms)
    last_run: LiveRun | None  # the underlying's newest live run: its flags make "new flags"
    applied_atm_iv: float | None  # the 7-day ATM IV of the run whose values are applied


def live_history(
    runs_newest_first: Iterable[LiveRun], underlying: str, applied: AppliedEntry, config: CalibrationConfig
) -> LiveHistory:
    """The EWMA's previous value (smoothing.continues_ewma, in the configured sigma mode and quoting model; a row
    whose smoothed values break config.limits never seeds), the underlying's newest live run, and
    the ATM IV of the run whose values are applied (`applied.run_id`), from ONE pass over the rows,
    newest first, that stops as soon as all three are known (a long history is read from its tail)."""
    mode = config.sigma_mode_for(underlying)
    quoting = quoting_model(config, mode)
    applied_id = applied.run_id or None
    seed: LiveRun | None = None
    last: LiveRun | None = None
    atm_found, atm = applied_id is None, None
    for run in runs_newest_first:
        if last is None and run.underlying == underlying and run.is_live:
            last = run
        if not atm_found and run.run_id == applied_id:
            atm_found, atm = True, run.atm_iv
        if seed is None and continues_ewma(run, underlying, mode, quoting) and config.limits.problem_of(run.smoothed) is None:
            seed = run
        if seed is not None and last is not None and atm_found:
            break
    if seed is not None and seed.smoothed is not None:
        previous: tuple[Multipliers, str, int | None] = (seed.smoothed, f"run {seed.run_id}", time_ms(seed.ts))
    else:
        previous = restart_or_applied(applied, mode, quoting)
    return LiveHistory(previous, last, atm)


def score_applied(
    quotes: QuoteArrays,
    *,
    underlying: str,
    now_ms: int,
    rv: RealisedVol,
    applied: AppliedEntry,
    config: CalibrationConfig,
    hold: BaseHold | None = None,
) -> dict[str, DeskErrors] | None:
    """The desk errors of the applied calibration `applied` on one snapshot, without any fit: "all"
    and each configured band (None when no quote passes the filters). `hold`: the base frozen at the
    decision that applied the values (the backtest's out-of-sample scores; `rv` is then unused);
    None takes the base from this snapshot, as a live run does.

    Why here: the backtest scores an applied calibration on later snapshots and must price exactly
    as a live run measures the tested values (same filters, same `_price`, so whatever sigma model
    `_price` uses, a smile or a sigma mode, the score uses too).
    """
    if hold is not None:
        mode = config.sigma_mode_for(underlying)
        if mode == "rv" and hold.rv is None:
            return None
        picked = select_quotes(quotes, now_ms, config.filters, underlying)
        sel, base = _keep_based(picked, hold.base(picked.quotes, picked.T, now_ms))
    else:
        if config.sigma_mode_for(underlying) == "rv" and rv.rv is None:
            return None
        _, mode, sel, base = _selected(quotes, now_ms, rv, config, underlying)
    if sel.n == 0:
        return None
    priced = _price(sel, base, applied, config, mode, now_ms)  # exactly as evaluate_live prices the tested values
    q = sel.quotes
    out: dict[str, DeskErrors] = {}
    groups = [("all", np.ones(sel.n, dtype=bool))] + [(b.name, priced.band == i) for i, b in enumerate(config.bands)]
    for name, m in groups:  # "all" and a handful of bands
        out[name] = desk_errors(
            q.underlying_price[m], q.strike[m], sel.T[m], q.is_call[m], q.mark_price[m], priced.sigma_mark[m], priced.sigma[m]
        )
    return out
