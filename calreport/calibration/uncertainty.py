"""How sure is a fitted multiplier? A bootstrap over expiries combined with RV's sampling error.

Why expiries: quotes of one expiry share a forward, a maturity and a smile; they are not
independent samples, so resampling quotes would understate the noise. A bootstrap draw resamples
whole expiries with replacement and refits.

Why the RV term: the fit finds m with base x m close to the market's best flat vol; with
base = RV_7d from n hourly returns, the multiplier inherits RV's relative sampling error
(sd(RV) ~ RV / sqrt(2 n) for roughly normal returns), so se_rv = m / sqrt(2 n). A manual --rv or an
IV base (sigma_mode atm_iv / mark_iv) has no such term.

    se       = sqrt(se_expiry^2 + se_rv^2)
    ci95     = m x exp(+- 1.96 se / m)      (log-symmetric: a multiplier is a ratio, stays > 0)

Vectorised: the objective's per-quote terms are evaluated once on a geometric grid of m (chunked
like fit.py) and summed per expiry -> S[e, g]; a draw with expiry counts c (B x E, multinomial,
seeded) has objective (c @ S) / (c @ W) over the grid; its argmin is refined by a parabola in ln m.
No loop over options or over draws.

    price_terms(F, K, T, is_call, mark, base, w)  -> terms(grid) = w |BS(base m) - mark| / mark
    iv_terms(base, sigma_mark, w)                 -> terms(grid) = w |base m - sigma_mark|
    bootstrap_se(terms, w, expiry, *, bounds, draws, seed) -> (se_expiry | None, expiries, draws used)
    rv_se(m, n_returns, manual) -> se_rv | None
    combine(m, se_expiry, se_rv) -> Uncertainty

The applied surface's own SE (live._surface_uncertainty, opt-in: the default keeps the flat grid bootstrap above)
refits it per draw of the expiries: with fit.surface_se wild, the wild cluster bootstrap on a balanced sign design
(every expiry kept, its residuals flipped whole or not, so no draw deletes a pillar's data; CALIBRATION_NOTES "The
applied surface's uncertainty"); with fit.refit_draws >= 2, resampling whole expiries.

    wild_design(E) -> (N, E) signs     wild_data(fitted, observed, expiry, signs) -> y*
    wild_uncertainty(value, samples, informing, ...) / param_uncertainty(value, samples, counts, ...) -> ParamUncertainty
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from calreport.calibration.pricing import black76_price
from calreport.model import UncertaintyEntry

Terms = Callable[[np.ndarray], np.ndarray]  # grid (g,) -> per-quote weighted loss (g, n)

GRID_POINTS = 241  # geometric step ~0.75 % over [0.5, 3.0]; the parabola refines inside it
MAX_GRID_CELLS = 2_000_000  # grid points x quotes evaluated at once
Z95 = 1.959963984540054
WILD_METHOD = "wild cluster"  # UncertaintyEntry.method under fit.surface_se wild (docs/FILES.md)


@dataclass(frozen=True)
class Uncertainty:
    """A multiplier's standard error, its parts and its 95 % interval (None where undefined)."""

    multiplier: float
    se: float | None
    se_expiry: float | None
    se_rv: float | None
    ci95: tuple[float, float] | None
    expiries: int
    draws: int

    def to_entry(self) -> UncertaintyEntry:
        """The history row's view (4 decimals, like the multipliers)."""
        return entry_of(self)


def entry_of(u: Uncertainty | ParamUncertainty, **extra: object) -> UncertaintyEntry:
    """A history row's UncertaintyEntry of either kind (4 decimals, like the multipliers); `extra` adds the
    surface refit's fields (method, distinct, refused, nodes)."""
    def r(x: float | None) -> float | None:
        return None if x is None else round(float(x), 4)

    return UncertaintyEntry(
        se=r(u.se), se_expiry=r(u.se_expiry), se_rv=r(u.se_rv),
        ci95=[r(u.ci95[0]), r(u.ci95[1])] if u.ci95 else None,  # type: ignore[list-item]
        expiries=u.expiries, draws=u.draws, **extra,  # type: ignore[arg-type]
    )


