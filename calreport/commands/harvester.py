"""`calreport harvest --every SECONDS`: harvest until stopped; `harvest compact`; `import-harvest` summaries.

Each cycle fetches every underlying's book summary and Deribit's index price
(`public/get_index_price`), appends the snapshot (each row carries `index_price`) as one write under
the day's lock, and, when the UTC day has changed since it last looked, compacts the closed days.

- SIGINT / SIGTERM set a flag: the current write finishes (an append is one write; nothing is
  interrupted mid-line), the loop ends, and the command exits 0.
- A network error (after the client's own retries) skips that underlying this cycle and the next
  cycle comes after a backoff (5 s, doubling, at most the interval), with the reason logged. A
  snapshot whose index price could not be fetched is still written, without it (logged).
- Missed intervals are not made up: after a slow cycle the next one starts right away, once.

Run it under systemd (Restart=always) or cron (see README "Harvesting continuously").
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import FrameType
from typing import Any

from calreport.commands.usecases import make_client
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.market.compact import CompactReport, ImportResult, compact_closed_days
from calreport.market.harvest import append_snapshot, list_days
from calreport.store.paths import Root
from calreport.timeutil import iso_ms

BACKOFF_START_S = 5.0
Log = Callable[[str], None]


@dataclass
class HarvesterStats:
    cycles: int = 0
    snapshots: int = 0
    duplicates: int = 0
    errors: int = 0
    compacted: list[str] = field(default_factory=list)  # "<U> <date>"
    stopped_by: str | None = None


def _utc_day(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000.0, tz=UTC).strftime("%Y-%m-%d")


def harvest_cycle(root: Root, underlyings: Sequence[str], client: Any, log: Log, stats: HarvesterStats,
                  stop: threading.Event) -> bool:
    """One snapshot per underlying; False when any fetch failed (the caller backs off)."""
    ok = True
    for name in underlyings:
        if stop.is_set():
            break
        try:
            rows, meta = client.book_summary(name)
        except CalreportError as exc:
            stats.errors += 1
            ok = False
            log(f"{name}: book summary failed: {exc.one_line()}")
            continue
        try:
            index = client.index_price(name)
        except CalreportError as exc:
            index = None
            log(f"{name}: index price failed ({exc.one_line()}); snapshot written without it")
        if index is not None:
            rows = [{**r, "index_price": index} for r in rows]
        res = append_snapshot(root, name, rows, meta.now_ms)
        if res.skipped_duplicate:
            stats.duplicates += 1
            log(f"{name}: snapshot of {iso_ms(res.harvested_at_ms)} already harvested")
        else:
            stats.snapshots += 1
            idx = f", index {index:,.2f}" if index is not None else ""
            log(f"{name}: {res.rows} quotes of {iso_ms(res.harvested_at_ms)}{idx} -> {res.path.name}")
    return ok


def run_harvester(
    ws: Workspace,
    underlyings: Sequence[str],
    every_s: float,
    *,
    client: Any = None,
    log: Log = lambda _: None,
    clock: Callable[[], float] = time.time,
    max_cycles: int | None = None,
    stop: threading.Event | None = None,
    wait: Callable[[threading.Event, float], bool] | None = None,
) -> HarvesterStats:
    """Harvest every `every_s` seconds until SIGINT/SIGTERM (or `max_cycles`, for tests)."""
    if not every_s > 0:
        raise CalreportError("--every: expected a positive number of seconds")
    names = [ws.config.check_underlying(u) for u in underlyings]
    client = client or make_client()
    stop = stop or threading.Event()
    wait = wait or (lambda ev, s: ev.wait(s))
    stats = HarvesterStats()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stats.stopped_by = signal.Signals(signum).name
        log(f"{stats.stopped_by}: stopping after the current write")
        stop.set()

    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, on_signal)
    log(f"harvesting {', '.join(names)} every {every_s:g} s into {ws.root.path / 'data' / 'harvest'}")
    backoff = 0.0
    compacted_on: str | None = None
    next_at = clock()
    try:
        while not stop.is_set():
            ok = harvest_cycle(ws.root, names, client, log, stats, stop)
            stats.cycles += 1
            now_ms = clock() * 1000.0
            if _utc_day(now_ms) != compacted_on and not stop.is_set():
                for name in names:
                    rep = compact_closed_days(ws.root, name, int(now_ms))
                    for line in format_compact(name, rep, ws.root):
                        log(line)
                    stats.compacted += [f"{name} {r.date}" for r in rep.done]
                compacted_on = _utc_day(now_ms)
            if stop.is_set() or (max_cycles is not None and stats.cycles >= max_cycles):
                break  # stopping: no wait, and no "next attempt" announced that will not come
            if ok:
                backoff = 0.0
                next_at += every_s
                delay = next_at - clock()
                if delay < 0:  # behind: start now, and count intervals from here
                    next_at, delay = clock(), 0.0
            else:
                backoff = min(every_s, max(BACKOFF_START_S, 2 * backoff))
                delay = backoff
                next_at = clock() + delay
                log(f"network trouble: next attempt in {delay:g} s")
            if delay > 0:
                wait(stop, delay)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return stats


# --------------------------------------------------------------------------- summaries (printed by cli.py)


def harvest_span(root: Root, underlying: str) -> tuple[str, str] | None:
    """(first, last) UTC day the underlying's harvest has files for, None when it has none: what
    `auto-calibrate` names when its window (ending now by default) found nothing."""
    days = [d.date for d in list_days(root.harvest_dir(underlying))]
    return (days[0], days[-1]) if days else None


def format_compact(name: str, rep: CompactReport, root: Root | None = None, *, verb: str = "") -> list[str]:
    """One line per compacted day (after `verb`: 'converted ' where the user did not ask for it), then one
    per run of skipped days with the same reason (a read-only harvest skips every day for one reason)."""
    out = []
    for r in rep.done:
        where = str(r.path.relative_to(root.path)) if root is not None and r.path.is_relative_to(root.path) else str(r.path)
        kept = []
        if r.schema_errors:
            kept.append(f"{r.schema_errors} schema errors")
        if r.bad_names:
            kept.append(f"{r.bad_names} bad names")
        side = f"; {' and '.join(kept)} kept in {r.date}.errors.json" if kept else ""
        dup = f"; {r.duplicates} duplicate rows (already in the day) dropped" if r.duplicates else ""
        out.append(
            f"{verb}{name} {r.date}: {r.rows} rows -> {where} ({r.added} from {', '.join(r.removed)}, {r.seconds:.2f} s){side}{dup}"
        )
    runs: list[tuple[str, list[str]]] = []  # (reason, its consecutive days)
    for date, why in rep.skipped:
        if runs and runs[-1][0] == why:
            runs[-1][1].append(date)
        else:
            runs.append((why, [date]))
    for why, dates in runs:
        days = dates[0] if len(dates) == 1 else f"{dates[0]} to {dates[-1]} ({len(dates)} days)"
        out.append(f"{name} {days}: not compacted: {why}")
    return out


def format_import(name: str, res: ImportResult) -> list[str]:
    lines = [
        (f"{name}: {res.files} files over {res.days} days: {res.rows_read} rows read, {res.rows_added} added, "
         f"{res.rows_present} already present; {res.schema_errors} schema errors, {res.bad_names} bad names skipped"
         + (f"; {res.duplicates} duplicate rows (same harvest time and instrument) imported once" if res.duplicates else "")),
    ]
    lines += [f"  wrote {p} (read back: row count and harvested_at range verified)" for p in res.written]
    return lines
