"""Implied-vol inversion throughput and accuracy vs a plain vectorised bisection.

Inputs are exact Black-76 prices of options with |standardised moneyness| = |ln(K/F)| / (sigma sqrt T)
<= 3, so the true vol is known and the max abs error is a correctness check, not just a speed one.
"""

from __future__ import annotations

import numpy as np

from benchmarks import Figure, best_time
from calreport.calibration.pricing import black76_price, implied_vol

NAME = "iv"
TARGET_RATE = 1.5e6
TARGET_ERROR = 1e-10
BISECTION_STEPS = 48  # (10 - 1e-4) / 2^48 < 1e-13: as accurate as the solver, given enough steps


def iv_inputs(n: int, seed: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    F = rng.uniform(2_000.0, 120_000.0, n)
    T = rng.uniform(1 / 365, 1.0, n)
    sigma = rng.uniform(0.1, 2.0, n)
    z = rng.uniform(-3.0, 3.0, n)
    K = F * np.exp(z * sigma * np.sqrt(T))
    is_call = rng.random(n) < 0.5
    price = black76_price(F, K, T, sigma, is_call)
    return {"price": price, "F": F, "K": K, "T": T, "is_call": is_call, "sigma": sigma}


def bisection_iv(price, F, K, T, is_call, lo: float = 1e-4, hi: float = 10.0, steps: int = BISECTION_STEPS) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The baseline: bisection on sigma, every option at once (price is increasing in sigma)."""
    a = np.full(price.shape, lo)
    b = np.full(price.shape, hi)
    for _ in range(steps):  # over iterations, not options
        m = 0.5 * (a + b)
        low = black76_price(F, K, T, m, is_call) < price
        a = np.where(low, m, a)
        b = np.where(low, b, m)
    return 0.5 * (a + b)


def run(quick: bool = False) -> list[Figure]:
    n = 20_000 if quick else 100_000
    d = iv_inputs(n)
    args = (d["price"], d["F"], d["K"], d["T"], d["is_call"])
    warm = iv_inputs(100)
    implied_vol(warm["price"], warm["F"], warm["K"], warm["T"], warm["is_call"])  # build the guess tables untimed
    t = best_time(lambda: implied_vol(*args), repeat=5 if quick else 7)
    err = float(np.max(np.abs(implied_vol(*args) - d["sigma"])))
    t_base = best_time(lambda: bisection_iv(*args), repeat=1 if quick else 3)
    base_err = float(np.max(np.abs(bisection_iv(*args) - d["sigma"])))
    rate, base_rate = n / t, n / t_base
    return [
        Figure(
            name=f"IV inversion throughput, {n:.0e} options",
            value=rate,
            unit="options/s",
            baseline=base_rate,
            baseline_label=f"vectorised bisection, {BISECTION_STEPS} steps",
            target=">= 1.5M/s",
            met=rate >= TARGET_RATE if not quick else None,
        ),
        Figure(
            name=f"IV max abs error vs true vol, {n:.0e} options",
            value=err,
            unit="vol",
            baseline=base_err,
            baseline_label="bisection max abs error",
            ratio=None,
            target="<= 1e-10",
            met=err <= TARGET_ERROR,
            notes=["|ln(K/F)| / (sigma sqrt T) <= 3, sigma 0.1-2.0, T 1 day - 1 year, calls and puts"],
        ),
    ]
