"""Compaction: closed harvest days from JSONL logs to Parquet, and the previous system's harvest imported.

A closed day (its UTC date before today's) is compacted under the lock every append to that day
takes (store.files.locked on its .jsonl), in an order that survives a SIGKILL at any point:

1. read the day's logs (.jsonl.gz, .jsonl) and any Parquet file the day already has (a merge: rows
   appended after an earlier compaction); a log the Parquet file already holds contributes only
   what was appended after it (harvest.unconsumed_bytes);
2. write the sidecar `YYYY-MM-DD.errors.json` (atomic replace): every line set aside (schema
   errors, bad names) with its text, filed under its source (name@sha256), so a re-run rewrites
   the same entry instead of adding another;
3. build the Parquet file in memory and read it back: row count and harvested_at range must match;
4. replace `YYYY-MM-DD.parquet` atomically; its footer records the logs it consumed (size, sha256);
5. read the file back from disk and check again; only then remove the logs.

Killed between 4 and 5 the day has both files, and the reader reads each row once (the footer says
which log bytes the Parquet file holds). Killed before 4 nothing changed but a sidecar entry that the
next run rewrites. A log that cannot be read whole (a .gz that breaks off) is never compacted away,
and a harvest that is not the root's own (a symlinked directory or log, or no write permission bit,
checked on the mode because calreport often runs as root) is never written into.

    compact_day(directory, date, underlying) -> CompactResult | None
    compact_closed_days(directory, underlying, now_ms) -> CompactReport
    import_harvest(src_dir, dest_dir, underlying) -> ImportResult       previous system's layout or our own, idempotent

A row is stored once per (harvested_at, instrument): compaction and import drop a second copy (a
leftover log edited after the compaction that consumed it, the same snapshot file present twice in
the previous system's layout) and count it.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from filelock import Timeout

from calreport.errors import CalreportError
from calreport.jsonio import dumps as _dumps
from calreport.jsonio import loads as _loads
from calreport.market import parquet as pqday
from calreport.market.daycols import (
    BAD_NAME,
    DayColumns,
    OK,
    SOURCE_KEYS,
    parse_day_bytes,
    parse_lines,
    read_day_bytes,
)
from calreport.market.harvest import (
    ERRORS_SUFFIX,
    PARQUET_SUFFIX,
    HarvestDay,
    harvest_dir_of,
    list_days,
    load_day,
    unconsumed_bytes,
)
from calreport.market.quotes import first_per_key
from calreport.store.files import MAX_INPUT_BYTES, atomic_write, fsync_dir, locked
from calreport.store.paths import lock_path

MAX_REJECTED_TEXT = 2_000  # characters of a set-aside line kept in the sidecar (the rest is counted)

# Tests set this to a function that kills the process at a named point (crash-safety test).
CRASH_HOOK: Callable[[str], None] | None = None


def _point(name: str) -> None:
    if CRASH_HOOK is not None:
        CRASH_HOOK(name)


@dataclass(frozen=True)
class CompactResult:
    date: str
    path: Path
    rows: int  # rows in the day's Parquet file now
    added: int  # rows the logs brought in
    schema_errors: int  # set aside by this compaction (the sidecar has their text)
    bad_names: int
    removed: list[str]  # the logs removed
    seconds: float
    duplicates: int = 0  # rows dropped: their (harvested_at, instrument) was already in the day


@dataclass
class CompactReport:
    done: list[CompactResult] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (date, why)


def _today(now_ms: int) -> str:
    return datetime.fromtimestamp(now_ms / 1000.0, tz=UTC).strftime("%Y-%m-%d")


def day_lock_path(directory: Path, date: str) -> Path:
    """The path whose lock guards a day (appends take it too: harvest.append_snapshot)."""
    return directory / f"{date}.jsonl"


def _names_rank(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(harvested_at int64, per-row rank of the instrument name) for sorting a table."""
    ts = table.column("harvested_at").cast(pa.int64()).to_numpy()
    uniq, codes = pqday._names(table.column("instrument_name"))
    order = np.argsort(np.array(uniq, dtype=object).astype(str), kind="stable") if uniq else np.zeros(0, np.int64)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[order] = np.arange(len(uniq))
    return ts, (rank[np.maximum(codes, 0)] if uniq else codes)


