"""The harvest: Deribit book-summary rows appended every few minutes, read back as numpy columns.

Layout: `data/harvest/<UNDERLYING>/YYYY-MM-DD.jsonl` (also `.jsonl.gz`), one
book-summary row per line plus `harvested_at` (ms). Real harvests have warts, and reading one must
never crash on them:
- torn or malformed lines, rows that are not objects, rows without a usable mark / IV / forward /
  timestamp are *schema errors*: counted and skipped;
- unparseable instrument names, other underlyings and linear (`BTC_USDC-...`) options are counted
  separately (`bad_names`) and skipped;
- null or missing bids/asks are NaN (a one-sided book is normal); tiny marks are kept (the
  calibration's min-price filter decides).

Reading JSON is the slow part (0.3M rows/s with `json`, ~1M with orjson), so each day file gets a
columnar cache (`<root>/data/cache/harvest/<U>/<file>.<hash>.npz`) keyed by the source's size,
mtime_ns and FORMAT_VERSION. A warm load is `np.load` only; any mismatch (or an unreadable cache)
rebuilds it, so a stale cache is never trusted. Caches are written by atomic replace and are
best-effort: a read-only location just means no cache.

Public API:
    load_harvest(source, underlying, start_ms, end_ms, cache_dir=None, progress=None) -> HarvestFrame
    index_price_per_snapshot(frame) -> (ticks_ms, index proxy)    one price per snapshot
    underlying_price_series(source, underlying, end_ms, days=7) -> (hour_ticks_ms, close)
    rv_from_harvest(root, underlying, end_ms) -> RealisedVol       RV_7d from that series
    append_snapshot(root, underlying, rows, harvested_at_ms) -> AppendResult
    harvest_once(root, config, underlying, from_file=None, client=None) -> AppendResult
        one snapshot (a file, or fetched) appended to its day file; `calreport harvest` prints it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import zipfile
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from filelock import Timeout

from calreport.errors import CalreportError
from calreport.jsonio import dumps as _dumps
from calreport.jsonio import loads as _loads
from calreport.market.deribit import (
    DeribitClient,
    QuoteArrays,
    load_snapshot,
    parse_instrument_names,
)
from calreport.market.rv import WINDOW_DAYS, RealisedVol, realised_vol, to_hourly
from calreport.numbers import float_column, is_number
from calreport.store.files import append_line, atomic_write, locked
from calreport.store.history import iter_lines_reversed
from calreport.store.models import CalibrationConfig
from calreport.store.paths import Root, lock_path
from calreport.timeutil import MS_PER_DAY

FORMAT_VERSION = 1
MAX_TIMESTAMP_MS = 10_000_000_000_000  # year 2286: anything later is not a harvest time
DAY_SUFFIXES = (".jsonl", ".jsonl.gz")

# Float columns of the frame (coin prices; mark_iv as a FRACTION, converted once here).
FLOAT_COLUMNS = ("mark_price", "mark_iv", "underlying_price", "bid", "ask", "open_interest")
_SOURCE_KEYS = {
    "mark_price": "mark_price",
    "mark_iv": "mark_iv",
    "underlying_price": "underlying_price",
    "bid": "bid_price",
    "ask": "ask_price",
    "open_interest": "open_interest",
}

Progress = Callable[[int, int, str], None]  # (files done, files total, current file name)


# --------------------------------------------------------------------------- the frame


@dataclass
class DayColumns:
    """One day file as columns: per-row arrays plus the per-unique-name table they index into."""

    names: np.ndarray  # str, unique instrument names (valid ones only)
    name_expiry_ms: np.ndarray  # int64 per name
    name_strike: np.ndarray  # float64 per name
    name_is_call: np.ndarray  # bool per name
    code: np.ndarray  # int32 per row -> names
    harvested_at: np.ndarray  # int64 per row
    cols: dict[str, np.ndarray]  # FLOAT_COLUMNS per row
    schema_errors: int = 0
    bad_names: int = 0
    lines: int = 0

    @property
    def n(self) -> int:
        return int(self.code.shape[0])


@dataclass
class HarvestFrame:
    """Harvested quotes of one underlying over a window, as aligned numpy columns (time-sorted)."""

    underlying: str
    start_ms: int
    end_ms: int
    names: np.ndarray  # unique instrument names; `code` indexes into it
    code: np.ndarray  # int32
    harvested_at: np.ndarray  # int64 ms
    expiry_ms: np.ndarray  # int64 ms, 08:00 UTC of the expiry date
    strike: np.ndarray  # float64
    is_call: np.ndarray  # bool
    mark_price: np.ndarray  # float64, base coin
    mark_iv: np.ndarray  # float64, fraction
    underlying_price: np.ndarray  # float64, the expiry's forward
    bid: np.ndarray  # float64, coin, NaN when null
    ask: np.ndarray  # float64, coin, NaN when null
    open_interest: np.ndarray  # float64
    schema_errors: int = 0  # malformed lines/rows in the files read (whole files, not just the window)
    bad_names: int = 0  # unparseable / foreign / linear instrument names skipped
    lines: int = 0  # non-blank lines in the files read
    files: list[Path] = field(default_factory=list)
    file_counts: dict[Path, tuple[int, int, int]] = field(default_factory=dict)  # (lines, schema errors, bad names)
    cache_hits: int = 0
    cache_misses: int = 0

    def __len__(self) -> int:
        return int(self.code.shape[0])

    def snapshot_times(self) -> np.ndarray:
        """Distinct harvest times (ms), ascending: one per harvested snapshot."""
        return np.unique(self.harvested_at)

    def dte(self) -> np.ndarray:
        """Days to expiry of every row, as of the row's own harvest time."""
        return (self.expiry_ms - self.harvested_at) / MS_PER_DAY

    def take(self, mask: np.ndarray) -> HarvestFrame:
        kw = {k: getattr(self, k)[mask] for k in _ROW_FIELDS}
        return HarvestFrame(
            underlying=self.underlying, start_ms=self.start_ms, end_ms=self.end_ms, names=self.names,
            schema_errors=self.schema_errors, bad_names=self.bad_names, lines=self.lines,
            files=list(self.files), file_counts=dict(self.file_counts), cache_hits=self.cache_hits, cache_misses=self.cache_misses, **kw,
        )

    def to_quotes(self, mask: np.ndarray | None = None) -> QuoteArrays:
        """The rows (or a subset) as QuoteArrays, so the live calibration's filters and fit apply unchanged."""
        f = self if mask is None else self.take(mask)
        n = len(f)
        return QuoteArrays(
            instrument=f.names[f.code].astype(object) if n else np.zeros(0, dtype=object),
            expiry_ms=f.expiry_ms,
            strike=f.strike,
            is_call=f.is_call,
            mark_price=f.mark_price,
            mark_iv=f.mark_iv,
            underlying_price=f.underlying_price,
            bid=f.bid,
            ask=f.ask,
            open_interest=f.open_interest,
            creation_ms=f.harvested_at,
            valid_name=np.ones(n, dtype=bool),
            n_bad_names=0,
        )


