"""Append-only JSONL history: one complete line per write, under the file's lock.

Readers skip (and count) unreadable lines and never rewrite the file; old rows are never mutated.
"""

from __future__ import annotations

import fcntl
import functools
import gc
import hashlib
import json
import marshal
import os
import pickle
import select
import signal
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import repeat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator, NamedTuple, TypeVar

from filelock import Timeout
from pydantic import ValidationError

from calreport import SCHEMA_VERSION, jsonio, timeutil
from calreport.errors import CalreportError
from calreport.model import (
    ROW_TYPES,
    AutoRun,
    HistoryRow,
    UnknownRow,
)
from calreport.store.files import append_line, atomic_write, locked, open_input, read_input
from calreport.store.paths import Root, lock_path


def dumps_row(row: HistoryRow | dict[str, Any]) -> bytes:
    data = row.to_json_dict() if isinstance(row, HistoryRow) else row
    text = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    if "\n" in text:  # json.dumps escapes newlines in strings; this is a belt-and-braces check
        raise CalreportError("history row would span lines")
    return text.encode("utf-8") + b"\n"


def append_row(path: Path, row: HistoryRow | dict[str, Any], *, already_locked: bool = False) -> None:
    """Append one row as one complete line. Takes the history file's lock unless the caller has it."""
    try:
        line = dumps_row(row)
    except ValueError as exc:  # NaN / inf in a row
        raise CalreportError(f"refusing to write a row with non-finite numbers ({exc})", path) from None
    if already_locked:
        append_line(path, line)
        return
    try:
        with locked(path):
            append_line(path, line)
    except Timeout:
        raise CalreportError(f"timed out waiting for the lock {lock_path(path)}", path) from None


@dataclass
class HistoryRead:
    """Rows in file order (oldest first) and how many lines could not be read."""

    rows: list[HistoryRow] = field(default_factory=list)
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)

    def of_type(self, cls: type["R"]) -> list["R"]:
        return [r for r in self.rows if isinstance(r, cls)]


R = TypeVar("R", bound=HistoryRow)


def parse_row(data: Any) -> HistoryRow:
    """Raises ValueError/ValidationError for rows that are not JSON objects with a `type`."""
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        raise ValueError("not a history row")
    cls = ROW_TYPES.get(data["type"], UnknownRow)
    return cls.model_validate(data)


# A line is validated straight from its bytes by pydantic (one pass in Rust, ~35 % fewer instructions
# than jsonio.loads and then validating the objects). pydantic's JSON parser takes numbers jsonio's
# parser refuses or reads otherwise: NaN and Infinity, numbers beyond the float range (read as inf),
# integers of 19 digits or more (beyond 64 bits: exact ints where orjson gives floats). A line that
# may hold one goes the old way, as does a line without a known `type` and every line the fast path
# refuses: jsonio.loads and parse_row stay the one rule of what is readable, and the fast path only
# ever returns the row they would. "May hold one": the word NaN or Infinity anywhere, a run of 19
# digits anywhere, or e/E (an optional +) and 3 digits anywhere (a number's exponent of 100 or more;
# hex digits and ULIDs make a few false alarms, which only cost the old way's time). Exponents
# below -99 need no check: both parsers read them alike, down to the subnormals and to 0.
_TYPE_KEY = b'"type":"'
_FAST_TYPES = {tag.encode(): cls for tag, cls in ROW_TYPES.items()}
_NUMBER_SHAPE = bytes.maketrans(b"0123456789E+", b"0000000000ee")
_LONG_DIGITS = b"0" * 19


def _numbers_may_differ(line: bytes) -> bool:
    if b"NaN" in line or b"Infinity" in line:
        return True
    shape = line.translate(_NUMBER_SHAPE)  # digits -> 0, E and + -> e
    return _LONG_DIGITS in shape or b"e000" in shape


_SUSPECT_STEP = 1 << 17  # bytes a block check looks at in one go: its temporaries stay in the CPU's caches
_BLOCK_CHECK_MIN = 1 << 18  # below this a block is checked line by line (and numpy is not imported for it)


def _number_suspects(data: bytes, end: int) -> list[int]:
    """Where in data[:end] one of _numbers_may_differ's patterns may start (ascending offsets; a
    superset: "Inf" stands for Infinity), found with numpy a window at a time: the same check as
    _numbers_may_differ for a whole block, at under half its cost a line."""
    import numpy as np  # the render has it loaded; a command that never scans a long block does not

    pad = len(_LONG_DIGITS) - 1  # the longest pattern's length - 1: windows overlap by it
    a = np.zeros(end + pad, np.uint8)  # zeros after the block: every pattern's array is as long as its window
    a[:end] = np.frombuffer(data, np.uint8, end)
    out: list[int] = []
    for lo in range(0, end, _SUSPECT_STEP):
        n = min(_SUSPECT_STEP, end - lo)  # the starts this window answers for
        w = a[lo : lo + n + pad]
        d = (w - np.uint8(48)) < 10  # digits (uint8 wraps below "0")
        run = d[:-1] & d[1:]  # runs of 2, 4, 8, 16, 19 digits
        run = run[:-2] & run[2:]
        run = run[:-4] & run[4:]
        run = run[:-8] & run[8:]
        hit = run[:n] & run[3 : n + 3]
        hit |= ((w[:n] == 101) | (w[:n] == 69) | (w[:n] == 43)) & d[1 : n + 1] & d[2 : n + 2] & d[3 : n + 3]  # e E +, 3 digits
        hit |= (w[:n] == 78) & (w[1 : n + 1] == 97) & (w[2 : n + 2] == 78)  # NaN
        hit |= (w[:n] == 73) & (w[1 : n + 1] == 110) & (w[2 : n + 2] == 102)  # Inf
        if hit.any():
            out += (np.flatnonzero(hit) + lo).tolist()
    return out


