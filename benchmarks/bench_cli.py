"""CLI start-up: `calreport --help` and `calreport status` in a fresh process, against `python -c pass`.

Every command is a new process, so what the CLI imports before it does anything is paid by every
cron job, every test that runs the CLI, and every user typing `--help`. commands/cli.py imports a
command's modules inside its handler: `--help` should cost about what argparse costs, and `status`
what the model and the applied YAML cost, never scipy, pyarrow or the backtest.

Baseline: `python -c pass` timed in the same run (the interpreter's own start-up), so the ratio
says how many interpreter start-ups a command costs. Median of 10 runs each (5 with --quick).
Target: under 0.4 s each.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import Figure

NAME = "cli"
TARGET_S = 0.4
REPO = Path(__file__).resolve().parents[1]


def _median_run(argv: list[str], n: int, env: dict[str, str]) -> tuple[float, float]:
    """Median wall time and median CPU time (user + sys) of `argv` in a fresh process (one untimed
    run first: bytecode, page cache). The CPU time moves less than the wall time when the other
    core's load takes the CPU away from the process."""
    wall, cpu = [], []
    for i in range(n + 1):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, timeout=120, check=False)
        elapsed = time.perf_counter() - t
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv[1:])} exited {proc.returncode}: {proc.stderr.decode()[-300:]}")
        if i:
            wall.append(elapsed)
            cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(wall), statistics.median(cpu)


def run(quick: bool = False) -> list[Figure]:
    n = 5 if quick else 10
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's calreport, wherever it is installed
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="calreport-bench-cli-") as tmp:
        root = str(Path(tmp) / "root")
        subprocess.run([py, "-m", "calreport", "--root", root, "init"], cwd=REPO, env=env, capture_output=True, check=True)
        base, base_cpu = _median_run([py, "-c", "pass"], n, env)
        cases = {
            "--help": [py, "-m", "calreport", "--help"],
            "status": [py, "-m", "calreport", "--root", root, "status"],
        }
        measured = {label: _median_run(argv, n, env) for label, argv in cases.items()}
    return [
        Figure(
            f"CLI start-up, calreport {label}", value, "s", baseline=base, baseline_label="python -c pass",
            target=f"< {TARGET_S} s", met=value < TARGET_S,
            notes=[(f"median of {n} fresh processes: wall {value:.3f} s = {value / base:.1f}x `python -c pass` ({base:.3f} s); "
                   f"CPU (user+sys) {cpu:.3f} s vs {base_cpu:.3f} s; load average at the end {_load()}")],
        )
        for label, (value, cpu) in measured.items()
    ]


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
