"""Harvest days as Parquet: the schema, writing a day, reading it (or the previous system's files) back.

A compacted day is `data/harvest/<U>/YYYY-MM-DD.parquet`: Deribit's field names and units (coin
prices, mark_iv in percent), plus the instrument name parsed once (expiry, strike, option_type), rows
sorted by harvested_at then instrument, zstd, row groups of ROW_GROUP_ROWS rows so a reader skips
the hours it does not need by the row groups' harvested_at statistics. Any tool reads it (pyarrow,
pandas, Polars, DuckDB, Spark). The footer's key-value metadata `calreport` records what compaction
knew: the lines it read, the schema errors and bad names it set aside (their text is in the
sidecar `YYYY-MM-DD.errors.json`), and the JSONL sources it consumed (name, size, sha256), so a
reader can tell a JSONL file the compaction already holds (a crash before its removal) from rows
appended later.

The previous system's harvest (`data/live_deribit/<U>/YYYY/MM/DD/*.parquet`, one file per snapshot,
columns harvest_time / best_bid_price / best_ask_price / underlying_index / ...) is read by the same
function: each canonical column is looked up under its names in COLUMN_NAMES.

    day_table(parsed, extras) -> pa.Table            the typed table of one day's kept rows
    write_day(table, meta) -> bytes                  the file's bytes (the caller writes them atomically)
    read_day(paths, underlying, start_ms, end_ms) -> DayColumns
    read_meta(path) -> dict                           the footer's calreport record ({} for other files)
    read_rows(path) -> list[dict]                     rows back in the JSONL shape (Deribit's fields)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from calreport.errors import CalreportError
from calreport.jsonio import dumps as _dumps
from calreport.jsonio import loads as _loads
from calreport.market.daycols import (
    FLOAT_COLUMNS,
    SOURCE_KEYS,
    DayColumns,
    ParsedLines,
    TypedRows,
    assemble_day,
    empty_day,
    name_table,
    row_fields,
    row_status,
    valid_rows,
)
from calreport.numbers import as_float, is_number

FORMAT = "calreport-harvest-day"
FORMAT_VERSION = 1
META_KEY = b"calreport"
ROW_GROUP_ROWS = 32_768  # ~4 h of a 700-option chain every 5 minutes: small enough to skip by time
COMPRESSION = "zstd"
COMPRESSION_LEVEL = 3

TS = pa.timestamp("ms", tz="UTC")
# Deribit book-summary fields kept as typed columns beside the core ones (null when absent).
EXTRA_FLOATS = (
    "mid_price", "volume", "volume_usd", "interest_rate", "estimated_delivery_price",
    "last", "high", "low", "price_change", "bid_iv", "ask_iv",
)
EXTRA_STRINGS = ("base_currency", "quote_currency", "underlying_index")
CORE_FLOATS = ("mark_price", "mark_iv", "underlying_price", "bid_price", "ask_price", "open_interest", "index_price")

SCHEMA = pa.schema(
    [
        pa.field("harvested_at", TS, nullable=False),
        pa.field("instrument_name", pa.dictionary(pa.int32(), pa.string()), nullable=False),
        pa.field("expiry", TS, nullable=False),
        pa.field("strike", pa.float64(), nullable=False),
        pa.field("option_type", pa.dictionary(pa.int8(), pa.string()), nullable=False),
        *[pa.field(k, pa.float64()) for k in CORE_FLOATS],
        pa.field("creation_timestamp", TS),
        *[pa.field(k, pa.float64()) for k in EXTRA_FLOATS],
        *[pa.field(k, pa.dictionary(pa.int32(), pa.string())) for k in EXTRA_STRINGS],
        pa.field("extra", pa.string()),  # any other field of the row, as a JSON object (null when none)
    ]
)
KNOWN_FIELDS = frozenset(
    {"harvested_at", "instrument_name", "creation_timestamp", *CORE_FLOATS, *EXTRA_FLOATS, *EXTRA_STRINGS}
)

# canonical column -> the names it goes by (ours first, then the previous system's)
COLUMN_NAMES: dict[str, tuple[str, ...]] = {
    "harvested_at": ("harvested_at", "harvest_time"),
    "instrument_name": ("instrument_name",),
    "mark_price": ("mark_price",),
    "mark_iv": ("mark_iv",),
    "underlying_price": ("underlying_price",),
    "bid_price": ("bid_price", "best_bid_price"),
    "ask_price": ("ask_price", "best_ask_price"),
    "open_interest": ("open_interest",),
    "index_price": ("index_price",),
}


# --------------------------------------------------------------------------- writing


def sha256_file(path: Path, limit: int | None = None) -> str:
    """sha256 of the file (or of its first `limit` bytes)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as fh:
        while left is None or left > 0:
            chunk = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def _take(values: Sequence[Any], idx: list[int]) -> list[Any]:
    """values[i] for i in idx (C-level)."""
    if len(idx) > 1:
        return list(itemgetter(*idx)(values))
    return [values[i] for i in idx]


