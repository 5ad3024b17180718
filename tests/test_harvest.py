"""The harvest reader: warts are counted not fatal, the columnar cache is used warm and never stale."""

from __future__ import annotations

import gzip
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from calreport.commands import usecases as actions
from calreport.commands.cli import main as cli_main
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.market import daycols, harvest
from calreport.market.compact import compact_closed_days
from calreport.market.harvest import (
    append_snapshot,
    harvest_once,
    index_price_per_snapshot,
    load_harvest,
)
from calreport.market.rv import to_hourly
from calreport.model import CalibrationConfig
from calreport.store.paths import Root

DEC11 = 1765440000000  # 2025-12-11T08:00:00Z
HOUR = 3_600_000
SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def row(name: str = "BTC-19DEC25-90000-C", ts: int = DEC11, mark: float = 0.02, fwd: float = 90000.0, **kw) -> dict:
    r = {
        "instrument_name": name,
        "base_currency": "BTC",
        "quote_currency": "BTC",
        "mark_price": mark,
        "mark_iv": 45.0,
        "underlying_price": fwd,
        "bid_price": mark * 0.98,
        "ask_price": mark * 1.02,
        "mid_price": mark,
        "open_interest": 10.0,
        "volume": 1.0,
        "interest_rate": 0.0,
        "creation_timestamp": ts,
        "harvested_at": ts,
    }
    r.update(kw)
    return r


def write_day(root: Root, lines: list[str | dict], day: str = "2025-12-11", suffix: str = ".jsonl") -> Path:
    d = root.harvest_dir("BTC")
    d.mkdir(parents=True, exist_ok=True)
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()
    p = d / f"{day}{suffix}"
    p.write_bytes(gzip.compress(text) if suffix.endswith(".gz") else text)
    return p


def test_malformed_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    root = Root(tmp_path)
    write_day(
        root,
        [
            row(),
            '{"instrument_name": "BTC-19DEC25-9',  # torn line
            "[1, 2, 3]",  # not an object
            row(mark_price=None),  # null mark
            {k: v for k, v in row().items() if k != "mark_iv"},  # missing field
            row(mark_price="0.02"),  # a string where a number belongs
            row(underlying_price=True),  # a boolean is never a number either
            row(name="BTC-PERPETUAL"),  # not an option: a bad name, not a schema error
            row(name="BTC_USDC-19DEC25-90000-C"),  # linear option: priced in USDC, skipped
            row(name="BTC-19DEC25-95000-P", bid_price=None, ask_price=None),  # one-sided book is fine
            "",
        ],
    )
    f = load_harvest(root, "BTC", DEC11 - HOUR, DEC11 + HOUR)
    assert len(f) == 2
    assert f.schema_errors == 6
    assert f.bad_names == 2
    assert f.lines == 10
    put = ~f.is_call
    assert np.isnan(f.bid[put]).all() and np.isnan(f.ask[put]).all()
    assert f.mark_iv[0] == pytest.approx(0.45)  # percent -> fraction, once
    assert f.strike.tolist() == [90000.0, 95000.0]


def test_window_and_gz_day_files(tmp_path: Path) -> None:
    root = Root(tmp_path)
    write_day(root, [row(ts=DEC11 - 86_400_000)], day="2025-12-10", suffix=".jsonl.gz")
    write_day(root, [row(ts=DEC11), row(ts=DEC11 + HOUR)])
    f = load_harvest(root, "BTC", DEC11 - 2 * 86_400_000, DEC11)
    assert f.harvested_at.tolist() == [DEC11 - 86_400_000, DEC11]
    assert [p.name for p in f.files] == ["2025-12-10.jsonl.gz", "2025-12-11.jsonl"]
    assert len(load_harvest(root, "BTC", DEC11 + 2 * HOUR, DEC11 + 3 * HOUR)) == 0
    assert len(load_harvest(root, "ETH", 0, DEC11 * 2)) == 0  # no directory at all: empty, not an error


FRAME_FIELDS = ("code", "harvested_at", "expiry_ms", "strike", "is_call", *harvest.FLOAT_COLUMNS)


def assert_same_frame(a: harvest.HarvestFrame, b: harvest.HarvestFrame) -> None:
    assert a.names.tolist() == b.names.tolist()
    for k in FRAME_FIELDS:
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert (a.lines, a.schema_errors, a.bad_names) == (b.lines, b.schema_errors, b.bad_names)