def sort_table(table: pa.Table) -> pa.Table:
    """Rows by harvested_at, then instrument name (pyarrow cannot sort dictionary columns itself)."""
    if table.num_rows == 0:
        return table
    ts, rank = _names_rank(table)
    order = np.lexsort((rank, ts))
    return table.take(pa.array(order)).combine_chunks().unify_dictionaries()


def sorted_unique(table: pa.Table) -> tuple[pa.Table, int]:
    """sort_table, keeping the first row of each (harvested_at, instrument): the tables come in
    precedence order (the day's Parquet file first) and the sort is stable. Also returns how many
    rows were dropped."""
    if table.num_rows == 0:
        return table, 0
    ts, rank = _names_rank(table)
    order = np.lexsort((rank, ts))
    keep = first_per_key(ts[order], rank[order])
    if keep is not None:
        order = order[keep]
    out = table.take(pa.array(order)).combine_chunks().unify_dictionaries()
    return out, table.num_rows - out.num_rows


def _rejected(parsed: Any, source: str) -> list[dict[str, Any]]:
    out = []
    for i in np.flatnonzero(parsed.status != OK):
        text = parsed.lines[i].decode("utf-8", errors="replace")
        out.append({
            "line": int(i) + 1,  # among the log's non-blank lines
            "reason": "bad name" if parsed.status[i] == BAD_NAME else "schema error",
            "text": text[:MAX_REJECTED_TEXT],
            **({"truncated_chars": len(text) - MAX_REJECTED_TEXT} if len(text) > MAX_REJECTED_TEXT else {}),
        })
    return out


def read_sidecar(path: Path) -> dict[str, Any]:
    """The day's errors sidecar ({} when absent or unreadable)."""
    try:
        doc = _loads(path.read_bytes())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def _verify(data: bytes | Path, rows: int, lo: int, hi: int, what: Path) -> None:
    """Read the file back: row count and harvested_at range must be what was written."""
    src = pa.BufferReader(data) if isinstance(data, bytes) else data
    try:
        ts = pq.read_table(src, columns=["harvested_at"]).column("harvested_at").cast(pa.int64()).to_numpy()
    except (OSError, pa.ArrowException) as exc:
        raise CalreportError(f"compaction: the written Parquet file does not read back ({type(exc).__name__})", what) from None
    got = (int(ts.size), int(ts.min()) if ts.size else 0, int(ts.max()) if ts.size else 0)
    if got != (rows, lo, hi):
        raise CalreportError(
            f"compaction: read back {got[0]} rows {got[1]}..{got[2]}, wrote {rows} rows {lo}..{hi}; logs kept", what
        )


def _write_verified(path: Path, table: pa.Table, meta: Mapping[str, Any]) -> None:
    ts = table.column("harvested_at").cast(pa.int64()).to_numpy()
    rows, lo, hi = int(ts.size), int(ts.min()) if ts.size else 0, int(ts.max()) if ts.size else 0
    data = pqday.write_day(table, {**meta, "rows": rows, "harvested_at_min": lo, "harvested_at_max": hi})
    _verify(data, rows, lo, hi, path)  # before it replaces anything
    _point("before_parquet")
    atomic_write(path, data)
    _point("after_parquet")
    _verify(path, rows, lo, hi, path)  # what the disk holds


def _remove_stale_temps(directory: Path, date: str) -> None:
    """Temp files a killed atomic write of this day left behind (we hold the day's lock)."""
    for p in directory.glob(f".{date}.*.tmp"):
        try:
            p.unlink()
        except OSError:
            pass