def price_terms(F, K, T, is_call, mark, base, w) -> Terms:  # type: ignore[no-untyped-def]
    """Per-quote terms of fit.objective price_vega_rel: w |Black-76(base x m) - mark| / mark."""
    F, K, T, mark, w = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (F, K, T, mark, w))
    c = np.asarray(is_call, dtype=bool).reshape(-1)
    b = np.broadcast_to(np.asarray(base, dtype=np.float64), F.shape).reshape(-1)

    def terms(grid: np.ndarray) -> np.ndarray:
        m = grid[:, None]
        syn = black76_price(F[None, :], K[None, :], T[None, :], b[None, :] * m, c[None, :])
        return np.abs(syn - mark[None, :]) / mark[None, :] * w[None, :]

    return terms


def iv_terms(base, sigma_mark, w) -> Terms:  # type: ignore[no-untyped-def]
    """Per-quote terms of fit.objective otm_iv_vega: w |base x m - sigma_mark| (pass OTM quotes only)."""
    s = np.asarray(sigma_mark, dtype=np.float64).reshape(-1)
    b = np.broadcast_to(np.asarray(base, dtype=np.float64), s.shape).reshape(-1)
    w = np.asarray(w, dtype=np.float64).reshape(-1)

    def terms(grid: np.ndarray) -> np.ndarray:
        return np.abs(b[None, :] * grid[:, None] - s[None, :]) * w[None, :]

    return terms


def _per_expiry(terms: Terms, starts: np.ndarray, n: int, grid: np.ndarray) -> np.ndarray:
    """S[e, g]: the terms of expiry e's quotes (contiguous after sorting) summed at grid point g."""
    out = np.empty((starts.size, grid.size))
    step = max(1, MAX_GRID_CELLS // max(n, 1))
    for lo in range(0, grid.size, step):  # chunks of the grid, never options
        t = terms(grid[lo : lo + step])
        t = np.where(np.isfinite(t), t, 0.0)
        out[:, lo : lo + step] = np.add.reduceat(t, starts, axis=1).T
    return out


def _refined_argmin(values: np.ndarray, log_grid: np.ndarray) -> np.ndarray:
    """Per row: the grid argmin refined by the parabola through it and its neighbours (in ln m)."""
    i = np.nanargmin(values, axis=1)
    h = log_grid[1] - log_grid[0]
    inner = np.clip(i, 1, values.shape[1] - 2)
    rows = np.arange(values.shape[0])
    y0, y1, y2 = values[rows, inner - 1], values[rows, inner], values[rows, inner + 1]
    den = y0 - 2.0 * y1 + y2
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den > 0, 0.5 * (y0 - y2) / den, 0.0)
    off = np.where(i == inner, np.clip(off, -1.0, 1.0), 0.0)  # on a bound: the bound itself
    return np.exp(log_grid[i] + off * h)


def bootstrap_se(
    terms: Terms,
    weights: np.ndarray,
    expiry: np.ndarray,
    *,
    bounds: tuple[float, float],
    draws: int,
    seed: int,
    grid_points: int = GRID_POINTS,
) -> tuple[float | None, int, int]:
    """(se_expiry, expiries, draws used): sd of the refitted multiplier over expiry-resampled draws.

    `weights` are the objective's denominators per quote (0 for quotes the objective ignores).
    Fewer than 2 expiries with weight: no bootstrap (None). Same inputs and seed, same answer.
    """
    w = np.where(np.isfinite(weights) & (weights > 0), np.asarray(weights, dtype=np.float64), 0.0)
    exp = np.asarray(expiry).reshape(-1)
    used = w > 0
    keys = np.unique(exp[used])
    if keys.size < 2 or draws < 2:
        return None, int(keys.size), 0
    order = np.argsort(exp, kind="stable")
    # keep only quotes whose weight counts; group them by expiry
    order = order[used[order]]
    sorted_exp = exp[order]
    starts = np.flatnonzero(np.r_[True, sorted_exp[1:] != sorted_exp[:-1]])
    W = np.add.reduceat(w[order], starts)
    grid = np.geomspace(bounds[0], bounds[1], grid_points)

    def take(t: np.ndarray) -> np.ndarray:
        return t[:, order]

    S = _per_expiry(lambda g: take(terms(g)), starts, order.size, grid)
    rng = np.random.default_rng(seed)
    E = starts.size
    counts = rng.multinomial(E, np.full(E, 1.0 / E), size=draws).astype(np.float64)  # B x E
    den = counts @ W
    ok = den > 0
    values = (counts[ok] @ S) / den[ok, None]
    m = _refined_argmin(values, np.log(grid))
    if m.size < 2:
        return None, E, int(m.size)
    return float(np.std(m, ddof=1)), E, int(m.size)


