"""The harvest: Deribit book-summary rows appended every few minutes, read back as numpy columns.

Layout (docs/FILES.md, CALIBRATION_NOTES.md "The harvest on disk"):
- `data/harvest/<UNDERLYING>/YYYY-MM-DD.jsonl`: the open (current UTC) day, an append log, one
  book-summary row per line plus `harvested_at` (ms); also `.jsonl.gz` (compressed by hand).
- `data/harvest/<UNDERLYING>/YYYY-MM-DD.parquet`: a closed day, compacted (market/compact.py), with
  `YYYY-MM-DD.errors.json` beside it holding the lines compaction set aside.
- `<dir>/<UNDERLYING>/YYYY/MM/DD/*.parquet`: the previous system's harvest, read as it is.

Every format goes through one reader and gives identical columns (market/daycols.py holds the rules:
torn or malformed lines and rows without a usable mark / IV / forward / timestamp are *schema
errors*, counted and skipped; foreign or linear instrument names are `bad_names`; null bids/asks are
NaN). A file that cannot be read at all (a .gz that is not gzip, a broken Parquet file) is named in
`HarvestFrame.unreadable`, so an auto run reports it instead of seeing an empty harvest.

A day with both a .parquet and a .jsonl is read once: the Parquet footer records the JSONL bytes
compaction consumed (size + sha256); a JSONL that starts with exactly those bytes is a leftover of a
compaction killed before it removed it, and only what was appended after them is read.

Public API:
    load_harvest(source, underlying, start_ms, end_ms, progress=None) -> HarvestFrame
    list_days(directory, start_ms, end_ms) -> [HarvestDay]   the day files of a window, any format
    index_price_per_snapshot(frame) -> (ticks_ms, index)      one price per snapshot
    rv_from_harvest(root, underlying, end_ms) -> RealisedVol  RV_7d from the hourly index series
    append_snapshot(root, underlying, rows, harvested_at_ms) -> AppendResult
    harvest_once(root, config, underlying, from_file=None, client=None) -> AppendResult
"""

from __future__ import annotations

import re
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
from calreport.market import parquet as pqday
from calreport.market.daycols import (
    FLOAT_COLUMNS,
    DayColumns,
    parse_day_bytes,
    read_day_bytes,
)
from calreport.market.deribit import DeribitClient, load_snapshot
from calreport.market.quotes import QuoteArrays, first_per_key
from calreport.market.rv import WINDOW_DAYS, RealisedVol, realised_vol, to_hourly
from calreport.model import CalibrationConfig
from calreport.numbers import is_number
from calreport.store.files import append_line, locked
from calreport.store.history import iter_lines_reversed
from calreport.store.paths import Root, lock_path
from calreport.timeutil import MS_PER_DAY

LOG_SUFFIXES = (".jsonl.gz", ".jsonl")  # read in this order when a day has both
PARQUET_SUFFIX = ".parquet"
ERRORS_SUFFIX = ".errors.json"
_DAY_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})(\.jsonl\.gz|\.jsonl|\.parquet)$")

Progress = Callable[[int, int, str], None]  # (days done, days total, current day)


# --------------------------------------------------------------------------- the frame


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
    index_price: np.ndarray  # float64, Deribit's index recorded with the snapshot (NaN when not recorded)
    schema_errors: int = 0  # malformed lines/rows in the files read (whole files, not just the window)
    bad_names: int = 0  # unparseable / foreign / linear instrument names skipped
    lines: int = 0  # non-blank lines (rows) in the files read
    files: list[Path] = field(default_factory=list)
    file_counts: dict[Path, tuple[int, int, int]] = field(default_factory=dict)  # (lines, schema errors, bad names)
    unreadable: dict[Path, str] = field(default_factory=dict)  # file -> what could not be read of it

    def __len__(self) -> int:
        return int(self.code.shape[0])

    def snapshot_times(self) -> np.ndarray:
        """Distinct harvest times (ms), ascending: one per harvested snapshot."""
        t = self.harvested_at
        if t.size == 0:
            return t.copy()
        first = np.ones(t.size, dtype=bool)  # sorted: a run-length pass, no sort
        first[1:] = t[1:] != t[:-1]
        return t[first]

    def dte(self) -> np.ndarray:
        """Days to expiry of every row, as of the row's own harvest time."""
        return (self.expiry_ms - self.harvested_at) / MS_PER_DAY

    def after(self, ms: int) -> HarvestFrame:
        """The rows with harvested_at > ms: a tail of the time-sorted frame, as views (no copy)."""
        return self.take(slice(int(np.searchsorted(self.harvested_at, ms, side="right")), None))

    def take(self, mask: np.ndarray | slice) -> HarvestFrame:
        if isinstance(mask, slice):
            kw = {k: getattr(self, k)[mask] for k in _ROW_FIELDS}  # views
        elif mask.dtype == bool and mask.shape == self.code.shape and mask.all():
            kw = {k: getattr(self, k) for k in _ROW_FIELDS}  # every row: no copy of 2.9M x 12 columns
        else:
            kw = {k: getattr(self, k)[mask] for k in _ROW_FIELDS}
        return HarvestFrame(
            underlying=self.underlying, start_ms=self.start_ms, end_ms=self.end_ms, names=self.names,
            schema_errors=self.schema_errors, bad_names=self.bad_names, lines=self.lines,
            files=list(self.files), file_counts=dict(self.file_counts), unreadable=dict(self.unreadable), **kw,
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
            name_code=f.code,
            name_table=f.names.astype(object),
        )