_ROW_FIELDS = ("code", "harvested_at", "expiry_ms", "strike", "is_call", *FLOAT_COLUMNS)


# --------------------------------------------------------------------------- parsing a day file


def _split_lines(data: bytes) -> list[bytes]:
    return [ln for ln in data.split(b"\n") if ln and not ln.isspace()]


def _parse_objects(lines: list[bytes]) -> tuple[list[Any], int]:
    """Lines -> parsed values, plus how many lines were not valid JSON.

    Fast path: the whole file as one JSON array (one parser call, no per-line Python). Any bad
    line (or a line holding two values) makes the counts disagree, and we fall back line by line.
    """
    if not lines:
        return [], 0
    try:
        values = _loads(b"[" + b",".join(lines) + b"]")
        if isinstance(values, list) and len(values) == len(lines):
            return values, 0
    except ValueError:
        pass
    out: list[Any] = []
    bad = 0
    for ln in lines:
        try:
            out.append(_loads(ln))
        except ValueError:
            bad += 1
    return out, bad


def _float_column(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """A float column (numbers.float_column): missing / null -> NaN; a string, bool or list is never
    a number and becomes NaN too, so a row missing a required number is a schema error below."""
    return float_column(rows, key)[0]


def parse_day_bytes(data: bytes, underlying: str) -> DayColumns:
    """Raw JSONL bytes of one day file -> DayColumns, counting every row that had to be skipped."""
    lines = _split_lines(data)
    values, bad_json = _parse_objects(lines)
    rows = [v for v in values if type(v) is dict]
    schema_errors = bad_json + (len(values) - len(rows))

    cols = {k: _float_column(rows, src) for k, src in _SOURCE_KEYS.items()}
    ts = _float_column(rows, "harvested_at")
    missing_ts = ~np.isfinite(ts)
    if missing_ts.any():  # older harvesters wrote only creation_timestamp
        ts = np.where(missing_ts, _float_column(rows, "creation_timestamp"), ts)
    names_raw = [r.get("instrument_name") for r in rows]
    name_ok = np.fromiter((type(x) is str for x in names_raw), dtype=bool, count=len(names_raw))
    ok = (
        name_ok
        & np.isfinite(ts) & (ts > 0) & (ts < MAX_TIMESTAMP_MS)
        & np.isfinite(cols["mark_price"]) & (cols["mark_price"] >= 0)
        & np.isfinite(cols["mark_iv"]) & (cols["mark_iv"] >= 0)
        & np.isfinite(cols["underlying_price"]) & (cols["underlying_price"] > 0)
    )
    schema_errors += int(np.count_nonzero(~ok))

    # Code names by first appearance (dict: O(n)), then parse each unique name once.
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(n, len(index)) if good else -1 for n, good in zip(names_raw, ok)),
        dtype=np.int64, count=len(names_raw),
    )
    uniq = list(index)
    inst = parse_instrument_names(uniq)
    prefix_linear = f"{underlying}_"
    mine = np.array(
        [bool(v) and b == underlying and not n.startswith(prefix_linear) for n, b, v in zip(uniq, inst.base, inst.valid)],
        dtype=bool,
    )
    # Renumber to the kept names only.
    new_code = np.full(len(uniq), -1, dtype=np.int64)
    new_code[mine] = np.arange(int(np.count_nonzero(mine)))
    if uniq:
        row_code = np.where(codes >= 0, new_code[np.maximum(codes, 0)], -1)
    else:  # no row with a usable name at all
        row_code = np.full(len(codes), -1, dtype=np.int64)
    bad_names = int(np.count_nonzero(ok & (row_code < 0)))
    keep = ok & (row_code >= 0)

    order = np.argsort(ts[keep], kind="stable")
    return DayColumns(
        names=np.array([n for n, m in zip(uniq, mine) if m], dtype=str),
        name_expiry_ms=inst.expiry_ms[mine].astype(np.int64),
        name_strike=inst.strike[mine].astype(np.float64),
        name_is_call=inst.is_call[mine].astype(bool),
        code=row_code[keep][order].astype(np.int32),
        harvested_at=ts[keep][order].astype(np.int64),
        cols={k: (v[keep][order] / 100.0 if k == "mark_iv" else v[keep][order]) for k, v in cols.items()},
        schema_errors=schema_errors,
        bad_names=bad_names,
        lines=len(lines),
    )


