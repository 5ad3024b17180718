"""The dashboard's history index (history.index_history) and its persisted cache: counts, skipped lines
and rows are exactly read_history's; the cache is used only for bytes it was built from (appends are
parsed alone, a truncated/rewritten file or a corrupt/foreign cache is re-read from the start) and a
one-shot render with a warm cache parses only the rows it shows."""

from __future__ import annotations

import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calreport.model import LiveRun
from calreport.report import views
from calreport.report.render import render_site
from calreport.store import history
from calreport.store.history import (
    HistoryIndex,
    StaleIndex,
    index_history,
    read_history,
    save_index,
)
from calreport.store.paths import Root
from calreport.store.query import HistoryCache, history_cache_file

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def assert_same_as_read_history(index: HistoryIndex, path: Path) -> None:
    want = read_history(path)
    assert [(r.type, r.run_id, r.ts, r.underlying) for r in index.refs] == [
        (r.type, r.run_id, r.ts, r.underlying) for r in want.rows
    ]
    assert (index.skipped, index.skipped_lines) == (want.skipped, want.skipped_lines)
    assert [r.model_dump() for r in index.rows_of(index.refs)] == [r.model_dump() for r in want.rows]


def messy_history(root: Root, rows) -> Path:  # type: ignore[no-untyped-def]
    """Good rows, a malformed line, a blank line, a non-object, an older row missing most fields,
    a row of an unknown type and a torn last line."""
    rows.live()
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","samples":"many"}\n')  # fails validation: skipped
        fh.write(b"\n")  # blank: neither a row nor skipped
        fh.write(b"[1,2]\n")
        fh.write(b'{"type":"live_run","run_id":"OLD1","ts":"2024-01-01T00:00:00Z"}\n')  # old writer
        fh.write(b'{"type":"future_row","run_id":"F1"}\n')
    rows.live(underlying="ETH")
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","run_id":"torn","smoo')
    return root.live_history


def test_index_counts_rows_skipped_lines_and_torn_tail_like_read_history(root, rows, tmp_path):
    path = messy_history(root, rows)
    cache = tmp_path / "c" / "live.index"
    index = index_history(path, cache_file=cache)
    assert_same_as_read_history(index, path)
    assert index.skipped_lines == [2, 4, 8]  # the torn tail counts, like read_history
    assert [r.run_id for r in index.of_type(LiveRun)] == [index.refs[0].run_id, "OLD1", index.refs[3].run_id]
    warm = index_history(path, cache_file=cache)  # torn tail is parsed again, never persisted
    assert warm.parsed == 1
    assert_same_as_read_history(warm, path)
    rows.live()  # append_line starts a fresh line after the torn one
    again = index_history(path, cache_file=cache)
    assert again.parsed == 2  # the torn line (now complete, still unreadable) and the new row
    assert_same_as_read_history(again, path)


def test_warm_cache_parses_nothing(root, rows, tmp_path, monkeypatch):
    for _ in range(5):
        rows.live()
    cache = tmp_path / "live.index"
    cold = index_history(root.live_history, cache_file=cache)
    assert cold.parsed == 5 and cache.exists()

    def boom(data: object) -> None:
        raise AssertionError("parsed a cached line")

    monkeypatch.setattr(history, "parse_row", boom)
    monkeypatch.setattr(history, "parse_line", boom)  # the scan's way in (parse_row is its fallback)
    warm = index_history(root.live_history, cache_file=cache)
    assert warm.parsed == 0 and warm.refs == cold.refs and warm.offset == cold.offset


def test_appends_are_parsed_alone_in_process_and_across_processes(root, rows, tmp_path):
    cache = tmp_path / "live.index"
    for _ in range(3):
        rows.live()
    first = index_history(root.live_history, cache_file=cache)
    rows.live()
    rows.live(status="failed")
    served = index_history(root.live_history, previous=first, cache_file=cache)  # `serve`: in memory
    assert served.parsed == 2
    assert_same_as_read_history(served, root.live_history)
    assert len(first.refs) == 3  # the previous index is not changed under its holder
    rows.live()
    oneshot = index_history(root.live_history, cache_file=cache)  # a fresh process: from the file
    assert oneshot.parsed == 1
    assert_same_as_read_history(oneshot, root.live_history)