def _not_ours(path: Path) -> str | None:
    """Why compaction must leave `path` (a harvest directory or a log) alone, or None.

    A symlink points at somebody else's data (a shared read-only harvest linked into a root), and a
    path without any write permission bit is read-only by intent: calreport often runs as root,
    for whom permissions do not bind, so the mode is checked explicitly. Such a day is read as it is."""
    try:
        what = "harvest directory " if path.is_dir() else ""
        if path.is_symlink():
            return f"{what}{path.name} is a symlink (somebody else's data; its day logs are read as they are)"
        if not stat.S_IMODE(path.stat().st_mode) & 0o222:
            return f"{what}{path.name} is read-only (its day logs are read as they are)"
    except OSError as exc:
        return f"{path.name}: {exc.strerror or exc}"
    return None


def compact_day(directory: Path, date: str, underlying: str) -> CompactResult | None:
    """Compact one day's logs into its Parquet file (see the module docstring). None: nothing to do.

    A directory or log that is a symlink or has no write permission bit is never compacted."""
    started = time.perf_counter()
    underlying = underlying.upper()
    day = _find_day(directory, date)
    for path in [directory, *(day.logs if day is not None else [])]:  # before the lock file is made
        why = _not_ours(path)
        if why:
            raise CalreportError(f"compaction: {why}; the day stays as it is", path)
    try:
        with locked(day_lock_path(directory, date)):
            return _compact_locked(directory, date, underlying, started)
    except Timeout:
        raise CalreportError(f"timed out waiting for the lock {lock_path(day_lock_path(directory, date))}") from None


def _find_day(directory: Path, date: str) -> HarvestDay | None:
    d = datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC)
    ms = int(d.timestamp() * 1000)
    return next((x for x in list_days(directory, ms, ms) if x.date == date), None)


def _compact_locked(directory: Path, date: str, underlying: str, started: float) -> CompactResult | None:
    day = _find_day(directory, date)
    if day is None or not day.logs:
        return None
    for log in day.logs:
        why = _not_ours(log)
        if why:
            raise CalreportError(f"compaction: {why}; the day stays as it is", log)
    _remove_stale_temps(directory, date)
    pq_path = directory / f"{date}{PARQUET_SUFFIX}"
    side_path = directory / f"{date}{ERRORS_SUFFIX}"
    old_meta = pqday.read_meta(pq_path) if day.parquet is not None else {}
    if day.parquet is not None and not old_meta:
        raise CalreportError("compaction: the day's Parquet file is not one calreport wrote; logs kept", pq_path)
    old_sources = old_meta.get("sources") if isinstance(old_meta.get("sources"), Mapping) else {}
    tables = [pqday.read_table(pq_path)] if day.parquet is not None else []
    sources: dict[str, Any] = {}
    sidecar = read_sidecar(side_path)
    side_sources = dict(sidecar.get("sources") or {})
    lines = errors = bad = added = 0
    for log in day.logs:
        full, problem = read_day_bytes(log)
        if problem:
            raise CalreportError(f"compaction: {problem}; the day stays as it is", log)
        data = unconsumed_bytes(log, full, old_sources) if day.parquet is not None else full
        parsed = parse_lines(data, underlying)
        tables.append(pqday.day_table(parsed))
        n_err = int(np.count_nonzero(parsed.status == 1))
        n_bad = int(np.count_nonzero(parsed.status == BAD_NAME))
        lines += len(parsed.lines)
        errors += n_err
        bad += n_bad
        added += int(np.count_nonzero(parsed.status == OK))
        size = log.stat().st_size
        digest = pqday.sha256_file(log, size)
        sources[log.name] = {"size": size, "sha256": digest, "data_len": len(full)}
        if n_err or n_bad:
            side_sources[f"{log.name}@{digest[:16]}"] = {"lines": len(parsed.lines), "rejected": _rejected(parsed, log.name)}
    total_errors = int(old_meta.get("schema_errors", 0)) + errors
    total_bad = int(old_meta.get("bad_names", 0)) + bad
    if side_sources:
        _point("before_sidecar")
        doc = {
            "schema_version": 1, "underlying": underlying, "date": date,
            "schema_errors": total_errors, "bad_names": total_bad, "sources": side_sources,
        }
        atomic_write(side_path, _dumps(doc))
        _point("after_sidecar")
    table, duplicates = sorted_unique(pa.concat_tables(tables) if len(tables) > 1 else tables[0])
    added -= duplicates
    meta = {
        "underlying": underlying, "date": date,
        "lines": int(old_meta.get("lines", 0)) + lines,
        "schema_errors": total_errors, "bad_names": total_bad, "sources": sources,
    }
    _write_verified(pq_path, table, meta)
    removed = []
    for i, log in enumerate(day.logs):
        if i:
            _point("between_removals")
        try:
            log.unlink()
            removed.append(log.name)
        except FileNotFoundError:
            pass
    _point("after_removal")
    fsync_dir(directory)
    return CompactResult(date, pq_path, table.num_rows, added, errors, bad, removed, time.perf_counter() - started, duplicates)


