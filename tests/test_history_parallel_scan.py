"""The cold scan of a long history is parsed in several processes (history._scan_parallel): the index
it builds (refs, skipped lines, page views, offset, lines, tail, SHA-256) and the site rendered from
it are exactly what the one-process scan gives, wherever the chunks are cut: at blank lines, at
unreadable lines, before a torn last line. Small histories and multi-threaded processes stay serial."""

from __future__ import annotations

import os
import shutil
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest
import budget

from calreport.report.render import page_view, render_site
from calreport.store import history
from calreport.store.history import HistoryIndex, index_history, read_history
from calreport.store.paths import Root

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _force(monkeypatch: pytest.MonkeyPatch, processes: int) -> None:
    """Make every scan of this test use `processes` processes (1: the serial scan)."""
    monkeypatch.setattr(history, "_PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(history, "_may_fork", lambda: True)
    monkeypatch.setattr(history, "_cpus", lambda: processes)


def _state(index: HistoryIndex) -> dict:
    return {
        "refs": index.refs,
        "skipped_lines": index.skipped_lines,
        "views": {k: (type(v), v) for k, v in index.views.items()},  # a live row's view stays a LiveRow
        "offset": index.offset,
        "lines": index.lines,
        "complete": (index.complete_refs, index.complete_skipped),
        "parsed": index.parsed,
        "tail": index.tail,
        "sha256": index.sha256.hexdigest() if index.sha256 is not None else None,
    }


def _mixed_history(root: Root, rows, *, torn: bool) -> Path:  # type: ignore[no-untyped-def]
    """Live runs, apply-free auto runs, blank and whitespace lines, lines broken in JSON and in the
    schema (in a field no table shows), a non-object, an unknown row type; optionally a torn tail."""
    path = root.auto_history
    for i in range(40):
        rows.auto(underlying="ETH" if i % 3 else "BTC", status="ok" if i % 5 else "failed")
        with open(path, "ab") as fh:
            if i % 4 == 0:
                fh.write(b"\n")
            if i % 6 == 1:
                fh.write(b"   \n")
            if i % 7 == 2:
                fh.write(b'{"type":"auto_calibrate","run_id":"BAD","samples":"many"}\n')
            if i % 9 == 3:
                fh.write(b'{"type":"auto_calibrate", not json\n')
            if i % 11 == 4:
                fh.write(b"[1,2]\n")
            if i % 13 == 5:
                fh.write(b'{"type":"future_row","run_id":"F%d"}\n' % i)
    if torn:
        with open(path, "ab") as fh:
            fh.write(b'{"type":"auto_calibrate","run_id":"torn","mul')
    return path


@pytest.mark.parametrize("torn", [False, True])
def test_parallel_scan_builds_the_index_the_serial_scan_builds(root, rows, monkeypatch, torn) -> None:
    path = _mixed_history(root, rows, torn=torn)
    _force(monkeypatch, 1)
    serial = index_history(path, on_row=page_view)
    assert serial.worker_peaks_kb == []
    want = read_history(path)
    assert serial.skipped_lines == want.skipped_lines and len(serial.refs) == len(want.rows)
    for processes in (2, 3, 4, 7):
        _force(monkeypatch, processes)
        got = index_history(path, on_row=page_view)
        assert len(got.worker_peaks_kb) == processes, "every child should have parsed its chunk"
        assert _state(got) == _state(serial), processes


def test_live_rows_keep_their_views_through_a_parallel_scan(root, rows, monkeypatch) -> None:
    """A live row's view is a LiveRow (its status is derived per render): it crosses the pipe as one."""
    for i in range(30):
        rows.live(underlying="ETH" if i % 2 else "BTC", source="legacy" if i % 7 == 0 else None)
        if i % 5 == 0:
            with open(root.live_history, "ab") as fh:
                fh.write(b'{"type":"live_run","samples":"many"}\n\n')
    _force(monkeypatch, 1)
    serial = index_history(root.live_history, on_row=page_view)
    _force(monkeypatch, 3)
    got = index_history(root.live_history, on_row=page_view)
    assert len(got.worker_peaks_kb) == 3 and _state(got) == _state(serial)
    assert {type(v).__name__ for v in got.views.values()} == {"LiveRow"}


def test_every_place_a_chunk_can_start_gives_the_same_index(tmp_path, monkeypatch) -> None:
    """Short lines and many processes: chunk starts land on blank lines, unreadable lines, the line
    after a blank one, and rows; the index is the serial one each time."""
    path = tmp_path / "h.jsonl"
    good = b'{"type":"auto_calibrate","schema_version":1,"run_id":"R%d","ts":"2025-12-11T10:%02d:00Z","underlying":"BTC"}\n'
    lines = []
    for i in range(30):
        lines.append(good % (i, i))
        lines.append([b"\n", b" \n", b"{x\n", b'{"type":1}\n', b""][i % 5])
    path.write_bytes(b"".join(lines) + b'{"type":"auto_calibrate","run_id":"T')
    _force(monkeypatch, 1)
    serial = _state(index_history(path))
    # every count from 2 to 24 in the long run; by default a spread of them (each count forks that many children)
    for processes in range(2, 25) if budget.LONG else (2, 3, 4, 5, 7, 11, 17, 24):
        _force(monkeypatch, processes)
        assert _state(index_history(path)) == serial, processes


def test_chunk_starts_are_line_starts_in_order(tmp_path) -> None:
    path = tmp_path / "h"
    data = b"".join(b"x" * (i % 17) + b"\n" for i in range(200)) + b"\n\n" + b"y" * 5000 + b"\n"
    path.write_bytes(data)
    fd = os.open(path, os.O_RDONLY)
    try:
        for lo in (0, 1 + data.index(b"\n")):
            for n in range(1, 40):
                starts = history._chunk_starts(fd, lo, len(data), n)
                assert starts[0] == lo and starts == sorted(set(starts)) and len(starts) <= n
                assert all(data[s - 1 : s] == b"\n" and s < len(data) for s in starts[1:])
    finally:
        os.close(fd)


def test_an_append_after_a_parallel_scan_is_parsed_alone_and_matches(root, rows, monkeypatch, tmp_path) -> None:
    path = _mixed_history(root, rows, torn=False)
    cache = tmp_path / "c" / "auto.index"
    _force(monkeypatch, 2)
    first = index_history(path, cache_file=cache, on_row=page_view)
    assert first.worker_peaks_kb
    rows.auto()
    again = index_history(path, previous=first, cache_file=cache, on_row=page_view)
    assert again.parsed == 1
    _force(monkeypatch, 1)
    fresh = index_history(path, on_row=page_view)
    assert _state(again) | {"parsed": 0, "views": 0} == _state(fresh) | {"parsed": 0, "views": 0}
    from_cache = index_history(path, cache_file=cache)  # what the parallel read persisted proves the prefix
    assert from_cache.parsed == 0 and from_cache.refs == fresh.refs


def test_a_child_that_dies_costs_time_not_rows(root, rows, monkeypatch) -> None:
    path = _mixed_history(root, rows, torn=True)
    _force(monkeypatch, 1)
    serial = _state(index_history(path, on_row=page_view))
    _force(monkeypatch, 3)
    monkeypatch.setattr(history, "_child_scan", lambda *a: os._exit(1))
    got = index_history(path, on_row=page_view)
    assert got.worker_peaks_kb == []  # every chunk was parsed by the parent
    assert _state(got) == serial


@pytest.mark.parametrize("fault", ["dies", "garbles"])
def test_a_child_cut_off_or_garbled_mid_stream_is_parsed_again_by_the_parent(root, rows, monkeypatch, fault) -> None:
    path = _mixed_history(root, rows, torn=False)
    _force(monkeypatch, 1)
    serial = _state(index_history(path, on_row=page_view))
    monkeypatch.setattr(history, "_BLOCK", 512)  # a frame per 512 bytes read: several frames per child
    real = history._write_frame
    sent = {"n": 0}

    def faulty(out, obj):  # type: ignore[no-untyped-def]
        sent["n"] += 1  # in the child's own copy
        if sent["n"] == 3:
            if fault == "dies":
                out.flush()
                os._exit(1)
            out.write((5).to_bytes(8, "little") + b"junk!")  # a frame that does not unpickle
        real(out, obj)

    monkeypatch.setattr(history, "_write_frame", faulty)
    _force(monkeypatch, 2)
    got = index_history(path, on_row=page_view)
    assert got.worker_peaks_kb == []  # each child faulted after two frames: every chunk was parsed here
    assert _state(got) == serial


def test_a_file_cut_shorter_while_it_is_read_is_indexed_as_the_serial_scan_reads_it(root, rows, monkeypatch) -> None:
    path = _mixed_history(root, rows, torn=False)
    cut = int(path.stat().st_size * 0.6)  # mid-line: the cut leaves a torn last line
    real = history._count_newlines

    def truncate_first(*a):  # type: ignore[no-untyped-def]
        os.truncate(path, cut)  # in each child, before it reads its chunk
        return real(*a)

    monkeypatch.setattr(history, "_count_newlines", truncate_first)
    _force(monkeypatch, 2)
    got = index_history(path, on_row=page_view)
    assert path.stat().st_size == cut
    assert got.worker_peaks_kb == []  # the parallel read was dropped for the serial one
    _force(monkeypatch, 1)
    assert _state(got) == _state(index_history(path, on_row=page_view))


def test_small_histories_and_threaded_processes_scan_in_one_process(monkeypatch) -> None:
    monkeypatch.setattr(history, "_cpus", lambda: 8)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert history._scan_workers(history._PARALLEL_MIN_BYTES - 1) == 1
    assert history._scan_workers(history._PARALLEL_MIN_BYTES) == 8
    monkeypatch.setattr(threading, "active_count", lambda: 2)  # e.g. serve's watcher thread
    assert history._scan_workers(history._PARALLEL_MIN_BYTES) == 1
    monkeypatch.setattr(history, "_cpus", lambda: 1)
    monkeypatch.setattr(threading, "active_count", lambda: 1)
    assert history._scan_workers(history._PARALLEL_MIN_BYTES * 10) == 1


def _site(root: Root) -> dict[str, bytes]:
    """Every file under site/, with the root's own path (the commands a page shows name it) made neutral."""
    where = str(root.path).encode()
    return {
        str(p.relative_to(root.site_dir)): p.read_bytes().replace(where, b"ROOT")
        for p in sorted(root.site_dir.rglob("*"))
        if p.is_file()
    }


def test_the_site_rendered_from_a_parallel_scan_is_byte_identical(root, rows, monkeypatch, tmp_path) -> None:
    for i in range(12):
        rows.live(underlying="ETH" if i % 2 else "BTC")
    _mixed_history(root, rows, torn=True)
    cfg = root.config_dir / "calibration.yaml"
    cfg.write_text(cfg.read_text().replace("max_rows: 50", "max_rows: 3").replace("page_size: 500", "page_size: 4"))
    shutil.rmtree(root.site_dir, ignore_errors=True)
    shutil.rmtree(root.cache_dir / "history", ignore_errors=True)
    copy = Root(tmp_path / "copy")
    shutil.copytree(root.path, copy.path)
    _force(monkeypatch, 1)
    render_site(root, NOW)
    _force(monkeypatch, 3)
    render_site(copy, NOW)
    serial, parallel = _site(root), _site(copy)
    assert len([n for n in serial if n.startswith("history/")]) > 5
    assert parallel == serial