_ROW_FIELDS = ("code", "harvested_at", "expiry_ms", "strike", "is_call", *FLOAT_COLUMNS)


# --------------------------------------------------------------------------- the day files


def _utc_date(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC)


def harvest_dir_of(source: Root | Path | str, underlying: str) -> Path:
    """A Root -> its data/harvest/<U>; a directory holding <U>/ -> that; else the directory itself."""
    if isinstance(source, Root):
        return source.harvest_dir(underlying)
    p = Path(source)
    return p / underlying if (p / underlying).is_dir() else p


@dataclass
class HarvestDay:
    """Every file holding one UTC day of one underlying's harvest."""

    date: str  # YYYY-MM-DD
    parquet: Path | None = None
    logs: list[Path] = field(default_factory=list)  # .jsonl.gz then .jsonl
    legacy: list[Path] = field(default_factory=list)  # the previous system's files of the day
    legacy_dir: Path | None = None

    def files(self) -> list[Path]:
        """The keys this day's counts are filed under (a previous-system day: its directory)."""
        out = [p for p in (self.parquet,) if p is not None] + list(self.logs)
        return out + ([self.legacy_dir] if self.legacy_dir is not None and self.legacy else [])


def _day_number(text: str) -> int | None:
    try:
        return (datetime.strptime(text, "%Y-%m-%d").date() - datetime(1970, 1, 1).date()).days
    except ValueError:
        return None


def list_days(directory: Path, start_ms: int | None = None, end_ms: int | None = None) -> list[HarvestDay]:
    """The days whose UTC date can hold rows in [start_ms, end_ms] (all when None), oldest first.

    Files are named by the snapshot's UTC date; one day of slack on each side costs little and
    keeps a row harvested a moment after midnight reachable.
    """
    if not directory.is_dir():
        return []
    first = -(10**9) if start_ms is None else start_ms // MS_PER_DAY - 1
    last = 10**9 if end_ms is None else end_ms // MS_PER_DAY + 1
    days: dict[str, HarvestDay] = {}
    for p in directory.iterdir():
        m = _DAY_RE.match(p.name)
        if m:
            d = _day_number(m[1])
            if d is None or not first <= d <= last or not p.is_file():
                continue
            day = days.setdefault(m[1], HarvestDay(m[1]))
            if m[2] == PARQUET_SUFFIX:
                day.parquet = p
            else:
                day.logs.append(p)
        elif len(p.name) == 4 and p.name.isdigit() and p.is_dir():  # the previous system: YYYY/MM/DD/*.parquet
            for month in sorted(p.iterdir()):
                if not (month.is_dir() and len(month.name) == 2 and month.name.isdigit()):
                    continue
                for dd in sorted(month.iterdir()):
                    date = f"{p.name}-{month.name}-{dd.name}"
                    d = _day_number(date) if dd.is_dir() else None
                    if d is None or not first <= d <= last:
                        continue
                    files = sorted(f for f in dd.iterdir() if f.name.endswith(PARQUET_SUFFIX) and f.is_file())
                    if files:
                        day = days.setdefault(date, HarvestDay(date))
                        day.legacy, day.legacy_dir = files, dd
    for day in days.values():
        day.logs.sort(key=lambda q: LOG_SUFFIXES.index(".jsonl.gz" if q.name.endswith(".gz") else ".jsonl"))
    return [days[k] for k in sorted(days)]


def day_files(directory: Path, start_ms: int, end_ms: int) -> list[Path]:
    """The files (count keys) of the days list_days finds for the window, oldest day first."""
    return [p for day in list_days(directory, start_ms, end_ms) for p in day.files()]