_NONE = type(None)


def _extras(fields: Mapping[str, list[Any]], idx: np.ndarray, kept_rows: Callable[[], list[dict[str, Any]]],
            present: set[str]) -> tuple[dict[str, Any], list[str | None]]:
    """The typed extra columns of the rows at `idx` (in that order), and per row the fields nothing else
    holds (as JSON), so no value is lost.

    Column by column, on the types present in the column: a column of the expected types becomes an
    array without touching a row (numpy / pyarrow take), and only a column holding an odd value is
    looked at value by value, and only its odd values go to `extra`. `kept_rows` gives the rows at
    `idx` as dicts, for the fields calreport has no column for (kept as they came)."""
    n = int(idx.size)
    idx_list: list[int] | None = None
    leftovers: dict[int, dict[str, Any]] = {}

    def keep_aside(i: int, k: str, v: Any) -> None:
        leftovers.setdefault(i, {})[k] = v

    def kept(k: str) -> list[Any]:
        nonlocal idx_list
        if idx_list is None:
            idx_list = idx.tolist()
        return _take(fields[k], idx_list)

    out: dict[str, Any] = {}
    for k in CORE_FLOATS:  # the frame reads these as floats; a non-number is kept verbatim aside
        if k not in present or set(map(type, fields[k])) <= {int, float, _NONE}:
            continue
        for i, v in enumerate(kept(k)):
            if v is not None and not is_number(v):
                keep_aside(i, k, v)
    for k in EXTRA_FLOATS:
        if k not in present:
            continue
        if set(map(type, fields[k])) <= {float, _NONE}:  # JSON has no NaN: null <-> NaN is exact
            out[k] = np.array(fields[k], dtype=np.float64)[idx]
            continue
        vals = kept(k)
        if set(map(type, vals)) <= {float, _NONE} or (
            set(map(type, vals)) <= {int, float, _NONE} and max((abs(v) for v in vals if v is not None), default=0) < 1e300
        ):
            out[k] = vals
            continue
        clean: list[Any] = []
        for i, v in enumerate(vals):
            f = as_float(v)  # None for a non-number, a non-finite or an out-of-range one
            if v is None or (f is not None and abs(f) < 1e300):
                clean.append(f)
            else:
                clean.append(None)
                keep_aside(i, k, v)
        out[k] = clean
    for k in EXTRA_STRINGS:
        if k not in present:
            continue
        if set(map(type, fields[k])) <= {str, _NONE}:
            out[k] = pa.array(fields[k], pa.string()).take(pa.array(idx))
            continue
        vals = kept(k)
        if not set(map(type, vals)) <= {str, _NONE}:
            for i, v in enumerate(vals):
                if v is not None and not isinstance(v, str):
                    keep_aside(i, k, v)
                    vals[i] = None
        out[k] = vals
    if "creation_timestamp" in present:
        ct = _int_column(fields["creation_timestamp"])
        if ct is not None and (n == 0 or (int(ct[idx].min()) >= 0 and int(ct[idx].max()) < 10**16)):
            out["creation_timestamp"] = ct[idx]
        else:
            vals = kept("creation_timestamp")
            if not (set(map(type, vals)) <= {int, _NONE}
                    and all(0 <= v < 10**16 for v in vals if v is not None)):
                for i, v in enumerate(vals):
                    f = as_float(v)
                    if v is not None and not (f is not None and f == int(f) and 0 <= f < 10**16):
                        keep_aside(i, "creation_timestamp", v)
                        vals[i] = None
                    elif v is not None:
                        vals[i] = int(f)  # type: ignore[arg-type]
            out["creation_timestamp"] = vals
    unknown = present - KNOWN_FIELDS
    if unknown:  # fields calreport has no column for: kept as they came (rare; row by row)
        rows = kept_rows()
        for k in unknown:
            for i, r in enumerate(rows):
                if k in r:
                    keep_aside(i, k, r[k])
    other: list[str | None] = [None] * n
    for i, rest in leftovers.items():
        other[i] = _dumps(rest).decode("utf-8")
    return out, other


