"""One harvest day file -> columns: the rules every format (JSONL, JSONL.gz, Parquet) is read by.

A day file, whatever its format, becomes a `DayColumns`: per-row arrays plus the table of unique
instrument names they index into. The validity rules live here once, so a row is a schema error or
a bad name the same way in every format:
- a row without a usable instrument name (a string), timestamp (0 < t < year 2286), mark
  (finite, >= 0), IV (finite, >= 0) or forward (finite, > 0) is a *schema error*;
- a row whose name does not parse as an option of the underlying (BTC-PERPETUAL, ETH-..., a linear
  BTC_USDC-... option) is a *bad name*;
- null or missing bids/asks are NaN; tiny marks are kept (the calibration's filters decide).

    parse_lines(data, underlying) -> ParsedLines     a JSONL day, line by line (compaction keeps the rejects)
    parse_day_bytes(data, underlying) -> DayColumns
    read_day_bytes(path) -> (bytes, problem or None)  .gz tolerant; the problem names what could not be read
    assemble_day(...) -> DayColumns                   the shared end of every format's reader
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from calreport.errors import CalreportError
from calreport.jsonio import loads as _loads
from calreport.market.quotes import parse_instrument_names
from calreport.numbers import float_array

MAX_TIMESTAMP_MS = 10_000_000_000_000  # year 2286: anything later is not a harvest time

# Float columns of the frame (coin prices; mark_iv as a FRACTION, converted once here).
FLOAT_COLUMNS = ("mark_price", "mark_iv", "underlying_price", "bid", "ask", "open_interest", "index_price")
SOURCE_KEYS = {  # frame column -> Deribit's field name in a harvest row
    "mark_price": "mark_price",
    "mark_iv": "mark_iv",
    "underlying_price": "underlying_price",
    "bid": "bid_price",
    "ask": "ask_price",
    "open_interest": "open_interest",
    "index_price": "index_price",
}

OK, SCHEMA_ERROR, BAD_NAME = 0, 1, 2  # per-line status


@dataclass
class DayColumns:
    """One day file as columns: per-row arrays plus the per-unique-name table they index into."""

    names: np.ndarray  # str, unique instrument names (valid ones only)
    name_expiry_ms: np.ndarray  # int64 per name
    name_strike: np.ndarray  # float64 per name
    name_is_call: np.ndarray  # bool per name
    code: np.ndarray  # int32 per row -> names
    harvested_at: np.ndarray  # int64 per row, ascending
    cols: dict[str, np.ndarray]  # FLOAT_COLUMNS per row
    schema_errors: int = 0
    bad_names: int = 0
    lines: int = 0
    problem: str | None = None  # set when (part of) the file could not be read at all

    @property
    def n(self) -> int:
        return int(self.code.shape[0])


def empty_day(problem: str | None = None) -> DayColumns:
    z = np.zeros(0)
    return DayColumns(
        names=np.zeros(0, dtype=str), name_expiry_ms=np.zeros(0, dtype=np.int64), name_strike=z,
        name_is_call=np.zeros(0, dtype=bool), code=np.zeros(0, dtype=np.int32),
        harvested_at=np.zeros(0, dtype=np.int64), cols={k: z.copy() for k in FLOAT_COLUMNS}, problem=problem,
    )


def valid_rows(name_ok: np.ndarray, ts: np.ndarray, cols: dict[str, np.ndarray]) -> np.ndarray:
    """The schema rule, vectorised: which rows have a name, a time, a mark, an IV and a forward."""
    with np.errstate(invalid="ignore"):
        return (
            name_ok
            & np.isfinite(ts) & (ts > 0) & (ts < MAX_TIMESTAMP_MS)
            & np.isfinite(cols["mark_price"]) & (cols["mark_price"] >= 0)
            & np.isfinite(cols["mark_iv"]) & (cols["mark_iv"] >= 0)
            & np.isfinite(cols["underlying_price"]) & (cols["underlying_price"] > 0)
        )


@dataclass
class NameTable:
    """Unique names -> which are options of the underlying, with their parsed expiry/strike/type."""

    mine: np.ndarray  # bool per unique name
    new_code: np.ndarray  # int64 per unique name: index among the kept names, -1 when not kept
    names: np.ndarray
    expiry_ms: np.ndarray
    strike: np.ndarray
    is_call: np.ndarray


def name_table(uniq: list[Any], underlying: str) -> NameTable:
    """Parse each unique name once; keep inverse options of `underlying` only."""
    inst = parse_instrument_names(uniq)
    prefix_linear = f"{underlying}_"
    mine = np.array(
        [bool(v) and b == underlying and not (isinstance(n, str) and n.startswith(prefix_linear))
         for n, b, v in zip(uniq, inst.base, inst.valid)],
        dtype=bool,
    )
    new_code = np.full(len(uniq), -1, dtype=np.int64)
    new_code[mine] = np.arange(int(np.count_nonzero(mine)))
    return NameTable(
        mine=mine,
        new_code=new_code,
        names=np.array([n for n, m in zip(uniq, mine) if m], dtype=str),
        expiry_ms=inst.expiry_ms[mine].astype(np.int64),
        strike=inst.strike[mine].astype(np.float64),
        is_call=inst.is_call[mine].astype(bool),
    )


def row_status(ok: np.ndarray, uniq_code: np.ndarray, table: NameTable) -> tuple[np.ndarray, np.ndarray]:
    """(per-row code into the kept names or -1, per-row status OK / SCHEMA_ERROR / BAD_NAME)."""
    if table.new_code.size:
        row_code = np.where(ok & (uniq_code >= 0), table.new_code[np.maximum(uniq_code, 0)], -1)
    else:
        row_code = np.full(uniq_code.shape[0], -1, dtype=np.int64)
    status = np.where(~ok, SCHEMA_ERROR, np.where(row_code < 0, BAD_NAME, OK)).astype(np.int8)
    return row_code, status


def assemble_day(
    table: NameTable,
    row_code: np.ndarray,
    status: np.ndarray,
    ts: np.ndarray,
    cols: dict[str, np.ndarray],
    *,
    lines: int,
    extra_schema_errors: int = 0,
    extra_bad_names: int = 0,
    problem: str | None = None,
    iv_in_percent: bool = True,
) -> DayColumns:
    """The kept rows as DayColumns, in one canonical order: by harvested_at, then instrument name, so
    every format of the same day gives the same arrays (sums in the fit then agree to the last
    digit). mark_iv percent -> fraction here, once."""
    keep: np.ndarray | slice = status == OK
    if keep.all():  # every row valid (every compacted day): views, no gather
        keep = slice(None)
    kts = ts[keep]
    kcode = row_code[keep]
    rank = np.empty(len(table.names), dtype=np.int64)
    rank[np.argsort(table.names, kind="stable")] = np.arange(len(table.names))
    krank = rank[kcode] if kcode.size else kcode
    dt, dr = np.diff(kts), np.diff(krank)
    if np.all((dt > 0) | ((dt == 0) & (dr >= 0))):
        order: slice | np.ndarray = slice(None)  # already in order (every compacted day is): no gather
    else:
        order = np.lexsort((krank, kts))
    out_cols = {}
    for k in FLOAT_COLUMNS:
        v = cols[k][keep][order]
        out_cols[k] = v / 100.0 if (k == "mark_iv" and iv_in_percent) else v
    n_schema = int(np.count_nonzero(status == SCHEMA_ERROR))
    n_bad = int(np.count_nonzero(status == BAD_NAME))
    return DayColumns(
        names=table.names,
        name_expiry_ms=table.expiry_ms,
        name_strike=table.strike,
        name_is_call=table.is_call,
        code=kcode[order].astype(np.int32),
        harvested_at=kts[order].astype(np.int64),
        cols=out_cols,
        schema_errors=n_schema + extra_schema_errors,
        bad_names=n_bad + extra_bad_names,
        lines=lines,
        problem=problem,
    )


# --------------------------------------------------------------------------- JSONL


def _split_lines(data: bytes) -> list[bytes]:
    """The non-blank lines (C-level filters; the per-line comprehension only when a line is all whitespace)."""
    lines = list(filter(None, data.split(b"\n")))
    if any(map(bytes.isspace, lines)):
        lines = [ln for ln in lines if not ln.isspace()]
    return lines


def _parse_objects(lines: list[bytes]) -> list[Any]:
    """Lines -> parsed values (`_BAD_JSON` where a line is not JSON).

    Fast path: the whole file as one JSON array (one parser call, no per-line Python). Any bad
    line (or a line holding two values) makes the counts disagree, and we fall back line by line.
    """
    if not lines:
        return []
    try:
        values = _loads(b"[" + b",".join(lines) + b"]")
        if isinstance(values, list) and len(values) == len(lines):
            return values
    except ValueError:
        pass
    out: list[Any] = []
    for ln in lines:
        try:
            out.append(_loads(ln))
        except ValueError:
            out.append(_BAD_JSON)
    return out


_BAD_JSON = object()


def row_fields(rows: list[dict[str, Any]]) -> tuple[dict[str, list[Any]], bool]:
    """Every field of the rows as a column (None where a row lacks the field), and whether every row
    has the same fields.

    A harvest's rows share one key set, so the usual case is one C-level pass (an itemgetter of all
    the keys, then a transpose); a day mixing key sets (early snapshots carry underlying_index and
    no bid/ask) takes one C-level pass per field. No Python code runs per row either way."""
    if not rows:
        return {}, True
    keys = tuple(rows[0])
    if len(keys) > 1 and len(set(map(len, rows))) == 1:
        try:  # every row has the first row's keys (and as many): the same key set
            return dict(zip(keys, map(list, zip(*map(itemgetter(*keys), rows))))), True
        except KeyError:
            pass
    present: set[str] = set()
    present.update(*rows)
    return {k: list(map(dict.get, rows, repeat(k))) for k in present}, False


def _str_column(values: list[Any] | pa.Array, ok: np.ndarray) -> tuple[list[Any], np.ndarray]:
    """(unique names, per-row code) of the strings at the `ok` rows, coded by first appearance (-1 elsewhere).

    pyarrow's hash encoding numbers the dictionary in order of first occurrence, as a dict would."""
    if not len(values):
        return [], np.zeros(0, dtype=np.int64)
    if isinstance(values, pa.Array):
        arr = pc.if_else(pa.array(ok), values, pa.scalar(None, pa.string()))
    else:
        if set(map(type, values)) != {str}:  # a non-string name: rare, masked out (its row is a schema error)
            values = [v if type(v) is str else None for v in values]
        arr = pa.array(values, pa.string(), mask=~ok)
    enc = pc.dictionary_encode(arr)
    codes = enc.indices.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    return enc.dictionary.to_pylist(), codes


