"""The use cases behind the CLI: each reads what it needs from the workspace's root, calls the pure
core (calreport.calibration), writes the files of record, runs the after-apply hooks and re-renders.

Every use case takes the command's `Workspace` (the CLI, the dashboard server and the demo each
open one), so the config is read once per command and the audit commit never depends on what was
imported. What may be applied, and when, is calreport/apply.py's; the use cases give it the files.
"""

from __future__ import annotations

import gzip
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from calreport import apply
from calreport.calibration.auto import (
    HarvestCounts,
    evaluate_auto,
    parse_dte_range,
    parse_lookback,
)
from calreport.calibration.flags import auto_flags, live_flags
from calreport.calibration.live import evaluate_live, live_history
from calreport.commands.adapters.alerts import notify
from calreport.commands.workspace import Workspace
from calreport.market.compact import CompactReport, compact_closed_days
from calreport.market.deribit import DeribitClient, load_snapshot
from calreport.market.harvest import (
    AppendResult,
    Progress,
    day_files,
    harvest_dir_of,
    harvest_once,
    index_price_per_snapshot,
    load_harvest,
)
from calreport.market.prices import (
    PricesFetched,
    fetch_prices,
)
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import WINDOW_DAYS
from calreport.market.rvsource import resolve_rv, rv_context
from calreport.model import ApplyEvent, AutoRun, LiveRun
from calreport.store import applied as applied_store
from calreport.store.config import DEFAULT_CONFIG_TEXT
from calreport.store.files import atomic_write
from calreport.store.history import append_auto_run, append_row, ensure_history_files
from calreport.store.ids import new_run_id
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from calreport.timeutil import MS_PER_DAY, utc_now


def rerender(ws: Workspace) -> None:
    """The one place that regenerates site/ after a write."""
    ws.rerender()


def init(ws: Workspace) -> list[Path]:
    """Create a root: default config, initial applied YAML (1.0 each), empty history, a site."""
    root = ws.root
    created: list[Path] = []
    root.config_dir.mkdir(parents=True, exist_ok=True)
    if not root.calibration_config.exists():
        atomic_write(root.calibration_config, DEFAULT_CONFIG_TEXT.encode("utf-8"))
        created.append(root.calibration_config)
    # ws.config is read on first use, i.e. after it was written
    if applied_store.init_applied(root, ws.config):
        created.append(root.applied)
    for p in (root.live_history, root.auto_history):
        if not p.exists():
            created.append(p)
    ensure_history_files(root)
    ws.rerender()
    return created


def force_apply(
    ws: Workspace, underlying: str, *, allow_unrealistic: bool = False, via: str | None = None, note: str | None = None,
    run_id: str | None = None,
) -> ApplyEvent:
    """Apply the latest live run's smoothed values (reason "Forced by user"), audit, re-render; `run_id`:
    only if that run is still the latest when the apply lock is taken (the dashboard's confirmed run)."""
    store = applied_store.FileApplyStore(ws.root, ws.config)
    event = apply.force_apply(store, underlying, allow_unrealistic=allow_unrealistic, via=via, note=note, run_id=run_id)
    ws.applied(event)
    ws.rerender()
    return event


def rollback(
    ws: Workspace, underlying: str, *, to: str | None = None, via: str | None = None, note: str | None = None
) -> ApplyEvent:
    """Re-apply an earlier applied run's values, audit, re-render."""
    event = apply.rollback(applied_store.FileApplyStore(ws.root, ws.config), underlying, to=to, via=via, note=note)
    ws.applied(event)
    ws.rerender()
    return event


def harvest(ws: Workspace, underlying: str, from_file: Path | None = None, *, client: Any = None) -> AppendResult:
    """`calreport harvest`: one snapshot appended to the harvest (no re-render: no file of record changed)."""
    return harvest_once(ws.root, ws.config, underlying, from_file, client=client)


# --------------------------------------------------------------------------- live calibration


LIVE_PRICE_DAYS = 8.0  # a live calibrate refreshes this much of the price store: RV_7d's week plus a day


def make_client() -> DeribitClient:
    """The Deribit client of a live fetch (tests replace this with one replaying recorded payloads)."""
    return DeribitClient()


