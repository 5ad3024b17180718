"""Harvest days on Parquet: compaction, the errors sidecar, crash safety, the previous system's layout, import."""

from __future__ import annotations

import gzip
import json
import os
import random
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from budget import reps
from independent import copy_compacted_harvest
from calreport.commands.cli import main as cli_main
from calreport.commands.workspace import Workspace
from calreport.market import compact, harvest
from calreport.market import parquet as pqday
from calreport.market.compact import compact_closed_days, compact_day, import_harvest
from calreport.market.harvest import append_snapshot, load_harvest
from calreport.store.paths import Root

DEC11 = 1765440000000  # 2025-12-11T08:00:00Z
DAY11 = 1765411200000  # 2025-12-11T00:00:00Z
HOUR = 3_600_000
LATER = DEC11 + 10 * 86_400_000  # "now" for compaction: Dec 11 is long closed
FIELDS = ("code", "harvested_at", "expiry_ms", "strike", "is_call", *harvest.FLOAT_COLUMNS)


def row(name: str = "BTC-19DEC25-90000-C", ts: int = DEC11, mark: float = 0.02, fwd: float = 90000.0, **kw: Any) -> dict:
    r = {
        "instrument_name": name, "base_currency": "BTC", "quote_currency": "BTC", "mark_price": mark,
        "mark_iv": 45.0, "underlying_price": fwd, "bid_price": mark * 0.98, "ask_price": mark * 1.02,
        "mid_price": mark, "open_interest": 10.0, "volume": 1.0, "interest_rate": 0.0,
        "creation_timestamp": ts, "harvested_at": ts,
    }
    r.update(kw)
    return r