def _int_column(values: list[Any]) -> np.ndarray | None:
    """An all-int column as int64 (None when it holds anything else or an int beyond int64)."""
    if set(map(type, values)) != {int}:
        return None
    try:
        return np.array(values, dtype=np.int64)
    except OverflowError:
        return None


def _typed_extras(typed: TypedRows, idx: np.ndarray) -> tuple[dict[str, Any], list[str | None]] | None:
    """_extras for a plainly typed day, straight from its typed columns (numpy / pyarrow take): the
    same columns _extras makes, when no value goes to `extra`. None when one would (a field calreport has
    no column for, a number field holding strings, an int where a float belongs, a creation_timestamp
    out of range): _extras then looks at the values."""
    n = int(idx.size)
    present = {k for k, h in typed.has.items() if n and (h is None or bool(h[idx].any()))}
    if present - KNOWN_FIELDS:
        return None
    out: dict[str, Any] = {}
    for k in present:
        if k in CORE_FLOATS:
            if k in typed.strs:
                return None
        elif k in EXTRA_FLOATS:
            if k not in typed.floats:
                return None
            if k not in typed.nulls:
                out[k] = typed.floats[k][idx]
            else:
                out[k] = np.full(n, np.nan)
        elif k in EXTRA_STRINGS:
            if k in typed.strs:
                out[k] = typed.strs[k].take(pa.array(idx))
            elif k in typed.nulls:
                out[k] = pa.nulls(n, pa.string())
            else:
                return None
        elif k == "creation_timestamp":
            ct = typed.ints.get(k)
            if ct is None:
                return None
            ct = ct[idx]
            if int(ct.min()) < 0 or int(ct.max()) >= 10**16:
                return None
            out[k] = ct
    return out, [None] * n


def day_table(parsed: ParsedLines) -> pa.Table:
    """The kept rows of a parsed JSONL day as the typed table, sorted by harvested_at then instrument."""
    keep = parsed.row_status == 0
    idx = np.flatnonzero(keep)
    names = parsed.table.names
    code = parsed.row_code[idx]
    ts = parsed.ts[idx].astype(np.int64)
    # sort by time, then instrument name (names sorted once; codes ranked by them)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    order = np.lexsort((rank[code] if code.size else code, ts))
    idx, code, ts = idx[order], code[order], ts[order]

    got = _typed_extras(parsed.typed, idx) if parsed.typed is not None else None
    if got is not None:
        extras, other = got
    else:  # a field holding an odd value, or a day that was not plainly typed: value by value where needed
        def kept_rows() -> list[dict[str, Any]]:
            return _take(parsed.rows, idx.tolist())

        fields, uniform = row_fields(parsed.rows)
        if uniform:  # every row has every field: present among the kept rows = all of them
            present = set(fields) if idx.size else set()
        else:
            present = set()
            present.update(*kept_rows())
        extras, other = _extras(fields, idx, kept_rows, present)
    return build_table(
        ts=ts,
        names=names,
        code=code,
        expiry_ms=parsed.table.expiry_ms,
        strike=parsed.table.strike,
        is_call=parsed.table.is_call,
        floats={src: parsed.cols[k][idx] for k, src in SOURCE_KEYS.items()},
        extras=extras,
        other=other,
    )


def _float_arr(v: np.ndarray) -> pa.Array:
    return pa.array(v, type=pa.float64(), mask=~np.isfinite(v))