def compact_closed_days(source: Any, underlying: str, now_ms: int) -> CompactReport:
    """Compact every day with logs whose UTC date is before now_ms's. Failures are reported per
    day, never raised: compaction is housekeeping, and reading works either way."""
    directory = harvest_dir_of(source, underlying.upper())
    report = CompactReport()
    today = _today(now_ms)
    if (directory.exists() or directory.is_symlink()) and not directory.is_dir():
        report.skipped.append(("every day", f"{directory} is not a directory"))
        return report
    why = _not_ours(directory) if directory.exists() else None
    if why:  # a linked or read-only harvest: nothing is written into it, every day is read as it is
        report.skipped += [(d.date, why) for d in list_days(directory) if d.logs and d.date < today]
        return report
    for day in list_days(directory):
        if not day.logs or day.date >= today:
            continue
        try:
            res = compact_day(directory, day.date, underlying)
        except CalreportError as exc:
            report.skipped.append((day.date, exc.one_line()))
            continue
        except OSError as exc:
            report.skipped.append((day.date, f"{exc.strerror or exc}"))
            continue
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:  # a row pyarrow cannot hold
            report.skipped.append((day.date, f"cannot write the day as Parquet ({type(exc).__name__}: {str(exc)[:80]})"))
            continue
        if res is not None:
            report.done.append(res)
    return report


# --------------------------------------------------------------------------- import


@dataclass
class ImportResult:
    days: int = 0
    files: int = 0  # previous-system files read
    rows_read: int = 0  # rows that passed the reader's rules
    rows_added: int = 0
    rows_present: int = 0  # snapshots the root already had
    duplicates: int = 0  # second copies of an (harvested_at, instrument) row among the files read
    schema_errors: int = 0
    bad_names: int = 0
    written: list[Path] = field(default_factory=list)


# the columns without which a previous-system file holds no usable quote (canonical names)
IMPORT_REQUIRED = ("harvested_at", "instrument_name", "mark_price", "mark_iv", "underlying_price")
DAY_SLACK_MS = 86_400_000  # a snapshot file may hold times up to a day either side of its directory's date


def _existing_times(day: HarvestDay | None, underlying: str) -> np.ndarray:
    if day is None:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.concatenate(
        [np.zeros(0, dtype=np.int64), *[dc.harvested_at for _, dc in load_day(day, underlying, None, None)]]
    ))


def _file_problem(path: Path, src_dir: Path) -> tuple[Path | None, str | None]:
    """(the file's real path, None) or (None, why it is refused): a link leading out of the imported
    directory (an import copies data in; /etc/passwd is not a harvest), anything but a regular file,
    a file over the input size limit."""
    try:
        real = path.resolve(strict=True)
        if not real.is_relative_to(src_dir.resolve(strict=True)):
            return None, f"a symlink out of the imported directory (to {str(real)[:100]}): refused"
        st = os.stat(real)
    except OSError as exc:
        return None, f"cannot be read ({exc.strerror or exc})"
    if not stat.S_ISREG(st.st_mode):
        return None, "not a regular file: refused"
    if st.st_size > MAX_INPUT_BYTES:
        return None, f"{st.st_size:,} bytes, over the {MAX_INPUT_BYTES:,}-byte limit"
    return real, None