def fetch_snapshot(ws: Workspace, underlying: str, *, client: DeribitClient | None = None) -> Path:
    """`calreport calibrate` without --snapshot: fetch the option chain now
    (public/get_book_summary_by_currency, kind option) and keep it in the root as
    data/snapshots/<U>/<snapshot time>.json.gz (Deribit's envelope, atomic write), so the run
    can be re-derived. A network failure is a CalreportError before anything is written."""
    name = ws.config.check_underlying(underlying)
    rows, meta = (client or make_client()).book_summary(name)
    stamp = datetime.fromtimestamp(meta.now_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H%M%S") + f".{meta.now_ms % 1000:03d}Z"
    path = ws.root.snapshots_dir(name) / f"{stamp}.json.gz"
    if not path.exists():  # the same snapshot fetched twice is the same file
        body = json.dumps({"jsonrpc": "2.0", "result": rows}, separators=(",", ":")).encode("utf-8")
        atomic_write(path, gzip.compress(body, mtime=0))
    return path


def run_live_calibration(
    ws: Workspace,
    underlying: str,
    snapshot: Path,
    *,
    prices: Path | None = None,
    rv: float | None = None,
) -> LiveRun:
    """One live run, in one apply transaction: read the applied values under the lock, read the
    history once, measure (evaluate_live), write the detail, then decide once against those same
    values, append the row and, when the decision is apply, the YAML and its apply event.

    The lock is held from the read to the write, so two calibrations at once run one after the
    other: the second is measured at, smoothed from and decided against what the first left.
    """
    root, cfg = ws.root, ws.config
    name = cfg.check_underlying(underlying)
    rows, meta = load_snapshot(snapshot, name)
    run_id = new_run_id()
    rvi = resolve_rv(root, name, meta.now_ms, prices, rv)
    quotes = QuoteArrays.from_rows(rows)
    detail_path = root.run_detail(run_id)
    with applied_store.transaction(root, cfg) as tx:
        applied = tx.entry(name)
        past = live_history(tx.history.rows(LiveRun), name, applied, cfg)  # the pass the transaction began
        evaluated = evaluate_live(
            quotes,
            underlying=name,
            now_ms=meta.now_ms,
            rv=rvi,
            applied=applied,
            previous=past.previous,
            config=cfg,
            run_id=run_id,
            snapshot_file=_snapshot_ref(root, Path(snapshot)),
            detail_file=str(detail_path.relative_to(root.path)),
        )
        atomic_write(detail_path, evaluated.detail.model_dump_json(by_alias=True).encode("utf-8"))
        measured = evaluated.run.model_copy(update=rv_context(root, name, meta.now_ms, rvi))
        expiries = evaluated.detail.expiries

        def record(decided: LiveRun) -> LiveRun:
            flagged = decided.model_copy(update={"flags": live_flags(decided, expiries, cfg, applied_atm_iv=past.applied_atm_iv)})
            tx.before_write()  # a lost apply event (a killed writer's) is recorded before this run's row
            append_row(root.live_history, flagged)  # the row first: the apply event follows its run
            return flagged

        run, event = apply.apply_live_run(tx, measured, cfg, record=record)
    if event is not None:
        ws.applied(event)
    notify(ws, "live", run, past.last_run.flags if past.last_run is not None else None)
    return run


def prices_fetch(
    ws: Workspace, underlying: str, *, days: float = 8.0, client: DeribitClient | None = None, now: Callable[[], datetime] = utc_now
) -> PricesFetched:
    """`calreport prices fetch`: hourly perpetual closes and Deribit's historical vol into the price store."""
    name = ws.config.check_underlying(underlying)
    return fetch_prices(ws.root, name, days, client or make_client(), int(now().timestamp() * 1000))


def _snapshot_ref(root: Root, snapshot: Path) -> str:
    """The run's snapshot_file: relative to the root when the root keeps it (fetched), else its name."""
    try:
        return str(snapshot.resolve().relative_to(root.path.resolve()))
    except ValueError:
        return snapshot.name


def calibrate(
    ws: Workspace,
    underlying: str,
    snapshot: Path | None,
    *,
    prices: Path | None = None,
    rv: float | None = None,
    client: DeribitClient | None = None,
) -> LiveRun:
    """One live run: history row, policy decision, apply if the policy says so, re-render.
    Without a snapshot the chain is fetched now and kept in the root (fetch_snapshot), and, unless
    --rv or --prices says where RV comes from, what RV needs too: the price store is brought up to
    date (LIVE_PRICE_DAYS of hourly closes, de-duplicated), so RV_7d rests on a full week."""
    if snapshot is None:
        live = client or make_client()
        if rv is None and prices is None:
            prices_fetch(ws, underlying, days=LIVE_PRICE_DAYS, client=live)
        snapshot = fetch_snapshot(ws, underlying, client=live)
    run = run_live_calibration(ws, underlying, snapshot, prices=prices, rv=rv)
    ws.rerender()
    return run


# --------------------------------------------------------------------------- auto-calibrate


def run_auto_calibration(
    ws: Workspace,
    underlying: str,
    *,
    dte: str | None = None,
    lookback: str | None = None,
    as_of: datetime | None = None,
    progress: Progress | None = None,
    now: Callable[[], datetime] = utc_now,
    compact: bool = True,
    on_compact: Callable[[CompactReport], None] | None = None,
) -> AutoRun:
    """One auto-calibrate run: compact closed days, read the harvest, evaluate, append the row. Never applies.

    No data in the window is a `failed` row with a data-quality reason, never an exception; bad
    arguments (a malformed --dte or --lookback, an unknown underlying) are one-line errors.
    `progress(done, total, day)` is called while the days are read. Compaction (closed UTC days
    by the wall clock, `now`) only changes the harvest's format, never its rows; a day it cannot
    compact (read-only harvest, a log that breaks off) is read as it is. `on_compact` gets the
    compaction's report when it converted or skipped a day (the CLI says which files it converted).
    """
    started = time.perf_counter()
    root, cfg = ws.root, ws.config
    name = cfg.check_underlying(underlying)
    dte_range = parse_dte_range(dte or cfg.auto.dte_ranges[0])
    lb = parse_lookback(lookback or cfg.auto.lookbacks[0])
    end_dt = as_of or now()
    if end_dt.tzinfo is None:  # a naive time is UTC, like every timestamp calreport writes
        end_dt = end_dt.replace(tzinfo=UTC)
    end_ms = int(end_dt.timestamp() * 1000)
    start_ms = end_ms - lb[1]
    if compact:
        report = compact_harvest(ws, name, int(now().timestamp() * 1000))
        if on_compact is not None and (report.done or report.skipped):
            on_compact(report)
    # one read covers the window and the 7 days of index history RV needs before it
    hist = load_harvest(root, name, start_ms - int(WINDOW_DAYS * MS_PER_DAY), end_ms, progress=progress)
    idx_t, idx_p = index_price_per_snapshot(hist)
    # schema errors: count the window's day files only (the RV pre-read is not what is judged)
    window_files = set(day_files(harvest_dir_of(root, name), start_ms, end_ms))
    lines, schema_errors, bad_names = (
        sum(c[i] for p, c in hist.file_counts.items() if p in window_files) for i in range(3)
    )
    run = evaluate_auto(
        hist.after(start_ms),
        idx_t,
        idx_p,
        underlying=name,
        dte_range=dte_range,
        lookback=lb,
        as_of=end_dt,
        counts=HarvestCounts(
            lines, schema_errors, bad_names,
            unreadable=tuple(f"{p.name}: {why}" for p, why in sorted(hist.unreadable.items()) if p in window_files),
        ),
        config=cfg,
        run_id=new_run_id(),
        now=now,
        started=started,
    )
    before = next(
        (r for r in HistoryQuery.tail(root, "auto", name)
         if (r.dte_min, r.dte_max, r.lookback) == (run.dte_min, run.dte_max, run.lookback)),  # type: ignore[union-attr]
        None,
    )
    run = run.model_copy(update={"flags": auto_flags(run, cfg)})
    append_auto_run(root, run)  # the detail file, then the row that names it
    notify(ws, "auto", run, before.flags if before is not None else None)
    return run


def compact_harvest(ws: Workspace, underlying: str, now_ms: int | None = None) -> CompactReport:
    """`calreport harvest compact`: closed UTC days of one underlying from JSONL logs to Parquet."""
    root = ws.root
    when = int(utc_now().timestamp() * 1000) if now_ms is None else now_ms
    return compact_closed_days(root, underlying, when)


def auto_calibrate(
    ws: Workspace,
    underlying: str,
    *,
    dte: str | None = None,
    lookback: str | None = None,
    as_of: datetime | None = None,
    progress: Progress | None = None,
    on_compact: Callable[[CompactReport], None] | None = None,
) -> AutoRun:
    """One auto-calibrate run over the harvest: history only, never the applied multipliers; re-render."""
    run = run_auto_calibration(ws, underlying, dte=dte, lookback=lookback, as_of=as_of, progress=progress, on_compact=on_compact)
    ws.rerender()
    return run