CHUNK_LINES = 1024  # lines parsed and taken apart at a time, while their dicts are still in the CPU cache
_NONE = type(None)


@dataclass
class TypedRows:
    """A JSONL day whose every line is a JSON object with plainly typed fields, as typed columns.

    floats: fields whose values are all floats or null (NaN for null or absent; `nulls` names the
    fields that are null in every row); ints: fields every row has as an int; strs: fields whose
    values are all strings or null; has: which rows have each field (None: every row)."""

    n: int
    floats: dict[str, np.ndarray]
    ints: dict[str, np.ndarray]
    strs: dict[str, pa.Array]
    nulls: set[str]
    has: dict[str, np.ndarray | None]


def _chunk_columns(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, np.ndarray | None]] | None:
    """One chunk's fields as (kind, values) with which rows have them; None when a field holds anything
    but floats, ints, strings and nulls (the day is then parsed the general way)."""
    n = len(rows)
    keys = tuple(rows[0])
    raw: dict[str, Any] | None = None
    has: dict[str, np.ndarray | None] = {}
    if len(keys) > 1 and len(set(map(len, rows))) == 1:
        try:  # every row has the first row's keys (and as many): one pass
            raw = dict(zip(keys, zip(*map(itemgetter(*keys), rows))))
            has = dict.fromkeys(keys)
        except KeyError:
            raw = None
    if raw is None:  # key sets differ (early snapshots carry underlying_index): one C-level pass per field
        present: set[str] = set()
        present.update(*rows)
        raw = {k: list(map(dict.get, rows, repeat(k))) for k in present}
        for k in present:
            h = np.fromiter(map(dict.__contains__, rows, repeat(k)), dtype=bool, count=n)
            has[k] = None if h.all() else h
    out: dict[str, Any] = {}
    for k, vals in raw.items():
        types = set(map(type, vals))
        if types == {_NONE}:
            out[k] = ("null", None)
        elif types <= {float, _NONE}:
            out[k] = ("f", np.array(vals, dtype=np.float64))  # null -> NaN (JSON has no NaN of its own)
        elif types == {int} and has[k] is None:
            try:
                out[k] = ("i", np.array(vals, dtype=np.int64))
            except OverflowError:
                return None
        elif types <= {str, _NONE}:
            out[k] = ("s", pa.array(vals, pa.string()))
        else:
            return None
    return out, has


