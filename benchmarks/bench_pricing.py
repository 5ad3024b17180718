"""Black-76 pricing throughput (options/s) vs a per-option `math.erf` loop.

The loop is what a straightforward implementation does; it is timed on a subsample and scaled
(it is linear in the number of options), so the 1e6 figure does not cost a minute of loop.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import ndtr

from benchmarks import Figure, best_time
from calreport.calibration.pricing import black76_price

NAME = "pricing"
TARGET_RATIO = 15.0
TARGET_RATE = 10e6
_SQRT1_2 = 1.0 / math.sqrt(2.0)


def chain_inputs(n: int, seed: int = 1) -> tuple[np.ndarray, ...]:
    """n options: forward 90k, strikes within +-3 standard deviations, 1 day - 1 year, 30-150% vol."""
    rng = np.random.default_rng(seed)
    F = np.full(n, 90_000.0)
    T = rng.uniform(1 / 365, 1.0, n)
    sigma = rng.uniform(0.3, 1.5, n)
    K = F * np.exp(rng.uniform(-3, 3, n) * sigma * np.sqrt(T))
    is_call = rng.random(n) < 0.5
    return F, K, T, sigma, is_call


def _ncdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x * _SQRT1_2))


def loop_price(F: list[float], K: list[float], T: list[float], sigma: list[float], is_call: list[bool]) -> list[float]:
    """The baseline: one option at a time in pure Python (coin units, as black76_price)."""
    out = []
    for f, k_, t, v, c in zip(F, K, T, sigma, is_call):
        k = k_ / f
        s = v * math.sqrt(t)
        d1 = -math.log(k) / s + 0.5 * s
        d2 = d1 - s
        out.append(_ncdf(d1) - k * _ncdf(d2) if c else k * _ncdf(-d2) - _ncdf(-d1))
    return out


def parity_price(F, K, T, sigma, is_call) -> np.ndarray:  # type: ignore[no-untyped-def]
    """Reference kernel (informational): the bare Black-76 coin price with one pair of ndtr calls,
    sign = +1 for calls and -1 for puts, and no input guards: the ceiling for black76_price here."""
    k = K / F
    s = sigma * np.sqrt(T)
    d1 = -np.log(k) / s + 0.5 * s
    sign = np.where(is_call, 1.0, -1.0)
    return sign * (ndtr(sign * d1) - k * ndtr(sign * (d1 - s)))


def run(quick: bool = False) -> list[Figure]:
    sizes = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    sub = 5_000 if quick else 50_000
    F, K, T, sigma, is_call = chain_inputs(sub)
    lists = [a.tolist() for a in (F, K, T, sigma, is_call)]
    loop_s = best_time(lambda: loop_price(*lists), repeat=3)
    loop_rate = sub / loop_s
    # correctness: the two implementations agree
    err = float(np.max(np.abs(np.array(loop_price(*lists)) - black76_price(F, K, T, sigma, is_call))))
    figures = []
    for n in sizes:
        args = chain_inputs(n)
        t = best_time(lambda: black76_price(*args), repeat=7 if n < 1_000_000 else 5)
        rate = n / t
        is_target = n == 1_000_000
        ratio = rate / loop_rate
        fig = Figure(
            name=f"pricing throughput, {n:.0e} options",
            value=rate,
            unit="options/s",
            baseline=loop_rate,
            baseline_label=f"math.erf loop ({sub} options, scaled)",
            ratio=ratio,
            target=">= 15x and >= 10M/s" if is_target else "",
            met=(ratio >= TARGET_RATIO and rate >= TARGET_RATE) if is_target else None,
            notes=[f"max |numpy - loop| price difference {err:.1e} coin"],
        )
        figures.append(fig)
    n = sizes[-1]
    args = chain_inputs(n)
    t = best_time(lambda: parity_price(*args), repeat=5)
    diff = float(np.max(np.abs(parity_price(*args) - black76_price(*args))))
    figures.append(Figure(
        name=f"(reference) bare one-sided ndtr kernel, no guards, {n:.0e} options", value=n / t, unit="options/s", baseline=loop_rate,
        baseline_label="math.erf loop", notes=[f"informational: the bare kernel without black76_price's input guards; max |difference| "
                                               f"from black76_price {diff:.1e}; ndtr (2 calls per option) is most of the time"]))
    return figures
