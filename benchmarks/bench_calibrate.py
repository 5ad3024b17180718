"""One live calibration of a full chain (global + per-band fits), in memory and end to end.

In memory: rows already parsed -> the pure core, calibration.live.evaluate_live (QuoteArrays,
ATM IV, filters, evaluation at the applied multipliers, global/band/type fits, EWMA, realism, the
policy, the quote-level detail). End to end: the use case commands.usecases.run_live_calibration,
with its workspace (config read once), snapshot read, RV from a chart file, detail file, history
append and, when the policy says so, the apply (no re-render). Baseline: the same fits by the same grid + Brent search, pricing one option at a time in
pure Python (what a straightforward implementation costs).
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from benchmarks import Figure, best_time
from benchmarks.bench_pricing import loop_price
from calreport.calibration.bands import band_index
from calreport.calibration.fit import GRID_POINTS, market_iv, vega_weights
from calreport.calibration.live import LiveEvaluation, evaluate_live
from calreport.calibration.select import Selection, select_quotes
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.market.deribit import load_snapshot
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import RealisedVol
from calreport.market.sample import SampleMarket, write_json
from calreport.model import AppliedEntry, CalibrationConfig
from calreport.store.applied import read_applied
from calreport.store.config import load_config
from calreport.store.paths import Root

NAME = "calibrate"
TARGET_S = 0.050
REAL_SNAPSHOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots" / "BTC-2025-12-11T1936Z.json"
T_SNAPSHOT = 1_765_481_760_000  # 2025-12-11T19:36Z, like the real snapshot
FULL_CHAIN = 700


def full_chain_market(now_ms: int, n_options: int = FULL_CHAIN, start_ms: int | None = None, end_ms: int | None = None) -> SampleMarket:
    """The sample BTC market with enough strikes per expiry for a Deribit-sized chain at now_ms."""
    start = now_ms - 86_400_000 if start_ms is None else start_ms
    end = now_ms + 86_400_000 if end_ms is None else end_ms
    probe = SampleMarket("BTC", start, end)
    size = probe.chain(now_ms)["price"].size
    per = max(5, round(probe.spec.strikes_per_expiry * n_options / size) | 1)
    return SampleMarket("BTC", start, end, strikes_per_expiry=per)


def in_memory_run(rows: list[dict[str, Any]], now_ms: int, rv: float, cfg: CalibrationConfig, applied: AppliedEntry) -> LiveEvaluation:
    """The pure core on parsed rows: the whole run and its detail, no file I/O."""
    return evaluate_live(
        QuoteArrays.from_rows(rows), underlying="BTC", now_ms=now_ms, rv=RealisedVol(rv, 0, "manual"),
        applied=applied, previous=(applied.multipliers(), "applied"), config=cfg, run_id="bench",
        snapshot_file="snapshot.json", detail_file="history/runs/bench.json",
    )


def loop_fits(sel: Selection, rv: float, cfg: Any) -> list[float]:
    """Baseline: the same fits (global, each band, calls, puts) by the same search as fit_multiplier
    (the same geometric grid, then bounded Brent around the best point), but pricing one option at
    a time in pure Python."""
    q = sel.quotes
    w_all = vega_weights(q.underlying_price, q.strike, sel.T, market_iv(q, sel.T), rv)
    band = band_index(sel.dte, cfg.bands)
    groups = [np.ones(sel.n, dtype=bool)] + [band == i for i in range(len(cfg.bands))] + [q.is_call, ~q.is_call]
    lo, hi = cfg.fit.min_mult, cfg.fit.max_mult
    out = []
    for mask in groups:  # the baseline's loops are the point: per group, per multiplier, per option
        if int(mask.sum()) < cfg.fit.band_min_samples:
            continue
        F, K, T, c, mark, w = (a[mask].tolist() for a in (q.underlying_price, q.strike, sel.T, q.is_call, q.mark_price, w_all))
        wsum = sum(w)

        def objective(m: float) -> float:
            syn = loop_price(F, K, T, [rv * m] * len(F), c)
            return sum(abs(s - p) / p * wi for s, p, wi in zip(syn, mark, w)) / wsum * 100.0

        grid = np.geomspace(lo, hi, GRID_POINTS)  # the same grid as fit_multiplier
        values = [objective(float(m)) for m in grid]
        i = int(np.argmin(values))
        a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
        out.append(float(minimize_scalar(objective, bounds=(a, b), method="bounded", options={"xatol": 1e-6}).x))
    return out


def _measure(label: str, root: Root, snapshot: Path, *, prices: Path | None, rv: float, runs: int) -> list[Figure]:
    rows, meta = load_snapshot(snapshot, "BTC")
    cfg = load_config(root)  # read once, outside the timing, like a command's workspace
    applied = read_applied(root, cfg).entry("BTC")
    sel = select_quotes(QuoteArrays.from_rows(rows), meta.now_ms, cfg.filters, "BTC")

    mem_s = best_time(lambda: in_memory_run(rows, meta.now_ms, rv, cfg, applied), repeat=max(5, runs // 2))
    base_s = best_time(lambda: loop_fits(sel, rv, cfg), repeat=1 if runs < 10 else 2)
    whole = []
    for _ in range(runs):
        t = time.perf_counter()
        ws = Workspace.open(root, renderer=None)  # a command's workspace: config read once per run
        run = actions.run_live_calibration(ws, "BTC", snapshot, prices=prices, rv=None if prices else rv)
        whole.append(time.perf_counter() - t)
    whole_med = statistics.median(whole)
    note = (f"{len(rows)} quotes, {sel.n} after filters; last run: status {run.status}, decision {run.decision}, "
            f"recommended {run.recommended.global_ if run.recommended else None} "
            f"bands {dict(run.recommended.bands) if run.recommended else {}}; whole run min {min(whole) * 1e3:.1f} ms, "
            f"max {max(whole) * 1e3:.1f} ms over {runs} runs")
    return [
        Figure(name=f"live calibration in memory, {label}", value=mem_s, unit="s", baseline=base_s,
               baseline_label="same fits, per-option Python loop", ratio=base_s / mem_s,
               target="< 50 ms", met=mem_s < TARGET_S, notes=[note]),
        Figure(name=f"run_live_calibration incl. I/O (median), {label}", value=whole_med, unit="s", baseline=mem_s,
               baseline_label="in-memory part", ratio=whole_med / mem_s, target="< 50 ms", met=whole_med < TARGET_S),
    ]


def run(quick: bool = False) -> list[Figure]:
    runs = 5 if quick else 30
    figures = []
    with tempfile.TemporaryDirectory(prefix="calreport-bench-cal-") as tmp:
        root = Root(Path(tmp) / "gen")
        actions.init(Workspace.open(root))
        market = full_chain_market(T_SNAPSHOT)
        snap = write_json(Path(tmp) / "snapshot.json", market.snapshot_payload(T_SNAPSHOT))
        chart = write_json(Path(tmp) / "chart.json", market.chart_payload(T_SNAPSHOT))
        rv = market.vol_regime(T_SNAPSHOT)
        figures += _measure("generated chain", root, snap, prices=chart, rv=rv, runs=runs)
        if REAL_SNAPSHOT.is_file() and not quick:
            real_root = Root(Path(tmp) / "real")
            actions.init(Workspace.open(real_root))
            figures += _measure("real snapshot BTC-2025-12-11T1936Z (RV 0.43 given)", real_root, REAL_SNAPSHOT,
                                prices=None, rv=0.43, runs=runs)
    if not math.isfinite(figures[0].value):
        raise RuntimeError("calibration benchmark produced no timing")
    return figures