def _typed_rows(lines: list[bytes]) -> TypedRows | None:
    """Every line parsed a chunk at a time and taken apart into typed columns; None when a chunk does not
    parse as one object per line, or a field is not plainly typed (see parse_lines).

    A chunk that parses as CHUNK_LINES values gives exactly what the whole file parsed as one array
    gives for those lines (a JSON array's elements parse independently), so this is the same parse."""
    parts: list[tuple[int, dict[str, Any], dict[str, np.ndarray | None]]] = []
    for i in range(0, len(lines), CHUNK_LINES):
        chunk = lines[i : i + CHUNK_LINES]
        try:
            values = _loads(b"[" + b",".join(chunk) + b"]")
        except ValueError:
            return None
        if type(values) is not list or len(values) != len(chunk) or set(map(type, values)) != {dict}:
            return None
        got = _chunk_columns(values)
        del values
        if got is None:
            return None
        parts.append((len(chunk), *got))
    n = sum(p[0] for p in parts)
    keys: dict[str, None] = {}
    for _, cols, _ in parts:
        keys.update(dict.fromkeys(cols))
    typed = TypedRows(n=n, floats={}, ints={}, strs={}, nulls=set(), has={})
    for k in keys:
        kinds = {cols[k][0] for _, cols, _ in parts if k in cols} - {"null"}
        if len(kinds) > 1 or (kinds == {"i"} and any(k not in cols or cols[k][0] != "i" for _, cols, _ in parts)):
            return None
        kind = kinds.pop() if kinds else "null"
        if kind in ("f", "null"):
            typed.floats[k] = np.concatenate([
                cols[k][1] if k in cols and cols[k][0] == "f" else np.full(m, np.nan) for m, cols, _ in parts])
            if kind == "null":
                typed.nulls.add(k)
        elif kind == "i":
            typed.ints[k] = np.concatenate([cols[k][1] for _, cols, _ in parts])
        else:
            typed.strs[k] = pa.concat_arrays([
                cols[k][1] if k in cols and cols[k][0] == "s" else pa.nulls(m, pa.string()) for m, cols, _ in parts])
        hs = [has.get(k, False) if k in cols else False for m, cols, has in parts]
        if all(h is None for h in hs):
            typed.has[k] = None
        else:
            typed.has[k] = np.concatenate([
                np.ones(m, dtype=bool) if h is None else np.zeros(m, dtype=bool) if h is False else h
                for (m, _, _), h in zip(parts, hs)])
    return typed


