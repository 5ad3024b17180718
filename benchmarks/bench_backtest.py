"""`calreport backtest` over a week of 5-minute BTC harvest (~2k snapshots, ~1.4M rows): hourly
decisions, horizons 1h/6h/24h, two variants, against the same number of `calreport calibrate` calls.

The harvest is the first 7 days of bench_auto's generated 14-day harvest (calreport.market.sample,
a Deribit-sized chain), hard-linked into a fresh root and compacted to Parquet days (untimed setup),
as a week-old harvest is. The backtest is timed end to end through the command's use case (harvest
read, replay, scoring, files and page written); the same run over the uncompacted JSONL logs is
reported beside it. Baseline, same run: one
run_live_calibration (the use case behind `calreport calibrate`: snapshot file read, run, detail
file, history row, policy, apply; no re-render) per decision and variant, on snapshot files of the
same market at the decision times, with one BLAS thread as the backtest runs (the median of ten
calls with the BLAS's default threads is noted beside it). Both use RV_7d 0.45 (--rv), so neither
reads a price history. The default config fits the smile in every live run.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from benchmarks import Figure
from benchmarks.bench_auto import START_MS, full_chain_market_range, harvest_root
from calreport.commands import backtest as backtest_cmd
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.market.compact import compact_day
from calreport.market.harvest import list_days
from calreport.market.sample import write_json
from calreport.store.paths import Root
from calreport.timeutil import MS_PER_DAY, MS_PER_HOUR, iso_ms, time_ms

NAME = "backtest"
TARGET_S = 60.0
RV = 0.45


def _root(base: Path, name: str, src: Path, days: int, *, compact: bool) -> Root:
    """A fresh root whose harvest holds hard links to the first `days` generated day logs, compacted
    to Parquet days (what a week-old harvest is) or left as JSONL logs."""
    root = Root(base / name)
    actions.init(Workspace.open(root, renderer=None))
    d = root.harvest_dir("BTC")
    d.mkdir(parents=True, exist_ok=True)
    for p in sorted((src / "data" / "harvest" / "BTC").glob("*.jsonl"))[:days]:
        os.link(p, d / p.name)  # compaction removes its link, never the cached original
    if compact:
        for day in list_days(d):
            compact_day(d, day.date, "BTC")
    return root


def run(quick: bool = False) -> list[Figure]:
    days = 1 if quick else 7
    src = harvest_root(1 if quick else 14)
    first = START_MS + (2 if not quick else 0) * MS_PER_HOUR
    last = START_MS + days * MS_PER_DAY - (24 * MS_PER_HOUR if not quick else 12 * MS_PER_HOUR)
    with tempfile.TemporaryDirectory(prefix="calreport-bench-backtest-") as tmp:
        base = Path(tmp)
        t = time.perf_counter()
        root = _root(base, "pq", src, days, compact=True)
        compact_s = time.perf_counter() - t
        root_jsonl = _root(base, "jsonl", src, days, compact=False)
        variant = base / "alpha1.yaml"
        variant.write_text("smoothing: {alpha: 1.0}\n")
        args = dict(start=iso_ms(first), end=iso_ms(last), every="1h", horizons="1h,6h,24h", variants=[f"alpha1={variant}"], rv=RV)
        with threadpool_limits(limits=1):  # as every `calreport` command runs (cli.main)
            t = time.perf_counter()
            backtest_cmd.run(Workspace.open(root_jsonl, renderer=None), "BTC", **args, out=base / "cold")  # type: ignore[arg-type]
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
        roots = [Root(base / f"cal{i}") for i in range(3)]
        for r0 in roots:
            actions.init(Workspace.open(r0, renderer=None))
        t = time.perf_counter()
        with threadpool_limits(limits=1):  # as every `calreport` command runs (cli.main)
            for r0 in roots[:2]:
                ws = Workspace.open(r0, renderer=None)
                for p in snaps:
                    actions.run_live_calibration(ws, "BTC", p, rv=RV)
        calib = time.perf_counter() - t
        ws = Workspace.open(roots[2], renderer=None)
        default_threads = []
        for p in snaps[:10]:  # for reference: the BLAS's own thread count (what cli.main avoids)
            t = time.perf_counter()
            actions.run_live_calibration(ws, "BTC", p, rv=RV)
            default_threads.append(time.perf_counter() - t)
    ratio = calib / warm
    scored = sum(v["horizons"][h]["iv_error_vp"]["n"] for v in s.variants.values() for h in s.horizons)
    note = (f"{s.rows:,} rows, {s.snapshots:,} snapshots read; {len(s.variants)} variants x {len(out.decisions) // len(s.variants)} "
            f"hourly decisions ({runs} live runs, {scored} scores over horizons {', '.join(s.horizons)}); applies "
            + ", ".join(f"{k} {v['applies']}" for k, v in s.variants.items())
            + f"; from the JSONL logs instead {cold:.1f} s; compaction of the {days} days {compact_s:.1f} s (setup, untimed); baseline {len(snaps) * 2} run_live_calibration calls with one BLAS "
            f"thread ({calib / max(len(snaps) * 2, 1) * 1e3:.1f} ms each; with the BLAS's default threads, median of 10: "
            f"{statistics.median(default_threads) * 1e3:.1f} ms); default config (the smile is fitted in every run)")
    return [
        Figure(name=f"backtest, {'a week' if days == 7 else f'{days} d'} of 5-min harvest (Parquet days), {len(s.variants)} variants x 3 horizons", value=warm, unit="s",
               baseline=calib, baseline_label=f"{len(snaps) * 2} x calreport calibrate (use case, no render, one BLAS thread)", ratio=ratio,
               target="< 60 s", met=(warm < TARGET_S) if not quick else None, notes=[note]),
        Figure(name="backtest, the same run reading the JSONL logs", value=cold, unit="s",
               baseline=warm, baseline_label="from Parquet days", target="", met=None),
    ]