@pytest.mark.parametrize("change", ["truncate", "rewrite_same_size", "replace_file", "emptied"])
def test_changed_prefix_rebuilds_from_scratch(root, rows, tmp_path, change):
    cache = tmp_path / "live.index"
    runs = [rows.live() for _ in range(4)]
    index = index_history(root.live_history, cache_file=cache)
    data = root.live_history.read_bytes()
    if change == "truncate":
        root.live_history.write_bytes(data[: data.index(b"\n") + 1])
    elif change == "rewrite_same_size":  # same size, same inode, one run id changed mid-file
        old = runs[1].run_id or ""
        new = old[:-1] + ("A" if old[-1] != "A" else "B")
        with open(root.live_history, "r+b") as fh:
            fh.write(data.replace(old.encode(), new.encode()))
    elif change == "replace_file":
        tmp = root.live_history.with_suffix(".new")
        tmp.write_bytes(data.replace(b'"BTC"', b'"ETH"'))
        tmp.replace(root.live_history)
    else:
        root.live_history.write_bytes(b"")
    for previous, cache_file in ((None, cache), (index, None)):  # a fresh process, and `serve` in memory
        got = index_history(root.live_history, previous=previous, cache_file=cache_file)
        assert got.parsed == len([ln for ln in root.live_history.read_bytes().splitlines() if ln.strip()])
        assert_same_as_read_history(got, root.live_history)


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda raw: b"",
        lambda raw: raw[: len(raw) // 2],  # torn write
        lambda raw: raw[:70] + bytes([raw[70] ^ 1]) + raw[71:],  # a flipped bit
        lambda raw: b"not json at all",
        lambda raw: b"\x00\xff" * 100,
    ],
)
def test_corrupt_cache_is_ignored_and_rewritten(root, rows, tmp_path, corrupt):
    cache = tmp_path / "live.index"
    for _ in range(3):
        rows.live()
    index_history(root.live_history, cache_file=cache)
    cache.write_bytes(corrupt(cache.read_bytes()))
    got = index_history(root.live_history, cache_file=cache)
    assert got.parsed == 3
    assert_same_as_read_history(got, root.live_history)
    assert index_history(root.live_history, cache_file=cache).parsed == 0  # rewritten, good again


@pytest.mark.parametrize("column, value", [("offset", "12"), ("underlying", 7), ("lineno", None), ("ts", 1.5)])
def test_well_formed_cache_with_wrong_types_is_ignored(root, rows, tmp_path, column, value):
    cache = tmp_path / "live.index"
    rows.live()
    rows.live(underlying="ETH")
    index = index_history(root.live_history, cache_file=cache)
    bad = index.refs[0]._replace(**{column: value})
    save_index(HistoryIndex(**{**index.__dict__, "refs": [bad, index.refs[1]]}), cache)  # valid checksum
    got = index_history(root.live_history, cache_file=cache)
    assert got.parsed == 2
    assert_same_as_read_history(got, root.live_history)


def test_cache_from_other_code_is_not_trusted(root, rows, tmp_path, monkeypatch):
    cache = tmp_path / "live.index"
    rows.live()
    index_history(root.live_history, cache_file=cache)
    monkeypatch.setattr(history, "_code_key", lambda: "models.py changed")
    assert index_history(root.live_history, cache_file=cache).parsed == 1


def test_a_cache_that_lies_about_a_row_is_caught_when_the_row_is_read(root, rows, tmp_path):
    cache = tmp_path / "live.index"
    a, b = rows.live(), rows.live(underlying="ETH")
    index = index_history(root.live_history, cache_file=cache)
    forged = HistoryIndex(**{**index.__dict__, "refs": [index.refs[0]._replace(run_id=b.run_id), index.refs[1]]})
    assert save_index(forged, cache)  # a well-formed cache with the right checksum, wrong content
    lying = index_history(root.live_history, cache_file=cache)
    assert lying.parsed == 0
    with pytest.raises(StaleIndex):
        lying.row(lying.refs[0])
    assert lying.row(lying.refs[1]).run_id == b.run_id
    assert a.run_id != b.run_id


def test_render_recovers_from_a_lying_cache(root, rows):
    a = rows.live(smoothed=1.2345)
    rows.live(underlying="ETH", smoothed=1.1111)
    render_site(root)
    cache = history_cache_file(root, root.live_history)
    index = index_history(root.live_history, cache_file=cache)
    forged = HistoryIndex(**{**index.__dict__, "refs": [index.refs[0]._replace(underlying="ETH"), index.refs[1]]})
    save_index(forged, cache)
    render_site(root)
    html = root.index_html.read_text()
    assert a.run_id in html and "1.2345" in html and "1.1111" in html
    assert index_history(root.live_history, cache_file=cache).refs == index.refs  # rebuilt honestly


def test_unwritable_cache_dir_does_not_fail_a_render(root, rows):
    rows.live()
    shutil.rmtree(root.cache_dir / "history", ignore_errors=True)
    root.cache_dir.mkdir(parents=True, exist_ok=True)
    (root.cache_dir / "history").write_text("a file where the cache dir should be")
    res = render_site(root)
    assert res.problems == [] and "showing 1 of 1" in root.index_html.read_text()


