"""The smile: a multiplier curve of normalised moneyness on top of the band's flat sigma (pure).

    sigma(K, T) = base x m_band x smile_band(x),   x = ln(K / F) / (base x m_band x sqrt(T))

`base` is the sigma mode's base (RV_7d today) and always an explicit argument here; `m_band` the
band multiplier. smile_band is given by its values at a few nodes of x (config smile.nodes, which
must include 0), equals 1 at x = 0, is linear between nodes and flat beyond the end nodes. An
underlying or band without a smile is flat (1 everywhere): today's model exactly.

Public API (numpy, no per-option Python loops):
    smile_at(x, nodes, values) -> multiplier per x (np.interp: linear inside, flat outside)
    SmileTable.build(nodes, mults, smiles) -> per-slot lookup; .sigma(slot, log_k, sqrt_t, base)
        one gathered interpolation for every option whatever its band (the engine's hot path).
    fit_smile(...) -> SmileFit: level m and node values minimising the configured objective over
        OTM quotes plus penalty x sum of squared second differences (slope changes) of the nodes,
        bounds on both; damped Gauss-Newton (IRLS) over all quotes at once, a 7 x 7 solve per step.
    quotes_per_node(x, nodes) -> how many quotes inform each node (x inside its hat's support).
    arbitrage_problem(nodes, values, s0) -> None or the first node where call prices on the node
        grid rise with strike or a butterfly is negative, at ATM total deviation s0 = base m sqrt(T).
    regrid(nodes_from, values, nodes_to) -> the same curve read at other nodes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from calreport import fmt
from calreport.calibration.bands import BandLookup, band_value
from calreport.calibration.lm import Model, minimise
from calreport.calibration.pricing import black76_price, black76_price_vega_live
from calreport.calibration.surface import DAYS_PER_YEAR, Surface
from calreport.calibration.varclock import MS_PER_DAY, variance_time
from calreport.model import AppliedEntry, Band, Multipliers, quoted_surface

DEFAULT_NODES: tuple[float, ...] = (-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5)
SMOOTH_ABS_VP = 0.05  # |gap| is smoothed as sqrt(gap^2 + eps^2) (vol points) so the gradient exists
SMOOTH_ABS_PCT = 0.05  # the same for the price objective (percent of the mark)
FIT_MAX_STEPS = 60  # damped Gauss-Newton steps; it usually stops after 10-20
FIT_STEP_TOL = 1e-5  # no parameter moved more than this: done (the YAML keeps 4 decimals)
FIT_REL_TOL = 1e-4  # or the objective fell by less than this fraction in a step
ARB_TOL = 1e-12  # coin: call-price differences smaller than this are rounding, not arbitrage


def node_label(x: float) -> str:
    """How a node is named in reasons and YAML comments: x=-1.50 (calreport.fmt.node)."""
    return fmt.node(float(x))


def zero_index(nodes: Sequence[float]) -> int:
    """Index of the x = 0 node (where the smile is 1 by definition)."""
    return int(np.flatnonzero(np.asarray(nodes, dtype=np.float64) == 0.0)[0])


def flat(nodes: Sequence[float]) -> list[float]:
    """The flat smile (today's model) on `nodes`."""
    return [1.0] * len(nodes)


def smile_at(x: np.ndarray | float, nodes: Sequence[float], values: Sequence[float]) -> np.ndarray:
    """The smile multiplier at normalised moneyness x: linear between nodes, flat beyond the ends."""
    return np.interp(x, np.asarray(nodes, dtype=np.float64), np.asarray(values, dtype=np.float64))


def normalised_moneyness(log_k: np.ndarray, sqrt_t: np.ndarray, atm_sigma: np.ndarray | float) -> np.ndarray:
    """x = ln(K/F) / (atm_sigma sqrt(T)), atm_sigma = base x m_band (NaN where undefined)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return log_k / (atm_sigma * sqrt_t)


def regrid(nodes_from: Sequence[float], values: Sequence[float], nodes_to: Sequence[float]) -> list[float]:
    """The same curve read at `nodes_to` (when the configured nodes change between runs)."""
    if list(nodes_from) == list(nodes_to):
        return [float(v) for v in values]
    return [float(v) for v in smile_at(np.asarray(nodes_to, dtype=np.float64), nodes_from, values)]


@dataclass(frozen=True)
class SmileTable:
    """Per slot (band index, the last slot = outside every band) a multiplier and a smile on one
    shared node grid, stored as the line a + b x of each segment between nodes, so that every
    option's smile is one gathered evaluation whatever its band (no per-band pass)."""

    nodes: np.ndarray  # (n,)
    mults: np.ndarray  # (slots,)
    intercepts: np.ndarray  # (slots * (n - 1),) a of segment j of slot s at s * (n - 1) + j
    slopes: np.ndarray  # (slots * (n - 1),) b of the same segment
    flat: bool  # every smile is 1 everywhere: sigma = base x m

    @classmethod
    def build(cls, nodes: Sequence[float], mults: Sequence[float], smiles: Sequence[Sequence[float] | None]) -> SmileTable:
        nd = np.asarray(nodes, dtype=np.float64)
        rows = np.array([np.ones(nd.size) if s is None else np.asarray(s, dtype=np.float64) for s in smiles]).reshape(len(smiles), nd.size)
        slope = np.diff(rows, axis=1) / np.diff(nd)  # (slots, n - 1)
        intercept = rows[:, :-1] - slope * nd[:-1]
        return cls(nd, np.asarray(mults, dtype=np.float64), intercept.reshape(-1), slope.reshape(-1), bool(np.all(rows == 1.0)))

    def segment(self, x: np.ndarray) -> np.ndarray:
        """Segment index j in [0, n - 2] of each x (already clipped to the end nodes): count of inner nodes <= x."""
        j = np.zeros(x.shape, dtype=np.uint8)
        for node in self.nodes[1:-1]:  # per inner node (a handful), each a vectorised comparison
            j += x >= node
        return j

    def sigma(self, slot: np.ndarray, log_k: np.ndarray, sqrt_t: np.ndarray, base: np.ndarray | float) -> np.ndarray:
        """base x m[slot] x smile_slot(x) for every option at once (slot from bands.BandLookup)."""
        level = base * self.mults[slot]
        if self.flat:
            return level
        with np.errstate(divide="ignore", invalid="ignore"):
            x = log_k / (level * sqrt_t)
        np.clip(x, self.nodes[0], self.nodes[-1], out=x)  # flat beyond the end nodes (NaN stays NaN)
        k = slot * (self.nodes.size - 1)
        k += self.segment(x)
        return level * (self.intercepts.take(k) + self.slopes.take(k) * x)


# --------------------------------------------------------------------------- fit


@dataclass(frozen=True)
class SmileFit:
    """A band's (or the global) fit: level m, node values, and what informed them."""

    multiplier: float | None
    values: tuple[float, ...]
    quotes_per_node: tuple[int, ...]
    samples: int
    objective: float | None  # the configured objective at the optimum (vp or percent), without the penalty
    on_bound: bool  # the level m sits on a fit bound


def quotes_per_node(x: np.ndarray, nodes: Sequence[float]) -> list[int]:
    """Quotes inside each node's hat (between its neighbours; the end nodes also take everything beyond)."""
    nd = np.asarray(nodes, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    lo = np.concatenate([[-np.inf], nd[:-1]])
    hi = np.concatenate([nd[1:], [np.inf]])
    return [int(np.count_nonzero((x > a) & (x < b))) for a, b in zip(lo, hi)]  # per node (a handful)


def _second_diff_matrix(nodes: np.ndarray) -> np.ndarray:
    """D with (D v)_i = slope change at interior node i: (v[i+1]-v[i])/h_i - (v[i]-v[i-1])/h_{i-1}."""
    n = nodes.size
    h = np.diff(nodes)
    d = np.zeros((max(n - 2, 0), n))
    for i in range(1, n - 1):  # per interior node (a handful)
        d[i - 1, i - 1] = 1.0 / h[i - 1]
        d[i - 1, i] = -1.0 / h[i - 1] - 1.0 / h[i]
        d[i - 1, i + 1] = 1.0 / h[i]
    return d


def _interp_weights(x: np.ndarray, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(j, t, slope_mask) so that smile(x) = (1-t) v[j] + t v[j+1]; slope_mask is 0 outside the ends."""
    n = nodes.size
    u = np.interp(x, nodes, np.arange(n, dtype=np.float64))
    j = np.minimum(u.astype(np.intp), n - 2)
    t = u - j
    inside = (x > nodes[0]) & (x < nodes[-1])
    h = nodes[j + 1] - nodes[j]
    return j, t, inside, h


def fit_smile(
    log_k: np.ndarray,
    sqrt_t: np.ndarray,
    base: np.ndarray | float,
    market_sigma: np.ndarray,
    weights: np.ndarray,
    *,
    nodes: Sequence[float],
    penalty: float,
    bounds: tuple[float, float],
    mult_bounds: tuple[float, float],
    objective: str = "otm_iv_vega",
    price_inputs: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    start_multiplier: float | None = None,
    start_values: Sequence[float] | None = None,
    fixed_values: Sequence[float] | None = None,
) -> SmileFit:
    """Level m and node values minimising objective + penalty x sum (slope changes)^2.

    The caller passes OTM quotes only. `objective` "otm_iv_vega" is the vega-weighted mean |sigma -
    sigma_mark| (vol points); "price_vega_rel" the vega-weighted mean |price - mark| / mark (percent),
    which needs `price_inputs` = (F, K, is_call, mark). |.| is smoothed (sqrt(r^2 + eps^2)) so the
    gradient exists. With `fixed_values` only m is fitted (a band that takes the global smile);
    `start_values` only seeds the search (a band starts from the global smile: fewer iterations).
    """
    if (objective == "price_vega_rel") != (price_inputs is not None):
        raise ValueError(f"objective {objective!r} needs price_inputs exactly when it is price_vega_rel")
    nd = np.asarray(nodes, dtype=np.float64)
    lk, st, sm, w = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (log_k, sqrt_t, market_sigma, weights))
    b = np.broadcast_to(np.asarray(base, dtype=np.float64), lk.shape).reshape(-1)
    ok = np.isfinite(lk) & np.isfinite(st) & (st > 0) & np.isfinite(sm) & (sm > 0) & np.isfinite(b) & (b > 0) & np.isfinite(w) & (w > 0)
    if price_inputs is not None:
        F, K, is_call, mark = (np.asarray(a).reshape(-1) for a in price_inputs)
        ok &= np.isfinite(mark) & (mark > 0)
    n_ok = int(ok.sum())
    if n_ok == 0:
        return SmileFit(None, tuple(flat(nd) if fixed_values is None else fixed_values), tuple([0] * nd.size), 0, None, False)
    lk, st, sm, w, b = lk[ok], st[ok], sm[ok], w[ok] / w[ok].sum(), b[ok]
    if price_inputs is not None:
        F, K, is_call, mark = F[ok].astype(float), K[ok].astype(float), is_call[ok].astype(bool), mark[ok].astype(float)
        kf, sign = K / F, np.where(is_call, 1.0, -1.0)  # finite ln(K/F) above: K/F > 0, the inputs are clean
    z = zero_index(nd)
    free = np.array([i for i in range(nd.size) if i != z]) if fixed_values is None else np.array([], dtype=np.intp)
    seed = fixed_values if fixed_values is not None else start_values
    v0 = np.ones(nd.size) if seed is None else np.asarray(seed, dtype=np.float64).copy()
    v0[zero_index(nd)] = 1.0
    D = _second_diff_matrix(nd)
    DtD = D.T @ D
    lo_m, hi_m = float(mult_bounds[0]), float(mult_bounds[1])
    m0 = start_multiplier if start_multiplier is not None else float(np.sum(w * sm / b))
    m0 = min(max(m0, lo_m), hi_m)

    def unpack(p: np.ndarray) -> tuple[float, np.ndarray]:
        v = v0.copy()
        v[free] = p[1:]
        return float(p[0]), v

    lo_v, hi_v = float(bounds[0]), float(bounds[1])
    lo_p = np.concatenate([[lo_m], np.full(free.size, lo_v)])
    hi_p = np.concatenate([[hi_m], np.full(free.size, hi_v)])
    eps = SMOOTH_ABS_VP if price_inputs is None else SMOOTH_ABS_PCT
    pen = 2.0 * penalty * DtD[np.ix_(free, free)] if free.size else np.zeros((0, 0))

    def linearise(p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        """(objective, residuals r, weights w / |r|_eps, Jacobian dr/dp) at p: one pass over the quotes."""
        m, v = unpack(p)
        level = b * m
        x = lk / (level * st)
        j, t, inside, h = _interp_weights(x, nd)
        sv = (1 - t) * v[j] + t * v[j + 1]
        sigma = level * sv
        slope = np.where(inside, (v[j + 1] - v[j]) / h, 0.0)
        if price_inputs is None:
            r = (sigma - sm) * 100.0
            dr = np.full(r.size, 100.0)
        else:
            price, vega = black76_price_vega_live(kf, st, sigma, sign)
            r = (price - mark) / mark * 100.0
            dr = vega / mark * 100.0
        a = np.sqrt(r * r + eps * eps)
        f = float(np.sum(w * a)) + (penalty * float(np.sum((D @ v) ** 2)) if free.size else 0.0)
        jac = np.zeros((r.size, p.size))
        jac[:, 0] = dr * b * (sv - x * slope)  # d sigma / dm with x = lk / (b m sqrt T)
        if free.size:
            full = np.zeros((r.size, nd.size))
            rows = np.arange(r.size)
            full[rows, j] = level * (1 - t)  # j and j + 1 differ: plain assignment, no accumulation needed
            full[rows, j + 1] = level * t
            jac[:, 1:] = dr[:, None] * full[:, free]
        return f, r, w / a, jac

    def penalty_grad(p: np.ndarray) -> np.ndarray:
        return 2.0 * penalty * (DtD @ unpack(p)[1])[free] if free.size else np.zeros(0)

    # Damped Gauss-Newton on the smoothed objective (iteratively reweighted least squares: the quadratic
    # w r^2 / (2 |r|_eps) majorises w |r|_eps), projected onto the bounds; a handful of 7 x 7 solves (lm.py).
    cache: dict[bytes, tuple[float, np.ndarray, np.ndarray, np.ndarray]] = {}

    def at(p: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
        key = p.tobytes()
        if key not in cache:  # the newest point only: a step's model is the accepted candidate's pass
            cache.clear()
            cache[key] = linearise(p)
        return cache[key]

    def model(p: np.ndarray) -> Model:
        _, r, u, jac = at(p)
        g = jac.T @ (u * r)
        g[1:] += penalty_grad(p)
        hess = jac.T @ (u[:, None] * jac)
        hess[1:, 1:] += pen
        return Model(g, hess, np.diag(hess) + 1e-12)

    p = minimise(
        np.clip(np.concatenate([[m0], v0[free]]), lo_p, hi_p), lo_p, hi_p, value=lambda x: at(x)[0], model=model,
        max_steps=FIT_MAX_STEPS, step_tol=FIT_STEP_TOL, rel_tol=FIT_REL_TOL, mu_range=(1e-7, 1e8), hold_bounds=False,
    ).p

    m, v = unpack(p)
    v[z] = 1.0
    # the objective as configured (unsmoothed, no penalty) at the optimum
    level = b * m
    sigma = level * smile_at(lk / (level * st), nd, v)
    if price_inputs is None:
        obj = float(np.sum(w * np.abs(sigma - sm)) * 100.0)
    else:
        obj = float(np.sum(w * np.abs(black76_price(F, K, st * st, sigma, is_call) - mark) / mark) * 100.0)
    on_bound = m - lo_m <= 1e-4 * lo_m or hi_m - m <= 1e-4 * hi_m
    counts = quotes_per_node(lk / (level * st), nd)
    return SmileFit(m, tuple(float(a) for a in v), tuple(counts), n_ok, obj, bool(on_bound))


# --------------------------------------------------------------------------- realism


def bounds_problem(nodes: Sequence[float], values: Sequence[float], bounds: tuple[float, float]) -> str | None:
    """The first node outside [lo, hi], named, else None."""
    lo, hi = float(bounds[0]), float(bounds[1])
    for x, v in zip(nodes, values):  # per node (a handful)
        if not np.isfinite(v) or v < lo - 1e-9 or v > hi + 1e-9:
            return f"node {node_label(x)} value {v:.4f} outside [{lo:g}, {hi:g}]"
    return None


def arbitrage_problem(nodes: Sequence[float], values: Sequence[float], s0: float) -> str | None:
    """Call prices (coin, F = 1) on the node grid at ATM total deviation s0 = base m sqrt(T): they must
    not rise with strike and every butterfly (slope change) must be >= 0. The first offending node, named."""
    nd = np.asarray(nodes, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if not (np.isfinite(s0) and s0 > 0):
        return None
    k = nd * s0  # ln(K/F)
    s = s0 * v  # total deviation at each node
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        d1 = -k / s + 0.5 * s
        c = ndtr(d1) - np.exp(k) * ndtr(d1 - s)
    strikes = np.exp(k)
    dc = np.diff(c)
    for i in np.flatnonzero(dc > ARB_TOL):  # offending intervals only
        return f"call price rises with strike between {node_label(nd[i])} and {node_label(nd[i + 1])}"
    slopes = dc / np.diff(strikes)
    fly = np.diff(slopes)
    scale = np.maximum(np.abs(slopes[1:]), np.abs(slopes[:-1]))
    for i in np.flatnonzero(fly < -1e-9 * np.maximum(scale, 1e-12) - ARB_TOL):
        return f"negative butterfly at node {node_label(nd[i + 1])}"
    return None


def smile_problems(
    smiles: Mapping[str, Sequence[float]], nodes: Sequence[float], bounds: tuple[float, float], s0: Mapping[str, Sequence[float]]
) -> list[str]:
    """Every smile outside its bounds or arbitrageable at any of its ATM deviations, one reason each."""
    out: list[str] = []
    for name, values in smiles.items():  # global + a handful of bands
        problem = bounds_problem(nodes, values, bounds)
        if problem is None:
            for dev in s0.get(name, ()):
                problem = arbitrage_problem(nodes, values, dev)
                if problem is not None:
                    break
        if problem is not None:
            out.append(f"smile {name}: {problem}")
    return out


# --------------------------------------------------------------------------- applied values -> table


def entry_table(values: AppliedEntry | Multipliers, bands: Sequence[Band], *, use_smile: bool = True) -> SmileTable:
    """The table of one underlying's applied (or tested) values: slot i = band i, the last slot =
    outside every band (global). Multipliers follow calibration.bands.band_value; smiles the band's
    own, else the global one, else flat. `use_smile=False` (config smile.enabled false) is the flat model."""
    mults = [band_value(values, b.name) for b in bands] + [band_value(values, "")]
    smile = values.smile if use_smile else None
    if smile is None:
        return SmileTable.build(DEFAULT_NODES, mults, [None] * len(mults))
    rows: list[Sequence[float] | None] = [smile.for_band(b.name) for b in bands] + [list(smile.global_)]
    return SmileTable.build(smile.nodes, mults, rows)


# --------------------------------------------------------------------------- the surface model (schema 3 entries)


def entry_surface(values: AppliedEntry | Multipliers, base: float, *, use_smile: bool = True) -> Surface | None:
    """The quoted surface of values that carry a surface block (None: the step model quotes them).

    Everything comes from the values themselves: pillar p of the block sits at its days of variance time
    with its band's level (band_value: the band's own, else global) and smile (smile.for_band: the band's
    own, else global; no smile: flat). `use_smile=False` (config smile.enabled false) is the flat step model."""
    spec = quoted_surface(values, use_smile)
    if spec is None:
        return None
    labels = list(spec.pillars)
    smile = values.smile
    nodes = list(smile.nodes) if smile is not None else list(DEFAULT_NODES)
    rows = [smile.for_band(label) if smile is not None else flat(nodes) for label in labels]
    return Surface.build(
        float(base), [spec.pillars[label] / DAYS_PER_YEAR for label in labels], [band_value(values, label) for label in labels],
        nodes, rows, wing_cap=spec.wing_slope_cap,
    )


def surface_tau(T: np.ndarray, now_ms: float, weekend_weight: float) -> np.ndarray:
    """Variance time of options `T` calendar years from `now_ms` (varclock; the expiry is now + T)."""
    T = np.asarray(T, dtype=np.float64)
    return variance_time(now_ms, now_ms + T * DAYS_PER_YEAR * MS_PER_DAY, weekend_weight)


def surface_sigma(
    surface: Surface, weekend_weight: float, log_k: np.ndarray, T: np.ndarray, base: np.ndarray | float, now_ms: float
) -> np.ndarray:
    """sigma = sqrt(w(ln K/F, tau) / T) per option (NaN where T <= 0); a per-option base scales the
    ATM total variance by (base / surface.base)^2 (calibration/surface.py)."""
    T = np.asarray(T, dtype=np.float64)
    tau = np.maximum(surface_tau(T, now_ms, weekend_weight), 0.0)
    b = np.asarray(base, dtype=np.float64)
    scale2 = None if b.ndim == 0 else (b / surface.base) ** 2
    with np.errstate(divide="ignore", invalid="ignore"):
        w = surface.total_variance(np.asarray(log_k, dtype=np.float64), tau, scale2)
        return np.sqrt(w) / np.sqrt(np.where(T > 0, T, np.nan))  # as the engine's block path: the same bits


def representative_base(base: np.ndarray | float) -> float:
    """One base for a surface quoted with a per-option base (the median; rv mode passes one number)."""
    b = np.asarray(base, dtype=np.float64)
    if b.ndim == 0:
        return float(b)
    ok = b[np.isfinite(b) & (b > 0)]
    return float(np.median(ok)) if ok.size else 1.0


def sigma_for(
    values: AppliedEntry | Multipliers,
    bands: Sequence[Band],
    dte: np.ndarray,
    log_k: np.ndarray,
    T: np.ndarray,
    base: np.ndarray | float,
    *,
    use_smile: bool = True,
    now_ms: float | None = None,
) -> np.ndarray:
    """What the engine quotes for `values`, per option: the surface model when the values carry a
    surface block (needs `now_ms`, the clock's origin), else sigma = base x m_band x smile_band(x)
    (one band lookup, one gathered interpolation)."""
    surface = entry_surface(values, representative_base(base), use_smile=use_smile)
    if surface is not None:
        if now_ms is None:
            raise ValueError("values with a surface block are quoted on the variance clock: now_ms is required")
        return surface_sigma(surface, values.surface.weekend_weight, log_k, T, base, now_ms)  # type: ignore[union-attr]
    table = entry_table(values, bands, use_smile=use_smile)
    slot = BandLookup(bands).slot(np.asarray(dte, dtype=np.float64))
    return table.sigma(slot, np.asarray(log_k, dtype=np.float64), np.sqrt(np.maximum(np.asarray(T, dtype=np.float64), 0.0)), base)
