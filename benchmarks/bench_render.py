"""Dashboard render time and index page size for 1k and 100k history rows, and for 100k real auto runs.

The root is built by benchmarks.render_root.build_root (the dashboard's own generator: live runs,
apply events every 10th run, auto runs; JSONL written directly, as append_row would be far too slow
for 100k rows). Baseline: the straightforward page, every history row as a table row through one
Jinja template (autoescaped), parsed by history.read_history, timed in the same run.

Real auto runs: one `auto-calibrate` on the shared harvest (../shared/data, 14 days to 2025-12-13 16:00
UTC; skipped without it), its row replicated 100,000 times with a new run_id / ts / as_of each, as
today's writer stores it (detail in history/runs/, not in the row). Baseline: the same 100,000 runs
stored as auto-calibrate wrote them before (detail inline), rendered by the same code in the same run.
Each render is a fresh process (cold: no index cache, every page written; warm: the next one-shot). A cold
render of a long history parses it in one forked worker per CPU (store/history.py, the parallel cold scan):
its memory is given as the parent's and each worker's peak RSS and as the sampled peak of their summed
PSS (copy-on-write pages shared by parent and workers counted once); the target is judged on the latter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import jinja2

from benchmarks import Figure
from benchmarks.render_root import build_root
from calreport import jsonio
from calreport.commands.usecases import init as actions_init
from calreport.commands.workspace import Workspace
from calreport.model import AutoRun
from calreport.report.render import render_site
from calreport.store.history import append_row, dumps_row, read_history
from calreport.store.ids import new_run_id
from calreport.store.paths import Root
from calreport.store.query import HistoryCache
from calreport.timeutil import MS_PER_MIN, iso_ms

NAME = "render"
TARGET_S = 2.0
TARGET_BYTES = 2_000_000

_NAIVE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!doctype html><html><head><meta charset="utf-8"><title>calibration</title></head><body>
<table id="live"><tr><th>run</th><th>time</th><th>underlying</th><th>type</th><th>multiplier</th><th>MAE</th><th>vega MAE</th><th>samples</th><th>status</th><th>reason</th></tr>
{% for r in live %}<tr data-run-id="{{ r.run_id }}"><td>{{ r.run_id }}</td><td>{{ r.ts }}</td><td>{{ r.underlying }}</td><td>{{ r.type }}</td>
<td>{{ r.smoothed.global_ if r.smoothed is defined and r.smoothed else '' }}</td><td>{{ '%.2f' % r.mae_pct if r.mae_pct is defined and r.mae_pct is not none else '' }}</td>
<td>{{ '%.2f' % r.vega_weighted_mae_pct if r.vega_weighted_mae_pct is defined and r.vega_weighted_mae_pct is not none else '' }}</td>
<td>{{ r.samples if r.samples is defined else '' }}</td><td>{{ r.status if r.status is defined else '' }}</td><td>{{ r.reason }}</td></tr>
{% endfor %}</table>
<table id="auto">{% for r in auto %}<tr data-run-id="{{ r.run_id }}" data-status="{{ r.status }}" data-multiplier="{{ r.multiplier }}"><td>{{ r.ts }}</td><td>{{ r.underlying }}</td>
<td>{{ r.dte_min }}-{{ r.dte_max }}</td><td>{{ r.multiplier }}</td><td>{{ r.mae_pct }}</td><td>{{ r.samples }}</td><td>{{ r.reason }}</td></tr>
{% endfor %}</table></body></html>"""
)


def naive_render(root: Root) -> bytes:
    """Baseline: one page with every row."""
    live = read_history(root.live_history).rows
    auto = read_history(root.auto_history).rows
    return _NAIVE.render(live=live, auto=auto).encode("utf-8")


def _rows(root: Root) -> int:
    return sum(p.read_bytes().count(b"\n") for p in (root.live_history, root.auto_history))


def _fresh_process_render(root: Root) -> tuple[float, float]:
    """A one-shot render as the CLI does it after every write: a new interpreter, no in-memory state."""
    code = ("import sys, time; from calreport.store.paths import Root; from calreport.report.render import render_site; "
            "t = time.perf_counter(); render_site(Root(__import__('pathlib').Path(sys.argv[1]))); "
            "print(time.perf_counter() - t)")
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(root.path)], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1]), time.perf_counter() - t


def _served_render(root: Root) -> float:
    """What `calreport serve` pays per change: history cache warm, one auto run appended, re-render."""
    cache = HistoryCache()
    render_site(root, cache=cache)
    append_row(root.auto_history, AutoRun(schema_version=1, run_id=new_run_id(), ts="2030-01-01T00:00:00Z",
                                          underlying="BTC", multiplier=1.1, status="ok", reason="appended"))
    t = time.perf_counter()
    render_site(root, cache=cache)
    return time.perf_counter() - t


SHARED_HARVEST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-harvest-2025-12" / "BTC"
REAL_TARGET_COLD_S, REAL_TARGET_WARM_S, REAL_TARGET_MB = 2.0, 0.5, 300.0


