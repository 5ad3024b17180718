"""Append-only JSONL history: one complete line per write, under the file's lock.

Readers skip (and count) unreadable lines and never rewrite the file; old rows are never mutated.
"""

from __future__ import annotations

import functools
import gc
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, NamedTuple, TypeVar

from filelock import Timeout
from pydantic import ValidationError

from calreport import SCHEMA_VERSION, jsonio, timeutil
from calreport.errors import CalreportError, RefusedError, excerpt
from calreport.model import (
    ROW_TYPES,
    ApplyEvent,
    AutoRun,
    HistoryRow,
    LiveRun,
    UnknownRow,
)
from calreport.store.files import append_line, atomic_write, locked
from calreport.store.paths import Root, lock_path
from calreport.store.yamlio import validation_problem


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
        with open(path, "rb") as fh:
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
    bytes read: the pieces of a line that spans blocks are kept in a list and joined once (issue
    10: rebuilding the pending line per block made one 50 MB line cost ~21 s per apply).
    """
    try:
        fh = open(path, "rb")
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


def iter_rows_reversed(path: Path, cls: type[R]) -> Iterator[R]:
    """Readable rows of type `cls`, newest first, without parsing the rest of a long history."""
    tag = f'"{cls.model_fields["type"].default}"'.encode()
    for line in iter_lines_reversed(path):
        if tag not in line:
            continue
        try:
            row = parse_row(jsonio.loads(line))
        except (ValueError, ValidationError, TypeError):
            continue
        if isinstance(row, cls):
            yield row


def last_apply_events(path: Path, underlyings: set[str]) -> dict[str, ApplyEvent]:
    """The newest readable apply event per underlying, scanning the history backwards."""
    found: dict[str, ApplyEvent] = {}
    wanted = set(underlyings)
    for line in iter_lines_reversed(path):
        if not wanted:
            break
        if b'"apply"' not in line:
            continue
        try:
            row = parse_row(jsonio.loads(line))
        except (ValueError, ValidationError, TypeError):
            continue
        if isinstance(row, ApplyEvent) and row.underlying in wanted:
            found[row.underlying] = row
            wanted.discard(row.underlying)
    return found


def live_history(root: Root) -> HistoryRead:
    """Kept for callers outside store/ and report/ until they move to store.query.HistoryQuery
    (to delete after the merge). File order, oldest first."""
    return read_history(root.live_history)


def auto_history(root: Root) -> HistoryRead:
    """Kept for callers outside store/ and report/ until they move to store.query.HistoryQuery
    (to delete after the merge). File order, oldest first."""
    return read_history(root.auto_history)


def live_runs(root: Root, underlying: str | None = None) -> list[LiveRun]:
    """Kept for callers outside store/ and report/ until they move to store.query.HistoryQuery
    (to delete after the merge). File order, oldest first."""
    runs = live_history(root).of_type(LiveRun)
    return [r for r in runs if underlying is None or r.underlying == underlying]


def apply_events(root: Root, underlying: str | None = None) -> list[ApplyEvent]:
    """Kept for callers outside store/ and report/ until they move to store.query.HistoryQuery
    (to delete after the merge). File order, oldest first."""
    events = live_history(root).of_type(ApplyEvent)
    return [e for e in events if underlying is None or e.underlying == underlying]


def auto_runs(root: Root, underlying: str | None = None) -> list[AutoRun]:
    """Kept for callers outside store/ and report/ until they move to store.query.HistoryQuery
    (to delete after the merge). File order, oldest first."""
    runs = auto_history(root).of_type(AutoRun)
    return [r for r in runs if underlying is None or r.underlying == underlying]


def latest_live_run(root: Root, underlying: str, *, refuse_unreadable: bool = False) -> LiveRun | None:
    """The newest live run of `underlying` (file order is time order: appends only).

    Scans backwards, so force-apply does not parse a long history; imported legacy rows
    (source "legacy") are never candidates. With `refuse_unreadable` (force-apply), a newer
    complete live-run line of `underlying` that breaks the schema (a hand-edited `"global": true`
    or `"1.5"`) is refused in one line instead of being passed over for an older run.
    """
    path = root.live_history
    for line in iter_lines_reversed(path):
        if b'"live_run"' not in line:
            continue
        try:
            data = jsonio.loads(line)
        except ValueError:
            continue  # torn or not JSON: never a recorded row
        try:
            row = parse_row(data)
        except (ValueError, ValidationError, TypeError) as exc:
            if (
                refuse_unreadable
                and isinstance(data, dict)
                and data.get("type") == "live_run"
                and data.get("underlying") == underlying
                and data.get("source", "live") in (None, "live")
            ):
                raise RefusedError(
                    f"the latest {underlying} live run {excerpt(data.get('run_id'), 40)} does not match the schema "
                    f"({validation_problem(exc)}); nothing applied",
                    path,
                ) from None
            continue
        if isinstance(row, LiveRun) and row.underlying == underlying and row.is_live:
            return row
    return None


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
# page keys) but the full row only of the rows it shows. An index validates every line once (the
# same parse_row as read_history, so the same rows are readable and the same lines skipped) and
# keeps a RowRef per readable row plus the file's bytes; a shown row is parsed and validated again
# from those bytes. The index can be persisted next to the site (data/cache/history/) keyed by a
# SHA-256 of the bytes it covers, and extended by parsing only the lines appended since.

INDEX_FORMAT = 2  # 2: RowRef.time_ms (the row's time, for newest-first by time)
_TAIL_CHECK = 4096  # bytes before the consumed offset compared when extending an in-memory index


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


def _ref(row: HistoryRow, lineno: int, offset: int, length: int) -> RowRef:
    source, status = getattr(row, "source", None), getattr(row, "status", None)
    return RowRef(
        row.type,
        row.run_id,
        row.ts,
        row.underlying,
        source if isinstance(source, str) else None,
        status if isinstance(status, str) else None,
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


@dataclass
class HistoryIndex:
    """A history file read once: a RowRef per readable row (file order) and the skipped lines,
    exactly as read_history would count them; full rows are parsed on demand from `data`."""

    path: Path
    data: bytes = b""  # the file's bytes when read (complete lines, then any torn tail)
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
        """The validated row behind `ref`, parsed again from the file's bytes and checked against
        the ref (a cache that lied raises StaleIndex). `keep` memoises it for the next caller."""
        got = self._rows.get(ref)
        if got is not None:
            return got
        line = self.data[ref.offset : ref.offset + ref.length]
        try:
            got = parse_row(jsonio.loads(line))
        except (ValueError, ValidationError, TypeError):
            got = None
        if got is None or _ref(got, ref.lineno, ref.offset, ref.length) != ref:
            raise StaleIndex(f"history index does not match line {ref.lineno}", self.path)
        if keep:
            self._rows[ref] = got
        return got

    def rows_of(self, refs: Iterable[RowRef], keep: bool = True) -> list[Any]:
        with gc_paused():  # a history page is 500 rows (see _scan)
            return [self.row(r, keep) for r in refs]

    def _scan(self, start: int, end: int, complete: bool) -> None:
        """Parse the lines in data[start:end]: complete lines (end just after a newline) or a torn tail.

        Each line is validated here once; `on_row` (when set) turns the validated row into what a
        history page shows, so the page need not validate it again. Lines are sliced one at a time
        (no split of the whole file: that doubled the peak memory of a long history)."""
        data, on_row, views = self.data, self.on_row, self.views
        pos, lineno = start, self.lines
        with gc_paused():
            while pos < end:
                nl = data.find(b"\n", pos, end)
                stop = end if nl < 0 else nl
                lineno += 1
                line = data[pos:stop]
                if line.strip():
                    self.parsed += 1
                    try:
                        row = parse_row(jsonio.loads(line))
                    except (ValueError, ValidationError, TypeError):
                        self.skipped_lines.append(lineno)
                    else:
                        ref = _ref(row, lineno, pos, stop - pos)
                        self.refs.append(ref)
                        if on_row is not None:
                            views[ref] = on_row(row)
                pos = stop + 1
                if nl < 0:
                    break
        if complete:
            self.lines, self.offset = lineno, end

    def _extend(self, data: bytes) -> None:
        """`data` is the file's bytes and starts with the bytes already covered: parse the rest."""
        del self.refs[self.complete_refs :]
        del self.skipped_lines[self.complete_skipped :]
        self._rows = {}
        self.views = {}
        self.data = data
        end = data.rfind(b"\n") + 1
        if end > self.offset:
            self._scan(self.offset, end, complete=True)
        self.complete_refs, self.complete_skipped = len(self.refs), len(self.skipped_lines)
        if data[end:].strip():  # a torn last line: counted like read_history does, never persisted
            self._scan(end, len(data), complete=False)


