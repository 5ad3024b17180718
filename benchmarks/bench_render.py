"""Dashboard render time and index page size for 1k and 100k history rows.

The root is built by benchmarks.render_root.build_root (the dashboard's own generator: live runs,
apply events every 10th run, auto runs; JSONL written directly, as append_row would be far too slow
for 100k rows). Baseline: the straightforward page, every history row as a table row through one
Jinja template (autoescaped), parsed by history.read_history, timed in the same run.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jinja2

from benchmarks import Figure
from benchmarks.render_root import build_root
from calreport.model import AutoRun
from calreport.report.render import render_site
from calreport.store.history import append_row, read_history
from calreport.store.ids import new_run_id
from calreport.store.paths import Root
from calreport.store.query import HistoryCache

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


def run(quick: bool = False) -> list[Figure]:
    sizes = [1_000] if quick else [1_000, 100_000]
    figures = []
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
