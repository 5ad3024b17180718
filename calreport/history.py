"""Append-only JSONL history: one complete line per write, under the file's lock.

Readers skip (and count) unreadable lines and never rewrite the file; old rows are never mutated.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TypeVar

from filelock import FileLock, Timeout
from pydantic import ValidationError

from calreport.errors import CalreportError
from calreport.fsutil import append_line
from calreport.models import ROW_TYPES, ApplyEvent, AutoRun, HistoryRow, LiveRun, UnknownRow
from calreport.paths import Root, lock_path

LOCK_TIMEOUT_S = 30.0
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

try:  # optional fast parser (the `fast` extra)
    import orjson as _orjson

    def _loads(line: bytes) -> Any:
        return _orjson.loads(line)

except ImportError:  # pragma: no cover - exercised when orjson is absent

    def _loads(line: bytes) -> Any:
        return json.loads(line)


def new_run_id(ts_ms: int | None = None) -> str:
    """A ULID: 48-bit ms timestamp + 80 random bits, Crockford base32; sorts by time."""
    ms = int(time.time() * 1000) if ts_ms is None else int(ts_ms)
    value = (ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> (5 * i)) & 31] for i in reversed(range(26)))


def locked(path: Path, timeout: float = LOCK_TIMEOUT_S) -> FileLock:
    """The sibling-file lock for `path` (never deleted; FileLock leaves it in place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock_path(path)), timeout=timeout)


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
            out.rows.append(parse_row(_loads(line)))
        except (ValueError, ValidationError, TypeError):
            out.skipped += 1
            out.skipped_lines.append(lineno)
    return out


def iter_lines_reversed(path: Path, block: int = 1 << 16) -> Iterator[bytes]:
    """Lines of `path` from the last to the first, reading fixed-size blocks from the end.

    Lets an apply find the latest apply event without parsing a long history.
    """
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        return
    except OSError as exc:
        raise CalreportError(f"cannot read history ({exc.strerror or exc})", path) from None
    with fh:
        pos = fh.seek(0, os.SEEK_END)
        tail = b""
        while pos > 0:
            step = min(block, pos)
            pos -= step
            fh.seek(pos)
            chunk = fh.read(step) + tail
            lines = chunk.split(b"\n")
            tail = lines[0]
            for line in reversed(lines[1:]):
                if line.strip():
                    yield line
        if tail.strip():
            yield tail


def iter_rows_reversed(path: Path, cls: type[R]) -> Iterator[R]:
    """Readable rows of type `cls`, newest first, without parsing the rest of a long history."""
    tag = f'"{cls.model_fields["type"].default}"'.encode()
    for line in iter_lines_reversed(path):
        if tag not in line:
            continue
        try:
            row = parse_row(_loads(line))
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
            row = parse_row(_loads(line))
        except (ValueError, ValidationError, TypeError):
            continue
        if isinstance(row, ApplyEvent) and row.underlying in wanted:
            found[row.underlying] = row
            wanted.discard(row.underlying)
    return found


def live_history(root: Root) -> HistoryRead:
    return read_history(root.live_history)


def auto_history(root: Root) -> HistoryRead:
    return read_history(root.auto_history)


def live_runs(root: Root, underlying: str | None = None) -> list[LiveRun]:
    runs = live_history(root).of_type(LiveRun)
    return [r for r in runs if underlying is None or r.underlying == underlying]


def apply_events(root: Root, underlying: str | None = None) -> list[ApplyEvent]:
    events = live_history(root).of_type(ApplyEvent)
    return [e for e in events if underlying is None or e.underlying == underlying]


def auto_runs(root: Root, underlying: str | None = None) -> list[AutoRun]:
    runs = auto_history(root).of_type(AutoRun)
    return [r for r in runs if underlying is None or r.underlying == underlying]


def latest_live_run(root: Root, underlying: str) -> LiveRun | None:
    """The newest live run of `underlying` (file order is time order: appends only)."""
    runs = [r for r in live_runs(root, underlying) if (r.source or "live") == "live"]
    return runs[-1] if runs else None


def ensure_history_files(root: Root) -> None:
    root.history_dir.mkdir(parents=True, exist_ok=True)
    for p in (root.live_history, root.auto_history):
        if not p.exists():
            fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644)
            os.close(fd)
