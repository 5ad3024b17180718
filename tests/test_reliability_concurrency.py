"""Concurrency: processes doing force-apply, policy applies and auto-run appends at the same time.

No history line is lost or torn, every apply saw the values the apply before it left (no lost
update), and at the end the YAML equals the last apply event of each underlying.
"""

from __future__ import annotations

import itertools
import os
import random

import pytest

from calreport.errors import RefusedError
from calreport.store.applied import apply_values, force_apply, read_applied
from calreport.store.history import append_row, read_history
from calreport.store.models import (
    ApplyEvent,
    AutoRun,
    DataQuality,
    LiveRun,
    Multipliers,
)
from calreport.store.paths import Root

PROCESSES = 6
OPS = 100
UNDERLYINGS = ("BTC", "ETH")


def _worker(root: Root, wid: int) -> dict[str, int]:
    rng = random.Random(wid)
    counts = {"live": 0, "force": 0, "policy": 0, "auto": 0}
    for op in range(OPS):
        u = rng.choice(UNDERLYINGS)
        tag = f"w{wid}-{op}"
        kind = rng.choice(["force", "policy", "auto"])
        g = round(rng.uniform(0.8, 1.4), 4)
        if kind == "force":
            append_row(
                root.live_history,
                LiveRun(schema_version=1, run_id=f"live-{tag}", ts="2025-12-11T10:16:00Z", underlying=u,
                        smoothed=Multipliers(global_=g, bands={"0-7d": g}), status="ok", decision="hold"),
            )
            counts["live"] += 1
            force_apply(root, u)  # the latest live run of u, whoever wrote it
            counts["force"] += 1
        elif kind == "policy":
            apply_values(root, u, Multipliers(global_=g), source="policy", run_id=f"pol-{tag}", reason="policy")
            counts["policy"] += 1
        else:
            append_row(
                root.auto_history,
                AutoRun(schema_version=1, run_id=f"auto-{tag}", ts="2025-12-11T10:20:00Z", underlying=u, multiplier=g,
                        data_quality=DataQuality(status="ok"), status="ok", reason="x" * rng.randint(0, 3000)),
            )
            counts["auto"] += 1
    return counts


@pytest.mark.slow
def test_parallel_applies_and_appends_lose_nothing_and_end_consistent(root, tmp_path):
    pids = []
    for wid in range(PROCESSES):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                counts = _worker(root, wid)
                (tmp_path / f"counts-{wid}").write_text(repr(counts))
            except BaseException as exc:  # noqa: BLE001
                (tmp_path / f"error-{wid}").write_text(f"{type(exc).__name__}: {exc}")
                code = 1
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, [p.read_text() for p in tmp_path.glob("error-*")]
    totals = {"live": 0, "force": 0, "policy": 0, "auto": 0}
    for wid in range(PROCESSES):
        for k, v in eval((tmp_path / f"counts-{wid}").read_text()).items():
            totals[k] += v

    live = read_history(root.live_history)
    auto = read_history(root.auto_history)
    assert live.skipped == 0 and auto.skipped == 0, "torn or interleaved lines"
    events = live.of_type(ApplyEvent)
    assert len(live.of_type(LiveRun)) == totals["live"]
    assert len(events) == totals["force"] + totals["policy"]
    assert len(auto.of_type(AutoRun)) == totals["auto"]
    assert len({r.run_id for r in auto.rows}) == totals["auto"]
    assert sum(1 for e in events if e.source == "force") == totals["force"]

    doc = read_applied(root)
    for u in UNDERLYINGS:
        chain = [e for e in events if e.underlying == u]
        if not chain:
            continue
        for before, after in itertools.pairwise(chain):  # serialised: each apply saw the previous one's result
            assert after.previous.global_ == before.applied.global_, f"lost update on {u}"
            assert after.previous_run_id == before.run_id
        last = chain[-1]
        entry = doc.entry(u)
        assert (entry.global_, entry.bands, entry.run_id, entry.source, entry.updated_at) == (
            last.applied.global_, last.applied.bands, last.run_id, last.source, last.ts
        )
    print(
        f"\nconcurrency: {PROCESSES} processes x {OPS} operations: {totals['force']} force-applies, "
        f"{totals['policy']} policy applies, {totals['auto']} auto runs, {totals['live']} live runs; "
        f"{len(live.rows) + len(auto.rows)} history lines, 0 torn"
    )


def test_force_apply_never_picks_an_auto_run(root):
    append_row(root.auto_history, AutoRun(schema_version=1, run_id="auto-1", underlying="BTC", multiplier=1.3, status="ok"))
    with pytest.raises(RefusedError):
        force_apply(root, "BTC")
