"""Questions the dashboard and `calreport doctor` ask of the history, answered with typed rows.

Order: every list is newest first *by time* - a row's own time (history.row_time_ms: `ts`, or an
auto run's window end `as_of`), not its place in the file. `import-legacy` appends old records
after newer runs, so "appended last" is not "newest". Rows with the same time keep the file's
order (the one appended later counts as newer). Rows without a parseable time are older than every
timed row, and among themselves the one appended later counts as newer.

The one way to read history (nothing outside store/ reads a history file itself):
HistoryQuery.read for what is shown (indexed, newest by time); for a writer's last few rows, read
from the file's end in the order appended: HistoryQuery.tail, latest_live_run, last_apply_events,
run, and HistoryTail (one such pass shared by an apply transaction and the live run inside it);
HistoryQuery.file_order for a rule that replays rows in the order written (rollback).

Backed by history.HistoryIndex: ordering, counts and latest-per-underlying use the index's RowRef
of every row; a row is parsed and validated in full only when it is returned.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal, Sequence

from pydantic import ValidationError

from calreport import fmt, jsonio
from calreport.errors import RefusedError, excerpt
from calreport.model import ApplyEvent, AutoRun, HistoryRow, LiveRun
from calreport.store import history
from calreport.store.history import HistoryIndex, RowRef
from calreport.store.paths import Root
from calreport.store.yamlio import validation_problem

Kind = Literal["live", "auto"]
_OFFSET = attrgetter("offset")
_TAIL_TYPES: dict[str, type[HistoryRow]] = {"live": LiveRun, "auto": AutoRun, "apply": ApplyEvent}
_NO_TIME = float("-inf")  # sorts before every epoch-ms value: rows without a time are the oldest


def newest_first(refs: Sequence[RowRef]) -> list[RowRef]:
    """`refs` (file order) newest first by time; equal times keep file order (later = newer)."""
    keys = [_NO_TIME if r.time_ms is None else r.time_ms for r in refs]
    order = sorted(range(len(refs)), key=keys.__getitem__)  # stable; linear when already in time order
    return [refs[i] for i in reversed(order)]


def _latest_per_underlying(refs_newest_first: Iterable[RowRef]) -> dict[str, RowRef]:
    out: dict[str, RowRef] = {}
    for r in refs_newest_first:
        if r.underlying and r.underlying not in out:
            out[r.underlying] = r
    return out


@dataclass(frozen=True)
class Skipped:
    """Unreadable lines of one history file (1-based line numbers)."""

    count: int
    lines: list[int]


class HistoryQuery:
    """The live and auto history, asked for exactly what a caller shows."""

    def __init__(self, live: HistoryIndex, auto: HistoryIndex) -> None:
        self._live_index, self._auto_index = live, auto
        self._live = newest_first(live.of_type(LiveRun))
        self._events = newest_first(live.of_type(ApplyEvent))
        self._auto = newest_first(auto.of_type(AutoRun))

    @classmethod
    def read(
        cls,
        root: Root,
        cache: "HistoryCache | None" = None,
        persist: bool = False,
        on_row: "Callable[[HistoryRow], object] | None" = None,
        meanwhile: "Callable[[], object] | None" = None,
    ) -> "HistoryQuery":
        """Index both history files. `persist` reads and updates the index cache under data/cache;
        without it nothing outside history/ is touched (what a read-only check wants). `on_row` makes
        what a page shows of each row the index validates (page_views returns it: no row is validated twice).
        `meanwhile` is run here while worker processes parse a long history, if they do."""
        cache = cache if cache is not None else HistoryCache()
        files = (root.live_history, root.auto_history)
        live, auto = (cache.read(p, history_cache_file(root, p) if persist else None, on_row, meanwhile) for p in files)
        return cls(live, auto)

    # ------------------------------------------------------------------ tail reads (writers)

    @staticmethod
    def tail(root: Root, kind: Kind | Literal["apply"], underlying: str | None = None) -> Iterator[LiveRun | AutoRun | ApplyEvent]:
        """Readable rows of `kind` (of `underlying`, when given), last appended first, reading the
        file from its end: what a writer needs (the previous run, the last apply event) without
        indexing a long history, and what `calreport log` lists. Order is the file's, not time (an
        import appends old rows last); use read() for newest-by-time."""
        path = root.auto_history if kind == "auto" else root.live_history
        return HistoryTail(path).rows(_TAIL_TYPES[kind], underlying)  # type: ignore[return-value]

    @staticmethod
    def file_order(root: Root, kind: Kind | Literal["apply"], underlying: str | None = None) -> list:
        """Every readable row of `kind` (of `underlying`), oldest appended first: what a rule that
        replays the history in the order it was written reads (rollback's apply events)."""
        return list(HistoryQuery.tail(root, kind, underlying))[::-1]

    @staticmethod
    def last_apply_events(root: Root, underlyings: set[str], tail: "HistoryTail | None" = None) -> dict[str, ApplyEvent]:
        """The last appended readable apply event per underlying, reading from the file's end and
        stopping once every underlying has one (`tail`: a pass over the live history to share)."""
        found: dict[str, ApplyEvent] = {}
        wanted = set(underlyings)
        if not wanted:
            return found
        for event in (tail or HistoryTail(root.live_history)).rows(ApplyEvent):
            if event.underlying in wanted:
                found[event.underlying] = event  # type: ignore[index, assignment]
                wanted.discard(event.underlying)  # type: ignore[arg-type]
                if not wanted:
                    break
        return found

    @staticmethod
    def latest_live_run(root: Root, underlying: str, *, refuse_unreadable: bool = False) -> LiveRun | None:
        """The newest live run proper of `underlying` (file order is time order: calreport appends
        its runs as it makes them), read from the file's end; imported legacy records (source
        "legacy") are never candidates. With `refuse_unreadable` (force-apply), a newer complete
        live-run line of `underlying` that breaks the schema (a hand-edited `"global": true` or
        `"1.5"`) is refused in one line instead of being passed over for an older run."""
        path = root.live_history
        for line in history.iter_lines_reversed(path):
            if b'"live_run"' not in line:
                continue
            try:
                data = jsonio.loads(line)
            except ValueError:
                continue  # torn or not JSON: never a recorded row
            try:
                row = history.parse_row(data)
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

    @staticmethod
    def run(root: Root, run_id: str) -> LiveRun | AutoRun | None:
        """The run `run_id` names, auto or live (None when neither history has it)."""
        for kind in ("auto", "live"):
            found = next((r for r in HistoryQuery.tail(root, kind) if r.run_id == run_id), None)  # type: ignore[arg-type]
            if found is not None:
                return found  # type: ignore[return-value]
        return None

    # ------------------------------------------------------------------ counts

    def total(self, kind: Kind | Literal["apply"]) -> int:
        return len(self._refs(kind))

    def skipped(self, kind: Kind) -> Skipped:
        index = self._index(kind)
        return Skipped(index.skipped, list(index.skipped_lines))

    def underlyings(self) -> set[str]:
        """Every underlying a live or auto run names."""
        return {r.underlying for r in (*self._live, *self._auto) if r.underlying}

    def status_counts(self, kind: Kind, status_of: Callable[[RowRef], str]) -> Counter[str]:
        """How many runs have each status; `status_of` derives it from the ref (StatusIndex.status_of
        for live runs reads only underlying, run_id and status, which a RowRef carries)."""
        return Counter(status_of(r) for r in self._refs(kind))

    def auto_run_ids(self) -> set[str]:
        return {r.run_id for r in self._auto if r.run_id}

    def apply_event_keys(self) -> list[RowRef]:
        """The (underlying, run_id) of every apply event, newest first, without parsing the rows."""
        return list(self._events)

    # ------------------------------------------------------------------ typed rows

    def latest_live(self) -> dict[str, LiveRun]:
        """The newest live run proper (LiveRun.is_live: not an imported record) per underlying."""
        latest = _latest_per_underlying(r for r in self._live if r.is_live)
        return {u: self._live_index.row(r) for u, r in latest.items()}

    def latest_auto(self) -> dict[str, AutoRun]:
        latest = _latest_per_underlying(self._auto)
        return {u: self._auto_index.row(r) for u, r in latest.items()}

    def latest_apply_events(self) -> dict[str, ApplyEvent]:
        latest = _latest_per_underlying(self._events)
        return {u: self._live_index.row(r) for u, r in latest.items()}

    def live_runs(self, limit: int | None = None, underlying: str | None = None) -> list[LiveRun]:
        """Newest first; every source (imported records too)."""
        return self._rows("live", limit, underlying)

    def auto_runs(self, limit: int | None = None, underlying: str | None = None) -> list[AutoRun]:
        return self._rows("auto", limit, underlying)

    def apply_events(self, limit: int | None = None, underlying: str | None = None) -> list[ApplyEvent]:
        return self._rows("apply", limit, underlying)

    def apply_event_naming(self, underlying: str, run_id: str) -> ApplyEvent | None:
        """The newest apply event that applied run `run_id` of `underlying`."""
        for r in self._events:
            if r.underlying == underlying and r.run_id == run_id:
                return self._live_index.row(r)
        return None

    def apply_events_for_chart(self, underlying: str, since_ms: int) -> list[ApplyEvent]:
        """Oldest first: the apply events of `underlying` after `since_ms`, and the newest one at or
        before it that has a value (the level a step line of the applied multiplier starts from)."""
        out: list[ApplyEvent] = []
        for r in self._events:
            if r.underlying != underlying or r.time_ms is None:
                continue
            e: ApplyEvent = self._live_index.row(r)
            out.append(e)
            if r.time_ms <= since_ms and e.applied is not None and fmt.finite(e.applied.global_):
                break
        return out[::-1]

    # ------------------------------------------------------------------ pages

    def page(self, kind: Kind, number: int, size: int) -> list:
        """Page `number` (1 = the oldest `size` rows) as typed rows, newest first. Pages are numbered
        from the oldest so that an ordinary append changes only the last page."""
        refs = self.page_refs(kind, number, size)
        return self._index(kind).rows_of(refs, False)  # a page's rows are used once: not kept

    def page_views(self, kind: Kind, number: int, size: int, make: Callable[[HistoryRow], object]) -> list:
        """Page `number` as what it shows, newest first: `make(row)` for each row, taken from the index
        read when it validated the row (HistoryQuery.read's `on_row`), else validated now, once."""
        index = self._index(kind)
        refs = self.page_refs(kind, number, size)
        with history.gc_paused():
            out = list(map(index.views.get, map(_OFFSET, refs)))  # the look-ups in C: a cold render makes one per row
            if None in out:
                out = [v if v is not None else make(index.row(r, False)) for v, r in zip(out, refs)]
        return out

    def scan_worker_peaks_kb(self) -> list[int]:
        """VmHWM (kB) of each worker process that parsed part of either file for this read."""
        return self._live_index.worker_peaks_kb + self._auto_index.worker_peaks_kb

    def release_views(self) -> None:
        """Drop what page_views kept (a served process keeps its indexes between renders)."""
        self._live_index.views = {}
        self._auto_index.views = {}

    def page_refs(self, kind: Kind, number: int, size: int) -> list[RowRef]:
        """The refs of page `number`, newest first: enough to tell whether a written page is current."""
        refs = self._refs(kind)
        hi = len(refs) - (number - 1) * size
        return list(refs[max(0, hi - size) : max(0, hi)])

    # ------------------------------------------------------------------ internals

    def _index(self, kind: str) -> HistoryIndex:
        return self._auto_index if kind == "auto" else self._live_index

    def _refs(self, kind: str) -> list[RowRef]:
        return {"live": self._live, "auto": self._auto, "apply": self._events}[kind]

    def _rows(self, kind: str, limit: int | None, underlying: str | None) -> list:
        refs: Sequence[RowRef] = self._refs(kind)
        if underlying is not None:
            refs = [r for r in refs if r.underlying == underlying]
        if limit is not None:
            refs = refs[: max(0, limit)]
        return self._index(kind).rows_of(refs)


class HistoryTail:
    """One pass over a history file from its end, shared by every reader that asks it for rows: an
    apply transaction looks for the last apply events and the live run for its previous runs in the
    same file, and the lines both read are read once. Every line read is kept (last appended first),
    so a reader that starts later still sees the lines an earlier reader passed over; a line is
    parsed lazily, once, and only when it names the row type a reader asks for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lines = history.iter_lines_reversed(path)
        self._raw: list[bytes] = []  # every line read so far, last appended first
        self._parsed: dict[int, HistoryRow | None] = {}  # line index -> its row (None: unreadable)

    def rows(self, cls: type[HistoryRow], underlying: str | None = None) -> Iterator:
        """Readable rows of `cls` (of `underlying`), last appended first."""
        tag = f'"{cls.model_fields["type"].default}"'.encode()
        i = 0
        while True:
            while i < len(self._raw):
                if tag in self._raw[i]:  # cheap filter before parsing
                    row = self._row(i)
                    if isinstance(row, cls) and (underlying is None or row.underlying == underlying):
                        yield row
                i += 1
            line = next(self._lines, None)
            if line is None:
                return
            self._raw.append(line)

    def _row(self, i: int) -> HistoryRow | None:
        if i not in self._parsed:
            try:
                self._parsed[i] = history.parse_row(jsonio.loads(self._raw[i]))
            except (ValueError, ValidationError, TypeError):
                self._parsed[i] = None
        return self._parsed[i]


class HistoryCache:
    """History indexes kept between reads. History files are append-only, so a long-running process
    (`calreport serve`) parses only the lines appended since its last read, and every process starts
    from the index persisted under data/cache/history/ (history.index_history says when either is
    trusted). Counts and skipped lines equal history.read_history(path)'s."""

    def __init__(self) -> None:
        self._files: dict[Path, HistoryIndex] = {}

    def read(
        self,
        path: Path,
        cache_file: Path | None = None,
        on_row: Callable[[HistoryRow], object] | None = None,
        meanwhile: Callable[[], object] | None = None,
    ) -> HistoryIndex:
        index = history.index_history(path, self._files.get(path), cache_file, on_row, meanwhile)
        self._files[path] = index
        return index

    def forget(self) -> None:
        self._files.clear()


def history_cache_file(root: Root, path: Path) -> Path:
    return root.cache_dir / "history" / f"{path.name}.index"
