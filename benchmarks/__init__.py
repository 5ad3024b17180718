"""Benchmarks: every figure is printed beside a baseline measured in the same run.

The machine is shared (two cores, other processes running), so absolute timings drift from run
to run; a ratio against a baseline timed seconds earlier on the same machine does not. Each
`bench_*` module exposes `NAME` and `run(quick: bool) -> list[Figure]`; `python -m benchmarks`
runs them and prints one table (`--write-results` also writes benchmarks/RESULTS.md).
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARKS = ("pricing", "smile", "surface", "iv", "calibrate", "auto", "render", "apply", "append", "history", "backtest", "uncertainty", "cli", "compact")
RESULTS_PATH = Path(__file__).with_name("RESULTS.md")
CACHE_DIR = Path("/tmp/calreport-bench-cache")  # generated inputs, keyed by their parameters


@dataclass
class Figure:
    """One measured number, its same-run baseline, and the target it is judged against.

    `ratio` is value / baseline unless given (for times, pass baseline / value so > 1 means faster).
    `met` is None when the figure has no target (context only).
    """

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_label: str = ""
    ratio: float | None = None
    target: str = ""
    met: bool | None = None
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.ratio is None and self.baseline:
            self.ratio = self.value / self.baseline


def fmt_value(x: float | None, unit: str = "") -> str:
    """Human-sized numbers: 12.3M/s, 41.2 ms, 1.93 MB."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if unit == "s":
        if x < 1e-3:
            return f"{x * 1e6:.0f} us"
        if x < 1:
            return f"{x * 1e3:.1f} ms"
        return f"{x:.2f} s"
    if unit == "B":
        return f"{x / 1e6:.2f} MB" if x >= 1e5 else f"{x / 1e3:.1f} kB"
    if unit.endswith("/s"):
        if x >= 1e6:
            return f"{x / 1e6:.2f}M {unit}"
        if x >= 1e3:
            return f"{x / 1e3:.1f}k {unit}"
        return f"{x:.0f} {unit}"
    if unit == "vol":
        return f"{x:.1e}"
    if unit == "lines":
        return f"{int(x)} {unit}"
    return f"{x:.4g} {unit}".strip()


def best_time(fn: Callable[[], object], *, repeat: int = 5, min_total: float = 0.0) -> float:
    """Minimum wall time of `fn()` over `repeat` calls (the least disturbed by the other core's load)."""
    times = []
    start = time.perf_counter()
    while len(times) < repeat or time.perf_counter() - start < min_total:
        gc.collect()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if len(times) >= 1000:
            break
    return min(times)


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile (p in 0..100): p99 of 200 samples is the 2nd largest."""
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100.0 * len(s)) - 1))
    return s[k]


def median(values: list[float]) -> float:
    return statistics.median(values)