def parse_line(line: bytes, checked: bool = False) -> HistoryRow:
    """The row of one history line, exactly as parse_row(jsonio.loads(line)) gives it, and the same
    lines refused (ValueError, ValidationError or TypeError), in fewer instructions (see above).
    `checked`: the caller found none of the numbers in question in the line (_number_suspects)."""
    at = line.find(_TYPE_KEY)
    if at >= 0:
        cls = _FAST_TYPES.get(line[at + 8 : line.find(b'"', at + 8)])
        if cls is not None and (checked or not _numbers_may_differ(line)):
            try:
                row = cls.__pydantic_validator__.validate_json(line)
            except ValueError:  # a ValidationError (pydantic's is a ValueError): decided the old way below
                pass
            else:
                # the class's Literal `type` matched the line's own top-level "type", not its default
                if "type" in row.model_fields_set:
                    return row
    return parse_row(jsonio.loads(line))


def iter_lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        with open_input(path) as fh:
            for lineno, line in enumerate(fh, 1):
                yield lineno, line
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None


def read_history(path: Path) -> HistoryRead:
    """Read every row; torn or malformed lines are skipped and counted, never rewritten."""
    out = HistoryRead()
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            out.rows.append(parse_line(line))
        except (ValueError, ValidationError, TypeError):
            out.skipped += 1
            out.skipped_lines.append(lineno)
    return out


def iter_lines_reversed(path: Path, block: int = 1 << 16) -> Iterator[bytes]:
    """Lines of `path` from the last to the first, reading fixed-size blocks from the end.

    Lets an apply find the latest apply event without parsing a long history. Linear in the
    bytes read: the pieces of a line that spans blocks are kept in a list and joined once
    (rebuilding the pending line per block made one 50 MB line cost ~21 s per apply).
    """
    try:
        fh = open_input(path)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        pending: list[bytes] = []  # pieces of the line being assembled, newest piece first
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step)
            parts = chunk.split(b"\n")
            if len(parts) == 1:  # no newline in this block: the pending line goes on
                pending.append(chunk)
                continue
            pending.append(parts[-1])
            line = b"".join(reversed(pending))
            if line.strip():
                yield line
            for line in reversed(parts[1:-1]):
                if line.strip():
                    yield line
            pending = [parts[0]]
        line = b"".join(reversed(pending))
        if line.strip():
            yield line


def append_auto_run(root: Root, run: AutoRun) -> AutoRun:
    """Write an auto run: its detail file (delta buckets, uncertainty, smile) first, then a row that
    keeps only what the dashboard shows and names that file. Rows stay ~1.7 KB instead of ~2.9 KB,
    so a long auto history reads and renders in proportion to what is shown. Returns the row written."""
    rid = run.run_id or ""
    path = root.run_detail(rid)
    row, detail = run.split_detail(str(path.relative_to(root.path)))
    atomic_write(path, detail.model_dump_json(by_alias=True).encode("utf-8"))
    append_row(root.auto_history, row)
    return row


def ensure_history_files(root: Root) -> None:
    root.history_dir.mkdir(parents=True, exist_ok=True)
    for p in (root.live_history, root.auto_history):
        if not p.exists():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)


# --------------------------------------------------------------------------- indexed reads (the dashboard)
#
# The dashboard needs a few fields of every row (counts, latest per underlying, derived status,
# page keys) but the full row only of the rows it shows. An index reads the file once, in blocks
# (a long history is never held in memory whole), validates every line once (the same parse_line
# as read_history, so the same rows are readable and the same lines skipped) and keeps a RowRef
# per readable row; a shown row is read back by its offset and validated again. The index can be
# persisted next to the site (data/cache/history/) keyed by a SHA-256 of the bytes it covers, and
# extended by parsing only the lines appended since.

INDEX_FORMAT = 3  # 3: the file's stat when it was last read unchanged (see _stat_key)
_TAIL_CHECK = 4096  # bytes before the consumed offset compared when extending an in-memory index
_BLOCK = 1 << 22  # bytes read at a time by a scan
# A file's stat proves it unchanged only if it was last changed well before it was read: a change
# within the file system's timestamp granularity of the read could keep every field (git's "racy"
# entries). Younger files, and files on a file system that keeps whole seconds, are checked by
# their SHA-256, as every file was before.
_STAT_SETTLED_NS = 1_000_000_000


class RowRef(NamedTuple):
    """One readable history row: the fields needed for every row, and where its line is."""

    type: str
    run_id: str | None
    ts: str | None
    underlying: str | None
    source: str | None
    status: str | None
    time_ms: int | None  # row_time_ms(row): what "newest first" orders by
    lineno: int
    offset: int
    length: int

    @property
    def is_live(self) -> bool:
        """LiveRun.is_live for the row behind this ref (meaningful for live_run refs)."""
        return (self.source or "live") == "live"


_REF_FIELDS = RowRef._fields
_INT_FIELDS = {"lineno", "offset", "length"}
_OPTIONAL_INT_FIELDS = {"time_ms"}


