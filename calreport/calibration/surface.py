"""The quoted surface (issue 20): continuous term structure, arbitrage-free smile, checks (pure numpy/scipy).

Model, for an option with log-moneyness k = ln(K/F), calendar time T and variance time tau (varclock.py):

    w(k, tau) = w_atm(tau) x s(x, tau)^2,   x = k / sqrt(w_atm(tau)),   sigma = sqrt(w / T)

Term structure. Pillar p sits at variance time tau_p with ATM level m_p (a multiplier of `base`); its ATM
total variance is W_p = (base m_p)^2 tau_p. Between pillars w_atm is linear in tau (linear in total
variance); before the first pillar and after the last the *level* is flat: w_atm = (base m_first)^2 tau,
(base m_last)^2 tau. `monotone_levels` raises any pillar whose W would fall below its predecessor's to
exactly the predecessor's W (running maximum of W: the smallest upward change that makes w_atm
non-decreasing in tau; levels already monotone are untouched). Pillars default to the bands' midpoints in
square-root time, ((sqrt(lo) + sqrt(hi)) / 2)^2 days (0-7d: 1.75, 7-30d: 16.5, 30-90d: 56.0): fixed by
the configuration, so the engine needs no market data and the YAML keeps one level per band. No jump
at band edges: bands only say which pillar a level belongs to.

Smile. Per pillar a smile s_p on the configured x nodes (1 at x = 0), interpolated with a shape-preserving
C1 cubic (PCHIP, Fritsch-Carlson: no overshoot between nodes). Beyond the end nodes the wing is linear
in *total variance* against k: u = s^2 continues with the end slope du/dx of the cubic, so
dw/dk = sqrt(w_atm) du/dx, clipped to [0, WING_SLOPE_CAP] on the right and [-WING_SLOPE_CAP, 0] on the
left (Lee's moment bound is 2; the cap keeps a margin). Between pillars s(x, tau) = (1 - t) s_p(x) + t
s_{p+1}(x) with the same weight t as w_atm; flat (the end pillar's smile) outside.

Checks. `grid_violations` / `chain_violations` count butterflies (call price convex in K), call spreads
(call price non-increasing in K and slope >= -1 in units of F) and calendar spreads (w at fixed K/F
non-decreasing in tau) and name the first. `durrleman_g` is the density condition used by the fit as a
penalty (g >= 0 everywhere means a non-negative risk-neutral density).

Public API (all vectorised over options; no per-option Python loop):
    sqrt_time_pillars(bands) -> pillar tau (years)
    monotone_levels(base, pillar_tau, levels) -> levels
    Surface.build(base, pillar_tau, levels, nodes, values, wing_cap=WING_SLOPE_CAP)
    Surface.total_variance(k, tau) -> w ;  Surface.sigma(K, F, T, tau) -> calendar sigma
    Surface.price(K, F, T, tau, is_call) -> (sigma, coin price)   (cache-sized blocks)
    sigma(K, F, T, tau, base, pillar_tau, levels, nodes, values) -> sigma   (one-shot convenience)
    durrleman_g(surface, x, tau) -> g on a grid
    grid_violations(surface, ...) -> ArbReport ;  chain_violations(surface, F, K, T, tau, expiry) -> ArbReport
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.special import ndtr

from calreport.model import Band, CalibrationConfig, SurfaceSpec

TotalVariance = Callable[[np.ndarray, np.ndarray], np.ndarray]  # w(ln K/F, t): any quoting model, for the checks
WING_SLOPE_CAP = 1.8  # |dw/dk| of the wings; Lee's moment bound is 2
PRICE_TOL = 1e-12  # coin (F = 1): smaller call-price differences are rounding, not arbitrage
CAL_TOL = 1e-12  # total variance
BLOCK = 32_768  # options per block in Surface.price (temporaries stay in cache)
DAYS_PER_YEAR = 365.0


def sqrt_time_pillars(bands: Sequence[tuple[float, float]]) -> np.ndarray:
    """Pillar of each band (min_dte, max_dte) at its midpoint in square-root time, in years."""
    return np.array([Band.pillar_of(lo, hi) / DAYS_PER_YEAR for lo, hi in bands])


def uses_surface(config: CalibrationConfig, mode: str) -> bool:
    """Does a run fit (and the policy apply) the surface model? surface.enabled with the smile, in rv mode
    (an IV sigma mode's base is already per expiry: its term structure; it keeps the step model)."""
    return config.surface.enabled and config.smile.enabled and mode == "rv"


def surface_spec(config: CalibrationConfig) -> SurfaceSpec:
    """The surface block a fit under `config` writes: pillars at the bands' square-root-time midpoints,
    the configured clock weight and wing cap."""
    days = sqrt_time_pillars([(b.min_dte, b.max_dte) for b in config.bands]) * DAYS_PER_YEAR
    return SurfaceSpec(
        pillars={b.name: round(float(d), 4) for b, d in zip(config.bands, days)},
        weekend_weight=config.surface.weekend_weight, wing_slope_cap=config.surface.wing_slope_cap,
    )


def quoting_model(config: CalibrationConfig, mode: str) -> SurfaceSpec | None:
    """The quoting model a run under `config` in sigma mode `mode` fits and the policy applies: the surface
    block (None: the step model). Values fitted under another block are not comparable with these."""
    return surface_spec(config) if uses_surface(config, mode) else None


def pchip_slopes(nodes: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """PCHIP (Fritsch-Carlson, as scipy.interpolate.PchipInterpolator) node slopes of each row of
    `values` (P, n), and their Jacobian d slope / d value (P, n, n): the fit differentiates the
    quoted interpolant exactly (the slopes are piecewise rational in the values)."""
    nd = np.asarray(nodes, dtype=np.float64)
    v = np.atleast_2d(np.asarray(values, dtype=np.float64))
    P, n = v.shape
    h = np.diff(nd)
    E = np.eye(n)
    dlt = np.diff(v, axis=1) / h  # (P, n-1) secants
    ddlt = (E[1:] - E[:-1]) / h[:, None]  # (n-1, n) d secant / d v
    d = np.zeros((P, n))
    J = np.zeros((P, n, n))
    w1 = 2 * h[1:] + h[:-1]
    w2 = h[1:] + 2 * h[:-1]
    a, b = dlt[:, :-1], dlt[:, 1:]
    ok = (np.sign(a) == np.sign(b)) & (a != 0) & (b != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        den = w1 / a + w2 / b
        H = np.where(ok, (w1 + w2) / den, 0.0)
        da = np.where(ok, H * H * w1 / ((w1 + w2) * a * a), 0.0)  # dH/da
        db = np.where(ok, H * H * w2 / ((w1 + w2) * b * b), 0.0)
    d[:, 1:-1] = H
    J[:, 1:-1, :] = da[:, :, None] * ddlt[None, :-1, :] + db[:, :, None] * ddlt[None, 1:, :]
    for end, (h0, h1, i0, i1) in ((0, (h[0], h[1], 0, 1)), (n - 1, (h[-1], h[-2], n - 2, n - 3))):  # the two ends
        m0, m1 = dlt[:, i0], dlt[:, i1]
        de = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        jd = ((2 * h0 + h1) * ddlt[i0] - h0 * ddlt[i1]) / (h0 + h1)  # (n,)
        jac = np.broadcast_to(jd, (P, n)).copy()
        zero = np.sign(de) != np.sign(m0)
        three = ~zero & (np.sign(m0) != np.sign(m1)) & (np.abs(de) > 3.0 * np.abs(m0))
        de = np.where(zero, 0.0, np.where(three, 3.0 * m0, de))
        jac[zero] = 0.0
        jac[three] = 3.0 * ddlt[i0]
        d[:, end] = de
        J[:, end, :] = jac
    return d, J


def hermite_coefficients(nodes: np.ndarray, values: np.ndarray, slopes: np.ndarray) -> np.ndarray:
    """(P, n-1, 4) coefficients c0..c3 of s = c0 + c1 u + c2 u^2 + c3 u^3 on each segment (u = x - node_j),
    linear in (values, slopes): the same formula differentiates them (surface_fit)."""
    nd = np.asarray(nodes, dtype=np.float64)
    h = np.diff(nd)
    v = np.asarray(values, dtype=np.float64)
    d = np.asarray(slopes, dtype=np.float64)
    dl = (v[..., 1:] - v[..., :-1]) / h
    c2 = (3 * dl - 2 * d[..., :-1] - d[..., 1:]) / h
    c3 = (d[..., :-1] + d[..., 1:] - 2 * dl) / (h * h)
    return np.stack([v[..., :-1], d[..., :-1], c2, c3], axis=-1)


def monotone_levels(base: float, pillar_tau: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """Levels whose ATM total variance (base m)^2 tau is non-decreasing across pillars (running maximum)."""
    tau = np.asarray(pillar_tau, dtype=np.float64)
    W = (base * np.asarray(levels, dtype=np.float64)) ** 2 * tau
    return np.sqrt(np.maximum.accumulate(W) / tau) / base


@dataclass(frozen=True)
class Surface:
    base: float
    pillar_tau: np.ndarray  # (P,) years of variance time, increasing
    levels: np.ndarray  # (P,) after monotone_levels
    nodes: np.ndarray  # (n,)
    values: np.ndarray  # (P, n)
    coef: np.ndarray  # (P * (n - 1), 4): s = c0 + c1 d + c2 d^2 + c3 d^3, d = x - node_j
    wing: np.ndarray  # (P, 4): u_left, du/dx left, u_right, du/dx right (u = s^2)
    wing_cap: float
    W: np.ndarray  # (P,) ATM total variance at the pillars
    L2: np.ndarray  # (P,) (base m)^2

    @classmethod
    def build(cls, base: float, pillar_tau: Sequence[float], levels: Sequence[float], nodes: Sequence[float],
              values: Sequence[Sequence[float]], wing_cap: float = WING_SLOPE_CAP) -> Surface:
        tau = np.asarray(pillar_tau, dtype=np.float64).reshape(-1)
        if tau.size == 0 or np.any(np.diff(tau) <= 0) or tau[0] <= 0:
            raise ValueError("pillar_tau must be positive and strictly increasing")
        nd = np.asarray(nodes, dtype=np.float64)
        vals = np.asarray(values, dtype=np.float64).reshape(tau.size, nd.size)
        lev = monotone_levels(float(base), tau, np.asarray(levels, dtype=np.float64))
        slopes, _ = pchip_slopes(nd, vals)
        coef = hermite_coefficients(nd, vals, slopes)  # (P, n-1, 4)
        # the wings continue u = s^2 with the end slope of the cubic (a Hermite cubic's end slope is the node slope)
        wing = np.stack([vals[:, 0] ** 2, 2 * vals[:, 0] * slopes[:, 0], vals[:, -1] ** 2, 2 * vals[:, -1] * slopes[:, -1]], axis=1)
        L2 = (float(base) * lev) ** 2
        return cls(float(base), tau, lev, nd, vals, coef.reshape(-1, 4), wing, float(wing_cap), L2 * tau, L2)

    # ------------------------------------------------------------------ term structure

    @property
    def _intervals(self) -> tuple[np.ndarray, ...]:
        """Per interval i of tau (i = number of pillars <= tau): lo, hi, tau_lo, 1/span (0 outside the pillars)
        and w_atm = a + b tau (linear in total variance inside, flat level outside): a few takes per option."""
        got = self.__dict__.get("_intervals_cache")
        if got is None:
            P = self.pillar_tau.size
            i = np.arange(P + 1)
            lo, hi = np.maximum(i - 1, 0), np.minimum(i, P - 1)
            span = self.pillar_tau[hi] - self.pillar_tau[lo]
            inner = span > 0
            inv = np.where(inner, 1.0 / np.where(inner, span, 1.0), 0.0)
            slope = (self.W[hi] - self.W[lo]) * inv
            b = np.where(inner, slope, self.L2[lo])
            a = np.where(inner, self.W[lo] - self.pillar_tau[lo] * slope, 0.0)
            got = (lo, hi, self.pillar_tau[lo], inv, a, b)
            object.__setattr__(self, "_intervals_cache", got)
        return got

    def _bracket(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(interval, t, w_atm) per option: interval i = number of pillars <= tau (int16), the weight t of its
        upper pillar, ATM total variance. One comparison per pillar (a handful), one row gather."""
        shape = tau.shape
        tau = tau.reshape(-1)
        cnt = np.zeros(tau.shape, dtype=np.int16)  # small integers: the counting passes move 4x fewer bytes
        for pt in self.pillar_tau:  # per pillar (a handful), each a vectorised comparison
            cnt += tau >= pt
        row = self._interval_rows.take(cnt, axis=0)  # (N, 4): tau_lo, 1/span, a, b
        t = tau - row[:, 0]
        t *= row[:, 1]
        w_atm = row[:, 3] * tau
        w_atm += row[:, 2]
        return cnt.reshape(shape), t.reshape(shape), w_atm.reshape(shape)

    @property
    def _interval_rows(self) -> np.ndarray:
        got = self.__dict__.get("_interval_rows_cache")
        if got is None:
            _, _, tlo, inv, a, b = self._intervals
            got = np.ascontiguousarray(np.stack([tlo, inv, a, b], axis=1))
            object.__setattr__(self, "_interval_rows_cache", got)
        return got

    def _pillar(self, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(lo, hi, t, w_atm) per option: the bracketing pillars, the weight of hi, ATM total variance."""
        lo_t, hi_t = self._intervals[:2]
        cnt, t, w_atm = self._bracket(tau)
        return lo_t.take(cnt), hi_t.take(cnt), t, w_atm

    def atm_total_variance(self, tau: np.ndarray) -> np.ndarray:
        return self._pillar(np.asarray(tau, dtype=np.float64))[3]

    # ------------------------------------------------------------------ smile

    def total_variance(self, k: np.ndarray, tau: np.ndarray, scale2: np.ndarray | None = None) -> np.ndarray:
        """w(k, tau) (`scale2` = (base_i / base)^2 per option when the base differs by option: the ATM
        total variance scales with it, the smile is read at x = k / sqrt(w_atm)): the blend of the two bracketing pillars' smiles is taken on the cubic's coefficients
        (same segment j: the blend of two cubics is the cubic of the blended coefficients), one Horner pass."""
        k, tau = np.broadcast_arrays(np.asarray(k, dtype=np.float64), np.asarray(tau, dtype=np.float64))
        shape = k.shape
        k, tau = k.reshape(-1), tau.reshape(-1)
        cnt, t, w_atm = self._bracket(tau)
        if scale2 is not None:
            w_atm = w_atm * np.broadcast_to(np.asarray(scale2, dtype=np.float64), shape).reshape(-1)
        sw = np.sqrt(w_atm)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = k / sw
        nd = self.nodes
        xc = np.clip(x, nd[0], nd[-1])
        j = np.zeros(x.shape, dtype=np.int16)
        for node in nd[1:-1]:  # per inner node (a handful)
            j += xc >= node
        d = xc
        d -= nd.take(j)
        j += cnt * (nd.size - 1)  # row of (interval, segment) in the blend tables
        lo_c, diff_c = self._blend_tables
        a = lo_c.take(j, axis=0)  # (N, 4): the lower pillar's coefficients, one gather
        dc = diff_c.take(j, axis=0)  # the upper minus the lower pillar's, one gather
        dc *= t[:, None]
        a += dc  # the blended cubic (same segment: the blend of two cubics is the cubic of the blend)
        s = a[:, 3] * d
        s += a[:, 2]
        s *= d
        s += a[:, 1]
        s *= d
        s += a[:, 0]
        for side, idx in enumerate((np.flatnonzero(x < nd[0]), np.flatnonzero(x > nd[-1]))):  # the two wings
            if idx.size:
                s[idx] = self._wing_s(side, cnt.take(idx), x.take(idx), sw.take(idx), t.take(idx))
        w = w_atm * s
        w *= s  # w_atm s^2, in the same order as w_atm * s * s
        return w.reshape(shape)

    def _wing_s(self, side: int, interval: np.ndarray, x: np.ndarray, sqrt_w: np.ndarray, t: np.ndarray) -> np.ndarray:
        """s beyond the end node on `side` (0 left, 1 right): each bracketing pillar's wing, linear in u = s^2
        with its slope clipped to |dw/dk| <= wing_cap, blended with weight t."""
        row = self._wing_rows[side].take(interval, axis=0)  # (m, 4): u, du/dx of the lower and the upper pillar
        cap = self.wing_cap / sqrt_w  # du/dx bound from |dw/dk| <= cap
        lo_b, hi_b = (-cap, 0.0) if side == 0 else (0.0, cap)
        dx = x - self.nodes[-side]
        s_lo = np.sqrt(row[:, 0] + np.clip(row[:, 1], lo_b, hi_b) * dx)
        s_hi = np.sqrt(row[:, 2] + np.clip(row[:, 3], lo_b, hi_b) * dx)
        return (1 - t) * s_lo + t * s_hi

    @property
    def _wing_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Per interval of tau, for the left and the right wing: (u, du/dx) of the lower then the upper pillar."""
        got = self.__dict__.get("_wing_rows_cache")
        if got is None:
            lo_t, hi_t = self._intervals[:2]
            got = tuple(np.ascontiguousarray(np.concatenate([self.wing[lo_t, c:c + 2], self.wing[hi_t, c:c + 2]], axis=1))
                        for c in (0, 2))
            object.__setattr__(self, "_wing_rows_cache", got)
        return got  # type: ignore[return-value]

    @property
    def _blend_tables(self) -> tuple[np.ndarray, np.ndarray]:
        """Per (interval of tau, segment of x), row interval x (n - 1) + segment: the lower pillar's four
        cubic coefficients and the upper minus the lower pillar's (0 outside the pillars: lo = hi), so an
        option's blended cubic is two row gathers and one multiply-add."""
        got = self.__dict__.get("_blend_cache")
        if got is None:
            lo_t, hi_t = self._intervals[:2]
            n1 = self.nodes.size - 1
            c = self.coef.reshape(self.pillar_tau.size, n1, 4)
            lo_c = np.ascontiguousarray(c[lo_t].reshape(-1, 4))
            diff_c = np.ascontiguousarray((c[hi_t] - c[lo_t]).reshape(-1, 4))
            got = (lo_c, diff_c)
            object.__setattr__(self, "_blend_cache", got)
        return got

    def sigma(self, K: np.ndarray, F: np.ndarray, T: np.ndarray, tau: np.ndarray) -> np.ndarray:
        """Calendar-time Black-76 sigma = sqrt(w(ln K/F, tau) / T) (NaN where T <= 0)."""
        with np.errstate(divide="ignore", invalid="ignore"):
            k = np.log(np.asarray(K, dtype=np.float64) / np.asarray(F, dtype=np.float64))
            w = self.total_variance(k, np.maximum(np.asarray(tau, dtype=np.float64), 0.0))
            return np.sqrt(w / np.where(np.asarray(T) > 0, T, np.nan))

    def price(self, K: np.ndarray, F: np.ndarray, T: np.ndarray, tau: np.ndarray, is_call: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(sigma, coin price) per option, in cache-sized blocks; clean inputs (K, F, T, tau > 0) assumed."""
        K, F, T, tau = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (K, F, T, tau))
        c = np.asarray(is_call, dtype=bool).reshape(-1)
        n = K.size
        sig, px = np.empty(n), np.empty(n)
        for lo in range(0, n, BLOCK):  # cache-sized blocks, not options
            hi = min(lo + BLOCK, n)
            kk = K[lo:hi] / F[lo:hi]
            lk = np.log(kk)
            w = self.total_variance(lk, tau[lo:hi])
            s = np.sqrt(w)
            sig[lo:hi] = s / np.sqrt(T[lo:hi])
            d1 = -lk / s + 0.5 * s
            sg = np.where(c[lo:hi], 1.0, -1.0)
            wd1 = sg * d1
            px[lo:hi] = sg * (ndtr(wd1) - kk * ndtr(wd1 - sg * s))
        return sig, px


def sigma(K, F, T, tau, base, pillar_tau, levels, nodes, values) -> np.ndarray:  # type: ignore[no-untyped-def]
    """One-shot evaluator: Surface.build(...).sigma(K, F, T, tau)."""
    return Surface.build(base, pillar_tau, levels, nodes, values).sigma(K, F, T, tau)


# --------------------------------------------------------------------------- density condition


def durrleman_g(surface: Surface, x: np.ndarray, tau: np.ndarray, h: float = 1e-3) -> np.ndarray:
    """Durrleman's g(k) at (x, tau) grids (broadcast), k = x sqrt(w_atm(tau)), from w by central differences in k:
    g = (1 - k w'/(2w))^2 - w'^2/4 (1/w + 1/4) + w''/2 ; g >= 0 <=> non-negative density."""
    x, tau = np.broadcast_arrays(np.asarray(x, dtype=np.float64), np.asarray(tau, dtype=np.float64))
    sw = np.sqrt(surface.atm_total_variance(tau))
    k = x * sw
    dk = h * sw
    w0 = surface.total_variance(k, tau)
    wp = surface.total_variance(k + dk, tau)
    wm = surface.total_variance(k - dk, tau)
    w1 = (wp - wm) / (2 * dk)
    w2 = (wp - 2 * w0 + wm) / (dk * dk)
    return (1 - k * w1 / (2 * w0)) ** 2 - 0.25 * w1 * w1 * (1 / w0 + 0.25) + 0.5 * w2


# --------------------------------------------------------------------------- static-arbitrage checks


@dataclass(frozen=True)
class ArbReport:
    butterflies: int
    call_spreads: int
    calendars: int
    first: str | None  # one line naming the first violation, None when clean

    @property
    def total(self) -> int:
        return self.butterflies + self.call_spreads + self.calendars


def _coin_call(k_over_f: np.ndarray, w: np.ndarray) -> np.ndarray:
    s = np.sqrt(w)
    with np.errstate(divide="ignore", invalid="ignore"):
        d1 = -np.log(k_over_f) / s + 0.5 * s
    return ndtr(d1) - k_over_f * ndtr(d1 - s)


def _strike_checks(kf: np.ndarray, c: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along sorted strikes (K/F) with call prices c (F = 1): masks of call-spread and butterfly breaks.
    `same` marks consecutive pairs in the same smile. Returns (spread_bad per pair, fly_bad per triple, slope)."""
    dk = np.diff(kf)
    dc = np.diff(c)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = dc / dk
    spread_bad = same & ((dc > PRICE_TOL) | (slope < -1.0 - 1e-9))
    fly = np.diff(slope)
    scale = np.maximum(np.abs(slope[1:]), np.abs(slope[:-1]))
    # a butterfly in price units: fly x (half-width of the triple); rounding scale PRICE_TOL
    width = 0.5 * (dk[1:] + dk[:-1])
    fly_bad = same[1:] & same[:-1] & (fly * width < -PRICE_TOL - 1e-9 * scale * width)
    return spread_bad, fly_bad, slope


GRID_KF = (0.3, 3.0)
GRID_DAYS = (1.0, 365.0)
GRID_N_K = 301
GRID_N_T = 80


def grid_points() -> tuple[np.ndarray, np.ndarray]:
    """The dense check grid: K/F geometric in GRID_KF (GRID_N_K points), maturities geometric in GRID_DAYS
    (GRID_N_T points, years); `calreport price --grid` prints the same grid."""
    return np.geomspace(GRID_KF[0], GRID_KF[1], GRID_N_K), np.geomspace(GRID_DAYS[0], GRID_DAYS[1], GRID_N_T) / DAYS_PER_YEAR


def grid_violations(surface: Surface | TotalVariance) -> ArbReport:
    """Butterflies, call spreads and calendars on the dense grid (grid_points): `surface` or any w(k, t)
    (t variance or calendar time: the clock is monotone, so calendar order is the same in either)."""
    w_of = surface.total_variance if isinstance(surface, Surface) else surface
    kf, tau = grid_points()
    K, TT = np.meshgrid(np.log(kf), tau)  # (n_t, n_k)
    w = w_of(K, TT)
    c = _coin_call(np.exp(K), w)
    # rows (maturities) are independent: one vectorised pass over the whole grid
    dk = np.diff(kf)[None, :]
    dc = np.diff(c, axis=1)
    slope = dc / dk
    spread = (dc > PRICE_TOL) | (slope < -1.0 - 1e-9)
    width = 0.5 * (dk[:, 1:] + dk[:, :-1])
    fly = np.diff(slope, axis=1) * width < -PRICE_TOL
    cal = np.diff(w, axis=0) < -CAL_TOL * np.maximum(w[1:], 1.0)
    first = None
    if spread.any():
        i, j = np.argwhere(spread)[0]
        first = f"call spread at {tau[i] * DAYS_PER_YEAR:.2f}d K/F {kf[j]:.4f}-{kf[j + 1]:.4f}: dC {dc[i, j]:+.3e}"
    elif fly.any():
        i, j = np.argwhere(fly)[0]
        first = f"butterfly at {tau[i] * DAYS_PER_YEAR:.2f}d K/F {kf[j + 1]:.4f}: {np.diff(slope, axis=1)[i, j] * width[0, j]:+.3e} coin"
    elif cal.any():
        i, j = np.argwhere(cal)[0]
        first = f"calendar at K/F {kf[j]:.4f} between {tau[i] * DAYS_PER_YEAR:.2f}d and {tau[i + 1] * DAYS_PER_YEAR:.2f}d: w {w[i, j]:.5f} -> {w[i + 1, j]:.5f}"
    return ArbReport(int(fly.sum()), int(spread.sum()), int(cal.sum()), first)


def chain_violations(surface: Surface | TotalVariance, F: np.ndarray, K: np.ndarray, tau: np.ndarray, expiry: np.ndarray,
                     names: Sequence[str] | None = None) -> ArbReport:
    """The same checks on the listed strikes of a chain (each (expiry, strike) once), model prices at the
    listed forward: butterflies and call spreads across neighbouring listed strikes of an expiry; calendars
    between each listed strike's K/F on its expiry and the same K/F on the next expiry."""
    w_of = surface.total_variance if isinstance(surface, Surface) else surface
    F, K, tau = (np.asarray(a, dtype=np.float64).reshape(-1) for a in (F, K, tau))
    e = np.asarray(expiry).reshape(-1)
    # each (expiry, strike) once, sorted by expiry then strike (its forward and tau: first occurrence)
    order = np.lexsort((K, e))
    _, first_idx = np.unique(np.stack([e[order].astype(np.float64), K[order]]), axis=1, return_index=True)
    idx = order[first_idx]
    ee, kk, ff, tt = e[idx], K[idx], F[idx], tau[idx]
    kf = kk / ff
    w = w_of(np.log(kf), tt)
    c = _coin_call(kf, w)
    same = ee[1:] == ee[:-1]
    spread_bad, fly_bad, slope = _strike_checks(kf, c, same)
    # calendars: next expiry's tau at the same K/F
    ue, ui = np.unique(ee, return_index=True)
    tau_u = tt[ui]
    nxt = np.searchsorted(ue, ee) + 1
    has = nxt < ue.size
    t_next = tau_u[np.minimum(nxt, ue.size - 1)] if ue.size else np.zeros(0)
    w_next = np.where(has, w_of(np.log(kf), np.where(has, t_next, 1.0)), np.inf)
    cal_bad = has & (w_next < w - CAL_TOL * np.maximum(w, 1.0))
    label = (lambda i: names[idx[i]]) if names is not None else (lambda i: f"expiry {ee[i]} K {kk[i]:g}")
    first = None
    if spread_bad.any():
        i = int(np.flatnonzero(spread_bad)[0])
        first = f"call spread {label(i)} / K {kk[i + 1]:g}: dC {c[i + 1] - c[i]:+.3e} coin"
    elif fly_bad.any():
        i = int(np.flatnonzero(fly_bad)[0])
        first = f"butterfly {label(i)} / {kk[i + 1]:g} / {kk[i + 2]:g}: slope {slope[i]:+.4f} -> {slope[i + 1]:+.4f}"
    elif cal_bad.any():
        i = int(np.flatnonzero(cal_bad)[0])
        first = f"calendar {label(i)} K/F {kf[i]:.4f}: w {w[i]:.6f} -> next expiry {w_next[i]:.6f}"
    return ArbReport(int(fly_bad.sum()), int(spread_bad.sum()), int(cal_bad.sum()), first)