def test_a_compacted_day_reads_without_parsing_json_and_gives_the_same_columns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the npz cache used to promise, now from the day's Parquet file: no JSON on the read path."""
    root = Root(tmp_path)
    write_day(root, [row(ts=DEC11 + i * 300_000, mark=0.01 + i * 1e-4) for i in range(50)] + ["garbage"])
    from_jsonl = load_harvest(root, "BTC", 0, DEC11 * 2)
    done = compact_closed_days(root, "BTC", DEC11 + 2 * 86_400_000)
    assert [r.date for r in done.done] == ["2025-12-11"] and not done.skipped

    def no_json(*a, **k):
        raise AssertionError("a compacted day parsed JSON")

    monkeypatch.setattr(daycols, "_loads", no_json)
    monkeypatch.setattr(harvest, "parse_day_bytes", no_json)
    monkeypatch.setattr(json, "loads", no_json)
    from_parquet = load_harvest(root, "BTC", 0, DEC11 * 2)
    monkeypatch.undo()
    assert [p.name for p in from_parquet.files] == ["2025-12-11.parquet"]
    assert from_parquet.schema_errors == from_jsonl.schema_errors == 1
    assert_same_frame(from_parquet, from_jsonl)


def test_rows_appended_to_a_day_are_seen_on_the_next_read(tmp_path: Path) -> None:
    root = Root(tmp_path)
    p = write_day(root, [row(ts=DEC11, mark=0.01)])
    assert load_harvest(root, "BTC", 0, DEC11 * 2).mark_price.tolist() == [0.01]
    p.write_text(json.dumps(row(ts=DEC11, mark=0.03)) + "\n")  # rewritten
    assert load_harvest(root, "BTC", 0, DEC11 * 2).mark_price.tolist() == [0.03]
    with open(p, "a") as fh:
        fh.write(json.dumps(row(ts=DEC11 + HOUR, mark=0.04)) + "\n")
    assert load_harvest(root, "BTC", 0, DEC11 * 2).mark_price.tolist() == [0.03, 0.04]


def test_a_broken_parquet_day_is_named_unreadable_not_a_crash(tmp_path: Path) -> None:
    root = Root(tmp_path)
    write_day(root, [row()], day="2025-12-10")
    bad = root.harvest_dir("BTC") / "2025-12-11.parquet"
    bad.write_bytes(b"PAR1 this is not a parquet file")
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert len(f) == 1
    assert list(f.unreadable) == [bad] and "not readable as Parquet" in f.unreadable[bad]


@pytest.mark.parametrize("how", ["read-only directory", "linked directory", "linked log", "read-only log"])
def test_compaction_never_writes_into_a_linked_or_read_only_harvest(tmp_path: Path, how: str) -> None:
    """Even as root (permissions do not bind): a shared harvest linked into a root, or a directory
    without write bits, is read as it is and nothing is written into it or removed from it."""
    shared = tmp_path / "shared" / "BTC"
    p = write_day(Root(tmp_path / "shared-root"), [row(), row(ts=DEC11 + HOUR)])
    shared.parent.mkdir(parents=True)
    p.parent.rename(shared)
    p = shared / p.name
    root = Root(tmp_path / "root")
    if how == "linked directory":
        root.harvest_dir("BTC").parent.mkdir(parents=True)
        root.harvest_dir("BTC").symlink_to(shared, target_is_directory=True)
    elif how == "linked log":
        root.harvest_dir("BTC").mkdir(parents=True)
        (root.harvest_dir("BTC") / p.name).symlink_to(p)
    else:
        root.harvest_dir("BTC").parent.mkdir(parents=True)
        shared.rename(root.harvest_dir("BTC"))
        shared, p = root.harvest_dir("BTC"), root.harvest_dir("BTC") / p.name
        os.chmod(p if how == "read-only log" else shared, 0o444 if how == "read-only log" else 0o555)
    before = sorted(x.name for x in shared.iterdir())
    ref = load_harvest(root, "BTC", 0, DEC11 * 2)
    try:
        rep = compact_closed_days(root, "BTC", DEC11 + 2 * 86_400_000)
        assert rep.done == [] and [d for d, _ in rep.skipped] == ["2025-12-11"]
        assert ("symlink" if "linked" in how else "read-only") in rep.skipped[0][1]
        assert sorted(x.name for x in shared.iterdir()) == before and p.exists()
        assert_same_frame(load_harvest(root, "BTC", 0, DEC11 * 2), ref)
    finally:
        os.chmod(shared, 0o755)
        os.chmod(p, 0o644)