def _times_problem(ts: np.ndarray, date: str, column: str) -> str | None:
    """Harvest times outside the day the file is filed under (a day of slack either side)."""
    lo = int(datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=UTC).timestamp() * 1000) - DAY_SLACK_MS
    hi = lo + 3 * DAY_SLACK_MS
    with np.errstate(invalid="ignore"):
        off = np.isfinite(ts) & ~((ts >= lo) & (ts < hi))  # null times are schema errors, counted
    if off.any():
        return f"{int(np.count_nonzero(off))} {column} values outside {date} (e.g. {ts[off][0]:.0f} ms)"
    return None


def import_problem(path: Path, src_dir: Path, date: str) -> str | None:
    """Why one Parquet file (the previous system's, or a day file of another calreport root) cannot be
    imported, or None.

    Checked for every file before anything is written, so a refused import leaves the root as it
    was: _file_problem, a file Parquet cannot open, a missing required column, or harvest times
    outside the day its directory (or name) says.
    """
    real, why = _file_problem(path, src_dir)
    if real is None:
        return why
    try:
        pf = pq.ParquetFile(real)
        colmap = pqday.resolve_columns(pf.schema_arrow)
        missing = [c for c in IMPORT_REQUIRED if c not in colmap]
        if missing:
            return f"no {', '.join(COLUMN_LABELS.get(c, c) for c in missing)} column"
        ts = pqday.ts_ms(pf.read(columns=[colmap["harvested_at"]]).column(0))
    except (OSError, pa.ArrowException) as exc:
        return f"not readable as Parquet ({type(exc).__name__}: {str(exc)[:60]})"
    return _times_problem(ts, date, colmap["harvested_at"])


def log_import_problem(path: Path, src_dir: Path, date: str, underlying: str) -> str | None:
    """Why one JSONL day log (YYYY-MM-DD.jsonl[.gz], calreport's own layout) cannot be imported, or None:
    _file_problem, a log that cannot be read whole (a .gz that breaks off), or harvest times outside its day."""
    real, why = _file_problem(path, src_dir)
    if real is None:
        return why
    data, problem = read_day_bytes(real)
    if problem:
        return f"not readable whole ({problem})"
    return _times_problem(parse_day_bytes(data, underlying).harvested_at.astype(np.float64), date, "harvested_at")


COLUMN_LABELS = {"harvested_at": "harvest_time"}  # the previous system's name in a message


def import_harvest(src: Path, dest_dir: Path, underlying: str) -> ImportResult:
    """Bring a harvest into `dest_dir` as day Parquet files: the previous system's (<src>/<U>/YYYY/MM/DD/
    *.parquet) or one in calreport's own layout (<src>/<U>/YYYY-MM-DD.jsonl[.gz] / .parquet, as the shared
    Deribit harvest and another root's data/harvest are); <src> may be that <U> folder. Idempotent: a
    snapshot (harvested_at) the day already has, in any format, is not added again, and a row is
    imported once per (harvested_at, instrument) however many files hold it; every written day is read
    back and its row count checked.

    Every file is checked first (import_problem, log_import_problem): one that cannot be imported
    refuses the whole import, nothing written."""
    underlying = underlying.upper()
    src_dir = harvest_dir_of(Path(src), underlying)
    if not src_dir.is_dir():
        raise CalreportError(f"import-harvest: no {underlying} harvest in this directory", src)
    if dest_dir.exists() and src_dir.resolve() == dest_dir.resolve():
        raise CalreportError("import-harvest: this is the root's own harvest: nothing to import", src_dir)
    res = ImportResult()
    days = list_days(src_dir)
    if not days:
        raise CalreportError(
            f"import-harvest: no {underlying} day files (YYYY-MM-DD.jsonl.gz, .jsonl or .parquet, "
            "or the previous system's YYYY/MM/DD/*.parquet)", src_dir,
        )
    problems = [(p, why) for d in days for p in [*d.legacy, *([d.parquet] if d.parquet else [])] if (why := import_problem(p, Path(src), d.date))]
    problems += [(p, why) for d in days for p in d.logs if (why := log_import_problem(p, Path(src), d.date, underlying))]
    if problems:
        path, why = problems[0]
        more = f" (and {len(problems) - 1} more files)" if len(problems) > 1 else ""
        raise CalreportError(f"import-harvest: {why}{more}; nothing imported", path)
    dest_dir.mkdir(parents=True, exist_ok=True)
    for day in days:
        res.days += 1
        for source, dc in load_day(day, underlying, None, None, iv_fraction=False):  # percent, as written
            _import_part(dest_dir, day.date, underlying, source, len(day.legacy) if source == day.legacy_dir else 1, dc, res)
    return res