def unconsumed_bytes(log: Path, data: bytes, sources: Mapping[str, Any]) -> bytes:
    """What of a log's (decompressed) bytes the day's Parquet file does not already hold.

    `sources` is the Parquet footer's record of the logs compaction consumed: name -> size, sha256
    of the raw file and data_len of its decompressed bytes. A log that still starts with exactly
    those bytes is a leftover of a compaction killed before removing it; only its tail is new.
    """
    rec = sources.get(log.name)
    if not isinstance(rec, Mapping):
        return data
    size, digest, data_len = rec.get("size"), rec.get("sha256"), rec.get("data_len")
    if not (isinstance(size, int) and isinstance(data_len, int) and isinstance(digest, str)):
        return data
    try:
        if log.stat().st_size < size or pqday.sha256_file(log, size) != digest:
            return data  # another file under the same name: all of it is new
    except OSError:
        return data
    return data[data_len:]


def load_day(
    day: HarvestDay, underlying: str, start_ms: int | None, end_ms: int | None, *, iv_fraction: bool = True
) -> list[tuple[Path, DayColumns]]:
    """Every part of one day, each under the file it came from: Parquet (ours, then the previous
    system's), then whatever the JSONL logs hold that the Parquet file does not. `iv_fraction=False`
    keeps mark_iv in percent as the files hold it (what an import writes)."""
    parts: list[tuple[Path, DayColumns]] = []
    sources: Mapping[str, Any] = {}
    if day.parquet is not None:
        parts.append((day.parquet, pqday.read_day([day.parquet], underlying, start_ms, end_ms, iv_fraction=iv_fraction)))
        if day.logs:  # which log bytes the Parquet file already holds
            meta = pqday.read_meta(day.parquet)
            sources = meta.get("sources") if isinstance(meta.get("sources"), Mapping) else {}
    if day.legacy and day.legacy_dir is not None:
        parts.append((day.legacy_dir, pqday.read_day(day.legacy, underlying, start_ms, end_ms, iv_fraction=iv_fraction)))
    for log in day.logs:
        data, problem = read_day_bytes(log)
        if day.parquet is not None:
            data = unconsumed_bytes(log, data, sources)
        parts.append((log, parse_day_bytes(data, underlying, problem, iv_fraction=iv_fraction)))
    return parts


# --------------------------------------------------------------------------- loading a window


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
    progress: Progress | None = None,
) -> HarvestFrame:
    """Harvested rows with start_ms <= harvested_at <= end_ms, as one time-sorted HarvestFrame.

    `source` is a Root or a directory (holding <U>/, or the day files themselves). schema_errors /
    bad_names / lines count the whole files read, since a bad line has no trustworthy timestamp to
    place it in the window.
    """
    underlying = underlying.upper()
    directory = harvest_dir_of(source, underlying)
    days = list_days(directory, start_ms, end_ms)
    frame = _empty_frame(underlying, start_ms, end_ms)
    parts: list[tuple[DayColumns, int, int]] = []
    for i, day in enumerate(days):
        if progress is not None:
            progress(i, len(days), day.date)
        for path, dc in load_day(day, underlying, start_ms, end_ms):
            frame.files.append(path)
            frame.schema_errors += dc.schema_errors
            frame.bad_names += dc.bad_names
            frame.lines += dc.lines
            frame.file_counts[path] = (dc.lines, dc.schema_errors, dc.bad_names)
            if dc.problem:
                frame.unreadable[path] = dc.problem
            lo = int(np.searchsorted(dc.harvested_at, start_ms, side="left"))
            hi = int(np.searchsorted(dc.harvested_at, end_ms, side="right"))
            if hi > lo:
                parts.append((dc, lo, hi))
    if progress is not None:
        progress(len(days), len(days), "")
    if not parts:
        return frame

    # Union of the parts' name tables; remap each part's codes into it.
    all_names = np.concatenate([d.names for d, _, _ in parts])
    names, first_idx, inverse = np.unique(all_names, return_index=True, return_inverse=True)
    exp = np.concatenate([d.name_expiry_ms for d, _, _ in parts])[first_idx]
    strike = np.concatenate([d.name_strike for d, _, _ in parts])[first_idx]
    call = np.concatenate([d.name_is_call for d, _, _ in parts])[first_idx]
    codes: list[np.ndarray] = []
    offset = 0
    for d, lo, hi in parts:
        remap = inverse[offset : offset + len(d.names)].astype(np.int32)
        offset += len(d.names)
        codes.append(remap[d.code[lo:hi]])
    code = np.concatenate(codes)
    harvested_at = np.concatenate([d.harvested_at[lo:hi] for d, lo, hi in parts])
    cols = {k: np.concatenate([d.cols[k][lo:hi] for d, lo, hi in parts]) for k in FLOAT_COLUMNS}
    if len(parts) > 1 and np.any(harvested_at[1:] < harvested_at[:-1]):  # .parquet + a later .jsonl, say
        order = np.argsort(harvested_at, kind="stable")
        code, harvested_at = code[order], harvested_at[order]
        cols = {k: v[order] for k, v in cols.items()}
    keep = first_per_key(harvested_at, code)  # one row per (snapshot, instrument)
    if keep is not None:
        code, harvested_at = code[keep], harvested_at[keep]
        cols = {k: v[keep] for k, v in cols.items()}
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


