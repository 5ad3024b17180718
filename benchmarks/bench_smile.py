"""Pricing with the smile: EngineView.price (sigma + Black-76) for 1e6 options, options/s.

Baseline, timed in the same run: the same options priced with the flat model (the band multiplier
lookup, today's path). The smile costs one band lookup (searchsorted on the band edges) and one
gathered interpolation on the shared node grid; the target is >= 10M options/s at 1e6 options.
"""

from __future__ import annotations

import numpy as np

from benchmarks import Figure, best_time
from calreport.calibration.pricing import black76_price
from calreport.calibration.smile import DEFAULT_NODES, smile_at
from calreport.engine import EngineView
from calreport.model import AppliedDocument, AppliedEntry, CalibrationConfig, Smile

NAME = "smile"
TARGET_RATE = 10e6
SKEW = {
    "global": [1.45, 1.25, 1.10, 1.0, 0.97, 1.0, 1.12],
    "0-7d": [1.36, 1.19, 1.09, 1.0, 0.98, 1.01, 1.15],
    "7-30d": [1.46, 1.26, 1.13, 1.0, 0.98, 1.0, 1.15],
    "30-90d": [1.48, 1.26, 1.10, 1.0, 0.96, 0.99, 1.15],
}


def view(smile: bool = True) -> EngineView:
    """An engine view with BTC at band multipliers and (optionally) a smile per band."""
    sm = Smile(nodes=list(DEFAULT_NODES), global_=SKEW["global"], bands={b: v for b, v in SKEW.items() if b != "global"})
    entry = AppliedEntry(global_=0.99, bands={"0-7d": 0.83, "7-30d": 0.96, "30-90d": 1.0}, smile=sm if smile else None)
    return EngineView(1, AppliedDocument(underlyings={"BTC": entry}), tuple(CalibrationConfig().bands), None, "bench")


def chain(n: int, seed: int = 2) -> tuple[np.ndarray, ...]:
    """n options: forward 90k, 1 day - 120 days (inside and beyond the bands), strikes +-3 sd."""
    rng = np.random.default_rng(seed)
    F = np.full(n, 90_000.0)
    T = rng.uniform(1 / 365, 120 / 365, n)
    K = F * np.exp(rng.uniform(-3, 3, n) * 0.45 * np.sqrt(T))
    is_call = K >= F
    return F, K, T, is_call


def reference_sigma(v: EngineView, K: np.ndarray, F: np.ndarray, T: np.ndarray, base: float) -> np.ndarray:
    """Per band, one np.interp (the straightforward way), to check the gathered interpolation."""
    entry = v.entry("BTC")
    assert entry is not None and entry.smile is not None
    m = v.multipliers_for("BTC", T * 365.0)
    dte = T * 365.0
    out = np.empty(T.size)
    labels = [b.name for b in v.bands]
    covered = np.zeros(T.size, dtype=bool)
    for b in v.bands:  # per band
        sel = (dte >= b.min_dte) & (dte < b.max_dte) & ~covered
        covered |= sel
        x = np.log(K[sel] / F[sel]) / (base * m[sel] * np.sqrt(T[sel]))
        out[sel] = base * m[sel] * smile_at(x, entry.smile.nodes, entry.smile.for_band(b.name if b.name in labels else None))
    rest = ~covered
    x = np.log(K[rest] / F[rest]) / (base * m[rest] * np.sqrt(T[rest]))
    out[rest] = base * m[rest] * smile_at(x, entry.smile.nodes, entry.smile.global_)
    return out


def run(quick: bool = False) -> list[Figure]:
    sizes = [10_000, 100_000] if quick else [100_000, 1_000_000]
    base = 0.43
    smile_view, flat_view = view(True), view(False)
    figures = []
    for n in sizes:
        F, K, T, is_call = chain(n)

        def with_smile() -> tuple[np.ndarray, np.ndarray]:
            return smile_view.price("BTC", K, F, T, is_call, base)  # the engine's quoting path

        def flat() -> np.ndarray:
            return black76_price(F, K, T, base * flat_view.multipliers_for("BTC", T * 365.0), is_call)

        repeat = 2 if quick else (7 if n < 1_000_000 else 5)  # quick: the smoke test checks it runs, not the rate
        t_flat = best_time(flat, repeat=repeat)
        t_smile = best_time(with_smile, repeat=repeat)
        t_sigma = best_time(lambda: smile_view.sigma("BTC", K, F, T, base), repeat=repeat)
        t_two = best_time(lambda: black76_price(F, K, T, smile_view.sigma("BTC", K, F, T, base), is_call), repeat=repeat)
        err = float(np.max(np.abs(smile_view.sigma("BTC", K, F, T, base) - reference_sigma(smile_view, K, F, T, base))))
        is_target = n == 1_000_000
        figures.append(Figure(
            name=f"pricing with the smile (EngineView.price: sigma + Black-76), {n:.0e} options",
            value=n / t_smile,
            unit="options/s",
            baseline=n / t_flat,
            baseline_label="flat model: band multiplier lookup + Black-76",
            target=">= 10M/s" if is_target else "",
            met=(n / t_smile >= TARGET_RATE) if is_target else None,
            notes=[
                f"EngineView.sigma alone {n / t_sigma / 1e6:.1f}M options/s; sigma then black76_price over the whole array "
                f"{n / t_two / 1e6:.1f}M options/s (EngineView.price does both in cache-sized blocks); "
                f"max |sigma - per-band np.interp| {err:.1e}"
            ],
        ))
    return figures