def row_time_ms(row: HistoryRow) -> int | None:
    """The time a row is ordered by, in epoch ms: an auto run's window end (`as_of`, else `ts`),
    any other row's `ts`. None when the row has no parseable time."""
    d = row.__dict__  # the fields, read without pydantic's __getattr__ hook (see _ref)
    if isinstance(row, AutoRun):
        end = timeutil.time_ms(d["as_of"])
        if end is not None:
            return end
    return timeutil.time_ms(d["ts"])


_COLUMN_TYPES = {
    name: {int} if name in _INT_FIELDS else {int, type(None)} if name in _OPTIONAL_INT_FIELDS else {str, type(None)}
    for name in _REF_FIELDS
}


class StaleIndex(CalreportError):
    """A row read back through an index is not the row the index recorded (the cache lied)."""


def _ref(row: HistoryRow, lineno: int, offset: int, length: int) -> RowRef:
    """The row's RowRef. The str columns that repeat a handful of values (type, underlying, source,
    status) are interned: 100,000 rows share a few objects. A field a row type does not declare is
    read from the row's extras; anything but a str is None. Inlined, and the fields read from the
    row's __dict__ (an attribute read of a pydantic model goes through its __getattr__ hook): built
    for every row of a history."""
    d, extra = row.__dict__, row.__pydantic_extra__ or {}
    u = d["underlying"] if "underlying" in d else extra.get("underlying")
    src = d["source"] if "source" in d else extra.get("source")
    st = d["status"] if "status" in d else extra.get("status")
    return tuple.__new__(RowRef, (  # RowRef(...) without the Python-level __new__ call
        sys.intern(d["type"]),
        d["run_id"],
        d["ts"],
        sys.intern(u) if isinstance(u, str) else None,
        sys.intern(src) if isinstance(src, str) else None,
        sys.intern(st) if isinstance(st, str) else None,
        row_time_ms(row),
        lineno,
        offset,
        length,
    ))