def test_a_gz_that_breaks_off_is_never_compacted_away_and_is_named(tmp_path: Path) -> None:
    """A log that cannot be read whole stays as it is (its unreadable tail is data nobody saw yet)."""
    root = Root(tmp_path)
    p = write_day(root, [row(ts=DEC11 + i * 300_000) for i in range(200)], suffix=".jsonl.gz")
    p.write_bytes(p.read_bytes()[:-40])  # cut short: the gzip stream breaks off
    before = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert 0 < len(before) < 200 and "breaks off" in before.unreadable[p]
    rep = compact_closed_days(root, "BTC", DEC11 + 2 * 86_400_000)
    assert rep.done == [] and [d for d, _ in rep.skipped] == ["2025-12-11"] and "breaks off" in rep.skipped[0][1]
    assert p.exists() and not p.with_name("2025-12-11.parquet").exists()
    assert_same_frame(load_harvest(root, "BTC", 0, DEC11 * 2), before)


def test_a_gz_that_is_all_garbage_is_named_in_the_auto_runs_data_quality(tmp_path: Path) -> None:
    """It used to read as an empty harvest, "no harvested snapshots", 0 schema errors."""
    root = Root(tmp_path)
    actions.init(Workspace.open(root))
    bad = root.harvest_dir("BTC") / "2025-12-11.jsonl.gz"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"\x00garbage, not gzip\n" * 300)
    run = actions.run_auto_calibration(Workspace.open(root), "BTC", lookback="1d", as_of=datetime(2025, 12, 11, 20, tzinfo=UTC))
    assert run.status == "failed"
    assert run.data_quality.issues[0] == "unreadable harvest file 2025-12-11.jsonl.gz: not readable as gzip (incorrect header check)"
    assert "unreadable harvest file 2025-12-11.jsonl.gz" in run.reason
    assert bad.exists()  # never compacted away


def test_harvest_command_appends_one_snapshot_to_its_day_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = Root(tmp_path)
    ts = DEC11 + 15 * HOUR + 123
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"jsonrpc": "2.0", "result": [
        {k: v for k, v in row(ts=ts).items() if k != "harvested_at"},
        {k: v for k, v in row(name="BTC-19DEC25-95000-P", ts=ts - 5).items() if k != "harvested_at"},
    ]}))
    assert cli_main(["--root", str(root.path), "init"]) == 0  # harvest writes into a calreport root
    harvest_cli = ["--root", str(root.path), "harvest", "--from-file", str(snap), "--underlying"]
    assert cli_main([*harvest_cli, "btc"]) == 0
    day = root.harvest_dir("BTC") / "2025-12-11.jsonl"
    lines = day.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(ln)["harvested_at"] == ts for ln in lines)
    assert "harvested 2 quotes" in capsys.readouterr().out
    # the same snapshot again (a cron retry) does not double every quote
    assert cli_main([*harvest_cli, "BTC"]) == 0
    assert len(day.read_text().splitlines()) == 2
    assert "already harvested" in capsys.readouterr().out
    assert cli_main([*harvest_cli, "ETH"]) == 1
    assert "not ETH" in capsys.readouterr().err
    with pytest.raises(CalreportError, match="not ETH"):
        harvest_once(root, CalibrationConfig(), "ETH", from_file=snap)


def test_the_library_harvest_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = Root(tmp_path)
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"jsonrpc": "2.0", "result": [{k: v for k, v in row().items() if k != "harvested_at"}]}))
    res = harvest_once(root, CalibrationConfig(), "BTC", from_file=snap)
    assert res.rows == 1 and not res.skipped_duplicate
    assert capsys.readouterr() == ("", "")


def test_harvest_fetches_from_deribit_when_no_file_is_given(tmp_path: Path) -> None:
    from calreport.market.deribit import DeribitClient

    root = Root(tmp_path)
    ts = DEC11 + 2 * HOUR
    payload = {"jsonrpc": "2.0", "result": [{k: v for k, v in row(ts=ts).items() if k != "harvested_at"}]}
    urls: list[str] = []

    def opener(url: str, timeout: float) -> bytes:  # a recorded response; tests never use the network
        urls.append(url)
        return json.dumps(payload).encode()

    res = actions.harvest(Workspace.open(root), "BTC", client=DeribitClient(opener=opener))
    assert res.rows == 1 and res.harvested_at_ms == ts
    assert "get_book_summary_by_currency" in urls[0] and "currency=BTC" in urls[0] and "kind=option" in urls[0]
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert f.harvested_at.tolist() == [ts]


def test_append_snapshot_starts_on_a_fresh_line_after_a_torn_one(tmp_path: Path) -> None:
    root = Root(tmp_path)
    p = write_day(root, [row()])
    with open(p, "ab") as fh:
        fh.write(b'{"instrument_name": "BTC-1')  # harvester killed mid-write
    append_snapshot(root, "BTC", [row(ts=DEC11 + HOUR)], DEC11 + HOUR)
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert len(f) == 2 and f.schema_errors == 1