def _import_part(dest_dir: Path, date: str, underlying: str, source: Path, files: int, dc: DayColumns, res: ImportResult) -> None:
    """Add one part of a day (a file, or the previous system's day directory) to the day's Parquet file:
    the snapshots the day does not have yet, once per (harvested_at, instrument); counted in `res`."""
    res.files += files
    if dc.problem:  # changed since it was checked
        raise CalreportError(f"import-harvest: {dc.problem}; the days before {date} are imported", source)
    res.schema_errors += dc.schema_errors
    res.bad_names += dc.bad_names
    res.rows_read += dc.n
    once = first_per_key(dc.harvested_at, dc.code.astype(np.int64))
    if once is not None:  # rows are sorted by (harvested_at, name)
        res.duplicates += dc.n - once.size
    with locked(day_lock_path(dest_dir, date)):
        here = _find_day(dest_dir, date)
        have = _existing_times(here, underlying)
        idx = np.arange(dc.n) if once is None else once
        new = ~np.isin(dc.harvested_at[idx], have)
        res.rows_present += int(np.count_nonzero(~new))
        idx = idx[new]
        n_new = int(idx.size)
        if n_new == 0:
            return
        table = pqday.build_table(
            ts=dc.harvested_at[idx], names=dc.names, code=dc.code[idx], expiry_ms=dc.name_expiry_ms,
            strike=dc.name_strike, is_call=dc.name_is_call,
            floats={src_key: dc.cols[k][idx] for k, src_key in SOURCE_KEYS.items()},
        )
        pq_path = dest_dir / f"{date}{PARQUET_SUFFIX}"
        old_meta = pqday.read_meta(pq_path) if pq_path.exists() else {}
        if pq_path.exists() and not old_meta:
            raise CalreportError("import-harvest: the day's Parquet file is not one calreport wrote", pq_path)
        before = int(old_meta.get("rows", 0))
        tables = ([pqday.read_table(pq_path)] if pq_path.exists() else []) + [table]
        merged = sort_table(pa.concat_tables(tables))
        imported = dict(old_meta.get("imported") or {})
        imported[str(source)] = {"files": files, "rows": n_new}
        meta = {
            "underlying": underlying, "date": date,
            "lines": int(old_meta.get("lines", 0)) + n_new + dc.schema_errors + dc.bad_names,
            "schema_errors": int(old_meta.get("schema_errors", 0)) + dc.schema_errors,
            "bad_names": int(old_meta.get("bad_names", 0)) + dc.bad_names,
            "sources": old_meta.get("sources") or {},
            "imported": imported,
        }
        _write_verified(pq_path, merged, meta)
        if merged.num_rows != before + n_new:
            raise CalreportError(f"import-harvest: {merged.num_rows} rows after adding {n_new} to {before}", pq_path)
        res.rows_added += n_new
        res.written.append(pq_path)