HARVEST_INDEX_SOURCE = "harvest index"  # RealisedVol.source when the recorded Deribit index was used


def index_price_per_snapshot(frame: HarvestFrame) -> tuple[np.ndarray, np.ndarray]:
    """(snapshot times, index price): index_series without saying which series it is."""
    t, p, _ = index_series(frame)
    return t, p


def index_series(frame: HarvestFrame) -> tuple[np.ndarray, np.ndarray, bool]:
    """One index price per snapshot, and whether it is Deribit's recorded index (True) or the
    nearest-expiry forward proxy (False): the index when every snapshot recorded it (the harvester
    does, `index_price`), else the forward of the nearest unexpired expiry as a proxy.

    Forwards differ by expiry (basis); the nearest one is closest to the index and, within a
    snapshot, the same for every quote of that expiry, so mixing expiries cannot add noise. The
    index is used only for a series that has it throughout: switching from proxy to index inside
    one series would put the basis into a return.
    """
    if len(frame) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), False
    t_all = frame.harvested_at
    first_all = np.ones(t_all.size, dtype=bool)  # the frame is time-sorted
    first_all[1:] = t_all[1:] != t_all[:-1]
    idx = frame.index_price
    if idx.size and np.isfinite(idx).any():
        # a snapshot's index: the max over its rows (rows without it are NaN)
        starts = np.flatnonzero(first_all)
        per_snap = np.fmax.reduceat(idx, starts)
        if np.all(np.isfinite(per_snap) & (per_snap > 0)):
            return t_all[starts], per_snap, True
    # per snapshot (the frame is time-sorted: segments, no sort), the first row of the nearest live expiry
    live = frame.expiry_ms > frame.harvested_at
    starts = np.flatnonzero(first_all)
    seg = np.cumsum(first_all) - 1
    e = np.where(live, frame.expiry_ms, np.iinfo(np.int64).max)
    nearest = np.minimum.reduceat(e, starts)
    hit = np.flatnonzero(live & (e == nearest[seg]))
    if hit.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0), False
    first = np.ones(hit.size, dtype=bool)
    first[1:] = seg[hit[1:]] != seg[hit[:-1]]
    pick = hit[first]
    return t_all[pick], frame.underlying_price[pick], False


def rv_from_harvest(root: Root, underlying: str, end_ms: int) -> RealisedVol:
    """RV_7d from the harvest's index series (index_series, hourly closes). Its source says which
    series: "harvest index" (Deribit's index, recorded by `harvest --every`) or "harvest" (forwards)."""
    frame = load_harvest(root, underlying, int(end_ms - WINDOW_DAYS * MS_PER_DAY), int(end_ms))
    return rv_from_frame(frame, end_ms)


def rv_from_frame(frame: HarvestFrame, end_ms: int) -> RealisedVol:
    """RV_7d from the rows of an already loaded 7-day window (rv_from_harvest reads one; the
    backtest slices its in-memory harvest): the same series, the same source label."""
    t, p, recorded = index_series(frame)
    ticks, close = to_hourly(t, p)
    return realised_vol(ticks, close, end_ms, source=HARVEST_INDEX_SOURCE if recorded else "harvest")


# --------------------------------------------------------------------------- appending


@dataclass(frozen=True)
class AppendResult:
    path: Path
    rows: int
    harvested_at_ms: int
    skipped_duplicate: bool = False


def day_file(root: Root, underlying: str, ts_ms: int) -> Path:
    return root.harvest_dir(underlying) / f"{_utc_date(ts_ms):%Y-%m-%d}.jsonl"


def _compacted_has(path: Path, harvested_at_ms: int) -> bool:
    """Whether the day's Parquet file (if the day was compacted) already holds this snapshot."""
    pq_path = path.with_name(path.name[: -len(".jsonl")] + PARQUET_SUFFIX)
    if not pq_path.exists():
        return False
    try:
        return bool(np.any(pqday.harvested_at_values(pq_path) == int(harvested_at_ms)))
    except CalreportError:
        return False


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

    A snapshot whose harvested_at equals the file's last one (or one the day's compacted Parquet
    file holds) is the same snapshot harvested twice (a cron retry, a re-run demo, a replayed
    file): it is skipped rather than doubling every quote. Compaction takes the same lock.
    """
    path = day_file(root, underlying, harvested_at_ms)
    data = encode_rows(rows, harvested_at_ms)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with locked(path):
            if _last_harvested_at(path) == int(harvested_at_ms) or _compacted_has(path, harvested_at_ms):
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
