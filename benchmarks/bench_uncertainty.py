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


def _calibrate_seconds(snapshot: Path, underlying: str, rv: float, **fit: object) -> float:
    """Wall time of one `calreport calibrate` from a fresh root with these fit settings."""
    import contextlib
    import io
    import time

    import yaml

    from calreport.commands.cli import main

    with tempfile.TemporaryDirectory(prefix="calreport-bench-refit-") as root:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            main(["--root", root, "init"])
            cfg_file = Path(root) / "config" / "calibration.yaml"
            cfg = yaml.safe_load(cfg_file.read_text())
            cfg["fit"].update(fit)
            cfg_file.write_text(yaml.safe_dump(cfg))
            t0 = time.perf_counter()
            main(["--root", root, "calibrate", "--underlying", underlying, "--snapshot", str(snapshot), "--rv", str(rv)])
            return time.perf_counter() - t0


def _measure_refit(snapshot: Path, underlying: str, rv: float) -> Figure:
    """The surface's own uncertainty, opt-in (fit.surface_se wild: the wild cluster bootstrap's design) vs the opt-in
    resampling refit at 24 draws, and the default's (the flat fit's SE) time: the wall time of one calibrate each."""
    from calreport.calibration.uncertainty import wild_design

    wild_s = min(_calibrate_seconds(snapshot, underlying, rv, surface_se="wild") for _ in range(2))
    resample_s = min(_calibrate_seconds(snapshot, underlying, rv, refit_draws=24) for _ in range(2))
    flat_s = min(_calibrate_seconds(snapshot, underlying, rv) for _ in range(2))
    runs = wild_design(8).shape[0]
    return Figure(name=f"calibrate with fit.surface_se wild (the surface's wild cluster bootstrap), {snapshot.stem}", value=wild_s, unit="s",
                  baseline=resample_s, baseline_label="same calibrate, fit.refit_draws 24 (resampling refit)", ratio=resample_s / wild_s,
                  target="-", met=None,
                  notes=[f"{runs} design refits (8 expiries) vs 24 draws; each = one surface fit + one global smile fit; "
                         f"the default config (fit.surface_se flat, no refit): {flat_s * 1000:.0f} ms"])


def run(quick: bool = False) -> list[Figure]:
    draws = 40 if quick else 400
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory(prefix="calreport-bench-unc-") as tmp:
        market = full_chain_market(T_SNAPSHOT)
        snap = write_json(Path(tmp) / "snapshot.json", market.snapshot_payload(T_SNAPSHOT))
        figures += _measure("generated chain", snap, market.vol_regime(T_SNAPSHOT), draws)
        if REAL_SNAPSHOT.is_file() and not quick:
            figures += _measure("real snapshot BTC-2025-12-13T1543Z (RV 0.45)", REAL_SNAPSHOT, 0.45, draws)
    if not quick:
        for name, und, rv in (("BTC-2025-12-11T1936Z", "BTC", 0.43), ("ETH-2025-12-11T1936Z", "ETH", 0.60), ("BTC-2025-12-13T1543Z", "BTC", 0.43)):
            snap = REAL_SNAPSHOT.parent / f"{name}.json"
            if snap.is_file():
                figures.append(_measure_refit(snap, und, rv))
    if not math.isfinite(figures[0].value):
        raise RuntimeError("uncertainty benchmark produced no timing")
    return figures