def build_table(
    *,
    ts: np.ndarray,
    names: np.ndarray,
    code: np.ndarray,
    expiry_ms: np.ndarray,
    strike: np.ndarray,
    is_call: np.ndarray,
    floats: Mapping[str, np.ndarray],
    extras: Mapping[str, Any] | None = None,
    other: list[str | None] | None = None,
) -> pa.Table:
    """Per-row arrays (+ per-name tables indexed by `code`) -> a table of SCHEMA."""
    n = int(ts.shape[0])
    code32 = code.astype(np.int32)
    dict_names = pa.DictionaryArray.from_arrays(pa.array(code32, pa.int32()), pa.array(names.tolist(), pa.string()))
    kinds = pa.DictionaryArray.from_arrays(
        pa.array(np.where(is_call[code], 0, 1).astype(np.int8) if n else np.zeros(0, np.int8), pa.int8()),
        pa.array(["call", "put"]),
    )
    cols: dict[str, pa.Array] = {
        "harvested_at": pa.array(ts.astype(np.int64), pa.int64()).cast(TS),
        "instrument_name": dict_names,
        "expiry": pa.array(expiry_ms[code].astype(np.int64) if n else np.zeros(0, np.int64), pa.int64()).cast(TS),
        "strike": pa.array(strike[code] if n else np.zeros(0), pa.float64()),
        "option_type": kinds,
    }
    for k in CORE_FLOATS:
        cols[k] = _float_arr(np.asarray(floats[k], dtype=np.float64)) if k in floats else pa.nulls(n, pa.float64())
    extras = extras or {}
    c = extras.get("creation_timestamp")
    cols["creation_timestamp"] = pa.array(c, pa.int64()).cast(TS) if c is not None else pa.nulls(n, TS)
    for k in EXTRA_FLOATS:
        v = extras.get(k)
        cols[k] = (pa.nulls(n, pa.float64()) if v is None else _float_arr(v) if isinstance(v, np.ndarray)
                   else pa.array(v, pa.float64()))
    for k in EXTRA_STRINGS:
        t = SCHEMA.field(k).type
        v = extras.get(k)
        cols[k] = pa.nulls(n, t) if v is None else (
            v if isinstance(v, pa.Array) else pa.array(v, pa.string())).dictionary_encode().cast(t)
    cols["extra"] = pa.array(other, pa.string()) if other is not None else pa.nulls(n, pa.string())
    return pa.Table.from_arrays([cols[f.name] for f in SCHEMA], schema=SCHEMA)


def write_day(table: pa.Table, meta: Mapping[str, Any]) -> bytes:
    """The Parquet file of one day (zstd, small row groups, statistics on), with our footer record."""
    table = table.replace_schema_metadata({META_KEY: _dumps({"format": FORMAT, "version": FORMAT_VERSION, **meta})})
    sink = pa.BufferOutputStream()
    pq.write_table(
        table,
        sink,
        compression=COMPRESSION,
        compression_level=COMPRESSION_LEVEL,
        row_group_size=ROW_GROUP_ROWS,
        use_dictionary=True,
        write_statistics=True,
    )
    return sink.getvalue().to_pybytes()


# --------------------------------------------------------------------------- reading


def _open(path: Path) -> pq.ParquetFile:
    try:
        try:
            return pq.ParquetFile(path, read_dictionary=["instrument_name"], memory_map=True)
        except KeyError:  # no instrument_name column: every row is a schema error, the file still opens
            return pq.ParquetFile(path, memory_map=True)
    except (OSError, pa.ArrowException) as exc:
        raise _Unreadable(f"not readable as Parquet ({type(exc).__name__}: {str(exc)[:60]})") from None


class _Unreadable(Exception):
    pass


def read_meta(path: Path) -> dict[str, Any]:
    """The footer's calreport record ({} for a file calreport did not write)."""
    try:
        return _meta_of(pq.read_schema(path))
    except (OSError, pa.ArrowException):
        return {}


def _meta_of(schema: pa.Schema) -> dict[str, Any]:
    md = schema.metadata or {}
    raw = md.get(META_KEY)
    if raw is None:
        return {}
    try:
        meta = _loads(raw)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else {}


def resolve_columns(schema: pa.Schema) -> dict[str, str]:
    """canonical name -> the file's column name, for the columns the file has."""
    have = set(schema.names)
    out: dict[str, str] = {}
    for canon, names in COLUMN_NAMES.items():
        for n in names:
            if n in have:
                out[canon] = n
                break
    return out