@contextmanager
def gc_paused() -> Iterator[None]:
    """Validating 100k rows allocates millions of objects; the cyclic GC would scan them again and
    again (3x the parse time here). Nothing parsed here forms cycles worth collecting mid-parse."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _stat_key(st: os.stat_result) -> list[int]:
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


@dataclass
class HistoryIndex:
    """A history file read once: a RowRef per readable row (file order) and the skipped lines,
    exactly as read_history would count them; full rows are read back from the file on demand."""

    path: Path
    refs: list[RowRef] = field(default_factory=list)
    skipped_lines: list[int] = field(default_factory=list)
    offset: int = 0  # bytes of complete lines covered (0 or just after a newline)
    lines: int = 0  # complete lines covered
    complete_refs: int = 0  # refs from complete lines; any after these come from a torn tail
    complete_skipped: int = 0
    dev: int = 0
    ino: int = 0
    parsed: int = 0  # lines parsed by the last read (0 when every line came from the cache)
    saved_offset: int = -1  # `offset` as last persisted or loaded from the cache file
    tail: bytes = b""  # the bytes just before `offset` (up to _TAIL_CHECK): an append keeps them
    sha256: Any = field(default=None, repr=False)  # hashlib state over bytes [0, offset); None: not known
    stat: list[int] | None = None  # _stat_key of the file when read, if it had settled (see _STAT_SETTLED_NS)
    _rows: dict[RowRef, HistoryRow] = field(default_factory=dict, repr=False)
    # what a page shows of each row validated by this read (see _scan), by the offset of its line
    # (an int hashes at once; a RowRef's ten fields are hashed on every look-up); rows that came from
    # the persisted index have none and are validated when their page is written
    on_row: Callable[[HistoryRow], Any] | None = field(default=None, repr=False)
    views: dict[int, Any] = field(default_factory=dict, repr=False)
    # peak memory (VmHWM, kB) of each worker process that parsed part of the last read (see _scan_parallel)
    worker_peaks_kb: list[int] = field(default_factory=list)
    # work that needs no history, done in this process while worker processes parse (see _collect)
    meanwhile: Callable[[], Any] | None = field(default=None, repr=False)

    @property
    def skipped(self) -> int:
        return len(self.skipped_lines)

    def of_type(self, cls: type[HistoryRow]) -> list[RowRef]:
        tag = cls.model_fields["type"].default
        return [r for r in self.refs if r.type == tag]

    def row(self, ref: RowRef, keep: bool = True) -> Any:
        """The validated row behind `ref`, read again from the file and checked against the ref
        (a cache that lied, or a file rewritten since, raises StaleIndex). `keep` memoises it."""
        return self.rows_of([ref], keep)[0]

    def rows_of(self, refs: Iterable[RowRef], keep: bool = True) -> list[Any]:
        refs = list(refs)
        out: list[Any] = [self._rows.get(r) for r in refs]
        if all(got is not None for got in out):
            return out
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)  # never waits on a FIFO swapped in
        except OSError:
            raise StaleIndex("history file cannot be read back", self.path) from None
        try:
            with gc_paused():  # a history page is 500 rows
                for i, ref in enumerate(refs):
                    if out[i] is None:
                        out[i] = self._read_back(fd, ref, keep)
        finally:
            os.close(fd)
        return out

    def _read_back(self, fd: int, ref: RowRef, keep: bool) -> HistoryRow:
        try:
            line = os.pread(fd, ref.length, ref.offset)
            got = parse_line(line)
        except (ValueError, ValidationError, TypeError, OSError):
            got = None
        if got is None or _ref(got, ref.lineno, ref.offset, ref.length) != ref:
            raise StaleIndex(f"history index does not match line {ref.lineno}", self.path)
        if keep:
            self._rows[ref] = got
        return got

    def _view(self) -> Callable[[int, HistoryRow], None] | None:
        """Where _parse_lines puts what a history page shows of each validated row (by line offset), so the
        page need not validate it again; None without `on_row`."""
        on_row, views = self.on_row, self.views
        if on_row is None:
            return None
        return lambda offset, row: views.__setitem__(offset, on_row(row))

    def _scan(self, fh: BinaryIO) -> None:
        """Parse everything from `offset` to the end of `fh`, a block at a time: the complete lines
        (they move `offset` on and feed the SHA-256), then any torn last line (counted like
        read_history does, never persisted). Lines are sliced one at a time from the block."""
        del self.refs[self.complete_refs :]
        del self.skipped_lines[self.complete_skipped :]
        self._rows = {}
        self.views = {}
        self.worker_peaks_kb = []
        workers = _scan_workers(os.fstat(fh.fileno()).st_size - self.offset)
        if workers > 1:
            with gc_paused():
                self._scan_parallel(fh.fileno(), workers)  # the complete lines; the rest as below
        fh.seek(self.offset)
        start, lineno, carry = self.offset, self.lines, b""
        view = self._view()
        with gc_paused():
            while True:
                block = fh.read(_BLOCK)
                if not block:
                    break
                data = carry + block if carry else block
                end = data.rfind(b"\n") + 1
                lineno, parsed = _parse_lines(data, end, lineno, start, self.refs, self.skipped_lines, view)
                self.parsed += parsed
                if end:
                    if self.sha256 is not None:
                        self.sha256.update(memoryview(data)[:end])
                    self.tail = (self.tail + data[max(0, end - _TAIL_CHECK) : end])[-_TAIL_CHECK:]
                    start, self.lines, self.offset = start + end, lineno, start + end
                carry = data[end:]
        self.complete_refs, self.complete_skipped = len(self.refs), len(self.skipped_lines)
        if carry.strip():  # a torn last line: parsed as if it ended here, never persisted
            self.parsed += _parse_lines(carry + b"\n", len(carry) + 1, lineno, start, self.refs, self.skipped_lines, view)[1]

    def _scan_parallel(self, fd: int, workers: int) -> None:
        """Parse the complete lines from `offset` on in `workers` forked children and leave the index
        exactly as the serial scan of those lines would (refs and skipped lines in file order, the
        views by offset; offset, lines, tail and SHA-256 moved on); _scan then reads what follows (a
        torn last line, lines appended meanwhile).

        The bytes are cut at line starts into one chunk per child. A child reads its chunk with
        os.pread on the inherited descriptor (the same file, whatever happens to the path), numbers
        its lines from the file's start (it counts the newlines before its chunk) and streams its
        refs (as columns), skipped lines and `on_row` views back a block at a time, so it holds one
        block's results, not its chunk's. This process hashes the bytes and turns each batch into
        RowRefs as it arrives, then appends the chunks in order. A child that fails or dies costs
        only time: its chunk is parsed here. A file cut shorter while it is read (history files are
        append-only; someone truncated it) is left to the serial scan, from where this one started,
        so the index holds what that scan would have read."""
        start = self.offset
        end = _last_line_end(fd, start, os.fstat(fd).st_size)
        cuts = _chunk_starts(fd, start, end, workers)
        if len(cuts) < 2:
            return
        mark = (len(self.refs), len(self.skipped_lines), self.lines, self.parsed, self.tail)
        sha0 = self.sha256.copy() if self.sha256 is not None else None
        try:
            self._parallel_chunks(fd, [_Chunk(lo, hi) for lo, hi in zip(cuts, [*cuts[1:], end])], start, end)
        except _Shrunk:
            del self.refs[mark[0] :]
            del self.skipped_lines[mark[1] :]
            self.lines, self.parsed, self.tail, self.offset, self.sha256 = mark[2], mark[3], mark[4], start, sha0
            self.views, self.worker_peaks_kb = {}, []

    def _parallel_chunks(self, fd: int, chunks: list["_Chunk"], start: int, end: int) -> None:
        """Fork a child per chunk, collect their streams, then append the chunks in order (raises
        _Shrunk when the file turned out shorter than the chunks)."""
        try:
            for c in chunks:
                r, w = os.pipe()
                _widen_pipe(w)
                pid = os.fork()
                if pid == 0:  # the child: never returns
                    os.close(r)
                    for other in chunks:
                        if other.fd >= 0:
                            os.close(other.fd)
                    _child_scan(fd, w, start, c.lo, c.hi, self.lines, self.on_row)
                os.close(w)
                c.pid, c.fd = pid, r
                c.views = self.views if self.on_row is not None else None  # batches add to the index's own
            self._collect(fd, chunks, start, end)
        finally:
            for c in chunks:
                if c.fd >= 0:
                    _close_quietly(c.fd)
                if c.pid:
                    _reap(c.pid, c.ended)
        for c in chunks:
            if c.peak_kb is None:  # the child did not finish: parse its chunk here
                c.drop()
                part = _parse_range(fd, c.lo, c.hi, self.lines, self.on_row)
                c.refs, c.skipped, c.lines, c.parsed, c.length = part.refs, part.skipped, part.lines, part.parsed, part.length
                if part.views is not None:
                    self.views.update(zip([r.offset for r in part.refs], part.views))
            else:  # its views went into self.views as its batches came
                self.worker_peaks_kb.append(c.peak_kb)
            if c.length != c.hi - c.lo:
                raise _Shrunk
            self.refs += c.refs
            self.skipped_lines += c.skipped
            self.parsed += c.parsed
            self.lines += c.lines
            self.offset = c.hi
        tail_lo = max(start, end - _TAIL_CHECK)
        last = os.pread(fd, end - tail_lo, tail_lo)
        if len(last) != end - tail_lo:
            raise _Shrunk
        self.tail = (self.tail + last)[-_TAIL_CHECK:]
        self.complete_refs, self.complete_skipped = len(self.refs), len(self.skipped_lines)

    def _collect(self, fd: int, chunks: list["_Chunk"], start: int, end: int) -> None:
        """Read every child's stream as it comes (a child blocks on a full pipe) and feed the SHA-256
        a block at a time in between; returns when every stream has ended."""
        live = {c.fd: c for c in chunks}
        pos = start if self.sha256 is not None else end
        chores = [_code_key, *([self.meanwhile] if self.meanwhile is not None else [])]
        while live or pos < end:
            if chores:
                chores.pop(0)()
            if live:
                ready, _, _ = select.select(list(live), [], [], 0 if pos < end else None)
                for r in ready:
                    c = live[r]
                    data = os.read(r, _PIPE_BYTES)
                    if not data or not c.feed(data):
                        c.ended = True
                        del live[r]
                        _close_quietly(r)  # a child still writing (a bad frame) gets EPIPE and leaves
                        c.fd = -1
            if pos < end:
                block = os.pread(fd, min(_HASH_STEP, end - pos), pos)
                if not block:
                    raise _Shrunk
                self.sha256.update(block)
                pos += len(block)


# --------------------------------------------------------------------------- the parallel cold scan
#
# Parsing is ~30-40 us of Python a row (orjson, pydantic, the RowRef, the page's view of the row), so
# the first read of a 100,000-row history takes seconds on one core. From _PARALLEL_MIN_BYTES of
# unparsed lines on (an append, a small root and every test-sized history stay in this process,
# unchanged) the lines are parsed by one forked child per CPU this process may run on.
#
# Start method: fork, and only while this process runs one Python thread. A forked child is a copy
# of the parent with every lock as it was at the fork; a lock held by another thread (serve's watchdog
# observer, its HTTP thread, a debounce timer: logging, the import lock, Jinja's template cache)
# would never be released in the child. One-shot renders (every CLI write, `calreport render`) and
# serve's first render (made before it starts its threads) are single-threaded; later renders in
# serve parse only appended lines (HistoryCache), and should one re-read everything it does so in
# one process. C threads (OpenBLAS's pool, started when numpy is imported) hold no Python lock, and
# the child never calls into BLAS. 'spawn' and 'forkserver' start a fresh interpreter that imports
# pydantic, the row models and the templates (~0.5-1 s a process): most of what a second core saves
# on 100,000 rows. The child writes only to its pipe and leaves by os._exit: no atexit handler,
# buffered output or temporary directory of the parent's is run, flushed or removed twice.

_PARALLEL_MIN_BYTES = 32 << 20  # ~17,000 of today's auto rows, ~0.5 s on one core
_PIPE_BYTES = 1 << 20  # what a child's pipe holds (when the kernel allows) and the parent reads at once
_HASH_STEP = 1 << 20  # bytes hashed between two looks at the children's pipes
_OFFSET = _REF_FIELDS.index("offset")


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _may_fork() -> bool:
    """Forking is safe here only while no other Python thread exists (see above)."""
    return hasattr(os, "fork") and threading.active_count() == 1


def _scan_workers(size: int) -> int:
    """How many child processes parse `size` bytes of unparsed history (1: this process alone)."""
    if size < _PARALLEL_MIN_BYTES:
        return 1
    cpus = _cpus()
    return cpus if cpus > 1 and _may_fork() else 1


@dataclass
class _Part:
    """What parsing a run of complete lines gives: its RowRefs, each ref's on_row view, the skipped
    lines, the number of lines and of parsed (non-blank) lines, and the bytes covered (up to and
    including the last newline)."""

    refs: list[RowRef]
    views: list[Any] | None
    skipped: list[int]
    lines: int
    parsed: int
    length: int


def _parse_lines(
    data: bytes, end: int, lineno: int, base: int, refs: list[RowRef], skipped: list[int],
    view: Callable[[int, HistoryRow], None] | None,
) -> tuple[int, int]:
    """Validate each line of data[:end] (complete lines; data[0] is at file offset `base`, its first line
    is number `lineno` + 1) once: a RowRef for each readable row, the line number of each unreadable one,
    blank lines neither; `view(offset, row)` keeps what a page shows of a row. The one rule of the serial
    and the parallel scan. Returns (the last line number, the non-blank lines parsed)."""
    pos = parsed = 0
    # a long block is checked for the numbers parse_line must not read fast in one go (see above)
    suspects = _number_suspects(data, end) if end >= _BLOCK_CHECK_MIN else None
    at = 0
    while pos < end:
        nl = data.index(b"\n", pos)
        lineno += 1
        line = data[pos:nl]
        if line[:1] == b"{" or line.strip():  # blank lines are neither rows nor skipped
            parsed += 1
            checked = False
            if suspects is not None:
                while at < len(suspects) and suspects[at] < pos:
                    at += 1
                checked = at == len(suspects) or suspects[at] >= nl
            try:
                row = parse_line(line, checked)
            except (ValueError, ValidationError, TypeError):
                skipped.append(lineno)
            else:
                refs.append(_ref(row, lineno, base + pos, len(line)))
                if view is not None:
                    view(base + pos, row)
        pos = nl + 1
    return lineno, parsed


def _parse_range(
    fd: int, lo: int, hi: int, lineno: int, on_row: Callable[[HistoryRow], Any] | None,
    emit: Callable[[_Part], None] | None = None,
) -> _Part:
    """Parse the complete lines of bytes [lo, hi) of `fd` (read by pread, a block at a time) exactly
    as the serial scan does (_parse_lines), numbering them from `lineno` + 1. With `emit`, each block's refs,
    views, skipped lines and parse count go to it and are not kept; the result then carries only
    the totals (lines, length)."""
    refs: list[RowRef] = []
    views: list[Any] | None = [] if on_row is not None else None
    skipped: list[int] = []
    first, parsed = lineno, 0
    pos_file, carry, covered = lo, b"", 0
    while pos_file < hi:
        block = os.pread(fd, min(_BLOCK, hi - pos_file), pos_file)
        if not block:
            break
        base = pos_file - len(carry)  # file offset of data[0]
        pos_file += len(block)
        data = carry + block if carry else block
        end = data.rfind(b"\n") + 1
        view = None if views is None else (lambda _offset, row, _v=views: _v.append(on_row(row)))  # type: ignore[misc]
        lineno, n = _parse_lines(data, end, lineno, base, refs, skipped, view)
        parsed += n
        if end:
            covered = base + end - lo
        carry = data[end:]
        if emit is not None:
            emit(_Part(refs, views, skipped, 0, parsed, 0))
            refs, views, skipped, parsed = [], [] if on_row is not None else None, [], 0
    return _Part(refs, views, skipped, lineno - first, parsed, covered)


class _Shrunk(Exception):
    """The history file was cut shorter while a parallel scan read it."""


@dataclass
class _Chunk:
    """One child's chunk [lo, hi) and what its stream has delivered so far."""

    lo: int
    hi: int
    pid: int = 0
    fd: int = -1
    ended: bool = False  # its stream was read to its end (or given up on)
    peak_kb: int | None = None  # set by the child's last frame: None means it did not finish
    refs: list[RowRef] = field(default_factory=list)
    views: dict[int, Any] | None = None  # the index's views (each batch adds to it), None without on_row
    skipped: list[int] = field(default_factory=list)
    lines: int = 0
    parsed: int = 0
    length: int = -1  # bytes its lines covered (the child's last frame says): less than hi - lo if the file shrank
    _buf: bytearray = field(default_factory=bytearray)

    def feed(self, data: bytes) -> bool:
        """Take bytes of the stream; complete frames become refs at once. False on a frame that
        cannot be read (the chunk is then parsed by the parent)."""
        buf = self._buf
        buf += data
        at = 0
        while len(buf) - at >= 8:
            n = int.from_bytes(buf[at : at + 8], "little")
            if len(buf) - at - 8 < n:
                break
            try:
                kind, payload = _loads_frame(memoryview(buf)[at + 8 : at + 8 + n])
            except Exception:  # noqa: BLE001 - a frame cut short or garbled: the parent parses the chunk
                self.drop()
                return False
            at += 8 + n
            if kind == "rows":
                cols, views, skipped, parsed = payload
                if cols:
                    self.refs += map(tuple.__new__, repeat(RowRef), zip(*cols))  # RowRef._make without a call per row
                    if self.views is not None and views is not None:
                        self.views.update(zip(cols[_OFFSET], views))
                self.skipped += skipped
                self.parsed += parsed
            else:
                self.lines, self.length, self.peak_kb = payload
        del buf[:at]
        return True

    def drop(self) -> None:
        """Forget what this chunk's stream delivered (its views leave the index's dict too)."""
        if self.views is not None:
            for ref in self.refs:
                self.views.pop(ref.offset, None)
        self.refs, self.skipped, self.parsed, self.peak_kb = [], [], 0, None