def test_index_series_uses_the_nearest_expiry_forward_hourly(tmp_path: Path) -> None:
    root = Root(tmp_path)
    rows = []
    for i in range(24):  # 5-minute snapshots over 2 hours
        t = DEC11 + 1000 + i * 300_000
        rows.append(row(name="BTC-12DEC25-90000-C", ts=t, fwd=90000.0 + i))  # nearest expiry: the index proxy
        rows.append(row(name="BTC-26DEC25-90000-C", ts=t, fwd=91000.0 + i))  # later expiry carries basis
    write_day(root, rows)
    frame = load_harvest(root, "BTC", DEC11 + 3 * HOUR - 24 * HOUR, DEC11 + 3 * HOUR)
    ticks, close = to_hourly(*index_price_per_snapshot(frame))
    assert ticks.tolist() == [DEC11, DEC11 + HOUR]
    assert close.tolist() == [90011.0, 90023.0]  # last nearest-expiry forward of each hour


def test_frame_converts_to_quote_arrays(tmp_path: Path) -> None:
    root = Root(tmp_path)
    write_day(root, [row(), row(name="BTC-19DEC25-95000-P")])
    q = load_harvest(root, "BTC", 0, DEC11 * 2).to_quotes()
    assert list(q.instrument) == ["BTC-19DEC25-90000-C", "BTC-19DEC25-95000-P"]
    assert q.is_call.tolist() == [True, False] and len(q) == 2


@pytest.mark.realdata
@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
def test_real_harvest_loads_identically_from_jsonl_gz_and_compacted_parquet(tmp_path: Path) -> None:
    src = SHARED / "deribit-harvest-2025-12"
    gz = load_harvest(src, "BTC", 0, 2_000_000_000_000)
    assert len(gz) == 191_822 and len(gz.snapshot_times()) == 278
    assert gz.schema_errors == 0 and gz.bad_names == 0 and not gz.unreadable
    assert np.isnan(gz.bid).any()  # null bids are kept as NaN, not dropped
    assert (gz.mark_price < 1e-5).any()  # tiny marks are kept for the filters to judge
    copy = tmp_path / "BTC"
    copy.mkdir()
    for p in (src / "BTC").iterdir():
        (copy / p.name).write_bytes(p.read_bytes())
    rep = compact_closed_days(copy, "BTC", 2_000_000_000_000)
    assert len(rep.done) == 6 and not rep.skipped
    assert sorted(p.name for p in copy.iterdir() if not p.name.endswith(".lock")) == sorted(
        p.name.replace(".jsonl.gz", ".parquet") for p in (src / "BTC").iterdir()
    )
    assert_same_frame(load_harvest(copy, "BTC", 0, 2_000_000_000_000), gz)


def test_the_recorded_index_is_the_rv_series_only_when_every_snapshot_has_it(tmp_path: Path) -> None:
    root = Root(tmp_path)
    rows = []
    for i in range(3):
        t = DEC11 + 1000 + i * 300_000
        rows.append(row(name="BTC-12DEC25-90000-C", ts=t, fwd=90000.0 + i, index_price=89900.0 + i))
        rows.append(row(name="BTC-26DEC25-90000-C", ts=t, fwd=91000.0 + i, index_price=89900.0 + i))
    write_day(root, rows)
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert harvest.index_price_per_snapshot(f)[1].tolist() == [89900.0, 89901.0, 89902.0]
    write_day(root, [*rows, row(name="BTC-12DEC25-90000-C", ts=DEC11 + HOUR, fwd=90100.0)])  # one without it
    t, p = harvest.index_price_per_snapshot(load_harvest(root, "BTC", 0, DEC11 * 2))
    assert p.tolist() == [90000.0, 90001.0, 90002.0, 90100.0]  # the nearest forward throughout, never a mix


def test_rv_from_the_harvest_says_whether_it_used_the_recorded_index(tmp_path: Path) -> None:
    root = Root(tmp_path)
    rows = [row(ts=DEC11 + i * HOUR, fwd=90000.0 + 10 * i, index_price=89900.0 + 10 * i) for i in range(30)]
    write_day(root, rows)
    assert harvest.rv_from_harvest(root, "BTC", DEC11 + 30 * HOUR).source == "harvest index"
    write_day(root, [*rows, row(ts=DEC11 + 30 * HOUR)])  # one snapshot without it: forwards throughout
    assert harvest.rv_from_harvest(root, "BTC", DEC11 + 31 * HOUR).source == "harvest"
