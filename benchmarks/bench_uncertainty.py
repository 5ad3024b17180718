"""multiplier_se's bootstrap over expiries (calibration/uncertainty.py), vectorised vs refit one by one.

Vectorised: per-expiry objective sums on one grid of m, every draw's objective as a matrix
product, a parabola per draw. Baseline (same run): the straightforward way, one bounded fit
(fit.fit_multiplier, grid + Brent) on the replicated quotes of each draw. Both use the same
seeded expiry counts, so the notes also give how far the two standard errors are apart.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np

from benchmarks import Figure, best_time
from benchmarks.bench_calibrate import T_SNAPSHOT, full_chain_market
from calreport.calibration.fit import fit_multiplier, market_iv, vega_weights
from calreport.calibration.select import select_quotes
from calreport.calibration.uncertainty import bootstrap_se, price_terms
from calreport.market.deribit import load_snapshot
from calreport.market.quotes import QuoteArrays
from calreport.market.sample import write_json
from calreport.model import CalibrationConfig

NAME = "uncertainty"
REAL_SNAPSHOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots" / "BTC-2025-12-13T1543Z.json"


def _inputs(snapshot: Path, rv: float) -> tuple:  # type: ignore[type-arg]
    rows, meta = load_snapshot(snapshot, "BTC")
    cfg = CalibrationConfig()
    sel = select_quotes(QuoteArrays.from_rows(rows), meta.now_ms, cfg.filters, "BTC")
    q = sel.quotes
    w = vega_weights(q.underlying_price, q.strike, sel.T, market_iv(q, sel.T), rv)
    return sel, w


def _loop_se(sel, w, rv: float, draws: int, seed: int) -> float:  # type: ignore[no-untyped-def]
    q = sel.quotes
    keys = np.unique(q.expiry_ms)
    counts = np.random.default_rng(seed).multinomial(keys.size, np.full(keys.size, 1.0 / keys.size), size=draws)
    per_quote = counts[:, np.searchsorted(keys, q.expiry_ms)]
    ms = [
        fit_multiplier(q.underlying_price, q.strike, sel.T, q.is_call, q.mark_price, rv, w * c).multiplier
        for c in per_quote  # one full fit per draw: the baseline
    ]
    return float(np.std(np.array(ms, dtype=float), ddof=1))


def _measure(label: str, snapshot: Path, rv: float, draws: int) -> list[Figure]:
    sel, w = _inputs(snapshot, rv)
    q = sel.quotes

    def vectorised() -> float | None:
        terms = price_terms(q.underlying_price, q.strike, sel.T, q.is_call, q.mark_price, rv, w)
        return bootstrap_se(terms, w, q.expiry_ms, bounds=(0.5, 3.0), draws=draws, seed=11)[0]

    se_vec = vectorised()
    vec_s = best_time(vectorised, repeat=5)
    loop_holder: list[float] = []
    base_s = best_time(lambda: loop_holder.append(_loop_se(sel, w, rv, draws, 11)), repeat=1)
    se_loop = loop_holder[-1]
    note = (f"{sel.n} quotes over {np.unique(q.expiry_ms).size} expiries, {draws} draws; se vectorised "
            f"{se_vec:.5f} vs one fit per draw {se_loop:.5f}")
    return [Figure(name=f"multiplier_se bootstrap, {label}", value=vec_s, unit="s", baseline=base_s,
                   baseline_label=f"{draws} fits one by one", ratio=base_s / vec_s, target="-", met=None, notes=[note])]


def run(quick: bool = False) -> list[Figure]:
    draws = 40 if quick else 400
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="calreport-bench-unc-") as tmp:
        market = full_chain_market(T_SNAPSHOT)
        snap = write_json(Path(tmp) / "snapshot.json", market.snapshot_payload(T_SNAPSHOT))
        figures += _measure("generated chain", snap, market.vol_regime(T_SNAPSHOT), draws)
        if REAL_SNAPSHOT.is_file() and not quick:
            figures += _measure("real snapshot BTC-2025-12-13T1543Z (RV 0.45)", REAL_SNAPSHOT, 0.45, draws)
    if not math.isfinite(figures[0].value):
        raise RuntimeError("uncertainty benchmark produced no timing")
    return figures
