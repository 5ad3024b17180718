"""`calreport backtest` over a week of 5-minute BTC harvest (~2k snapshots, ~1.4M rows): hourly
decisions, horizons 1h/6h/24h, two variants, against the same number of `calreport calibrate` calls.

The harvest is the first 7 days of bench_auto's generated 14-day harvest (calreport.market.sample,
a Deribit-sized chain), symlinked into a fresh root. The backtest is timed end to end through the
command's use case (harvest read from the columnar cache, replay, scoring, files and page written);
its cold read (JSONL parsed, cache built) is reported beside it. Baseline, same run: one
run_live_calibration (the use case behind `calreport calibrate`: snapshot file read, run, detail
file, history row, policy, apply; no re-render) per decision and variant, on snapshot files of the
same market at the decision times. Both use RV_7d 0.45 (--rv), so neither reads a price history.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import Figure
from benchmarks.bench_auto import START_MS, full_chain_market_range, harvest_root
from calreport.commands import backtest as backtest_cmd
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.market.sample import write_json
from calreport.store.paths import Root
from calreport.timeutil import MS_PER_DAY, MS_PER_HOUR, iso_ms, time_ms

NAME = "backtest"
TARGET_S = 60.0
RV = 0.45


def _root(base: Path, src: Path, days: int) -> Root:
    root = Root(base / "root")
    actions.init(Workspace.open(root, renderer=None))
    d = root.harvest_dir("BTC")
    d.mkdir(parents=True, exist_ok=True)
    for p in sorted((src / "data" / "harvest" / "BTC").glob("*.jsonl"))[:days]:
        (d / p.name).symlink_to(p)
    return root


def run(quick: bool = False) -> list[Figure]:
    days = 1 if quick else 7
    src = harvest_root(1 if quick else 14)
    first = START_MS + (2 if not quick else 0) * MS_PER_HOUR
    last = START_MS + days * MS_PER_DAY - (24 * MS_PER_HOUR if not quick else 12 * MS_PER_HOUR)
    with tempfile.TemporaryDirectory(prefix="calreport-bench-backtest-") as tmp:
        base = Path(tmp)
        root = _root(base, src, days)
        variant = base / "alpha1.yaml"
        variant.write_text("smoothing: {alpha: 1.0}\n")
        args = dict(start=iso_ms(first), end=iso_ms(last), every="1h", horizons="1h,6h,24h", variants=[f"alpha1={variant}"], rv=RV)
        t = time.perf_counter()
        backtest_cmd.run(Workspace.open(root, renderer=None), "BTC", **args, out=base / "cold")  # type: ignore[arg-type]
        cold = time.perf_counter() - t
        t = time.perf_counter()
        out = backtest_cmd.run(Workspace.open(root, renderer=None), "BTC", **args, out=base / "warm")  # type: ignore[arg-type]
        warm = time.perf_counter() - t
        s = out.summary
        runs = sum(v["runs"] for v in s.variants.values())
        decisions = [r for r in out.decisions if r["variant"] == "root" and r["snapshot_ts"] and not r["skipped"]]

        # baseline: the same number of `calreport calibrate` runs (use case, no re-render), two roots
        market = full_chain_market_range(START_MS, START_MS + 14 * MS_PER_DAY)
        snaps = []
        for r in decisions:
            ms = time_ms(r["snapshot_ts"])
            snaps.append(write_json(base / "snaps" / f"{ms}.json", market.snapshot_payload(int(ms))))  # type: ignore[arg-type]
        roots = [Root(base / f"cal{i}") for i in range(2)]
        for r0 in roots:
            actions.init(Workspace.open(r0, renderer=None))
        t = time.perf_counter()
        for r0 in roots:
            ws = Workspace.open(r0, renderer=None)
            for p in snaps:
                actions.run_live_calibration(ws, "BTC", p, rv=RV)
        calib = time.perf_counter() - t
    ratio = calib / warm
    scored = sum(v["horizons"][h]["iv_error_vp"]["n"] for v in s.variants.values() for h in s.horizons)
    note = (f"{s.rows:,} rows, {s.snapshots:,} snapshots read; {len(s.variants)} variants x {len(out.decisions) // len(s.variants)} "
            f"hourly decisions ({runs} live runs, {scored} scores over horizons {', '.join(s.horizons)}); applies "
            + ", ".join(f"{k} {v['applies']}" for k, v in s.variants.items())
            + f"; cold (JSONL parsed, columnar cache built) {cold:.1f} s; baseline {len(snaps) * 2} run_live_calibration calls "
            f"({calib / max(len(snaps) * 2, 1) * 1e3:.1f} ms each)")
    return [
        Figure(name=f"backtest, {'a week' if days == 7 else f'{days} d'} of 5-min harvest, {len(s.variants)} variants x 3 horizons (warm)", value=warm, unit="s",
               baseline=calib, baseline_label=f"{len(snaps) * 2} x calreport calibrate (use case, no render)", ratio=ratio,
               target="< 60 s", met=(warm < TARGET_S) if not quick else None, notes=[note]),
        Figure(name="backtest, the same run with a cold harvest read", value=cold, unit="s",
               baseline=warm, baseline_label="warm", target="", met=None),
    ]