def rv_se(m: float, n_returns: int | None, *, manual: bool) -> float | None:
    """m / sqrt(2 n): RV_7d's relative sampling error carried to the multiplier (None: no RV term)."""
    if manual or not n_returns or n_returns < 2:
        return None
    return abs(m) / math.sqrt(2.0 * n_returns)


def combine(m: float, se_expiry: float | None, se_rv: float | None, *, expiries: int = 0, draws: int = 0) -> Uncertainty:
    """se = sqrt(se_expiry^2 + se_rv^2); ci95 = m exp(+-1.96 se / m). No part known: se None."""
    parts = [p for p in (se_expiry, se_rv) if p is not None]
    if not parts or m <= 0:
        return Uncertainty(m, None, se_expiry, se_rv, None, expiries, draws)
    se = math.sqrt(sum(p * p for p in parts))
    k = math.exp(Z95 * se / m)
    return Uncertainty(m, se, se_expiry, se_rv, (m / k, m * k), expiries, draws)


# --------------------------------------------------------------------------- the applied model, refitted


@dataclass(frozen=True)
class ParamUncertainty:
    """One applied parameter (a level or a smile node): its refit-bootstrap SE, RV term and small-sample interval.

    `distinct` counts the distinct resamples of the expiries that inform the parameter; below the configured
    minimum the interval is refused (None, `refused` says why) while the SE is still reported."""

    value: float
    se: float | None
    se_expiry: float | None
    se_rv: float | None
    ci95: tuple[float, float] | None
    expiries: int
    draws: int
    distinct: int
    refused: str | None = None


def expiry_counts(n_expiries: int, draws: int, seed: int) -> np.ndarray:
    """(draws, n_expiries) multiplicities of a bootstrap resampling whole expiries with replacement (seeded)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_expiries, np.full(n_expiries, 1.0 / n_expiries), size=draws)


def distinct_resamples(counts: np.ndarray) -> int:
    """How many different resamples the rows of `counts` are (over the columns given): C(2E-1, E) at most."""
    if counts.size == 0:
        return 1 if counts.shape[0] else 0
    return int(np.unique(np.asarray(counts), axis=0).shape[0])


def refit_draws(refit: Callable[[np.ndarray], np.ndarray], counts: np.ndarray) -> np.ndarray:
    """(draws, k): `refit(multiplicity per expiry)` -> the k refitted parameters, once per bootstrap draw.
    The loop is over draws (each a whole vectorised fit), never over options."""
    return np.array([np.asarray(refit(c), dtype=np.float64) for c in counts])


def t_quantile(dof: int) -> float:
    """The 97.5 % point of Student's t with `dof` degrees of freedom (the normal's 1.96 for large dof)."""
    from scipy.stats import t as student_t

    return float(student_t.ppf(0.975, dof))


def _param(value: float, se_e: float | None, se_rv: float | None, E: int, draws: int, distinct: int, min_distinct: int,
           what: str = "distinct resamples") -> ParamUncertainty:
    """SE = sqrt(se_e^2 + se_rv^2); 95 % interval value x exp(+- t_{E-1} SE / value) (log-symmetric: levels and
    smile nodes are positive ratios), E the expiries informing the parameter. Refused with fewer than
    `min_distinct` distinct draws of those expiries, or E < 2; the SE stays."""
    parts = [p for p in (se_e, se_rv) if p is not None]
    se = math.sqrt(sum(p * p for p in parts)) if parts else None
    refused = None
    if se is None or value <= 0:
        refused = "no standard error"
    elif E < 2:
        refused = f"{E} expiry informs it"
    elif distinct < min_distinct:
        refused = f"{distinct} {what} (< {min_distinct})"
    ci = None
    if refused is None:
        k = math.exp(t_quantile(E - 1) * se / value)  # type: ignore[operator]
        ci = (value / k, value * k)
    return ParamUncertainty(value, se, se_e, se_rv, ci, E, draws, distinct, refused)


def param_uncertainty(
    value: float,
    samples: np.ndarray,
    counts: np.ndarray,
    *,
    se_rv: float | None,
    min_distinct: int,
) -> ParamUncertainty:
    """The resampling refit's parameter: se_expiry = sd (ddof 1) of the refitted samples; `counts` the draws'
    multiplicities of the expiries informing it (their distinct rows are the distinct resamples)."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    E = int(counts.shape[1])
    se_e = float(np.std(s, ddof=1)) if s.size >= 2 and E >= 1 else None
    return _param(value, se_e, se_rv, E, int(s.size), distinct_resamples(counts), min_distinct)


