"""The quoted surface: term structure, smile, wings, static-arbitrage checks and the variance clock (pure, fast).
The policy that applies it: tests/test_policy.py."""

from __future__ import annotations

from datetime import datetime, timezone

import numpy as np
import pytest
from scipy.stats import norm

from calreport.calibration.surface import (
    Surface,
    chain_violations,
    durrleman_g,
    grid_violations,
    monotone_levels,
    sigma,
    sqrt_time_pillars,
)
from calreport.calibration.varclock import clock_weights, variance_time

NODES = [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
SKEW = [1.45, 1.25, 1.12, 1.0, 0.98, 1.0, 1.15]
PILLARS = sqrt_time_pillars([(0, 7), (7, 30), (30, 90)])


def _surface(levels=(0.9, 0.95, 1.0), values=None, base=0.43) -> Surface:  # type: ignore[no-untyped-def]
    return Surface.build(base, PILLARS, levels, NODES, values or [SKEW] * 3)


def _ms(s: str) -> int:
    return int(datetime.fromisoformat(s).replace(tzinfo=timezone.utc).timestamp() * 1000)


def test_pillars_sit_at_the_band_midpoints_in_square_root_time() -> None:
    assert np.allclose(PILLARS * 365, [1.75, ((np.sqrt(7) + np.sqrt(30)) / 2) ** 2, ((np.sqrt(30) + np.sqrt(90)) / 2) ** 2])


def test_atm_total_variance_is_linear_between_pillars_and_flat_level_outside() -> None:
    s = _surface()
    W = (0.43 * np.array([0.9, 0.95, 1.0])) ** 2 * PILLARS
    mid = 0.5 * (PILLARS[0] + PILLARS[1])
    assert s.atm_total_variance(np.array([mid]))[0] == pytest.approx(0.5 * (W[0] + W[1]))
    assert s.atm_total_variance(np.array([0.001]))[0] == pytest.approx((0.43 * 0.9) ** 2 * 0.001)
    assert s.atm_total_variance(np.array([1.0]))[0] == pytest.approx((0.43 * 1.0) ** 2 * 1.0)


def test_falling_total_variance_is_fixed_by_raising_only_the_offending_pillar() -> None:
    lev = monotone_levels(0.43, PILLARS, np.array([1.3, 0.3, 1.0]))
    W = (0.43 * lev) ** 2 * PILLARS
    assert lev[0] == 1.3 and lev[2] == 1.0  # untouched where already monotone
    assert W[1] == pytest.approx(W[0])  # raised exactly to its predecessor's total variance
    assert np.all(np.diff(W) >= -1e-15)


def test_sigma_is_continuous_across_band_edges_at_fixed_moneyness() -> None:
    s = _surface(levels=(0.8, 1.1, 0.9))
    kf = np.geomspace(0.3, 3, 101)
    for edge in (7.0, 30.0, 90.0):
        a = s.sigma(kf, np.ones_like(kf), np.full(kf.size, (edge - 1e-6) / 365), np.full(kf.size, (edge - 1e-6) / 365))
        b = s.sigma(kf, np.ones_like(kf), np.full(kf.size, (edge + 1e-6) / 365), np.full(kf.size, (edge + 1e-6) / 365))
        assert np.max(np.abs(a - b)) * 100 < 1e-3


def test_smile_interpolates_nodes_without_overshoot_and_is_one_at_the_money() -> None:
    s = _surface(levels=(1.0, 1.0, 1.0))
    tau = PILLARS[1]
    atm = np.sqrt(s.atm_total_variance(np.array([tau])))[0]
    x = np.array(NODES)
    smile = np.sqrt(s.total_variance(x * atm, np.full(x.size, tau)) / s.atm_total_variance(np.full(x.size, tau)))
    assert np.allclose(smile, SKEW)
    xx = np.linspace(-1.5, -0.75, 50)  # monotone data between these nodes: no overshoot (PCHIP)
    sm = np.sqrt(s.total_variance(xx * atm, np.full(xx.size, tau)) / s.atm_total_variance(np.full(xx.size, tau)))
    assert np.all(np.diff(sm) <= 1e-12) and sm.max() <= 1.25 + 1e-12 and sm.min() >= 1.12 - 1e-12


def test_wings_are_linear_in_total_variance_with_slope_under_lees_bound() -> None:
    steep = [3.0, 2.0, 1.3, 1.0, 1.3, 2.0, 3.0]
    s = _surface(levels=(1.0, 1.0, 1.0), values=[steep] * 3, base=1.5)
    tau = np.full(200, PILLARS[2])
    k = np.linspace(3.0, 8.0, 200)  # far right wing
    w = s.total_variance(k, tau)
    slope = np.diff(w) / np.diff(k)
    assert np.allclose(slope, slope[0]) and 0 <= slope[0] <= 1.8 + 1e-9
    wl = s.total_variance(-k, tau)
    assert np.all(np.diff(wl) / np.diff(k) <= 1.8 + 1e-9)


def test_evaluator_matches_the_surface_and_has_no_nan_on_clean_inputs() -> None:
    rng = np.random.default_rng(1)
    n = 5000
    F = np.full(n, 90_000.0)
    K = F * np.exp(rng.normal(0, 0.4, n))
    T = rng.uniform(0.5, 400, n) / 365
    a = sigma(K, F, T, T, 0.43, PILLARS, [0.9, 0.95, 1.0], NODES, [SKEW] * 3)
    assert np.all(np.isfinite(a)) and np.all(a > 0)
    assert np.allclose(a, _surface().sigma(K, F, T, T))


def test_price_is_black76_at_the_quoted_sigma() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    F = np.full(n, 3000.0)
    K = F * np.exp(rng.normal(0, 0.3, n))
    T = rng.uniform(1, 100, n) / 365
    c = rng.random(n) < 0.5
    sig, px = _surface().price(K, F, T, T * 0.97, c)
    k, s = K / F, sig * np.sqrt(T)
    d1 = -np.log(k) / s + s / 2
    want = np.where(c, norm.cdf(d1) - k * norm.cdf(d1 - s), k * norm.cdf(s - d1) - norm.cdf(-d1))
    assert np.max(np.abs(px - want)) < 1e-12


def test_a_reasonable_skew_passes_every_grid_check_and_density_is_non_negative() -> None:
    s = _surface()
    rep = grid_violations(s)
    assert rep.total == 0 and rep.first is None
    x, t = np.meshgrid(np.linspace(-10, 10, 201), PILLARS)
    assert np.min(durrleman_g(s, x, t)) > -1e-6


def test_a_kinked_smile_is_caught_as_a_butterfly_and_named() -> None:
    kinked = [1.0, 1.0, 1.0, 1.0, 1.6, 1.0, 1.0]
    rep = grid_violations(_surface(values=[kinked] * 3))
    assert rep.butterflies > 0 and rep.first is not None and rep.first.startswith(("butterfly", "call spread"))


def test_a_falling_smile_across_pillars_is_caught_as_a_calendar() -> None:
    hi, lo = [2.5, 2.0, 1.4, 1.0, 1.2, 1.6, 2.0], [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    rep = grid_violations(_surface(levels=(1.0, 1.0, 1.0), values=[hi, lo, lo]))
    assert rep.calendars > 0 and "calendar" in (rep.first or "") or rep.butterflies + rep.call_spreads > 0


def test_chain_check_names_the_listed_butterfly() -> None:
    kinked = [1.0, 1.0, 1.0, 1.0, 1.8, 1.0, 1.0]
    s = _surface(values=[kinked] * 3)
    T = 14.0 / 365
    atm = np.sqrt(s.atm_total_variance(np.array([T])))[0]
    K = 90_000 * np.exp(np.linspace(-1.0, 2.0, 31) * atm)
    names = [f"BTC-X-{k:.0f}-C" for k in K]
    rep = chain_violations(s, np.full(K.size, 90_000.0), K, np.full(K.size, T), np.zeros(K.size, dtype=np.int64), names)
    assert rep.butterflies > 0 and "BTC-X-" in (rep.first or "")
    clean = chain_violations(_surface(), np.full(K.size, 90_000.0), K, np.full(K.size, T), np.zeros(K.size, dtype=np.int64))
    assert clean.total == 0


def test_clock_with_weight_one_is_calendar_time() -> None:
    now, exp = _ms("2025-12-13T15:43:00"), _ms("2025-12-19T08:00:00")
    assert variance_time(now, exp, 1.0) == pytest.approx((exp - now) / 86_400_000 / 365)


def test_clock_week_is_seven_variance_days_whatever_the_weight() -> None:
    now = _ms("2025-12-10T12:00:00")
    for ww in (0.0, 0.3, 0.7):
        assert variance_time(now, now + 7 * 86_400_000, ww) * 365 == pytest.approx(7.0)
    a, b = clock_weights(0.5)
    assert 5 * a + 2 * b == pytest.approx(7.0) and b == pytest.approx(0.5 * a)


def test_clock_shrinks_a_weekend_expiry_and_stretches_a_weekday_one() -> None:
    now = _ms("2025-12-13T15:43:00")  # Saturday
    monday, friday = _ms("2025-12-15T08:00:00"), _ms("2025-12-19T08:00:00")
    assert variance_time(now, monday, 0.5) * 365 < (monday - now) / 86_400_000 * 0.8
    assert variance_time(now, friday, 0.5) * 365 > (friday - now) / 86_400_000 * 0.99


def test_expiry_under_one_day_is_quoted_on_the_front_pillars_flat_level() -> None:
    now = _ms("2025-12-11T19:36:00")
    exp = _ms("2025-12-12T08:00:00")  # 0.52 calendar days
    tau = variance_time(now, exp, 0.5)
    T = (exp - now) / 86_400_000 / 365
    s = _surface()
    atm = s.sigma(np.array([1.0]), np.array([1.0]), np.array([T]), np.array([tau]))[0]
    assert atm == pytest.approx(0.43 * 0.9 * np.sqrt(tau / T))  # level m_front, re-timed by the clock
    assert np.isfinite(s.sigma(np.array([0.5, 2.0]), np.ones(2), np.full(2, T), np.full(2, tau))).all()


def test_the_fits_analytic_jacobian_equals_finite_differences() -> None:
    from calreport.calibration.surface_fit import _coef_jacobian, _w_jacobian

    rng = np.random.default_rng(0)
    m = np.array([0.9, 0.97, 1.02])
    V = np.array([SKEW, [1.3, 1.2, 1.1, 1.0, 0.97, 1.02, 1.2], [1.6, 1.3, 1.1, 1.0, 1.03, 1.1, 1.5]])
    k, tau = rng.uniform(-1.5, 1.5, 400), rng.uniform(0.5, 150, 400) / 365  # inside, between and beyond the pillars, wings
    build = lambda mm, vv: Surface.build(0.43, PILLARS, mm, NODES, vv, wing_cap=0.3)  # noqa: E731  (a low cap: capped wings too)
    S = build(m, V)
    w, J = _w_jacobian(S, *_coef_jacobian(np.array(NODES), V), k, tau)
    assert np.allclose(w, S.total_variance(k, tau), rtol=0, atol=1e-15)
    eps = 1e-6
    for i in range(3):
        mp = m.copy()
        mp[i] += eps
        assert np.max(np.abs((build(mp, V).total_variance(k, tau) - w) / eps - J[:, i])) < 1e-5
    for p in range(3):
        for i in (0, 1, 2, 4, 5, 6):  # the free nodes (x = 0 is fixed at 1)
            Vp = V.copy()
            Vp[p, i] += eps
            assert np.max(np.abs((build(m, Vp).total_variance(k, tau) - w) / eps - J[:, 3 + p * 7 + i])) < 1e-5, (p, i)


def test_our_pchip_is_scipys() -> None:
    from scipy.interpolate import PchipInterpolator

    from calreport.calibration.surface import hermite_coefficients, pchip_slopes

    rng = np.random.default_rng(1)
    v = 1 + rng.normal(0, 0.3, (50, 7))
    c = hermite_coefficients(np.array(NODES), v, pchip_slopes(np.array(NODES), v)[0])
    for row, coef in zip(v, c):
        assert np.allclose(PchipInterpolator(NODES, row).c[::-1].T, coef, rtol=1e-12, atol=1e-12)


def test_a_surface_with_static_arbitrage_is_never_applied_by_policy_or_force() -> None:
    from calreport.apply import decide_run, force_values
    from calreport.model import AppliedEntry, CalibrationConfig, LiveRun, Multipliers, Smile, SurfaceSpec

    kinked = Smile(nodes=NODES, global_=[1.0, 2.6, 0.6, 1.0, 0.6, 2.6, 1.0])
    spec = SurfaceSpec(pillars={"0-7d": 1.75, "7-30d": 16.4957, "30-90d": 55.9808}, weekend_weight=0.35, wing_slope_cap=1.8)
    values = Multipliers(global_=1.0, bands={"0-7d": 1.0, "7-30d": 1.0, "30-90d": 1.0}, smile=kinked, surface=spec)
    run = LiveRun(run_id="R", underlying="BTC", status="ok", samples=500, vega_sum=30.0, rv_source="manual", rv_7d=0.43,
                  recommended=values, smoothed=values)
    decided = decide_run(run, AppliedEntry(global_=1.0), CalibrationConfig(), "BTC")
    assert decided.decision == "hold" and decided.decision_reason.startswith("Realism failed: applied surface has static arbitrage")  # type: ignore[union-attr]
    refused = force_values(run, "BTC", CalibrationConfig(), allow_unrealistic=True)
    assert hasattr(refused, "reason") and "static arbitrage is never applied" in refused.reason  # type: ignore[union-attr]
