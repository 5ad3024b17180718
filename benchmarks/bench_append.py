"""Appends per second with 4 concurrent writer processes through history.append_row, and a check
that no line was lost, duplicated or torn.

Each writer appends rows tagged (writer, seq); afterwards every line must parse, and the set of
(writer, seq) must be exactly all of them. Baseline: one writer appending the same total alone
(the lock serialises writers, so concurrency should cost little, not multiply throughput).
"""

from __future__ import annotations

import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from benchmarks import Figure

NAME = "append"
WRITERS = 4


def _writer(path: str, writer: int, count: int, start: object, poll_s: float | None = None) -> None:
    from calreport.store import files, history
    from calreport.store.history import append_row

    if poll_s is not None:  # experiment only: what files.locked would give with a shorter poll interval
        from filelock import FileLock

        from calreport.store.paths import lock_path

        def locked(p: Path, timeout: float = files.LOCK_TIMEOUT_S) -> FileLock:
            p.parent.mkdir(parents=True, exist_ok=True)
            return FileLock(str(lock_path(p)), timeout=timeout, poll_interval=poll_s)

        history.locked = locked  # type: ignore[attr-defined] - the name append_row calls

    start.wait()  # type: ignore[attr-defined]
    for seq in range(count):
        append_row(Path(path), {"schema_version": 1, "type": "bench_append", "writer": writer, "seq": seq,
                                "reason": "x" * 200})


def verify(path: Path, writers: int, count: int) -> tuple[int, int, int]:
    """(lost, duplicated, unparseable) lines for `writers` x `count` expected rows."""
    seen: dict[tuple[int, int], int] = {}
    bad = 0
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            row = json.loads(line)
            key = (int(row["writer"]), int(row["seq"]))
        except (ValueError, KeyError, TypeError):
            bad += 1
            continue
        seen[key] = seen.get(key, 0) + 1
    expected = {(w, s) for w in range(writers) for s in range(count)}
    lost = len(expected - set(seen))
    dup = sum(c - 1 for c in seen.values()) + len(set(seen) - expected)
    return lost, dup, bad


def _run_writers(path: Path, writers: int, count: int, poll_s: float | None = None) -> float:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Event()
    procs = [ctx.Process(target=_writer, args=(str(path), w, count, start, poll_s)) for w in range(writers)]
    for p in procs:
        p.start()
    time.sleep(0.5 if writers > 1 else 0.2)  # let every process import calreport before the start signal
    t = time.perf_counter()
    start.set()
    for p in procs:
        p.join(120)
    elapsed = time.perf_counter() - t
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"writer exit codes {[p.exitcode for p in procs]}")
    return elapsed


def run(quick: bool = False) -> list[Figure]:
    count = 50 if quick else 500
    with tempfile.TemporaryDirectory(prefix="calreport-bench-append-") as tmp:
        single = Path(tmp) / "single.jsonl"
        t1 = _run_writers(single, 1, WRITERS * count)
        lost1, dup1, bad1 = verify(single, 1, WRITERS * count)
        multi = Path(tmp) / "multi.jsonl"
        t4 = _run_writers(multi, WRITERS, count)
        lost, dup, bad = verify(multi, WRITERS, count)
        fast = Path(tmp) / "fast-poll.jsonl"
        t4f = _run_writers(fast, WRITERS, count, poll_s=0.002)
        lost_f, dup_f, bad_f = verify(fast, WRITERS, count)
    total = WRITERS * count
    rate, base = total / t4, total / t1
    return [
        Figure(name=f"appends/s, {WRITERS} concurrent writer processes ({total} rows)", value=rate, unit="rows/s",
               baseline=base, baseline_label="1 writer, same total",
               notes=[f"each append takes the file lock, writes one line and fsyncs; single writer: "
                      f"{lost1} lost, {dup1} duplicated, {bad1} torn"]),
        Figure(name=f"lost + duplicated + torn lines, {WRITERS} writers", value=lost + dup + bad, unit="lines",
               target="0", met=(lost + dup + bad) == 0,
               notes=[f"{lost} lost, {dup} duplicated, {bad} torn of {total}"]),
        Figure(name=f"(experiment) appends/s, {WRITERS} writers, lock poll 2 ms", value=total / t4f, unit="rows/s",
               baseline=rate, baseline_label="filelock default poll 50 ms",
               notes=[f"informational: files.locked with FileLock(poll_interval=0.002); {lost_f} lost, {dup_f} duplicated, "
                      f"{bad_f} torn"]),
    ]