def read_day_bytes(path: Path) -> bytes:
    try:
        if path.name.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                return _read_gzip_tolerant(fh)
        return path.read_bytes()
    except OSError as exc:
        raise CalreportError(f"cannot read harvest file ({exc.strerror or exc})", path) from None


def _read_gzip_tolerant(fh: Any) -> bytes:
    """A truncated .gz (harvester killed mid-write) yields what was readable, not an exception."""
    buf = io.BytesIO()
    try:
        while True:
            chunk = fh.read(1 << 20)
            if not chunk:
                break
            buf.write(chunk)
    except (EOFError, gzip.BadGzipFile, zlib.error):
        pass
    return buf.getvalue()


# --------------------------------------------------------------------------- columnar cache


def _cache_file(cache_dir: Path, underlying: str, source: Path) -> Path:
    tag = hashlib.sha1(str(source.absolute()).encode("utf-8")).hexdigest()[:10]
    return cache_dir / "harvest" / underlying / f"{source.name}.{tag}.npz"


def _stat_key(st: os.stat_result) -> tuple[int, int]:
    return int(st.st_size), int(st.st_mtime_ns)


def _load_cache(path: Path, key: tuple[int, int]) -> DayColumns | None:
    """The cached columns if the cache matches the source's (size, mtime_ns) and format; else None."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = z["meta"]
            if int(meta[0]) != FORMAT_VERSION or (int(meta[1]), int(meta[2])) != key:
                return None
            return DayColumns(
                names=z["names"],
                name_expiry_ms=z["name_expiry_ms"],
                name_strike=z["name_strike"],
                name_is_call=z["name_is_call"],
                code=z["code"],
                harvested_at=z["harvested_at"],
                cols={k: z[k] for k in FLOAT_COLUMNS},
                schema_errors=int(meta[3]),
                bad_names=int(meta[4]),
                lines=int(meta[5]),
            )
    except (OSError, KeyError, ValueError, IndexError, zipfile.BadZipFile, EOFError):
        return None


def _write_cache(path: Path, key: tuple[int, int], day: DayColumns) -> bool:
    """Best effort: an unwritable cache location only costs speed, never correctness."""
    meta = np.array([FORMAT_VERSION, key[0], key[1], day.schema_errors, day.bad_names, day.lines], dtype=np.int64)
    buf = io.BytesIO()
    np.savez(
        buf, meta=meta, names=day.names, name_expiry_ms=day.name_expiry_ms, name_strike=day.name_strike,
        name_is_call=day.name_is_call, code=day.code, harvested_at=day.harvested_at, **day.cols,
    )
    try:
        atomic_write(path, buf.getvalue())
    except (CalreportError, OSError):
        return False
    return True


def load_day(path: Path, underlying: str, cache_dir: Path | None = None) -> tuple[DayColumns, bool]:
    """One day file -> (columns, from_cache). The cache is used only if it matches the file exactly."""
    try:
        before = _stat_key(os.stat(path))
    except OSError as exc:
        raise CalreportError(f"cannot read harvest file ({exc.strerror or exc})", path) from None
    cpath = _cache_file(cache_dir, underlying, path) if cache_dir is not None else None
    if cpath is not None:
        cached = _load_cache(cpath, before)
        if cached is not None:
            return cached, True
    day = parse_day_bytes(read_day_bytes(path), underlying)
    if cpath is not None:
        try:
            after = _stat_key(os.stat(path))
        except OSError:
            after = None
        if after == before:  # appended to while we read: do not cache a half-view
            _write_cache(cpath, before, day)
    return day, False


# --------------------------------------------------------------------------- loading a window


def _utc_date(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def harvest_dir_of(source: Root | Path | str, underlying: str) -> Path:
    """A Root -> its data/harvest/<U>; a directory holding <U>/ -> that; else the directory itself."""
    if isinstance(source, Root):
        return source.harvest_dir(underlying)
    p = Path(source)
    return p / underlying if (p / underlying).is_dir() else p


def day_files(directory: Path, start_ms: int, end_ms: int) -> list[Path]:
    """Day files whose UTC date can hold rows in [start_ms, end_ms], oldest first.

    Files are named by the snapshot's UTC date; one day of slack on each side costs little and
    keeps a row harvested a moment after midnight reachable.
    """
    if not directory.is_dir():
        return []
    first = start_ms // MS_PER_DAY - 1  # days since the epoch
    last = end_ms // MS_PER_DAY + 1
    epoch = datetime(1970, 1, 1).date()
    out: list[tuple[str, Path]] = []
    for p in directory.iterdir():
        name = p.name
        for suffix in DAY_SUFFIXES:
            if name.endswith(suffix):
                try:
                    d = (datetime.strptime(name[: -len(suffix)], "%Y-%m-%d").date() - epoch).days
                except ValueError:
                    break
                if first <= d <= last and p.is_file():
                    out.append((name, p))
                break
    return [p for _, p in sorted(out)]


def _empty_frame(underlying: str, start_ms: int, end_ms: int) -> HarvestFrame:
    f = np.zeros(0)
    return HarvestFrame(
        underlying=underlying, start_ms=start_ms, end_ms=end_ms, names=np.zeros(0, dtype=str),
        code=np.zeros(0, dtype=np.int32), harvested_at=np.zeros(0, dtype=np.int64),
        expiry_ms=np.zeros(0, dtype=np.int64), strike=f, is_call=np.zeros(0, dtype=bool),
        **{k: f.copy() for k in FLOAT_COLUMNS},
    )


def load_harvest(
    source: Root | Path | str,
    underlying: str,
    start_ms: int,
    end_ms: int,
    *,
    cache_dir: Path | None = None,
    progress: Progress | None = None,
) -> HarvestFrame:
    """Harvested rows with start_ms <= harvested_at <= end_ms, as one time-sorted HarvestFrame.

    `source` is a Root (cache in root.cache_dir unless `cache_dir` is given) or a directory (no
    cache unless `cache_dir` is given). schema_errors / bad_names / lines count the whole files
    read, since a bad line has no trustworthy timestamp to place it in the window.
    """
    underlying = underlying.upper()
    directory = harvest_dir_of(source, underlying)
    if cache_dir is None and isinstance(source, Root):
        cache_dir = source.cache_dir
    files = day_files(directory, start_ms, end_ms)
    frame = _empty_frame(underlying, start_ms, end_ms)
    frame.files = files
    parts: list[tuple[DayColumns, np.ndarray]] = []
    for i, path in enumerate(files):
        if progress is not None:
            progress(i, len(files), path.name)
        day, hit = load_day(path, underlying, cache_dir)
        frame.cache_hits += hit
        frame.cache_misses += not hit
        frame.schema_errors += day.schema_errors
        frame.bad_names += day.bad_names
        frame.lines += day.lines
        frame.file_counts[path] = (day.lines, day.schema_errors, day.bad_names)
        lo = int(np.searchsorted(day.harvested_at, start_ms, side="left"))
        hi = int(np.searchsorted(day.harvested_at, end_ms, side="right"))
        if hi > lo:
            parts.append((day, np.arange(lo, hi)))
    if progress is not None:
        progress(len(files), len(files), "")
    if not parts:
        return frame

    # Union of the days' name tables; remap each day's codes into it.
    all_names = np.concatenate([d.names for d, _ in parts])
    names, first_idx, inverse = np.unique(all_names, return_index=True, return_inverse=True)
    exp = np.concatenate([d.name_expiry_ms for d, _ in parts])[first_idx]
    strike = np.concatenate([d.name_strike for d, _ in parts])[first_idx]
    call = np.concatenate([d.name_is_call for d, _ in parts])[first_idx]
    codes: list[np.ndarray] = []
    offset = 0
    for d, idx in parts:
        remap = inverse[offset : offset + len(d.names)].astype(np.int32)
        offset += len(d.names)
        codes.append(remap[d.code[idx]])
    code = np.concatenate(codes)
    harvested_at = np.concatenate([d.harvested_at[idx] for d, idx in parts])
    cols = {k: np.concatenate([d.cols[k][idx] for d, idx in parts]) for k in FLOAT_COLUMNS}
    if len(parts) > 1 and np.any(np.diff(harvested_at) < 0):  # .jsonl and .jsonl.gz of one day, say
        order = np.argsort(harvested_at, kind="stable")
        code, harvested_at = code[order], harvested_at[order]
        cols = {k: v[order] for k, v in cols.items()}
    frame.names = names
    frame.code = code
    frame.harvested_at = harvested_at
    frame.expiry_ms = exp[code]
    frame.strike = strike[code]
    frame.is_call = call[code]
    for k, v in cols.items():
        setattr(frame, k, v)
    return frame


# --------------------------------------------------------------------------- index series for RV


def index_price_per_snapshot(frame: HarvestFrame) -> tuple[np.ndarray, np.ndarray]:
    """One index proxy per snapshot: the forward of the nearest unexpired expiry.

    Forwards differ by expiry (basis); the nearest one is closest to the index and, within a
    snapshot, the same for every quote of that expiry, so mixing expiries cannot add noise.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    live = frame.expiry_ms > frame.harvested_at
    t = frame.harvested_at[live]
    e = frame.expiry_ms[live]
    f = frame.underlying_price[live]
    if t.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    order = np.lexsort((e, t))  # by time, then by expiry
    t, f = t[order], f[order]
    first = np.ones(t.size, dtype=bool)
    first[1:] = t[1:] != t[:-1]
    return t[first], f[first]