def _showing(html: str) -> list[str]:
    return re.findall(r"showing [\d,]*\d of [\d,]*\d", html)


def test_warm_one_shot_render_parses_only_shown_rows_and_shows_exact_counts(root, rows, monkeypatch):
    monkeypatch.setattr(views, "CHART_POINTS", 2)
    cfg = root.calibration_config
    cfg.write_text(cfg.read_text().replace("max_rows: 50", "max_rows: 3").replace("page_size: 500", "page_size: 4"))
    for i in range(30):
        rows.live(underlying="BTC" if i % 2 else "ETH")
        rows.auto(status="failed" if i % 3 == 0 else "ok")
    with open(root.live_history, "ab") as fh:
        fh.write(b"{broken\n")
    rows.live()
    render_site(root, now=NOW)  # cold: builds the caches and every page
    cold_html = root.index_html.read_text()
    assert _showing(cold_html) == ["showing 3 of 31", "showing 3 of 30"]
    assert "1 unreadable line(s) skipped" in cold_html

    calls = 0
    real_line, real_row, inside = history.parse_line, history.parse_row, []

    def counting_line(line: bytes, *args: object):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        inside.append(line)
        try:
            return real_line(line, *args)
        finally:
            inside.pop()

    def counting_row(data: object):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += not inside  # parse_line's own fallback is the same validation, counted once
        return real_row(data)

    monkeypatch.setattr(history, "parse_line", counting_line)
    monkeypatch.setattr(history, "parse_row", counting_row)
    res = render_site(root, now=NOW)  # a fresh HistoryCache, as `calreport render` in a new process
    assert res.pages_written == 0
    assert root.index_html.read_text() == cold_html
    # 61 rows on disk; shown: the latest per underlying, 3 per table, 2 chart points per underlying
    assert 0 < calls <= 2 + 3 + 4 + 1 + 3 + 2
    served = HistoryCache()
    render_site(root, cache=served, now=NOW)
    rows.auto(status="degraded")
    render_site(root, cache=served, now=NOW)
    assert served.read(root.auto_history).parsed == 0  # the append was parsed by the render
    assert _showing(root.index_html.read_text()) == ["showing 3 of 31", "showing 3 of 31"]


def test_one_shot_render_with_cache_matches_render_without(root, rows, tmp_path):
    for i in range(12):
        rows.live(underlying="BTC" if i % 2 else "ETH", decision="apply" if i % 4 == 0 else "hold")
        rows.auto()
    render_site(root, now=NOW)
    first = root.index_html.read_text()
    render_site(root, now=NOW)
    assert root.index_html.read_text() == first
    assert history_cache_file(root, root.auto_history).exists()


def test_a_settled_file_is_trusted_by_its_stat_and_an_append_is_still_proved_by_hash(root, rows, tmp_path, monkeypatch):
    """The persisted index records the file's stat only when the file had settled before it was read
    (a change within the timestamp granularity could keep every field); then a one-shot render reads
    no byte of an unchanged history. Any change to the stat (an append) goes back to the SHA-256."""
    cache = tmp_path / "live.index"
    for _ in range(3):
        rows.live()
    young = index_history(root.live_history, cache_file=cache)
    assert young.stat is None  # written a moment ago: never trusted by stat
    monkeypatch.setattr(history, "_STAT_SETTLED_NS", -1)  # as if the file were old
    settled = index_history(root.live_history, cache_file=cache)
    assert settled.stat is not None and settled.parsed == 0
    warm = index_history(root.live_history, cache_file=cache)
    assert warm.parsed == 0 and warm.sha256 is None and warm.refs == settled.refs  # no hash: trusted by stat
    rows.live()
    grown = index_history(root.live_history, cache_file=cache)
    assert grown.parsed == 1 and grown.stat is not None
    assert_same_as_read_history(grown, root.live_history)
    served = index_history(root.live_history, previous=warm, cache_file=cache)  # `serve` held the stat-trusted index
    assert served.parsed == 1 and served.sha256 is not None
    assert_same_as_read_history(served, root.live_history)


def test_the_index_keeps_no_copy_of_the_file(root, rows, tmp_path):
    """A row is read back by its offset: a 175 MB history is not held in memory by the render."""
    for _ in range(3):
        rows.live()
    index = index_history(root.live_history, cache_file=tmp_path / "live.index")
    assert not any(isinstance(v, bytes) and len(v) > history._TAIL_CHECK for v in vars(index).values())
    assert [r.run_id for r in index.rows_of(index.refs)] == [r.run_id for r in index.refs]