def _child_scan(fd: int, w: int, start: int, lo: int, hi: int, lines: int, on_row: Callable[[HistoryRow], Any] | None) -> None:
    """A forked child: parse [lo, hi) and stream it (see _Chunk.feed), then leave by os._exit (status
    1 on any failure, and nothing printed; the parent then parses the chunk itself)."""
    code = 1
    try:
        lineno = lines + _count_newlines(fd, start, lo)
        with os.fdopen(w, "wb", buffering=_PIPE_BYTES) as out:

            def emit(part: _Part) -> None:
                cols = [list(c) for c in zip(*part.refs)]  # columns pickle smaller and faster than tuples
                _write_frame(out, ("rows", (cols, part.views, part.skipped, part.parsed)))

            total = _parse_range(fd, lo, hi, lineno, on_row, emit)
            _write_frame(out, ("end", (total.lines, total.length, _vm_hwm_kb())))
        code = 0
    except BaseException:  # noqa: BLE001 - whatever happens, the parent parses this chunk itself
        pass
    finally:
        os._exit(code)


def _write_frame(out: BinaryIO, obj: Any) -> None:
    """One frame: its length, a format byte and the object, by marshal when it holds only what marshal
    writes (str, int, None, lists: an auto history's batches; ~2x faster to read back than pickle),
    else by pickle (a live row's view is a NamedTuple)."""
    try:
        data = b"m" + marshal.dumps(obj)
    except ValueError:
        data = b"p" + pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(len(data).to_bytes(8, "little"))
    out.write(data)
    out.flush()


