"""History is append-only JSONL: torn lines are skipped on read and repaired on the next append."""

from __future__ import annotations

import hashlib
import json

import pytest
from foundation_helpers import add_live_run

from calreport.model import ApplyEvent, AutoRun, LiveRun, UnknownRow
from calreport.store.history import append_row, index_history, read_history
from calreport.store.ids import new_run_id
from calreport.store.paths import Root
from calreport.store.query import HistoryCache, HistoryQuery, history_cache_file


def test_torn_last_line_is_skipped_on_read_and_repaired_on_next_append(tmp_path):
    root = Root(tmp_path)
    first = add_live_run(root)
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","run_id":"torn","smoo')  # crash mid-append
    read = read_history(root.live_history)
    assert [r.run_id for r in read.rows] == [first.run_id]
    assert read.skipped == 1 and read.skipped_lines == [2]

    second = add_live_run(root)
    raw = root.live_history.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.splitlines()
    assert lines[1] == b'{"type":"live_run","run_id":"torn","smoo'  # never rewritten
    read = read_history(root.live_history)
    assert [r.run_id for r in read.rows] == [first.run_id, second.run_id]
    assert read.skipped == 1


def test_rows_from_older_versions_load_with_missing_fields_as_none(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"type":"live_run","run_id":"old1","ts":"2025-12-01T00:00:00Z","underlying":"BTC"}\n'
        '{"type":"auto_run","run_id":"old2","multiplier":0.5,"mae_pct":4668684.92}\n'
        '{"type":"apply","run_id":"old1","underlying":"BTC","applied":{"global":1.1}}\n'
    )
    rows = read_history(path).rows
    live, auto, ev = rows
    assert isinstance(live, LiveRun) and live.mae_pct is None and live.smoothed is None and live.schema_version is None
    assert isinstance(auto, AutoRun) and auto.vega_weighted_mae_pct is None and auto.data_quality is None
    assert isinstance(ev, ApplyEvent) and ev.applied.global_ == 1.1 and ev.applied.bands == {}