@functools.cache
def _code_key() -> str:
    """Cached validation results are only good for the row schema that validated them: the key is
    the index format, the package's SCHEMA_VERSION and the JSON Schema of every row type (so any
    change to a row model invalidates the cache, whatever file it lives in; computed on first use)."""
    schemas = {name: model.model_json_schema() for name, model in sorted(ROW_TYPES.items())}
    blob = json.dumps({"index": INDEX_FORMAT, "schema_version": SCHEMA_VERSION, "rows": schemas}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def save_index(index: HistoryIndex, cache_file: Path) -> bool:
    """Persist what covers the complete lines (atomically; a checksum guards the body). False when
    the cache cannot be written: it is an optimisation, never a reason for a command to fail."""
    refs = index.refs[: index.complete_refs]
    body = jsonio.dumps(
        {
            "format": INDEX_FORMAT,
            "code": _code_key(),
            "source": index.path.name,
            "offset": index.offset,
            "lines": index.lines,
            "sha256": hashlib.sha256(memoryview(index.data)[: index.offset]).hexdigest(),
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


def _load_cached(cache_file: Path, path: Path, data: bytes) -> HistoryIndex | None:
    """The persisted index if it was built by this code from a prefix of `data`; else None."""
    try:
        raw = cache_file.read_bytes()
    except OSError:
        return None
    try:
        digest, body = raw.split(b"\n", 1)
        if hashlib.sha256(body).hexdigest().encode() != digest:
            return None
        doc = jsonio.loads(body)
        offset, lines = doc["offset"], doc["lines"]
        if (
            doc["format"] != INDEX_FORMAT
            or doc["code"] != _code_key()
            or not isinstance(offset, int)
            or not 0 <= offset <= len(data)
            or (offset and data[offset - 1 : offset] != b"\n")
            or hashlib.sha256(memoryview(data)[:offset]).hexdigest() != doc["sha256"]
        ):
            return None
        cols = [doc["cols"][name] for name in _REF_FIELDS]
        if len({len(c) for c in cols}) != 1 or not all(
            set(map(type, c)) <= _COLUMN_TYPES[name] for name, c in zip(_REF_FIELDS, cols)
        ):
            return None
        refs = list(map(RowRef._make, zip(*cols)))
        skipped = [int(n) for n in doc["skipped_lines"]]
        if any(r.offset + r.length > offset for r in refs[-1:]):
            return None
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return HistoryIndex(
        path=path, data=data, refs=refs, skipped_lines=skipped, offset=offset, lines=int(lines),
        complete_refs=len(refs), complete_skipped=len(skipped), saved_offset=offset,
    )


def index_history(
    path: Path, previous: HistoryIndex | None = None, cache_file: Path | None = None, on_row: Callable[[HistoryRow], Any] | None = None
) -> HistoryIndex:
    """Index `path`, parsing only what neither `previous` (same process) nor `cache_file` covers.

    `previous` is trusted for the same inode when the file did not shrink and the bytes just before
    its offset are unchanged (appends only); the persisted cache only when the SHA-256 of the bytes
    it covers matches. Anything else (rewritten, truncated, corrupt cache) is re-read from the start.
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return HistoryIndex(path=path)
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None
    base: HistoryIndex | None = None
    try:
        with fh:
            st = os.fstat(fh.fileno())
            if (
                previous is not None
                and (previous.dev, previous.ino) == (st.st_dev, st.st_ino)
                and st.st_size >= previous.offset
            ):
                lo = max(0, previous.offset - _TAIL_CHECK)
                fh.seek(lo)
                if fh.read(previous.offset - lo) == previous.data[lo : previous.offset]:
                    tail = fh.read()
                    same = tail == previous.data[previous.offset :]
                    data = previous.data if same else previous.data[: previous.offset] + tail
                    base = replace(  # a copy: whoever holds `previous` keeps what it read
                        previous,
                        refs=previous.refs[: previous.complete_refs],
                        skipped_lines=previous.skipped_lines[: previous.complete_skipped],
                    )
            if base is None:
                fh.seek(0)
                data = fh.read()
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None
    if base is None and cache_file is not None:
        base = _load_cached(cache_file, path, data)
    index = base if base is not None else HistoryIndex(path=path)
    index.dev, index.ino, index.parsed, index.on_row = st.st_dev, st.st_ino, 0, on_row
    index._extend(data)
    if cache_file is not None and index.offset != index.saved_offset:
        save_index(index, cache_file)
    return index