# --------------------------------------------------------------------------- wild cluster bootstrap


def _hadamard(order: int) -> np.ndarray:
    """A Hadamard matrix of `order` (a power of 2: Sylvester; q + 1 with q a prime = 3 mod 4: Paley I), first row +1."""
    if order & (order - 1) == 0:
        H = np.ones((1, 1))
        while H.shape[0] < order:  # doublings (a handful)
            H = np.block([[H, H], [H, -H]])
        return H
    q = order - 1
    squares = {(i * i) % q for i in range(1, q)}
    chi = np.array([0.0] + [1.0 if i in squares else -1.0 for i in range(1, q)])
    Q = chi[(np.arange(q)[None, :] - np.arange(q)[:, None]) % q]  # the Jacobsthal matrix, chi(j - i)
    S = np.zeros((order, order))
    S[0, 1:], S[1:, 0], S[1:, 1:] = 1.0, -1.0, Q
    H = np.eye(order) + S
    return H * H[0]  # columns signed so the first row is all +1


def _hadamard_order(n: int) -> int:
    """The smallest Hadamard order >= n this module builds: 1, 2, a multiple of 4 that is a power of 2 or a prime + 1."""
    if n <= 2:
        return max(n, 1)
    m = 4 * ((n + 3) // 4)
    while True:
        q = m - 1
        if m & (m - 1) == 0 or (q % 4 == 3 and all(q % d for d in range(3, int(q**0.5) + 1, 2))):
            return m
        m += 4


def wild_design(n_expiries: int) -> np.ndarray:
    """(N, n_expiries) Rademacher weights, one per expiry and run: a balanced design of the wild cluster bootstrap.

    The foldover [H; -H] of a Hadamard matrix H of order M >= E (its first E columns): every 1, 2 or 3 expiries
    see each sign pattern equally often (an orthogonal array of strength 3). Over such a design the spread of a
    function of the signs equals its spread over all 2^E patterns up to interactions of four or more expiries;
    random draws of the same number carry ~1 / sqrt(2 N) Monte-Carlo error instead. Row 0 is all +1 (the data
    itself). N = 2M: 8 runs for 3-4 expiries, 16 for 5-8, 24 for 9-12, 32 for 13-16, 40 for 17-20."""
    if n_expiries < 1:
        return np.ones((1, 0))
    H = _hadamard(_hadamard_order(n_expiries))[:, :n_expiries]
    return np.concatenate([H, -H])


def wild_data(fitted: np.ndarray, observed: np.ndarray, expiry: np.ndarray, signs: np.ndarray) -> np.ndarray:
    """y* = fitted + v_e (observed - fitted): each expiry's residuals kept or flipped whole (expiry: index into signs)."""
    return fitted + signs[expiry] * (observed - fitted)


def wild_uncertainty(value: float, samples: np.ndarray, informing: int, *, se_rv: float | None, min_distinct: int) -> ParamUncertainty:
    """The wild design's parameter: se_expiry = sd (ddof 0: the design is the distribution, not a sample of it) of
    the refits over the design's runs. `informing` = k expiries inform it: its wild bootstrap has 2^k distinct
    draws, so the interval is refused below `min_distinct` of those (k < 5 at 20) as for the resampling refit."""
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    se_e = float(np.std(s)) if s.size >= 2 else None
    k = int(informing)
    return _param(value, se_e, se_rv, k, int(s.size), 1 << min(k, 62), min_distinct, f"sign patterns of {k} expiries")