def _real_auto_rows(tmp: Path) -> tuple[bytes, bytes] | None:
    """(the row today's auto-calibrate appends, the same run with its detail inline as before)."""
    from datetime import UTC, datetime

    from calreport.commands import usecases as actions

    if not SHARED_HARVEST.is_dir():
        return None
    root = Root(tmp / "real")
    ws = Workspace.open(root, renderer=None)
    actions.init(ws)
    d = root.harvest_dir("BTC")
    d.mkdir(parents=True, exist_ok=True)
    for f in sorted(SHARED_HARVEST.glob("*.jsonl.gz")):  # file links: nothing may write into ../shared
        (d / f.name).symlink_to(f.resolve())
    run = actions.run_auto_calibration(ws, "BTC", lookback="14d", as_of=datetime(2025, 12, 13, 16, tzinfo=UTC), compact=False)
    today = root.auto_history.read_bytes().splitlines()[-1]
    before = dumps_row(run.model_copy(update={"detail_file": None})).rstrip(b"\n")  # the full run, as rows were
    return today, before


def _replicated_root(path: Path, line: bytes, n: int) -> Root:
    """`n` copies of one auto row, each with its own run_id, ts and as_of (one minute apart)."""
    root = Root(path)
    actions_init(Workspace.open(root, renderer=None))
    row = jsonio.loads(line)
    t0, out = 1_765_000_000_000, bytearray()
    for i in range(n):
        ms = t0 + i * MS_PER_MIN
        row.update(run_id=new_run_id(ms), ts=iso_ms(ms), as_of=iso_ms(ms))
        if row.get("detail_file"):
            row["detail_file"] = f"history/runs/{row['run_id']}.json"
        out += jsonio.dumps(row) + b"\n"
    root.auto_history.write_bytes(bytes(out))
    return root


_ONE_SHOT = """
import json, resource, sys, time
from pathlib import Path
from calreport.store.paths import Root
from calreport.report.render import render_site
t, c = time.perf_counter(), time.process_time()
r = render_site(Root(Path(sys.argv[1])))
s, cpu = time.perf_counter() - t, time.process_time() - c
kb = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
ch = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"s": s, "cpu": cpu, "child_cpu": ch.ru_utime + ch.ru_stime, "mb": kb / 1024,
                  "workers_mb": [k / 1024 for k in r.scan_worker_peaks_kb]}))
"""