def ts_ms(col: pa.ChunkedArray) -> np.ndarray:
    """A time column (timestamp of any unit, or epoch ms as a number) -> float64 ms (NaN when null)."""
    t = col.type
    if pa.types.is_timestamp(t):
        col = pc.cast(col, pa.timestamp("ms", tz=t.tz), safe=False).cast(pa.int64())
    elif pa.types.is_date(t):
        col = pc.cast(pc.cast(col, pa.timestamp("ms")), pa.int64())
    elif not (pa.types.is_integer(t) or pa.types.is_floating(t)):
        return np.full(len(col), np.nan)
    return _floats(col)


def _floats(col: pa.ChunkedArray) -> np.ndarray:
    """A numeric column -> float64 with NaN for nulls (a non-numeric column is all NaN: schema errors)."""
    t = col.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t)):
        return np.full(len(col), np.nan)
    if col.num_chunks == 1 and col.null_count == 0 and t == pa.float64():
        return col.chunk(0).to_numpy()  # zero copy
    # unsafe: an int64 beyond 2^53 (a harvest_time of 1e18) becomes the nearest float, which the
    # row rules then judge, instead of an ArrowInvalid
    return pc.cast(col, pa.float64(), safe=False).to_numpy(zero_copy_only=False)


def _names(col: pa.ChunkedArray) -> tuple[list[Any], np.ndarray]:
    """(unique names, per-row code; -1 for null) from a dictionary or plain string column."""
    if not pa.types.is_dictionary(col.type):
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            return [], np.full(len(col), -1, dtype=np.int64)
        col = pc.dictionary_encode(col)
    col = col.unify_dictionaries() if col.num_chunks > 1 else col
    if col.num_chunks == 0:
        return [], np.zeros(0, dtype=np.int64)
    uniq = col.chunk(0).dictionary.to_pylist()
    codes = [c.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64) for c in col.chunks]
    return uniq, (np.concatenate(codes) if codes else np.zeros(0, dtype=np.int64))


def _row_groups(pf: pq.ParquetFile, ts_index: int | None, start_ms: int | None, end_ms: int | None) -> list[int]:
    """Row groups whose harvested_at statistics can overlap [start_ms, end_ms] (all when unknown)."""
    md = pf.metadata
    groups = list(range(md.num_row_groups))
    if ts_index is None or (start_ms is None and end_ms is None):
        return groups
    out = []
    for g in groups:
        st = md.row_group(g).column(ts_index).statistics
        if st is None or not st.has_min_max:
            out.append(g)
            continue
        lo, hi = st.min, st.max
        lo_ms = _stat_ms(lo)
        hi_ms = _stat_ms(hi)
        if lo_ms is None or hi_ms is None:
            out.append(g)
            continue
        if (end_ms is None or lo_ms <= end_ms) and (start_ms is None or hi_ms >= start_ms):
            out.append(g)
    return out


def _stat_ms(v: Any) -> float | None:
    if hasattr(v, "timestamp"):  # datetime (timestamp columns)
        return v.timestamp() * 1000.0
    if is_number(v):
        return float(v)
    return None


