"""Concurrency: processes doing force-apply, policy applies and auto-run appends at the same time.

No history line is lost or torn, every apply saw the values the apply before it left (no lost
update), and at the end the YAML equals the last apply event of each underlying.
"""

from __future__ import annotations

import itertools
import os
import random

import pytest
from foundation_helpers import force_apply

from calreport.errors import RefusedError
from calreport.model import (
    ApplyEvent,
    AutoRun,
    DataQuality,
    LiveRun,
    Multipliers,
)
from calreport.store.applied import apply_values, read_applied
from calreport.store.history import append_row, read_history
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

PROCESSES = 6
OPS = 100
UNDERLYINGS = ("BTC", "ETH")


def _worker(root: Root, wid: int) -> dict[str, int]:
    rng = random.Random(wid)
    counts = {"live": 0, "force": 0, "noop": 0, "policy": 0, "auto": 0}
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
            try:
                force_apply(root, u)  # the latest live run of u, whoever wrote it
            except RefusedError as exc:  # another worker force-applied that same run first: a no-op, refused
                if not str(exc).startswith("already applied"):
                    raise
                counts["noop"] += 1
            else:
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
    totals = {"live": 0, "force": 0, "noop": 0, "policy": 0, "auto": 0}
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


# --------------------------------------------------------------------------- two live calibrations at once


def test_two_concurrent_calibrations_run_one_after_the_other_under_the_apply_lock(tmp_path, monkeypatch):
    """Both runs reach the apply transaction at once (a barrier holds them at its door). A live run
    reads the applied values, measures, decides and writes under the lock, so the two cannot both
    be measured at, smoothed from or decided against the same stale values: whichever takes the
    lock second is tested at the first one's applied value, continues the first one's EWMA and is
    decided against what the first one wrote."""
    import threading

    from test_calibrate import synth_rows, write_snapshot

    from calreport.commands import usecases
    from calreport.commands.workspace import Workspace
    from calreport.store import applied as applied_store

    root = Root(tmp_path / "root")
    usecases.init(Workspace.open(root))
    # per-run smoothing and a fixed 25 % cap, over a 1.0 applied by a run (the untouched defaults would take a fit whole)
    cfg = root.calibration_config
    text = cfg.read_text().replace("smoothing: {alpha: 0.3, half_life_hours: 0.5}", "smoothing: {alpha: 0.3, half_life_hours: null}")
    cfg.write_text(text.replace("max_rel_step: 0.1,", "max_rel_step: 0.25,").replace("max_step_se: 6.0", "max_step_se: 0.0"))
    from tests.foundation_helpers import apply_flat_surface_seed

    apply_flat_surface_seed(root)  # of the configured quoting model (the surface), so the EWMA continues from it
    # smoothed = 0.3 x recommended + 0.7 x 1.0: 1.55 -> 1.165 (+16.5 %), 0.72 -> 0.916 (-8.4 %)
    # (recommended values inside the realism range: realism judges the recommended value too)
    snaps = {m: write_snapshot(tmp_path / f"s{m}.json", synth_rows(rv=0.45, multiplier=m)) for m in (1.55, 0.72)}
    barrier = threading.Barrier(2, timeout=30)
    real_transaction = applied_store.transaction

    def transaction_after_both_evaluated(*args, **kwargs):  # type: ignore[no-untyped-def]
        barrier.wait()
        return real_transaction(*args, **kwargs)

    monkeypatch.setattr(applied_store, "transaction", transaction_after_both_evaluated)
    runs, errors = {}, []

    def calibrate(m: float) -> None:
        try:
            runs[m] = usecases.run_live_calibration(Workspace.open(root, renderer=None), "BTC", snaps[m], rv=0.45)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=calibrate, args=(m,)) for m in snaps]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    events = HistoryQuery.file_order(root, "apply", "BTC")[1:]  # after the seed
    assert len(events) == 2, [e.reason for e in events]
    first_run, second_run = (next(r for r in runs.values() if r.run_id == e.run_id) for e in events)
    assert first_run.smoothed_from == "applied" and first_run.multiplier_tested == 1.0
    assert first_run.smoothed.global_ in (0.916, 1.165)  # 0.3 x recommended + 0.7 x 1.0
    # the second run saw what the first one left: its applied value and its smoothed value
    assert second_run.multiplier_tested == events[0].applied.global_
    assert second_run.smoothed_from == f"run {first_run.run_id}"

    # a step beyond max_rel_step is capped, never held; the second decision is taken
    # against the first one's applied value (under the lock), so it is capped against that
    events = HistoryQuery.file_order(root, "apply", "BTC")[1:]
    assert len(events) == 2, [e.reason for e in events]
    first, second = events
    assert first.previous.global_ == 1.0 and second.previous.global_ == first.applied.global_
    max_step = applied_store.load_config(root).policy.max_rel_step
    for e in events:  # every value the engine ever moved to was one allowed step from the one before
        assert abs(e.applied.global_ - e.previous.global_) / e.previous.global_ <= max_step + 1e-12
    assert read_applied(root).entry("BTC").global_ == second.applied.global_
    applied_run = next(r for r in runs.values() if r.run_id == first.run_id)
    # the rows on disk carry the decisions taken under the lock, each row before its apply event
    assert {r.run_id: r.decision for r in HistoryQuery.file_order(root, "live", "BTC")} == {r.run_id: r.decision for r in runs.values()}
    kinds = [(row.type, row.run_id) for row in read_history(root.live_history).rows]
    assert kinds.index(("live_run", applied_run.run_id)) < kinds.index(("apply", applied_run.run_id))