def _tree_pss_kb(pid: int) -> int:
    """Proportional set size of `pid` and its descendants (shared pages counted once in the sum)."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/smaps_rollup") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("Pss:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, StopIteration, ValueError):
            continue
    return total


def _render_process(root: Root) -> dict[str, Any]:
    """A one-shot render in a fresh interpreter: render_site seconds, its CPU time and its workers',
    the peak memory (VmHWM) of the process and of each history-scan worker it forked, and the
    peak of their summed proportional set size, sampled every 0.1 s from here (reading a process's
    smaps_rollup walks its page tables: sampled more often, this process slows the render it measures)."""
    # VmHWM, not ru_maxrss: Linux carries a parent's ru_maxrss across fork + exec, so the child would
    # report this (large) benchmark process's peak instead of its own
    proc = subprocess.Popen([sys.executable, "-c", _ONE_SHOT, str(root.path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, _tree_pss_kb(proc.pid))
        time.sleep(0.1)
    out, err = proc.communicate()
    if proc.returncode:
        raise RuntimeError(f"one-shot render failed: {err.strip().splitlines()[-1:] or proc.returncode}")
    got = json.loads(out.strip().splitlines()[-1])
    got["tree_pss_mb"] = peak / 1024
    return got


def _memory_note(r: dict[str, Any]) -> str:
    workers = r["workers_mb"]
    if not workers:
        return f"one process: peak RSS {r['mb']:.0f} MB"
    listed = " + ".join(f"{w:.0f}" for w in workers)
    return (f"peak RSS: parent {r['mb']:.0f} MB, {len(workers)} scan workers {listed} MB (sum {r['mb'] + sum(workers):.0f} MB, an "
            f"upper bound: the workers' peaks count the pages they share copy-on-write with the parent); sampled peak of "
            f"the processes' summed PSS {r['tree_pss_mb']:.0f} MB")


def real_auto_figures(n: int) -> list[Figure]:
    with tempfile.TemporaryDirectory(prefix="calreport-bench-render-real-") as tmp:
        rows = _real_auto_rows(Path(tmp))
        if rows is None:
            return []
        today, before = rows
        got = {}
        for label, line in (("today", today), ("before", before)):
            root = _replicated_root(Path(tmp) / label, line, n)
            size = root.auto_history.stat().st_size
            got[label] = (size, _render_process(root), _render_process(root))
            shutil.rmtree(root.path)
    (size, cold, warm), (b_size, b_cold, b_warm) = got["today"], got["before"]
    base = f"the same runs with the detail inline ({len(before):,} B a row, as written before)"
    cpu = f"CPU {cold['cpu']:.2f} s in the process + {cold['child_cpu']:.2f} s in its scan workers"
    return [
        Figure(name=f"history bytes per real auto run ({n:,} runs)", value=size / n, unit="B", baseline=b_size / n,
               baseline_label="detail inline, as written before", ratio=b_size / size,
               notes=[f"one auto-calibrate on the shared harvest (BTC, 14d to 2025-12-13 16:00 UTC): row {len(today):,} B "
                      f"+ its history/runs/<run_id>.json; history file {size / 1e6:.0f} MB vs {b_size / 1e6:.0f} MB"]),
        Figure(name=f"render_site cold, {n:,} real auto runs (fresh process, no caches, every page written)", value=cold["s"], unit="s",
               baseline=b_cold["s"], baseline_label=base, ratio=b_cold["s"] / cold["s"], target="< 2 s", met=cold["s"] < REAL_TARGET_COLD_S,
               notes=[f"{cpu}; {_memory_note(cold)} (before: {_memory_note(b_cold)})"]),
        Figure(name=f"render_site warm one-shot, {n:,} real auto runs (index cache, pages current)", value=warm["s"], unit="s",
               baseline=b_warm["s"], baseline_label="same, detail inline", ratio=b_warm["s"] / warm["s"], target="< 0.5 s",
               met=warm["s"] < REAL_TARGET_WARM_S, notes=[_memory_note(warm)]),
        Figure(name=f"peak memory of the cold render, {n:,} real auto runs (summed PSS of the render's processes, sampled)",
               value=cold["tree_pss_mb"], unit="MB", baseline=b_cold["tree_pss_mb"], baseline_label="same, detail inline",
               ratio=b_cold["tree_pss_mb"] / cold["tree_pss_mb"], target="< 300 MB", met=cold["tree_pss_mb"] < REAL_TARGET_MB,
               notes=[_memory_note(cold)]),
    ]


def run(quick: bool = False) -> list[Figure]:
    sizes = [1_000] if quick else [1_000, 100_000]
    figures = real_auto_figures(2_000 if quick else 100_000)
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="calreport-bench-render-") as tmp:
            root = build_root(Path(tmp) / "root", n // 2)
            rows = _rows(root)
            t = time.perf_counter()
            cold = render_site(root)
            cold_s = time.perf_counter() - t
            t = time.perf_counter()
            warm = render_site(root)
            warm_s = time.perf_counter() - t
            t = time.perf_counter()
            page = naive_render(root)
            base_s = time.perf_counter() - t
            fresh_s, fresh_wall = _fresh_process_render(root)
            served_s = _served_render(root)
            site = sum(p.stat().st_size for p in root.site_dir.rglob("*") if p.is_file())
            problems = cold.problems + warm.problems
        if problems:
            raise RuntimeError(f"render reported problems: {problems}")
        big = n >= 100_000
        parts = ", ".join(f"{k} {v:.3f} s" for k, v in cold.timings.items())
        figures += [
            Figure(name=f"render_site first ever (no caches, every page written), {rows:,} rows", value=cold_s, unit="s", baseline=base_s,
                   baseline_label="every row through one Jinja page", ratio=base_s / cold_s,
                   target="< 2 s" if big else "", met=cold_s < TARGET_S if big else None,
                   notes=[f"cold render: {parts}; warm one-shot re-render {warm_s:.2f} s ({warm.pages_written} of "
                          f"{warm.pages_total} history pages rewritten); whole site {site / 1e6:.1f} MB"]),
            Figure(name=f"render_site warm one-shot (as after every apply), {rows:,} rows", value=warm_s, unit="s",
                   baseline=base_s, baseline_label="every-row Jinja page", ratio=base_s / warm_s,
                   target="< 2 s" if big else "", met=warm_s < TARGET_S if big else None),
            Figure(name=f"`calreport render` in a fresh process (render_site part), {rows:,} rows", value=fresh_s, unit="s",
                   baseline=base_s, baseline_label="every-row Jinja page", ratio=base_s / fresh_s,
                   target="< 2 s" if big else "", met=fresh_s < TARGET_S if big else None,
                   notes=[f"whole process incl. interpreter start and imports: {fresh_wall:.2f} s"]),
            Figure(name=f"render_site in `serve` after one append (HistoryCache), {rows:,} rows", value=served_s, unit="s",
                   baseline=base_s, baseline_label="every-row Jinja page", ratio=base_s / served_s,
                   target="< 2 s" if big else "", met=served_s < TARGET_S if big else None),
            Figure(name=f"index.html size, {rows:,} history rows", value=cold.index_bytes, unit="B",
                   baseline=len(page), baseline_label="every-row page", ratio=len(page) / max(cold.index_bytes, 1),
                   target="< 2 MB" if big else "", met=cold.index_bytes < TARGET_BYTES if big else None),
        ]
    return figures
