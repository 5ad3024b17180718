"""Crash injection: an apply loop SIGKILLed at random points, many times.

After every kill: the YAML parses and is exactly one complete state (old or new, never a mix), the
history has no torn line except possibly the last one, readers skip it, and the next append starts
a fresh line so the torn line stays a single skipped line in the middle.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from budget import reps
from calreport.model import ApplyEvent, Multipliers
from calreport.store import files as fsutil
from calreport.store.applied import apply_values, read_applied
from calreport.store.history import read_history
from calreport.store.paths import Root

KILLS = reps(60, 200)  # 200 in the long run (CALREPORT_LONG_TESTS=1)
APPLY_S_IDLE = 0.01  # one apply_values on an idle 2-core machine (seconds), the scale of the kill delays
VALUES = [1.0833, 0.9266, 1.2147, 1.05, 1.3333]


def _values(i: int) -> Multipliers:
    g = VALUES[i % len(VALUES)]
    bands = {"0-7d": round(g + 0.01, 4)} if i % 2 else {}
    return Multipliers(global_=g, bands=bands)


def _apply_forever(root: Root, start: int, slow: bool) -> None:
    """The victim: applies run-<i> for i = start, start+1, ... until killed."""
    if slow:  # write in tiny chunks so a kill often lands mid-write (torn temp files and torn lines)
        real_write = os.write

        def chunked(fd: int, data) -> int:  # type: ignore[no-untyped-def]
            time.sleep(0.0002)
            return real_write(fd, bytes(data[:16]))

        fsutil.os = _Proxy(write=chunked)  # type: ignore[attr-defined]
    i = start
    while True:
        apply_values(root, "BTC", _values(i), source="policy", run_id=f"run-{i}", reason=f"crash test {i}")
        i += 1


class _Proxy:
    """`os` with some functions replaced (only inside calreport.store.files)."""

    def __init__(self, **overrides) -> None:  # type: ignore[no-untyped-def]
        self.__dict__.update(overrides)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(os, name)


def _run_and_kill(root: Root, start: int, slow: bool, delay: float) -> None:
    pid = os.fork()
    if pid == 0:  # child
        code = 0
        try:
            _apply_forever(root, start, slow)
        except BaseException:  # noqa: BLE001
            code = 3
        finally:
            os._exit(code)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status), f"the apply loop died on its own (status {status}) instead of being killed"


@pytest.mark.slow
def test_sigkill_at_random_points_never_leaves_a_mixed_yaml_or_a_torn_middle_line(root):
    rng = random.Random(20251211)
    t0 = time.perf_counter()
    apply_values(root, "BTC", _values(0), source="policy", run_id="run-0", reason="crash test 0")
    # kill delays are spread over a few applies' time as this machine runs them now: on a loaded
    # machine fixed delays ended most children before their first write, and no line was ever torn
    load = max(1.0, (time.perf_counter() - t0) / APPLY_S_IDLE)
    next_i = 1
    known_torn: set[int] = set()  # line numbers of lines torn by earlier kills (then repaired by appends)
    interrupted_after_yaml = 0
    torn_seen = 0
    k = -1
    while (k := k + 1) < KILLS or (torn_seen == 0 and k < 4 * KILLS):  # kill on until a line was torn (the test's power)
        slow = k % 2 == 1
        _run_and_kill(root, next_i, slow, load * rng.uniform(0.0, 0.03 if not slow else 0.06))

        # the YAML is one complete state: it validates and its values are exactly those of its run
        doc = read_applied(root)
        entry = doc.entry("BTC")
        i = int(entry.run_id.removeprefix("run-"))
        expected = _values(i).rounded(4)
        assert (entry.global_, entry.bands) == (expected.global_, expected.bands), f"kill {k}: mixed YAML"
        assert doc.entry("ETH").source == "init"

        # history: unreadable lines are the ones torn by kills; only the newest may be a new one
        raw_lines = root.live_history.read_bytes().split(b"\n")
        last_lineno = len(raw_lines) if raw_lines[-1] else len(raw_lines) - 1
        read = read_history(root.live_history)
        new_torn = set(read.skipped_lines) - known_torn
        assert new_torn <= {last_lineno}, f"kill {k}: torn line(s) {sorted(new_torn)} not at the end ({last_lineno})"
        if new_torn:
            assert raw_lines[-1] != b"", "a torn line is an unterminated last line"
            torn_seen += 1
            known_torn |= new_torn

        # the YAML equals the last apply event, or is ahead of it (a kill between the YAML write and
        # its event, possibly in an earlier round); it is never behind history
        events = read.of_type(ApplyEvent)
        last_i = int(events[-1].run_id.removeprefix("run-"))
        assert i >= last_i, f"kill {k}: YAML {entry.run_id} is behind the last apply event run-{last_i}"
        if i > last_i and i >= next_i:
            interrupted_after_yaml += 1
        next_i = max(i, last_i) + 1

    # the next append after a torn line starts a fresh line: the torn lines stay single skipped lines
    apply_values(root, "BTC", _values(next_i), source="policy", run_id=f"run-{next_i}", reason="after the storm")
    final = read_history(root.live_history)
    assert set(final.skipped_lines) == known_torn
    assert final.of_type(ApplyEvent)[-1].run_id == f"run-{next_i}"
    assert read_applied(root).entry("BTC").run_id == f"run-{next_i}"
    leftovers = sorted(p.name for p in root.config_dir.glob(".applied_multipliers.yaml.*.tmp"))
    print(
        f"\ncrash injection: {k} SIGKILLs survived, {next_i} applies attempted, {torn_seen} torn last lines "
        f"(each repaired by the next append), {interrupted_after_yaml} kills between the YAML write and its event, "
        f"{len(leftovers)} temp files left by kills"
    )
    assert torn_seen > 0, "the chunked writer should have produced at least one torn line"