def read_day(
    paths: Sequence[Path],
    underlying: str,
    start_ms: int | None = None,
    end_ms: int | None = None,
    *,
    iv_fraction: bool = True,
) -> DayColumns:
    """One day's Parquet file(s) -> DayColumns: projection to the columns the frame needs, row groups
    outside [start_ms, end_ms] skipped by their statistics, every row judged by daycols' rules.

    lines / schema_errors / bad_names add the footer's record (what compaction set aside) to what
    this read found; a file that cannot be read is named in `problem`, never an exception.
    """
    ts_parts: list[np.ndarray] = []
    col_parts: dict[str, list[np.ndarray]] = {k: [] for k in FLOAT_COLUMNS}
    name_parts: list[tuple[list[Any], np.ndarray]] = []
    lines = 0
    extra_errors = extra_bad = 0
    problems: list[str] = []
    for path in paths:
        try:
            pf = _open(path)
            colmap = resolve_columns(pf.schema_arrow)
            meta = _meta_of(pf.schema_arrow)
            ts_name = colmap.get("harvested_at")
            ts_index = pf.schema_arrow.get_field_index(ts_name) if ts_name else None
            # only our own files are skipped into: another file is read whole, so its counts cover the file
            usable = ts_index if meta and ts_index is not None and ts_index >= 0 else None
            groups = _row_groups(pf, usable, start_ms, end_ms)
            if meta:  # our own day file: its record counts the whole file, whatever we skip
                extra_errors += int(meta.get("schema_errors", 0))
                extra_bad += int(meta.get("bad_names", 0))
                lines += int(meta.get("schema_errors", 0)) + int(meta.get("bad_names", 0)) + pf.metadata.num_rows
            if not groups:
                continue
            tbl = pf.read_row_groups(groups, columns=sorted(set(colmap.values())), use_threads=True)
        except _Unreadable as exc:
            problems.append(f"{path.name}: {exc}")
            continue
        except (OSError, pa.ArrowException) as exc:
            problems.append(f"{path.name}: not readable as Parquet ({type(exc).__name__})")
            continue
        n = tbl.num_rows
        if not meta:
            lines += n
        ts_parts.append(ts_ms(tbl.column(ts_name)) if ts_name else np.full(n, np.nan))
        for k, src in SOURCE_KEYS.items():
            c = colmap.get(src)
            col_parts[k].append(_floats(tbl.column(c)) if c else np.full(n, np.nan))
        name_parts.append(_names(tbl.column(colmap["instrument_name"])) if "instrument_name" in colmap
                          else ([], np.full(n, -1, dtype=np.int64)))
    problem = "; ".join(problems) or None
    if not ts_parts:
        day = empty_day(problem)
        day.lines, day.schema_errors, day.bad_names = lines, extra_errors, extra_bad
        return day
    ts = np.concatenate(ts_parts)
    cols = {k: np.concatenate(v) for k, v in col_parts.items()}
    # one name table over the files (the previous system writes one file per snapshot)
    if len(name_parts) == 1:
        uniq, codes = name_parts[0]
    else:
        seen: dict[Any, int] = {}
        remapped = []
        for u, c in name_parts:
            m = np.array([seen.setdefault(x, len(seen)) for x in u], dtype=np.int64)
            remapped.append(np.where(c >= 0, m[np.maximum(c, 0)] if m.size else -1, -1))
        uniq, codes = list(seen), np.concatenate(remapped)
    name_ok = codes >= 0
    if uniq:
        is_str = np.array([isinstance(x, str) for x in uniq], dtype=bool)
        name_ok &= is_str[np.maximum(codes, 0)]
    ok = valid_rows(name_ok, ts, cols)
    table = name_table(uniq, underlying)
    row_code, status = row_status(ok, np.where(name_ok, codes, -1), table)
    return assemble_day(
        table, row_code, status, ts, cols, lines=lines,
        extra_schema_errors=extra_errors, extra_bad_names=extra_bad, problem=problem, iv_in_percent=iv_fraction,
    )


def harvested_at_values(path: Path) -> np.ndarray:
    """The harvested_at column of one of our day files (int64 ms), read back on its own."""
    try:
        tbl = pq.read_table(path, columns=["harvested_at"])
    except (OSError, pa.ArrowException) as exc:
        raise CalreportError(f"not readable as Parquet ({type(exc).__name__})", path) from None
    return tbl.column("harvested_at").cast(pa.int64()).to_numpy(zero_copy_only=False)


def read_table(path: Path) -> pa.Table:
    """The whole day table (compaction merging into an existing day)."""
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:
        raise CalreportError(f"not readable as Parquet ({type(exc).__name__})", path) from None


def read_rows(path: Path) -> list[dict[str, Any]]:
    """Our day file's rows back in the JSONL shape: Deribit's fields (nulls left out), harvested_at in ms,
    the `extra` fields merged back. The parsed columns (expiry, strike, option_type) are not row fields."""
    tbl = read_table(path)
    out: list[dict[str, Any]] = []
    cols = {name: tbl.column(name) for name in tbl.column_names}
    for name in ("harvested_at", "creation_timestamp"):
        if name in cols:
            cols[name] = cols[name].cast(pa.int64())
    drop = {"expiry", "strike", "option_type", "extra"}
    pylists = {k: v.to_pylist() for k, v in cols.items() if k not in drop}
    extra = cols["extra"].to_pylist() if "extra" in cols else [None] * tbl.num_rows
    for i in range(tbl.num_rows):
        r = {k: v[i] for k, v in pylists.items() if v[i] is not None}
        if extra[i]:
            r.update(_loads(extra[i]))
        out.append(r)
    return out