def chain(ts: int, n: int = 40, seed: int = 0) -> list[dict]:
    """A snapshot: n options (calls and puts over strikes), marks varying with time."""
    rng = random.Random(ts + seed)
    out = []
    for i in range(n):
        k = 80000 + 1000 * (i // 2)
        out.append(row(f"BTC-19DEC25-{k}-{'C' if i % 2 else 'P'}", ts, mark=round(0.001 + rng.random() * 0.05, 8)))
    return out


def lines_of(rows: list[dict | str]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in rows).encode()


def write_log(d: Path, data: bytes, name: str = "2025-12-11.jsonl") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / name
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return p


def frame(src: Any) -> harvest.HarvestFrame:
    return load_harvest(src, "BTC", 0, DEC11 * 2)


def assert_same(a: harvest.HarvestFrame, b: harvest.HarvestFrame) -> None:
    assert a.names.tolist() == b.names.tolist()
    for k in FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert (a.lines, a.schema_errors, a.bad_names) == (b.lines, b.schema_errors, b.bad_names)


def files(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if not p.name.endswith(".lock"))


# --------------------------------------------------------------------------- compaction


def test_compaction_writes_a_sorted_typed_zstd_day_and_keeps_every_rejected_line(tmp_path: Path) -> None:
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    rows = [r for t in (DEC11 + HOUR, DEC11) for r in chain(t, 6)]  # out of time order on purpose
    torn = '{"instrument_name": "BTC-19DEC25-9'
    write_log(d, lines_of([*rows, torn, row(name="BTC-PERPETUAL"), row(mark_price="0.02")]))
    before = frame(root)
    assert (before.schema_errors, before.bad_names, before.lines) == (2, 1, 15)

    rep = compact_closed_days(root, "BTC", LATER)
    assert [(r.date, r.rows, r.added, r.schema_errors, r.bad_names) for r in rep.done] == [("2025-12-11", 12, 12, 2, 1)]
    assert files(d) == ["2025-12-11.errors.json", "2025-12-11.parquet"]
    assert_same(frame(root), before)

    pf = pq.ParquetFile(d / "2025-12-11.parquet")
    assert pf.metadata.row_group(0).column(0).compression == "ZSTD"
    tbl = pf.read()
    assert tbl.schema.field("harvested_at").type == pa.timestamp("ms", tz="UTC")
    got = tbl.select(["harvested_at", "instrument_name"]).to_pylist()
    assert got == sorted(got, key=lambda r: (r["harvested_at"], r["instrument_name"]))
    first = tbl.slice(0, 1).to_pylist()[0]
    assert (first["strike"], first["option_type"]) == (80000.0, "call")
    assert first["expiry"].isoformat() == "2025-12-19T08:00:00+00:00"
    meta = pqday.read_meta(d / "2025-12-11.parquet")
    assert (meta["lines"], meta["schema_errors"], meta["bad_names"], meta["rows"]) == (15, 2, 1, 12)

    side = json.loads((d / "2025-12-11.errors.json").read_bytes())
    (entry,) = side["sources"].values()
    assert [(r["reason"], r["text"]) for r in entry["rejected"]] == [
        ("schema error", torn),
        ("bad name", json.dumps(row(name="BTC-PERPETUAL"))),
        ("schema error", json.dumps(row(mark_price="0.02"))),
    ]
    # the rows come back in the JSONL shape, every field kept (a string mark kept verbatim in `extra` too)
    back = pqday.read_rows(d / "2025-12-11.parquet")
    assert sorted(json.dumps(r, sort_keys=True) for r in back) == sorted(json.dumps(r, sort_keys=True) for r in rows)


def test_the_open_day_stays_a_log_and_compaction_twice_changes_nothing(tmp_path: Path) -> None:
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    write_log(d, lines_of(chain(DEC11)))
    assert compact_closed_days(root, "BTC", DEC11 + HOUR).done == []  # Dec 11 is today: still open
    assert files(d) == ["2025-12-11.jsonl"]
    assert len(compact_closed_days(root, "BTC", LATER).done) == 1
    data = (d / "2025-12-11.parquet").read_bytes()
    assert compact_closed_days(root, "BTC", LATER).done == []
    assert (d / "2025-12-11.parquet").read_bytes() == data


def test_reading_skips_row_groups_outside_the_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    write_log(d, lines_of([r for h in range(24) for r in chain(DAY11 + h * HOUR + 1, 20)]))
    monkeypatch.setattr(pqday, "ROW_GROUP_ROWS", 40)  # two snapshots per row group
    compact_closed_days(root, "BTC", LATER)
    assert pq.ParquetFile(d / "2025-12-11.parquet").metadata.num_row_groups == 12
    read: list[list[int]] = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(pq.ParquetFile, "read_row_groups", lambda self, g, **kw: read.append(list(g)) or real(self, g, **kw))
    f = load_harvest(root, "BTC", DAY11 + 5 * HOUR, DAY11 + 6 * HOUR + 10)
    assert read == [[2, 3]] and f.snapshot_times().tolist() == [DAY11 + 5 * HOUR + 1, DAY11 + 6 * HOUR + 1]
    assert f.lines == 24 * 20  # counts stay whole-file, as for a log


def test_a_log_left_beside_its_parquet_is_read_once_and_its_tail_is_new(tmp_path: Path) -> None:
    """Killed between replacing the Parquet file and removing the log: the footer says which bytes it holds."""
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    log = write_log(d, lines_of(chain(DEC11)))
    data = log.read_bytes()
    ref = frame(root)
    compact_closed_days(root, "BTC", LATER)
    log.write_bytes(data)  # the leftover
    assert_same(frame(root), ref)
    with open(log, "ab") as fh:  # and a snapshot appended to it after the crash
        fh.write(lines_of(chain(DEC11 + HOUR)))
    both = frame(root)
    assert len(both) == len(ref) + 40 and both.snapshot_times().tolist() == [DEC11, DEC11 + HOUR]
    compact_closed_days(root, "BTC", LATER)  # merges the tail, removes the log
    assert files(d) == ["2025-12-11.parquet"]
    assert_same(frame(root), both)


def test_appending_to_a_compacted_day_skips_a_snapshot_it_holds_and_merges_a_new_one(tmp_path: Path) -> None:
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    write_log(d, lines_of(chain(DEC11) + chain(DEC11 + HOUR)))
    compact_closed_days(root, "BTC", LATER)
    again = append_snapshot(root, "BTC", chain(DEC11), DEC11)  # a replayed old snapshot
    assert again.skipped_duplicate and files(d) == ["2025-12-11.parquet"]
    new = append_snapshot(root, "BTC", chain(DEC11 + 2 * HOUR), DEC11 + 2 * HOUR)
    assert new.rows == 40 and not new.skipped_duplicate
    f = frame(root)
    assert f.snapshot_times().tolist() == [DEC11, DEC11 + HOUR, DEC11 + 2 * HOUR] and len(f) == 120
    assert [p.name for p in f.files] == ["2025-12-11.parquet", "2025-12-11.jsonl"]
    compact_closed_days(root, "BTC", LATER)
    assert files(d) == ["2025-12-11.parquet"]
    assert_same(frame(root), f)


def test_a_gz_and_a_plain_log_of_one_day_compact_into_one_file(tmp_path: Path) -> None:
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    write_log(d, lines_of(chain(DEC11 + HOUR)), "2025-12-11.jsonl")
    write_log(d, lines_of(chain(DEC11)), "2025-12-11.jsonl.gz")
    ref = frame(root)
    (res,) = compact_closed_days(root, "BTC", LATER).done
    assert sorted(res.removed) == ["2025-12-11.jsonl", "2025-12-11.jsonl.gz"]
    assert_same(frame(root), ref)


def test_cli_harvest_compact_prints_each_day(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = Root(tmp_path)
    assert cli_main(["--root", str(root.path), "init"]) == 0
    write_log(root.harvest_dir("BTC"), lines_of([*chain(DEC11), "torn"]))
    capsys.readouterr()
    assert cli_main(["--root", str(root.path), "harvest", "compact", "--underlying", "BTC"]) == 0
    out = capsys.readouterr().out
    assert "BTC 2025-12-11: 40 rows -> data/harvest/BTC/2025-12-11.parquet" in out
    assert "1 schema errors kept in 2025-12-11.errors.json" in out
    assert cli_main(["--root", str(root.path), "harvest", "compact", "--underlying", "BTC"]) == 0
    assert "nothing to compact" in capsys.readouterr().out


# --------------------------------------------------------------------------- crash safety

ZYGOTE = r"""
import os, signal, sys
from pathlib import Path
from calreport.market import compact
print("ready", flush=True)
while line := sys.stdin.readline():
    d, target, later = line.rstrip("\n").split("\t")
    pid = os.fork()
    if pid == 0:  # the compaction: a process of its own, killed like any other
        try:
            if target:
                compact.CRASH_HOOK = lambda p: os.kill(os.getpid(), signal.SIGKILL) if p == target else None
            compact.compact_closed_days(Path(d), "BTC", int(later))
        except BaseException:
            import traceback
            traceback.print_exc()
            os._exit(1)
        os._exit(0)
    print(pid, flush=True)
    sys.stdin.readline()  # "reap": the test has killed it, or lets it finish
    print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), flush=True)
"""


def _crash_fixture(base: Path) -> Path:
    """Two days, each a .jsonl.gz plus a .jsonl, torn and foreign lines included (~12k rows)."""
    d = base / "BTC"
    for day, t0 in (("2025-12-10", DEC11 - 86_400_000), ("2025-12-11", DEC11)):
        early = [r for i in range(60) for r in chain(t0 + i * 300_000, 50)]
        late = [r for i in range(60, 120) for r in chain(t0 + i * 300_000, 50)]
        write_log(d, lines_of([*early, "torn{"]), f"{day}.jsonl.gz")
        write_log(d, lines_of([*late, row(name="ETH-19DEC25-3000-C", ts=t0)]), f"{day}.jsonl")
    return d


class Compactions:
    """Compaction subprocesses to SIGKILL: each is a fork of one interpreter that imported the
    compaction code once (a fresh interpreter per kill spent most of the test on imports). The
    fork is reaped only after the test's kill, so the pid it kills is never another process's."""

    def __init__(self, log: Path) -> None:
        self.log = log
        env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # no BLAS threads to fork
        with log.open("w") as err:
            self.p = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=err, text=True, env=env)
        assert self._line() == "ready", log.read_text()

    def _line(self) -> str:
        assert self.p.stdout is not None
        ready, _, _ = select.select([self.p.stdout], [], [], 60)
        assert ready, f"no answer from the compaction process in 60 s: {self.log.read_text()}"
        return self.p.stdout.readline().strip()

    def _send(self, text: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(text + "\n")
        self.p.stdin.flush()

    def start(self, d: Path, target: str = "") -> int:
        """A compaction of `d` starts now (killing itself at crash point `target`); its pid."""
        self._send(f"{d}\t{target}\t{LATER}")
        return int(self._line())

    def wait(self, pid: int) -> int:
        """Its exit code once it has ended: 0, or -SIGKILL."""
        self._send("reap")
        code = int(self._line())
        assert code in (0, -signal.SIGKILL), (pid, code, self.log.read_text())
        return code

    def close(self) -> None:
        assert self.p.stdin is not None and self.p.stdout is not None
        self.p.stdin.close()  # the interpreter ends at the end of its input
        assert self.p.wait(timeout=60) == 0, self.log.read_text()
        self.p.stdout.close()


def _check_after(d: Path, ref: harvest.HarvestFrame, ref_side: dict[str, Any]) -> None:
    """No row lost, none read twice; a completed compaction then leaves exactly the clean result."""
    assert_same(frame(d), ref)
    compact_closed_days(d, "BTC", LATER)
    assert files(d) == ["2025-12-10.errors.json", "2025-12-10.parquet", "2025-12-11.errors.json", "2025-12-11.parquet"]
    assert_same(frame(d), ref)
    for day in ("2025-12-10", "2025-12-11"):
        side = json.loads((d / f"{day}.errors.json").read_bytes())
        assert side == ref_side[day]  # rewritten, never doubled


@pytest.mark.slow
def test_sigkill_during_compaction_loses_no_row_and_reads_no_day_twice(tmp_path: Path) -> None:
    """5 injected crash points, then SIGKILLs at random moments of a compaction process (8; 25 in
    the long run, CALREPORT_LONG_TESTS=1)."""
    base = _crash_fixture(tmp_path / "orig")
    ref = frame(base)
    assert len(ref) == 2 * 120 * 50 and ref.schema_errors == 2 and ref.bad_names == 2
    procs = Compactions(tmp_path / "compactions.log")
    clean = tmp_path / "clean"
    shutil.copytree(base, clean)
    started = time.perf_counter()
    pid = procs.start(clean)
    assert procs.wait(pid) == 0
    duration = time.perf_counter() - started
    ref_side = {day: json.loads((clean / f"{day}.errors.json").read_bytes()) for day in ("2025-12-10", "2025-12-11")}
    _check_after(clean, ref, ref_side)

    points = ["before_sidecar", "after_sidecar", "before_parquet", "after_parquet", "between_removals"]
    for i, point in enumerate(points):
        d = tmp_path / f"point-{i}"
        shutil.copytree(base, d)
        assert procs.wait(procs.start(d, point)) == -signal.SIGKILL, point
        if point == "after_parquet":  # the first day has both its Parquet file and its logs now
            assert {"2025-12-10.parquet", "2025-12-10.jsonl", "2025-12-10.jsonl.gz"} <= set(files(d))
        _check_after(d, ref, ref_side)

    # kills that land inside a compaction (one that finished first is retried sooner: the
    # machine is shared, so a compaction's duration varies from run to run)
    rng = random.Random(13)
    killed_mid = attempts = 0
    window = duration
    kills, max_attempts = reps(8, 25), reps(40, 80)
    while killed_mid < kills and attempts < max_attempts:
        attempts += 1
        d = tmp_path / f"kill-{attempts}"
        shutil.copytree(base, d)
        pid = procs.start(d)
        time.sleep(rng.uniform(0, window))
        os.kill(pid, signal.SIGKILL)
        code = procs.wait(pid)
        if code == -signal.SIGKILL:
            killed_mid += 1
        else:
            window *= 0.8
        _check_after(d, ref, ref_side)
        shutil.rmtree(d)
    procs.close()
    assert killed_mid == kills, (killed_mid, attempts, duration)


# --------------------------------------------------------------------------- the previous system's layout


def write_legacy(base: Path, rows_by_snapshot: dict[int, list[dict]]) -> Path:
    """data/live_deribit/BTC/YYYY/MM/DD/BTC_<date>_<HHMM>.parquet, one file per snapshot, its columns."""
    import datetime as dt

    for ts, rows in rows_by_snapshot.items():
        when = dt.datetime.fromtimestamp(ts / 1000, tz=dt.UTC)
        d = base / "BTC" / f"{when:%Y}" / f"{when:%m}" / f"{when:%d}"
        d.mkdir(parents=True, exist_ok=True)
        tbl = pa.table({
            "harvest_time": pa.array([ts * 1_000_000] * len(rows), pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
            "instrument_name": [r["instrument_name"] for r in rows],
            "underlying": ["BTC"] * len(rows),
            "expiry": ["2025-12-19"] * len(rows),
            "expiry_timestamp": [1766131200.0] * len(rows),
            "option_type": [r["instrument_name"][-1] for r in rows],
            "strike": [float(r["instrument_name"].split("-")[2]) for r in rows],
            "underlying_price": [r["underlying_price"] for r in rows],
            "mark_price": [r["mark_price"] for r in rows],
            "best_bid_price": [r.get("bid_price") for r in rows],
            "best_ask_price": [r.get("ask_price") for r in rows],
            "bid_iv": [None] * len(rows),
            "ask_iv": [None] * len(rows),
            "mark_iv": [r["mark_iv"] for r in rows],
            "open_interest": [r["open_interest"] for r in rows],
            "volume": [r["volume"] for r in rows],
            "underlying_index": ["SYN.BTC-19DEC25"] * len(rows),
        })
        pq.write_table(tbl, d / f"BTC_{when:%Y-%m-%d}_{when:%H%M}.parquet")
    return base


def test_the_previous_systems_layout_reads_like_our_own_harvest(tmp_path: Path) -> None:
    snaps = {DEC11 + i * 900_000: chain(DEC11 + i * 900_000, 30) for i in range(8)}
    snaps[DEC11][3]["bid_price"] = None  # a one-sided book
    ours = Root(tmp_path / "ours")
    write_log(ours.harvest_dir("BTC"), lines_of([r for rows in snaps.values() for r in rows]))
    legacy = write_legacy(tmp_path / "live_deribit", snaps)
    a, b = frame(ours), frame(legacy)
    assert len(a) == 240 and np.isnan(b.bid).sum() == 1
    assert [p.name for p in b.files] == ["11"]  # the day's directory
    for k in FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


def test_import_harvest_is_idempotent_counts_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    snaps = {DEC11 + i * 900_000: chain(DEC11 + i * 900_000, 30) for i in range(8)}
    snaps[DEC11 + 86_400_000] = chain(DEC11 + 86_400_000, 30)  # a second day
    legacy = write_legacy(tmp_path / "data" / "live_deribit", snaps)
    root = Root(tmp_path / "root")
    assert cli_main(["--root", str(root.path), "init"]) == 0
    # the root already harvested two of those snapshots itself (an open-day log)
    write_log(root.harvest_dir("BTC"), lines_of(snaps[DEC11] + snaps[DEC11 + 900_000]))
    capsys.readouterr()
    args = ["--root", str(root.path), "import-harvest", str(legacy), "--underlying", "BTC"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "9 files over 2 days: 270 rows read, 210 added, 60 already present" in out
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert len(f) == 270 and len(f.snapshot_times()) == 9
    res = import_harvest(legacy, root.harvest_dir("BTC"), "BTC")  # again: nothing added
    assert (res.rows_read, res.rows_added, res.rows_present) == (270, 0, 270)
    assert cli_main(args) == 0 and "0 added, 270 already present" in capsys.readouterr().out
    assert len(load_harvest(root, "BTC", 0, DEC11 * 2)) == 270
    assert cli_main(["--root", str(root.path), "import-harvest", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_import_harvest_takes_calreports_own_day_layout_idempotently(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The shared Deribit harvest is <U>/YYYY-MM-DD.jsonl.gz, the layout data/harvest holds: import-harvest refused
    it with "no YYYY/MM/DD/*.parquet files"; it is imported like the previous system's, from a read-only share too."""
    src = tmp_path / "share" / "deribit-harvest"
    day1 = [r for i in range(6) for r in chain(DEC11 + i * 900_000, 30)]
    day2 = [r for i in range(3) for r in chain(DEC11 + 86_400_000 + i * 900_000, 30)]
    write_log(src / "BTC", lines_of(day1), "2025-12-11.jsonl.gz")
    write_log(src / "BTC", lines_of([*day2, "not json"]), "2025-12-12.jsonl")
    for f in (src / "BTC").iterdir():
        f.chmod(0o444)
    (src / "BTC").chmod(0o555)
    root = Root(tmp_path / "root")
    assert cli_main(["--root", str(root.path), "init"]) == 0
    write_log(root.harvest_dir("BTC"), lines_of(chain(DEC11, 30)))  # the root already has the first snapshot
    capsys.readouterr()
    try:
        args = ["--root", str(root.path), "import-harvest", str(src), "--underlying", "BTC"]
        assert cli_main(args) == 0
        out = capsys.readouterr().out
        assert "2 files over 2 days: 270 rows read, 240 added, 30 already present; 1 schema errors" in out
        assert_same_rows(frame(root), frame(src))
        assert cli_main(args) == 0 and "0 added, 270 already present" in capsys.readouterr().out  # again: nothing added
        assert_same_rows(frame(root), frame(src))
    finally:
        (src / "BTC").chmod(0o755)
    broken = tmp_path / "broken"
    write_log(broken / "BTC", gzip.compress(lines_of(day1))[:-40], "2025-12-11.jsonl")
    (broken / "BTC" / "2025-12-11.jsonl").rename(broken / "BTC" / "2025-12-11.jsonl.gz")
    other = Root(tmp_path / "other")
    assert cli_main(["--root", str(other.path), "init"]) == 0
    capsys.readouterr()
    assert cli_main(["--root", str(other.path), "import-harvest", str(broken), "--underlying", "BTC"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not readable whole" in err and "nothing imported" in err
    assert not other.harvest_dir("BTC").exists() or not list(other.harvest_dir("BTC").iterdir())


def assert_same_rows(a: harvest.HarvestFrame, b: harvest.HarvestFrame) -> None:
    """The same quotes (every field, names and order), whatever each side's count of set-aside lines."""
    assert a.names.tolist() == b.names.tolist()
    for k in FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)


def test_compaction_refuses_to_merge_into_a_parquet_file_it_did_not_write(tmp_path: Path) -> None:
    d = tmp_path / "BTC"
    write_log(d, lines_of(chain(DEC11)))
    pq.write_table(pa.table({"x": [1]}), d / "2025-12-11.parquet")
    rep = compact_closed_days(tmp_path, "BTC", LATER)
    assert rep.done == [] and "not one calreport wrote" in rep.skipped[0][1]
    assert (d / "2025-12-11.jsonl").exists()
    with pytest.raises(Exception, match="not one calreport wrote"):
        compact_day(d, "2025-12-11", "BTC")
    assert os.path.exists(d / "2025-12-11.jsonl") and compact.CRASH_HOOK is None


# --------------------------------------------------------------------------- the same row from every format (real data)

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_the_shared_harvest_gives_the_same_auto_row_from_every_format(tmp_path: Path, compacted_btc_harvest: Path) -> None:
    """JSONL, JSONL.gz, compacted Parquet, the previous system's layout read in place, and that
    layout imported: the same auto-calibrate row (multiplier, every metric, samples) to the last digit.
    The Parquet days are the run's one compaction of these logs (conftest's compacted_btc_harvest)."""
    from datetime import UTC, datetime

    from calreport.commands import usecases as actions

    src = sorted((SHARED / "deribit-harvest-2025-12" / "BTC").glob("*.jsonl.gz"))
    roots = {k: Root(tmp_path / k) for k in ("gz", "jsonl", "parquet", "legacy", "imported")}
    for r in roots.values():
        actions.init(Workspace.open(r))
        r.harvest_dir("BTC").mkdir(parents=True)
    by_snapshot: dict[int, list[dict]] = {}
    for f in src:
        data = gzip.decompress(f.read_bytes())
        (roots["gz"].harvest_dir("BTC") / f.name).write_bytes(f.read_bytes())
        (roots["jsonl"].harvest_dir("BTC") / f.name[:-3]).write_bytes(data)
        for line in data.splitlines():
            r = json.loads(line)
            by_snapshot.setdefault(r["harvested_at"], []).append(r)
    copy_compacted_harvest(compacted_btc_harvest, roots["parquet"])
    parquet_days = sorted(p.name for p in roots["parquet"].harvest_dir("BTC").iterdir() if p.name.endswith(".parquet"))
    assert parquet_days == sorted(f.name.replace(".jsonl.gz", ".parquet") for f in src)
    assert not [p for p in roots["parquet"].harvest_dir("BTC").iterdir() if p.name.endswith((".jsonl", ".gz"))]
    legacy = write_legacy(tmp_path / "live_deribit", by_snapshot)
    shutil.rmtree(roots["legacy"].harvest_dir("BTC"))
    shutil.copytree(legacy / "BTC", roots["legacy"].harvest_dir("BTC"))  # YYYY/MM/DD/*.parquet in place
    res = import_harvest(legacy, roots["imported"].harvest_dir("BTC"), "BTC")
    assert res.rows_added == res.rows_read == 191_822 and res.files == 278

    as_of = datetime(2025, 12, 13, 16, tzinfo=UTC)
    rows = {}
    for k, r in roots.items():
        run = actions.run_auto_calibration(Workspace.open(r), "BTC", dte="3-10", lookback="7d", as_of=as_of, compact=False)
        rows[k] = {f: v for f, v in run.to_json_dict().items() if f not in ("run_id", "ts", "elapsed_s")}
    assert rows["gz"]["samples"] > 1000 and rows["gz"]["multiplier"] is not None
    for k in ("jsonl", "parquet", "legacy", "imported"):
        assert rows[k] == rows["gz"], k


def test_odd_values_are_kept_verbatim_in_extra_and_come_back(tmp_path: Path) -> None:
    """No value is lost by compaction: a string where Deribit sends a number, a field calreport has no
    column for, a fractional creation_timestamp, a number in base_currency all come back as they were."""
    odd = [
        row(volume="12", ts=DEC11),
        row(name="BTC-19DEC25-91000-C", ts=DEC11, greeks={"delta": 0.5}, creation_timestamp=DEC11 + 0.5),
        row(name="BTC-19DEC25-92000-C", ts=DEC11, base_currency=7, bid_price="0.01", mid_price=None),
    ]
    d = tmp_path / "BTC"
    write_log(d, lines_of(odd))
    ref = frame(tmp_path)
    assert compact_closed_days(tmp_path, "BTC", LATER).done
    assert_same(frame(tmp_path), ref)
    back = pqday.read_rows(d / "2025-12-11.parquet")
    want = [{k: v for k, v in r.items() if v is not None} for r in odd]
    assert sorted(json.dumps(r, sort_keys=True) for r in back) == sorted(json.dumps(r, sort_keys=True) for r in want)


def _general_table(data: bytes) -> tuple[pa.Table, Any]:
    """The day's table and columns through the general (dict-per-row) parse, for comparison."""
    from calreport.market import daycols

    parsed = daycols._parse_lines_general(daycols._split_lines(data), "BTC", None)
    return pqday.day_table(parsed), daycols.day_from_lines(parsed)


def _typed_table(data: bytes) -> tuple[pa.Table, Any, bool]:
    from calreport.market import daycols

    parsed = daycols.parse_lines(data, "BTC")
    return pqday.day_table(parsed), daycols.day_from_lines(parsed), parsed.typed is not None


def _lines(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r, separators=(",", ":")).encode() + b"\n" for r in rows)


@pytest.mark.parametrize("odd", [
    {}, {"underlying_index": "SYN.BTC-19DEC25"}, {"underlying_index": None}, {"index_price": 90001.5},
    {"mark_iv": 45}, {"volume": 3}, {"volume": 2**60 + 1}, {"bid_price": "0.01"}, {"base_currency": 5},
    {"creation_timestamp": 10**17}, {"creation_timestamp": 1.5}, {"creation_timestamp": None}, {"foo": [1]},
    {"mark_price": "x"}, {"instrument_name": 7}, {"instrument_name": "BTC-PERPETUAL"}, {"harvested_at": None},
])
def test_the_typed_parse_gives_the_general_parses_table_and_columns(odd: dict) -> None:
    # 2,500 rows (three parse chunks); the odd field sits in one row of the middle chunk, so the
    # chunks disagree on the day's key set or a field's type
    rows = [row(name=f"BTC-19DEC25-{80000 + 1000 * (i % 25)}-{'CP'[i % 2]}", ts=DEC11 + (i // 50) * 300_000) for i in range(2500)]
    for r in rows[:1200:3]:  # early snapshots' shape in the first chunk: no bid/ask, underlying_index
        del r["bid_price"], r["ask_price"]
        r["underlying_index"] = "SYN.BTC-19DEC25"
    rows[1500].update(odd)
    data = _lines(rows)
    try:
        general, general_cols = _general_table(data)
    except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:  # a row pyarrow cannot hold
        with pytest.raises(type(exc)):
            _typed_table(data)
        return
    table, cols, typed = _typed_table(data)
    assert table.equals(general) and table.schema.metadata == general.schema.metadata
    for k in ("names", "code", "harvested_at"):
        assert np.array_equal(getattr(cols, k), getattr(general_cols, k))
    assert all(np.array_equal(cols.cols[k], general_cols.cols[k], equal_nan=True) for k in harvest.FLOAT_COLUMNS)
    assert (cols.schema_errors, cols.bad_names, cols.lines) == (general_cols.schema_errors, general_cols.bad_names, general_cols.lines)
    if not odd:
        assert typed  # a plainly typed day takes the typed path


def test_a_day_that_is_not_one_object_per_line_takes_the_general_parse() -> None:
    from calreport.market import daycols

    good = _lines([row(ts=DEC11 + i) for i in range(10)])
    for bad in (b"null\n", b"[1, 2]\n", b'{"a": 1} {"b": 2}\n', b"{torn\n", b'{"mark_price": NaN}\n'):
        parsed = daycols.parse_lines(good + bad + good, "BTC")
        assert parsed.typed is None
        assert list(parsed.status).count(daycols.OK) == 20  # every object line is a row (compaction drops repeats)
        assert parsed.status[10] == daycols.SCHEMA_ERROR
