"""History is append-only JSONL: torn lines are skipped on read and repaired on the next append."""

from __future__ import annotations

import json

import pytest
from foundation_helpers import add_live_run

from calreport.store.history import append_row, new_run_id, read_history
from calreport.store.models import ApplyEvent, AutoRun, LiveRun, UnknownRow
from calreport.store.paths import Root


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