def _typed_floats(typed: TypedRows, key: str) -> np.ndarray:
    """A field as float_array reads it: numbers as floats, NaN for null, absent or not a number."""
    if key in typed.floats:
        return typed.floats[key]
    if key in typed.ints:
        return typed.ints[key].astype(np.float64)
    return np.full(typed.n, np.nan)  # absent, or strings (not numbers)


class ParsedLines:
    """A JSONL day, line by line: what each line was and the columns of the object rows.

    `typed` holds the rows as typed columns when every line is a plainly typed JSON object (every
    harvester-written day); `rows`, the lines that are JSON objects as dicts, is then parsed again
    only when asked for (compaction's handling of an odd field)."""

    def __init__(
        self, *, lines: list[bytes], rows: list[dict[str, Any]] | None, row_line: np.ndarray, status: np.ndarray,
        ts: np.ndarray, cols: dict[str, np.ndarray], table: NameTable, row_code: np.ndarray,
        row_status: np.ndarray, problem: str | None = None, typed: TypedRows | None = None,
    ) -> None:
        self.lines = lines  # non-blank lines
        self._rows = rows
        self.row_line = row_line  # int64 per row: its index in `lines`
        self.status = status  # int8 per LINE: OK / SCHEMA_ERROR / BAD_NAME
        self.ts = ts  # float64 per row: harvested_at (creation_timestamp for older harvesters)
        self.cols = cols  # FLOAT_COLUMNS per row, Deribit units (mark_iv percent)
        self.table = table
        self.row_code = row_code  # int64 per row -> table.names, -1 when not kept
        self.row_status = row_status  # int8 per row
        self.problem = problem
        self.typed = typed
        self.extra: dict[str, Any] = {}

    @property
    def rows(self) -> list[dict[str, Any]]:
        if self._rows is None:
            self._rows = [v for v in _parse_objects(self.lines) if type(v) is dict]
        return self._rows

    @property
    def n_rows(self) -> int:
        return int(self.row_line.shape[0])


