"""Apply latency (lock + validate + YAML atomic write + fsync + history append), with and without
the dashboard re-render, and apply-to-engine latency through calreport.engine's hot reload.

Baseline: the I/O floor of an apply, the same YAML bytes written by store.files.atomic_write plus one
fsynced history line, with no lock, no validation and no parsing (two fsyncs are the bulk of it).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from benchmarks import Figure, median, percentile
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.engine import AppliedMultipliersWatcher
from calreport.model import Multipliers
from calreport.store.applied import apply_values, read_applied
from calreport.store.files import append_line, atomic_write
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

NAME = "apply"
TARGET_P99_S = 0.050
PACE_S = 0.05  # idle time before each paced apply (a trader or cron applies seconds apart, at most)


def _values(i: int) -> Multipliers:
    g = round(1.0 + 0.0001 * (i % 997 + 1), 4)  # a different value every apply, so every apply changes the file
    return Multipliers(global_=g, bands={"0-7d": round(g - 0.01, 4), "7-30d": round(g + 0.01, 4)})


def _apply(root: Root, i: int) -> None:
    apply_values(root, "BTC", _values(i), source="force", run_id=None, reason="benchmark apply")


def run(quick: bool = False) -> list[Figure]:
    n = 20 if quick else 200
    n_render = 10 if quick else 100
    figures = []
    with tempfile.TemporaryDirectory(prefix="calreport-bench-apply-") as tmp:
        root = Root(Path(tmp) / "root")
        actions.init(Workspace.open(root))
        _apply(root, 0)  # warm imports and caches
        floor, plain, rendered, engine_lat, after_return = [], [], [], [], []
        yaml_bytes = root.applied.read_bytes()
        scratch = Path(tmp) / "scratch"
        scratch.mkdir()
        for i in range(n):
            t = time.perf_counter()
            atomic_write(scratch / "applied_multipliers.yaml", yaml_bytes)
            append_line(scratch / "live_calibration.jsonl", b'{"type":"apply","bench":%d}\n' % i)
            floor.append(time.perf_counter() - t)
            t = time.perf_counter()
            _apply(root, i + 1)
            plain.append(time.perf_counter() - t)
        for i in range(n_render):
            t = time.perf_counter()
            _apply(root, n + i + 1)
            actions.rerender(Workspace.open(root))
            rendered.append(time.perf_counter() - t)
        paced_lat: list[float] = []
        with AppliedMultipliersWatcher(root) as engine:
            engine_kind = f"observer {engine.observer_kind}"
            for i in range(2 * n):
                paced = i >= n  # second half: one apply every ~PACE_S, as applies really arrive
                if paced:
                    time.sleep(PACE_S)
                v = engine.version
                t = time.perf_counter()
                _apply(root, 2 * n + i + 1)
                returned = time.perf_counter()
                if not engine.wait_for_version(v + 1, 5.0):
                    raise RuntimeError(f"engine did not reload within 5 s after apply {i}")
                seen = time.perf_counter()
                (paced_lat if paced else engine_lat).append(seen - t)
                if not paced:
                    after_return.append(seen - returned)
                expected = _values(2 * n + i + 1).global_
                if engine.multiplier_for("BTC", 100.0) != expected:  # outside every band: global
                    raise RuntimeError(f"engine sees {engine.multiplier_for('BTC', 100.0)}, applied {expected}")
        events = len(HistoryQuery.file_order(root, "apply", "BTC"))
        final = read_applied(root).entry("BTC").global_
    expected_events = 1 + n + n_render + (2 * n if engine_lat else 0)
    if events != expected_events:
        raise RuntimeError(f"{events} apply events in history, expected {expected_events}")
    floor_med = median(floor)
    figures.append(Figure(
        name=f"apply latency p99 ({n} applies)", value=percentile(plain, 99), unit="s",
        baseline=percentile(floor, 99), baseline_label="atomic write + fsynced line, no lock/validation",
        notes=[f"median {median(plain) * 1e3:.1f} ms (floor median {floor_med * 1e3:.1f} ms), max {max(plain) * 1e3:.1f} ms; "
               f"{events} apply events recorded, final global {final}"]))
    figures.append(Figure(
        name=f"apply latency median ({n} applies)", value=median(plain), unit="s", baseline=floor_med,
        baseline_label="I/O floor median"))
    figures.append(Figure(
        name=f"apply + render latency p99 ({n_render} applies)", value=percentile(rendered, 99), unit="s",
        baseline=percentile(plain, 99), baseline_label="apply alone p99",
        notes=[f"median {median(rendered) * 1e3:.1f} ms; the history grows to ~{expected_events} rows during the run"]))
    if engine_lat:
        figures.append(Figure(
            name=f"apply-to-engine latency p99, back to back ({n} applies, {engine_kind})", value=percentile(engine_lat, 99), unit="s",
            baseline=percentile(plain, 99), baseline_label="apply alone p99", target="< 50 ms",
            met=percentile(engine_lat, 99) < TARGET_P99_S,
            notes=[f"median {median(engine_lat) * 1e3:.1f} ms from calling apply to the engine serving the new value; "
                   f"after apply returned: median {median(after_return) * 1e3:.2f} ms, p99 {percentile(after_return, 99) * 1e3:.2f} ms"]))
        figures.append(Figure(
            name=f"apply-to-engine latency median, back to back ({n} applies)", value=median(engine_lat), unit="s",
            baseline=median(plain), baseline_label="apply alone median"))
        figures.append(Figure(
            name=f"apply-to-engine latency p99, {PACE_S * 1e3:.0f} ms idle between applies ({n} applies)",
            value=percentile(paced_lat, 99), unit="s", baseline=percentile(plain, 99), baseline_label="apply alone p99",
            target="< 50 ms", met=percentile(paced_lat, 99) < TARGET_P99_S,
            notes=[f"median {median(paced_lat) * 1e3:.1f} ms; back to back, the next apply starts the moment the engine "
                   "has reloaded, while the watcher still handles the previous apply's trailing events"]))
    else:
        figures.append(Figure(name="apply-to-engine latency", value=float("nan"), unit="s", target="< 50 ms",
                              met=False, notes=[engine_kind]))
    return figures