def underlying_price_series(
    source: Root | Path | str,
    underlying: str,
    end_ms: int,
    days: float = 7,
    *,
    cache_dir: Path | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hourly index closes over (end_ms - days, end_ms] from the harvest: (hour start ms, close).

    For RV_7d when no --prices / --rv is given: feed the result to rv.py exactly like a
    get_tradingview_chart_data response. Hours without any snapshot are absent (not interpolated),
    so the number of returns honestly reflects harvest gaps. rv.rv_from_harvest wraps this.
    """
    start = int(end_ms - days * MS_PER_DAY)
    frame = load_harvest(source, underlying, start, int(end_ms), cache_dir=cache_dir)
    t, p = index_price_per_snapshot(frame)
    return to_hourly(t, p)


def rv_from_harvest(root: Root, underlying: str, end_ms: int) -> RealisedVol:
    """RV_7d from the harvest's index proxy (nearest-expiry forward per snapshot, hourly closes)."""
    ticks, close = underlying_price_series(root, underlying, end_ms, days=WINDOW_DAYS)
    return realised_vol(ticks, close, end_ms, source="harvest")


# --------------------------------------------------------------------------- appending


@dataclass(frozen=True)
class AppendResult:
    path: Path
    rows: int
    harvested_at_ms: int
    skipped_duplicate: bool = False


def day_file(root: Root, underlying: str, ts_ms: int) -> Path:
    return root.harvest_dir(underlying) / f"{_utc_date(ts_ms):%Y-%m-%d}.jsonl"


def _last_harvested_at(path: Path) -> int | None:
    """harvested_at of the file's last complete line (reads only the tail)."""
    for ln in iter_lines_reversed(path):
        try:
            v = _loads(ln)
        except ValueError:
            return None  # torn last line: let the append go ahead (it starts on a fresh line)
        ts = v.get("harvested_at") if isinstance(v, dict) else None
        return int(ts) if is_number(ts) else None
    return None


def encode_rows(rows: Iterable[Mapping[str, Any]], harvested_at_ms: int) -> bytes:
    """Rows as JSONL, each with harvested_at; one buffer so the append is one write."""
    parts = []
    for r in rows:
        d = dict(r)
        d["harvested_at"] = int(harvested_at_ms)
        parts.append(_dumps(d))
    return b"\n".join(parts) + b"\n" if parts else b""


def append_snapshot(
    root: Root, underlying: str, rows: Sequence[Mapping[str, Any]], harvested_at_ms: int
) -> AppendResult:
    """Append one snapshot to its day file under the file's lock, as one write.

    A snapshot whose harvested_at equals the file's last one is the same snapshot harvested twice
    (a cron retry, a re-run demo): it is skipped rather than doubling every quote.
    """
    path = day_file(root, underlying, harvested_at_ms)
    data = encode_rows(rows, harvested_at_ms)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locked(path):
            if _last_harvested_at(path) == int(harvested_at_ms):
                return AppendResult(path, 0, int(harvested_at_ms), skipped_duplicate=True)
            if data:
                append_line(path, data)
    except Timeout:
        raise CalreportError(f"timed out waiting for the lock {lock_path(path)}", path) from None
    return AppendResult(path, len(rows), int(harvested_at_ms))


def harvest_once(
    root: Root, config: CalibrationConfig, underlying: str, from_file: Path | None = None, *, client: Any = None
) -> AppendResult:
    """One snapshot (from a file, or fetched from Deribit) appended to its day file.

    The snapshot's own time (max creation_timestamp) is its harvested_at and picks the day file,
    so a replayed file lands where it belongs in the history, not at the wall-clock time.
    """
    name = config.check_underlying(underlying)
    if from_file is not None:
        rows, meta = load_snapshot(Path(from_file), name)
    else:
        rows, meta = (client or DeribitClient()).book_summary(name)
    return append_snapshot(root, name, rows, meta.now_ms)