def parse_lines(data: bytes, underlying: str, problem: str | None = None) -> ParsedLines:
    """Raw JSONL bytes of one day file -> every line classified, the object rows as columns.

    Typed path: every line a JSON object whose fields hold floats, ints, strings or nulls, each field
    one kind (what harvesters write): parsed a chunk at a time into typed columns, no dict kept. Any
    other day (a torn line, a string where a number belongs, ...) is parsed the general way, which
    gives the same columns and classifies each line."""
    lines = _split_lines(data)
    typed = _typed_rows(lines) if lines else None
    if typed is None:
        return _parse_lines_general(lines, underlying, problem)
    n = typed.n
    cols = {k: _typed_floats(typed, src) for k, src in SOURCE_KEYS.items()}
    ts = _typed_floats(typed, "harvested_at")
    missing_ts = ~np.isfinite(ts)
    if missing_ts.any():  # older harvesters wrote only creation_timestamp
        ts = np.where(missing_ts, _typed_floats(typed, "creation_timestamp"), ts)
    names = typed.strs.get("instrument_name")
    name_ok = (names.is_valid().to_numpy(zero_copy_only=False) if names is not None else np.zeros(n, dtype=bool))
    ok = valid_rows(name_ok, ts, cols)
    uniq, codes = _str_column(names, ok) if names is not None else ([], np.full(n, -1, dtype=np.int64))
    table = name_table(uniq, underlying)
    row_code, rstatus = row_status(ok, codes, table)
    return ParsedLines(
        lines=lines, rows=None, row_line=np.arange(n, dtype=np.int64), status=rstatus.copy(), ts=ts, cols=cols,
        table=table, row_code=row_code, row_status=rstatus, problem=problem, typed=typed,
    )


