"""Append-only JSONL history: one complete line per write, under the file's lock.

Readers skip (and count) unreadable lines and never rewrite the file; old rows are never mutated.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
import sys
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
            out.rows.append(parse_row(jsonio.loads(line)))
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
# (a long history is never held in memory whole), validates every line once (the same parse_row
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
    if isinstance(row, AutoRun):
        end = timeutil.time_ms(row.as_of)
        if end is not None:
            return end
    return timeutil.time_ms(row.ts)


_COLUMN_TYPES = {
    name: {int} if name in _INT_FIELDS else {int, type(None)} if name in _OPTIONAL_INT_FIELDS else {str, type(None)}
    for name in _REF_FIELDS
}


class StaleIndex(CalreportError):
    """A row read back through an index is not the row the index recorded (the cache lied)."""


def _field(row: HistoryRow, name: str) -> str | None:
    """getattr(row, name, None) as a str (or None), interned: a RowRef column repeats a handful of
    values (type, underlying, source, status) over 100,000 rows. Unknown fields live in the extras."""
    value = row.__dict__.get(name) if name in row.__dict__ else (row.__pydantic_extra__ or {}).get(name)
    return sys.intern(value) if isinstance(value, str) else None


def _ref(row: HistoryRow, lineno: int, offset: int, length: int) -> RowRef:
    return RowRef(
        sys.intern(row.type),
        row.run_id,
        row.ts,
        _field(row, "underlying"),
        _field(row, "source"),
        _field(row, "status"),
        row_time_ms(row),
        lineno,
        offset,
        length,
    )


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
    # what a page shows of each row validated by this read (see _scan); rows that came from the
    # persisted index have none and are validated when their page is written
    on_row: Callable[[HistoryRow], Any] | None = field(default=None, repr=False)
    views: dict[RowRef, Any] = field(default_factory=dict, repr=False)

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
            got = parse_row(jsonio.loads(line))
        except (ValueError, ValidationError, TypeError, OSError):
            got = None
        if got is None or _ref(got, ref.lineno, ref.offset, ref.length) != ref:
            raise StaleIndex(f"history index does not match line {ref.lineno}", self.path)
        if keep:
            self._rows[ref] = got
        return got

    def _line(self, line: bytes, lineno: int, offset: int) -> None:
        """Validate one non-blank line once; `on_row` (when set) turns the validated row into what a
        history page shows, so the page need not validate it again."""
        self.parsed += 1
        try:
            row = parse_row(jsonio.loads(line))
        except (ValueError, ValidationError, TypeError):
            self.skipped_lines.append(lineno)
            return
        ref = _ref(row, lineno, offset, len(line))
        self.refs.append(ref)
        if self.on_row is not None:
            self.views[ref] = self.on_row(row)

    def _scan(self, fh: BinaryIO) -> None:
        """Parse everything from `offset` to the end of `fh`, a block at a time: the complete lines
        (they move `offset` on and feed the SHA-256), then any torn last line (counted like
        read_history does, never persisted). Lines are sliced one at a time from the block."""
        del self.refs[self.complete_refs :]
        del self.skipped_lines[self.complete_skipped :]
        self._rows = {}
        self.views = {}
        fh.seek(self.offset)
        start, lineno, carry = self.offset, self.lines, b""
        with gc_paused():
            while True:
                block = fh.read(_BLOCK)
                if not block:
                    break
                data = carry + block if carry else block
                end = data.rfind(b"\n") + 1
                pos = 0
                while pos < end:
                    nl = data.index(b"\n", pos)
                    lineno += 1
                    line = data[pos:nl]
                    if line[:1] == b"{" or line.strip():  # blank lines are neither rows nor skipped
                        self._line(line, lineno, start + pos)
                    pos = nl + 1
                if end:
                    if self.sha256 is not None:
                        self.sha256.update(memoryview(data)[:end])
                    self.tail = (self.tail + data[max(0, end - _TAIL_CHECK) : end])[-_TAIL_CHECK:]
                    start, self.lines, self.offset = start + end, lineno, start + end
                carry = data[end:]
        self.complete_refs, self.complete_skipped = len(self.refs), len(self.skipped_lines)
        if carry.strip():
            self._line(carry, lineno + 1, start)


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
            "cols": {name: [r[i] for r in refs] for i, name in enumerate(_REF_FIELDS)},
        }
    )
    try:
        atomic_write(cache_file, hashlib.sha256(body).hexdigest().encode() + b"\n" + body)
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
    """One object per distinct value of a column that repeats a handful of values (see _field)."""
    one = {v: v for v in set(column)}
    return list(map(one.__getitem__, column))


def index_history(
    path: Path, previous: HistoryIndex | None = None, cache_file: Path | None = None, on_row: Callable[[HistoryRow], Any] | None = None
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
