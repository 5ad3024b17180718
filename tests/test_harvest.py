"""The harvest reader: warts are counted not fatal, the columnar cache is used warm and never stale."""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import numpy as np
import pytest

from calreport.commands import usecases as actions
from calreport.commands.cli import main as cli_main
from calreport.errors import CalreportError
from calreport.market import harvest
from calreport.market.harvest import (
    append_snapshot,
    harvest_once,
    load_harvest,
    underlying_price_series,
)
from calreport.store.models import CalibrationConfig
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


def test_warm_load_uses_the_cache_and_never_parses_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Root(tmp_path)
    write_day(root, [row(ts=DEC11 + i * 300_000, mark=0.01 + i * 1e-4) for i in range(50)] + ["garbage"])
    cold = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert (cold.cache_hits, cold.cache_misses) == (0, 1)

    def no_json(*a, **k):
        raise AssertionError("warm load parsed JSON")

    monkeypatch.setattr(harvest, "_loads", no_json)
    monkeypatch.setattr(harvest, "parse_day_bytes", no_json)
    monkeypatch.setattr(json, "loads", no_json)
    warm = load_harvest(root, "BTC", 0, DEC11 * 2)
    monkeypatch.undo()
    assert (warm.cache_hits, warm.cache_misses) == (1, 0)
    assert warm.schema_errors == cold.schema_errors == 1
    for k in ("code", "harvested_at", "expiry_ms", "strike", "is_call", *harvest.FLOAT_COLUMNS):
        np.testing.assert_array_equal(getattr(warm, k), getattr(cold, k))


def test_cache_is_rebuilt_when_the_source_changes(tmp_path: Path) -> None:
    root = Root(tmp_path)
    p = write_day(root, [row(ts=DEC11, mark=0.01)])
    assert load_harvest(root, "BTC", 0, DEC11 * 2).mark_price.tolist() == [0.01]
    # same size, new content, mtime moved on: the cache must not be trusted
    p.write_text(json.dumps(row(ts=DEC11, mark=0.03)) + "\n")
    st = os.stat(p)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert f.mark_price.tolist() == [0.03] and f.cache_misses == 1
    # appended rows are seen
    with open(p, "a") as fh:
        fh.write(json.dumps(row(ts=DEC11 + HOUR, mark=0.04)) + "\n")
    assert load_harvest(root, "BTC", 0, DEC11 * 2).mark_price.tolist() == [0.03, 0.04]
    assert load_harvest(root, "BTC", 0, DEC11 * 2).cache_hits == 1


def test_corrupt_or_old_format_cache_is_rebuilt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = Root(tmp_path)
    write_day(root, [row()])
    load_harvest(root, "BTC", 0, DEC11 * 2)
    (cache,) = list(root.cache_dir.rglob("*.npz"))
    cache.write_bytes(b"not a zip")
    f = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert len(f) == 1 and f.cache_misses == 1
    monkeypatch.setattr(harvest, "FORMAT_VERSION", harvest.FORMAT_VERSION + 1)
    assert load_harvest(root, "BTC", 0, DEC11 * 2).cache_misses == 1


def test_unwritable_cache_only_costs_speed(tmp_path: Path) -> None:
    root = Root(tmp_path)
    write_day(root, [row()])
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    f = load_harvest(root, "BTC", 0, DEC11 * 2, cache_dir=blocker)
    assert len(f) == 1 and f.cache_misses == 1


def test_harvest_command_appends_one_snapshot_to_its_day_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = Root(tmp_path)
    ts = DEC11 + 15 * HOUR + 123
    snap = tmp_path / "snap.json"
    snap.write_text(json.dumps({"jsonrpc": "2.0", "result": [
        {k: v for k, v in row(ts=ts).items() if k != "harvested_at"},
        {k: v for k, v in row(name="BTC-19DEC25-95000-P", ts=ts - 5).items() if k != "harvested_at"},
    ]}))
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

    res = actions.harvest(root, "BTC", client=DeribitClient(opener=opener))
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
    ticks, close = underlying_price_series(root, "BTC", DEC11 + 3 * HOUR, days=1)
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
def test_real_harvest_loads_cold_and_warm_identically(tmp_path: Path) -> None:
    src = SHARED / "deribit-harvest-2025-12"
    cold = load_harvest(src, "BTC", 0, 2_000_000_000_000, cache_dir=tmp_path)
    warm = load_harvest(src, "BTC", 0, 2_000_000_000_000, cache_dir=tmp_path)
    assert cold.cache_misses == 6 and warm.cache_hits == 6
    assert len(cold) == 191_822 and len(cold.snapshot_times()) == 278
    assert cold.schema_errors == 0 and cold.bad_names == 0
    np.testing.assert_array_equal(cold.mark_price, warm.mark_price)
    assert np.isnan(cold.bid).any()  # null bids are kept as NaN, not dropped
    assert (cold.mark_price < 1e-5).any()  # tiny marks are kept for the filters to judge