def test_unknown_fields_and_row_types_are_kept_when_re_emitted(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(
        '{"schema_version":7,"type":"live_run","run_id":"new","future_field":{"x":1}}\n'
        '{"schema_version":7,"type":"future_thing","run_id":"f","payload":[1,2]}\n'
    )
    live, unknown = read_history(path).rows
    assert live.to_json_dict()["future_field"] == {"x": 1}
    assert isinstance(unknown, UnknownRow) and unknown.to_json_dict()["payload"] == [1, 2]


def test_unreadable_lines_are_counted_not_fatal(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_bytes(b'not json\n[1,2]\n{"no_type":1}\n\n{"type":"auto_run","samples":"many"}\n{"type":"auto_run"}\n\xff\xfe\n')
    read = read_history(path)
    assert len(read.rows) == 1 and read.skipped == 5


def test_append_refuses_non_finite_numbers(tmp_path):
    from calreport.errors import CalreportError

    path = tmp_path / "h.jsonl"
    with pytest.raises(CalreportError, match="non-finite"):
        append_row(path, AutoRun(run_id="x", mae_pct=float("nan")))
    assert not path.exists() or path.read_bytes() == b""


def test_each_row_is_one_line_even_with_newlines_in_text(tmp_path):
    path = tmp_path / "h.jsonl"
    append_row(path, AutoRun(run_id="x", reason="line one\nline two <img src=x>"))
    lines = path.read_bytes().splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["reason"] == "line one\nline two <img src=x>"


def test_run_ids_are_unique_and_time_ordered():
    ids = [new_run_id(1765448160000 + i) for i in range(50)]
    assert len(set(ids)) == 50 and ids == sorted(ids) and all(len(i) == 26 for i in ids)


# --------------------------------------------------------------------------- the history query: newest first by time


def _query(root: Root) -> HistoryQuery:
    return HistoryQuery(index_history(root.live_history), index_history(root.auto_history))


def _live(root: Root, run_id: str, ts: str | None, underlying: str = "BTC", **extra) -> None:
    append_row(root.live_history, LiveRun(run_id=run_id, ts=ts, underlying=underlying, **extra))


def test_rows_come_newest_first_by_their_own_time_not_by_file_position(tmp_path):
    root = Root(tmp_path)
    _live(root, "dec12", "2025-12-12T00:00:00Z")
    _live(root, "dec14", "2025-12-14T00:00:00Z")
    _live(root, "nov01", "2025-11-01T00:00:00Z", source="legacy")  # appended last, oldest
    _live(root, "dec13-offset", "2025-12-13T01:00:00+01:00")  # 00:00Z: between dec12 and dec14
    q = _query(root)
    assert [r.run_id for r in q.live_runs()] == ["dec14", "dec13-offset", "dec12", "nov01"]
    assert [r.run_id for r in q.live_runs(limit=2)] == ["dec14", "dec13-offset"]
    assert q.latest_live()["BTC"].run_id == "dec14"


def test_equal_times_keep_file_order_and_rows_without_a_time_are_the_oldest(tmp_path):
    root = Root(tmp_path)
    _live(root, "untimed-1", None)
    _live(root, "tie-first", "2025-12-12T00:00:00Z")
    _live(root, "untimed-2", "yesterday")  # not a time: ordered as if it had none
    _live(root, "tie-second", "2025-12-12T00:00:00.000Z")  # the same instant, appended later
    _live(root, "older", "2025-12-11T00:00:00Z")
    assert [r.run_id for r in _query(root).live_runs()] == ["tie-second", "tie-first", "older", "untimed-2", "untimed-1"]


def test_auto_runs_are_ordered_by_their_window_end(tmp_path):
    root = Root(tmp_path)
    append_row(root.auto_history, AutoRun(run_id="today", ts="2025-12-14T00:00:00Z", as_of="2025-12-14T00:00:00Z", underlying="BTC"))
    # a backfill run today over last week's harvest belongs to last week
    append_row(root.auto_history, AutoRun(run_id="backfill", ts="2025-12-14T01:00:00Z", as_of="2025-12-07T00:00:00Z", underlying="BTC"))
    append_row(root.auto_history, AutoRun(run_id="old-row", ts="2025-12-10T00:00:00Z", underlying="BTC"))  # no as_of: ts
    q = _query(root)
    assert [r.run_id for r in q.auto_runs()] == ["today", "old-row", "backfill"]
    assert q.latest_auto()["BTC"].run_id == "today"


def test_latest_live_run_skips_imported_records_and_apply_events_are_per_underlying(tmp_path):
    root = Root(tmp_path)
    _live(root, "btc-live", "2025-12-12T00:00:00Z")
    _live(root, "btc-legacy-newer", "2025-12-13T00:00:00Z", source="legacy")
    _live(root, "eth-live", "2025-12-12T00:00:00Z", underlying="ETH")
    for rid, ts, u in (("btc-live", "2025-12-12T00:01:00Z", "BTC"), ("eth-live", "2025-12-12T00:02:00Z", "ETH")):
        append_row(root.live_history, ApplyEvent(run_id=rid, ts=ts, underlying=u))
    q = _query(root)
    assert {u: r.run_id for u, r in q.latest_live().items()} == {"BTC": "btc-live", "ETH": "eth-live"}
    assert q.live_runs()[0].run_id == "btc-legacy-newer"  # the table lists every source
    assert [e.run_id for e in q.apply_events()] == ["eth-live", "btc-live"]
    assert [e.run_id for e in q.apply_events(underlying="BTC")] == ["btc-live"]
    assert q.apply_event_naming("BTC", "btc-live").ts == "2025-12-12T00:01:00Z"
    assert q.apply_event_naming("BTC", "eth-live") is None
    assert (q.total("live"), q.total("apply"), q.total("auto")) == (3, 2, 0)


def test_pages_are_numbered_oldest_first_and_hold_typed_rows_newest_first(tmp_path):
    root = Root(tmp_path)
    for i in range(7):
        _live(root, f"r{i}", f"2025-12-1{i}T00:00:00Z", status="failed" if i % 3 == 0 else "ok")
    q = _query(root)
    assert [r.run_id for r in q.page("live", 1, 3)] == ["r2", "r1", "r0"]
    assert [r.run_id for r in q.page("live", 3, 3)] == ["r6"]
    assert all(isinstance(r, LiveRun) for r in q.page("live", 2, 3))
    assert q.page("live", 4, 3) == []
    assert q.status_counts("live", lambda r: r.status or "-") == {"ok": 4, "failed": 3}


def test_query_counts_and_skipped_lines_equal_read_history(tmp_path):
    root = Root(tmp_path)
    _live(root, "a", "2025-12-12T00:00:00Z")
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","samples":"many"}\n')
    _live(root, "b", "2025-12-13T00:00:00Z")
    q = HistoryQuery.read(root)
    want = read_history(root.live_history)
    assert q.total("live") == len(want.of_type(LiveRun))
    assert (q.skipped("live").count, q.skipped("live").lines) == (want.skipped, want.skipped_lines) == (1, [2])
    assert not history_cache_file(root, root.live_history).exists()  # a read-only query writes no cache


def test_cached_index_keeps_the_time_key_and_an_old_format_cache_is_rebuilt(tmp_path):
    root = Root(tmp_path)
    _live(root, "late", "2025-12-14T00:00:00Z")
    _live(root, "early", "2025-12-01T00:00:00Z")
    cache_file = history_cache_file(root, root.live_history)
    HistoryQuery.read(root, persist=True)
    warm = HistoryCache().read(root.live_history, cache_file)
    assert warm.parsed == 0 and [r.time_ms for r in warm.refs] == [1765670400000, 1764547200000]
    doc = json.loads(cache_file.read_bytes().split(b"\n", 1)[1])
    doc["format"] = 1  # as the previous version wrote it: no time column, a valid checksum
    del doc["cols"]["time_ms"]
    body = json.dumps(doc).encode()
    cache_file.write_bytes(hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
    assert HistoryCache().read(root.live_history, cache_file).parsed == 2
    assert [r.run_id for r in HistoryQuery.read(root, persist=True).live_runs()] == ["late", "early"]