def _parse_lines_general(lines: list[bytes], underlying: str, problem: str | None) -> ParsedLines:
    values = _parse_objects(lines)
    if values and set(map(type, values)) == {dict}:  # every line an object
        rows = values
        row_line = np.arange(len(values), dtype=np.int64)
    else:
        is_row = [type(v) is dict for v in values]
        rows = [v for v, r in zip(values, is_row) if r]
        row_line = np.flatnonzero(np.array(is_row, dtype=bool)) if lines else np.zeros(0, dtype=np.int64)
    fields, _ = row_fields(rows)
    nulls = [None] * len(rows)

    cols = {k: float_array(fields.get(src, nulls))[0] for k, src in SOURCE_KEYS.items()}
    ts = float_array(fields.get("harvested_at", nulls))[0]
    missing_ts = ~np.isfinite(ts)
    if missing_ts.any():  # older harvesters wrote only creation_timestamp
        ts = np.where(missing_ts, float_array(fields.get("creation_timestamp", nulls))[0], ts)
    names_raw = fields.get("instrument_name", nulls)
    if names_raw and set(map(type, names_raw)) == {str}:
        name_ok = np.ones(len(rows), dtype=bool)
    else:
        name_ok = np.fromiter((type(x) is str for x in names_raw), dtype=bool, count=len(names_raw))
    ok = valid_rows(name_ok, ts, cols)

    # Code names by first appearance among the valid rows, then parse each unique name once.
    uniq, codes = _str_column(names_raw, ok)
    table = name_table(uniq, underlying)
    row_code, rstatus = row_status(ok, codes, table)
    status = np.full(len(lines), SCHEMA_ERROR, dtype=np.int8)  # not JSON, or not an object
    status[row_line] = rstatus
    return ParsedLines(
        lines=lines, rows=rows, row_line=row_line, status=status, ts=ts, cols=cols, table=table,
        row_code=row_code, row_status=rstatus, problem=problem,
    )


def day_from_lines(p: ParsedLines, *, iv_fraction: bool = True) -> DayColumns:
    non_rows = len(p.lines) - p.n_rows  # not JSON or not an object
    return assemble_day(
        p.table, p.row_code, p.row_status, p.ts, p.cols, lines=len(p.lines),
        extra_schema_errors=non_rows, problem=p.problem, iv_in_percent=iv_fraction,
    )


def parse_day_bytes(data: bytes, underlying: str, problem: str | None = None, *, iv_fraction: bool = True) -> DayColumns:
    """Raw JSONL bytes of one day file -> DayColumns, counting every row that had to be skipped
    (`iv_fraction=False`: mark_iv kept in Deribit's percent, as an import writes it)."""
    return day_from_lines(parse_lines(data, underlying, problem), iv_fraction=iv_fraction)


def read_day_bytes(path: Path) -> tuple[bytes, str | None]:
    """A JSONL(.gz) day file's bytes, and what could not be read of it (None when all of it was).

    A .gz that is not gzip at all, or breaks off (harvester killed mid-write), yields what was
    readable plus the problem, so the run can name the file instead of silently seeing nothing.
    """
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalreportError(f"cannot read harvest file ({exc.strerror or exc})", path) from None
    if path.name.endswith(".gz"):
        return gunzip_tolerant(raw)
    return raw, None


def gunzip_tolerant(raw: bytes) -> tuple[bytes, str | None]:
    """Every gzip member's bytes as far as they decompress, and the problem when they stop early."""
    out: list[bytes] = []
    rest = raw
    while rest:
        d = zlib.decompressobj(wbits=31)
        try:
            out.append(d.decompress(rest))
        except zlib.error as exc:
            got = sum(map(len, out))
            why = str(exc).split(":")[-1].strip() or "zlib error"
            return b"".join(out), (f"not readable as gzip ({why})" if not got
                                   else f"gzip data breaks off after {got:,} bytes ({why})")
        if not d.eof:
            got = sum(map(len, out))
            return b"".join(out), (f"gzip data breaks off after {got:,} bytes (truncated)" if got
                                   else "not readable as gzip (truncated)")
        rest = d.unused_data
        if rest and not rest.lstrip(b"\0"):  # zero padding after the last member
            break
    return b"".join(out), None