def _loads_frame(data: memoryview) -> Any:
    if data[:1] == b"m":
        return marshal.loads(data[1:])
    if data[:1] == b"p":
        return pickle.loads(data[1:])
    raise ValueError("unknown frame format")


def _count_newlines(fd: int, lo: int, hi: int) -> int:
    n = 0
    while lo < hi:
        block = os.pread(fd, min(_BLOCK, hi - lo), lo)
        if not block:
            break
        n += block.count(b"\n")
        lo += len(block)
    return n


def _widen_pipe(fd: int) -> None:
    """A 1 MB pipe (Linux; the default 64 kB would wake the reader every ~30 rows). Best effort."""
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _PIPE_BYTES)  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        pass


def _vm_hwm_kb() -> int:
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


def _last_line_end(fd: int, lo: int, hi: int) -> int:
    """The offset just after the last newline in [lo, hi) (lo when there is none)."""
    pos = hi
    while pos > lo:
        step = min(1 << 16, pos - lo)
        block = os.pread(fd, step, pos - step)
        i = block.rfind(b"\n")
        if i >= 0:
            return pos - step + i + 1
        pos -= step
    return lo


def _chunk_starts(fd: int, lo: int, hi: int, n: int) -> list[int]:
    """Up to `n` chunk starts in [lo, hi), each a line start, about equal in bytes; the first is lo.
    `hi` is just after a newline."""
    starts = [lo]
    for i in range(1, n):
        pos = _next_line_start(fd, max(lo + (hi - lo) * i // n, starts[-1] + 1), hi)
        if pos < hi:
            starts.append(pos)
    return starts


def _next_line_start(fd: int, pos: int, hi: int) -> int:
    """The first line start at or after `pos` (> 0): just after the first newline at or after pos - 1."""
    q = pos - 1
    while q < hi:
        block = os.pread(fd, min(1 << 16, hi - q), q)
        if not block:
            break
        j = block.find(b"\n")
        if j >= 0:
            return q + j + 1
        q += len(block)
    return hi


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def _reap(pid: int, ended: bool) -> None:
    """Wait for a child; one whose stream was not read to its end (this process is leaving early)
    is killed first."""
    try:
        if not ended:
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ChildProcessError, ProcessLookupError, OSError):
        pass


@functools.cache
def _code_key() -> str:
    """Cached validation results are only good for the row schema that validated them: the key is
    the index format, the package's SCHEMA_VERSION and the JSON Schema of every row type (so any
    change to a row model invalidates the cache, whatever file it lives in; computed on first use)."""
    schemas = {name: model.model_json_schema() for name, model in sorted(ROW_TYPES.items())}
    blob = json.dumps({"index": INDEX_FORMAT, "schema_version": SCHEMA_VERSION, "rows": schemas}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _prefix_sha256(path: Path, offset: int) -> Any:
    """hashlib state over the first `offset` bytes of `path` (None when they cannot be read)."""
    h = hashlib.sha256()
    try:
        with open_input(path) as fh:
            left = offset
            while left > 0:
                block = fh.read(min(_BLOCK, left))
                if not block:
                    return None
                h.update(block)
                left -= len(block)
    except OSError:
        return None
    return h


def save_index(index: HistoryIndex, cache_file: Path) -> bool:
    """Persist what covers the complete lines (atomically; a checksum guards the body). False when
    the cache cannot be written: it is an optimisation, never a reason for a command to fail."""
    if index.sha256 is None:  # trusted by its stat, then appended to: hash the prefix once
        index.sha256 = _prefix_sha256(index.path, index.offset)
        if index.sha256 is None:
            return False
    sha = index.sha256
    refs = index.refs[: index.complete_refs]
    body = jsonio.dumps(
        {
            "format": INDEX_FORMAT,
            "code": _code_key(),
            "source": index.path.name,
            "offset": index.offset,
            "lines": index.lines,
            "sha256": sha.hexdigest(),
            "stat": index.stat,
            "tail": index.tail.hex(),
            "skipped_lines": index.skipped_lines[: index.complete_skipped],
            # columns by one transpose in C (tuples write as the same JSON arrays as lists)
            "cols": dict(zip(_REF_FIELDS, zip(*refs))) if refs else {name: [] for name in _REF_FIELDS},
        }
    )
    try:
        # no fsync (~10-40 ms for a 100,000-row index): the file is derived, and its first line is the
        # SHA-256 of the body, so a copy a crash cut short is never trusted (_load_cached) but re-read
        atomic_write(cache_file, hashlib.sha256(body).hexdigest().encode() + b"\n" + body, durable=False)
    except (CalreportError, OSError):
        return False
    index.saved_offset = index.offset
    return True


def _load_cached(cache_file: Path, path: Path, fh: BinaryIO, st: os.stat_result) -> HistoryIndex | None:
    """The persisted index if it was built by this code from a prefix of the file open as `fh`; else None.

    The prefix is proved by its SHA-256, read from `fh`, unless the file's stat is the one recorded
    when the cache was written from a settled file (then not a byte is read)."""
    try:
        raw = read_input(cache_file)  # a cache is only ever a regular file we wrote
    except CalreportError:
        return None
    try:
        digest, body = raw.split(b"\n", 1)
        if hashlib.sha256(body).hexdigest().encode() != digest:
            return None
        doc = jsonio.loads(body)
        offset, lines, stat = doc["offset"], doc["lines"], doc["stat"]
        if (
            doc["format"] != INDEX_FORMAT
            or doc["code"] != _code_key()
            or not isinstance(offset, int)
            or not 0 <= offset <= st.st_size
            or not isinstance(lines, int)
        ):
            return None
        cols = [doc["cols"][name] for name in _REF_FIELDS]
        if len({len(c) for c in cols}) != 1 or not all(
            set(map(type, c)) <= _COLUMN_TYPES[name] for name, c in zip(_REF_FIELDS, cols)
        ):
            return None
        tail = bytes.fromhex(doc["tail"])
        sha = None
        if stat != _stat_key(st):  # the file changed since (or was young): prove the prefix by its hash
            sha = hashlib.sha256()
            fh.seek(0)
            left, last = offset, b""
            while left > 0:
                block = fh.read(min(_BLOCK, left))
                if not block:
                    return None
                sha.update(block)
                last = (last + block)[-_TAIL_CHECK:]
                left -= len(block)
            if sha.hexdigest() != doc["sha256"] or (offset and last[-1:] != b"\n"):
                return None
            tail = last
        skipped = [int(n) for n in doc["skipped_lines"]]
        cols = [_shared(c) if name in _SHARED_FIELDS else c for name, c in zip(_REF_FIELDS, cols)]
        refs = list(map(tuple.__new__, repeat(RowRef), zip(*cols)))  # RowRef._make without a Python call per row
        if any(r.offset + r.length > offset for r in refs[-1:]):
            return None
    except (ValueError, KeyError, TypeError, AttributeError, IndexError):
        return None
    return HistoryIndex(
        path=path, refs=refs, skipped_lines=skipped, offset=offset, lines=lines,
        complete_refs=len(refs), complete_skipped=len(skipped), saved_offset=offset, tail=tail, sha256=sha,
        stat=stat if sha is None else None,
    )


_SHARED_FIELDS = ("type", "underlying", "source", "status")


def _shared(column: list[Any]) -> list[Any]:
    """One object per distinct value of a column that repeats a handful of values (see _ref)."""
    one = {v: v for v in set(column)}
    return list(map(one.__getitem__, column))


def index_history(
    path: Path,
    previous: HistoryIndex | None = None,
    cache_file: Path | None = None,
    on_row: Callable[[HistoryRow], Any] | None = None,
    meanwhile: Callable[[], Any] | None = None,
) -> HistoryIndex:
    """Index `path`, parsing only what neither `previous` (same process) nor `cache_file` covers.

    `previous` is trusted for the same inode when the file did not shrink and the bytes just before
    its offset are unchanged (appends only); the persisted cache only when the SHA-256 of the bytes
    it covers matches (or the file's stat is the settled one it recorded). Anything else (rewritten,
    truncated, corrupt cache) is re-read from the start.
    """
    try:
        fh = open_input(path)
    except FileNotFoundError:
        return HistoryIndex(path=path)
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None
    try:
        with fh:
            st = os.fstat(fh.fileno())
            base = _trusted_previous(previous, fh, st)
            if base is None and cache_file is not None:
                with gc_paused():  # 100,000 refs built from the cached columns
                    base = _load_cached(cache_file, path, fh, st)
            index = base if base is not None else HistoryIndex(path=path, sha256=hashlib.sha256())
            index.dev, index.ino, index.parsed, index.on_row = st.st_dev, st.st_ino, 0, on_row
            index.worker_peaks_kb, index.meanwhile = [], meanwhile
            if index.offset < st.st_size:
                index._scan(fh)
            after = os.fstat(fh.fileno())
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None
    settled = (
        _stat_key(after) == _stat_key(st)
        and st.st_ctime_ns % 1_000_000_000 != 0
        and time.time_ns() - st.st_ctime_ns > _STAT_SETTLED_NS
    )
    stat = _stat_key(st) if settled and index.offset == st.st_size else None
    if cache_file is not None and (index.offset != index.saved_offset or (stat is not None and index.stat != stat)):
        index.stat = stat
        save_index(index, cache_file)
    index.stat = stat
    return index


def _trusted_previous(previous: HistoryIndex | None, fh: BinaryIO, st: os.stat_result) -> HistoryIndex | None:
    """A copy of `previous` if the file is the same inode and only appended to since; else None."""
    if previous is None or (previous.dev, previous.ino) != (st.st_dev, st.st_ino) or st.st_size < previous.offset:
        return None
    lo = previous.offset - len(previous.tail)
    fh.seek(lo)
    if fh.read(previous.offset - lo) != previous.tail:
        return None
    return replace(  # a copy: whoever holds `previous` keeps what it read
        previous,
        refs=previous.refs[: previous.complete_refs],
        skipped_lines=previous.skipped_lines[: previous.complete_skipped],
        sha256=previous.sha256.copy() if previous.sha256 is not None else None,
        _rows={},
        views={},
    )
