"""`calreport demo`: build a root from generated sample data and run the whole flow.

Everything goes through the same actions the CLI uses (init, harvest, calibrate, force-apply,
auto-calibrate), so the demo's dashboard shows what a real root would: live runs that the policy
applied, held and later superseded, a run forced by the user, a run that failed realism (marks in
USD), and auto-calibrate runs that are ok, degraded and failed.

The request's pathological auto run is there too: six hours of BTC harvest whose marks a broken
harvester divided by the forward (the old system's unit error), calibrated the old system's way,
with no minimum mark price. The fit pins at the 0.5 bound with MAE in the millions of % and the
run is written `failed` as unrealistic, never `ok`.

The sample market ENDS at an anchor, by default the wall clock floored to 5 minutes: live runs'
snapshots are then the recent past, and the applies (which calreport stamps with the wall clock)
come right after them, so the dashboard's time axes read as one story. Given the anchor the data
are deterministic (seeded); tests pass a fixed anchor.

`calreport demo` only builds into a new or empty directory (`demo_target`): sample runs, harvest
days and applies must never land in a real root. With `--force` the directory's entries are first
moved aside to a sibling backup directory, whose path is printed. `run_demo` itself still
re-runs over a root it built (the harvest days are rewritten, day files a previous demo wrote
outside the new week removed, new runs appended).

Like a running harvester, the demo compacts the closed UTC days (market/compact.py) once they are
harvested: they become `YYYY-MM-DD.parquet`, the torn lines go to `YYYY-MM-DD.errors.json`, and
today's day stays a JSONL log. A re-run removes its days' compacted copies before rewriting them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import numpy as np

from calreport import fmt
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.errors import RefusedError
from calreport.market.harvest import ERRORS_SUFFIX, PARQUET_SUFFIX
from calreport.market.sample import SampleMarket, write_harvest, write_json
from calreport.model import AutoRun, LiveRun
from calreport.store.files import atomic_write
from calreport.store.paths import Root
from calreport.timeutil import MS_PER_DAY, MS_PER_HOUR, MS_PER_MIN, iso_ms, utc_now

FIXED_ANCHOR = 1765627200000  # 2025-12-13T12:00:00Z: a reproducible anchor for tests
ANCHOR_STEP_MS = 5 * MS_PER_MIN
SEED = 7
HARVEST_DAYS = 7  # RV_7d from the harvest needs a week of index history
FINE_DAYS = 2  # the last days at 5 minutes; older days hourly keep the demo small
DATA_DIR = "data/demo"  # snapshot and price files of the live runs
MANIFEST = "harvest-files.json"  # in DATA_DIR: the harvest day files the last demo wrote
LEGACY_FILTERS = {"min_mark_price": 0.0}  # the old system kept every mark, however tiny


def demo_target(root: Root, *, force: bool = False, now: datetime | None = None) -> Path | None:
    """Make sure the demo writes into an empty directory; returns the backup directory `force` made.

    A directory with any entry is refused (a real root's files of record, or anything else the
    user keeps there); with `force` its entries are moved (renamed, never copied or deleted) into
    `<root>.backup-<UTC time>` beside it first.
    """
    path = root.path
    if path.exists() and not path.is_dir():
        raise RefusedError("exists and is not a directory; the demo needs a new or empty directory", path)
    entries = sorted(path.iterdir()) if path.exists() else []
    if not entries:
        return None
    if not force:
        shown = ", ".join(p.name for p in entries[:4]) + (", ..." if len(entries) > 4 else "")
        raise RefusedError(
            f"not empty ({shown}); the demo writes sample runs and applies, so it only builds a new or empty "
            "directory: pass another --root, or --force to move these files to a backup directory first",
            path,
        )
    stamp = (now or utc_now()).strftime("%Y%m%dT%H%M%SZ")
    backup = path.with_name(f"{path.name}.backup-{stamp}")
    backup.mkdir()  # never into an existing one (two forced demos in one second: the second is refused)
    for entry in entries:
        entry.rename(backup / entry.name)
    return backup


def demo_anchor(now: datetime | None = None) -> int:
    """The wall clock floored to 5 minutes (ms): where the demo's sample market ends.

    Apply events and auto runs are stamped with the wall clock, so a market pinned to a fixed
    date would put the data a year away from the applies on every time axis.
    """
    ms = int((now or utc_now()).timestamp() * 1000)
    return ms // ANCHOR_STEP_MS * ANCHOR_STEP_MS


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H%MZ")


def unit_error_windows(end_ms: int) -> dict[Literal["usd", "per_forward"], tuple[int, int]]:
    """BTC harvest hours [start, end) with broken marks: in USD, and divided by the forward."""
    fine_start = end_ms - FINE_DAYS * MS_PER_DAY
    return {
        "usd": (fine_start + 6 * MS_PER_HOUR, fine_start + 12 * MS_PER_HOUR),
        # ends exactly where the 1d auto runs begin, so the realistic runs never see it
        "per_forward": (end_ms - 30 * MS_PER_HOUR, end_ms - 24 * MS_PER_HOUR),
    }


def build_harvest(root: Root, markets: dict[str, SampleMarket], end_ms: int) -> dict[str, int]:
    """Several days of harvested snapshots per underlying (older days coarser), with the warts.

    BTC's harvester wrote marks in USD for six hours two days before the end (a unit error that
    the demo's short auto run fails on data quality), and divided them by the forward for six
    hours the day before (what the old system's insane 0.5 runs were fitted on); its first hours
    lack bid/ask as real early harvests do. Day files that a previous demo wrote and this one does
    not are removed (a different anchor means a different price path). Returns rows per underlying.
    """
    manifest = root.path / DATA_DIR / MANIFEST
    try:
        before = {str(p) for p in json.loads(manifest.read_text())} if manifest.exists() else set()
    except (ValueError, TypeError):  # a damaged manifest: nothing is known to be the demo's
        before = set()
    written: list[Path] = []
    counts = {}
    for name, m in markets.items():
        start = end_ms - HARVEST_DAYS * MS_PER_DAY
        fine_start = end_ms - FINE_DAYS * MS_PER_DAY
        times = np.concatenate(
            [m.harvest_times(start, fine_start - 1, 60), m.harvest_times(fine_start, end_ms - MS_PER_HOUR, 5)]
        )
        bugs = [(lo, hi, kind) for kind, (lo, hi) in unit_error_windows(end_ms).items()] if name == "BTC" else []
        files = write_harvest(root, m, times, unit_errors=bugs, early_until=start + 4 * MS_PER_HOUR)
        for f in files:  # a day is rewritten whole: an earlier demo's compacted copy of it goes
            _remove_compacted(f)
        # a harvester killed mid-write leaves a torn line: counted as a schema error, never fatal
        with open(files[0], "ab") as fh:
            fh.write(b'{"instrument_name": "' + name.encode() + b'-13DEC25-9\n')
        counts[name] = sum(f.read_bytes().count(b"\n") for f in files)
        written += files
    now = {str(p.relative_to(root.path)) for p in written}
    ours = {root.harvest_dir(name) for name in markets}
    kept = set()
    for rel in sorted(before - now):
        stale = root.path / rel
        if stale.parent not in ours:  # another underlying's days: not this call's business
            kept.add(rel)
        elif stale.suffix == ".jsonl":  # only ever a harvest day file the demo wrote (or its compacted copy)
            stale.unlink(missing_ok=True)
            _remove_compacted(stale)
    atomic_write(manifest, json.dumps(sorted(now | kept), indent=0).encode("utf-8"))
    return counts


def _remove_compacted(day_log: Path) -> None:
    """The Parquet file and errors sidecar compaction made of a demo day (`YYYY-MM-DD.jsonl`)."""
    stem = day_log.name[: -len(".jsonl")]
    for suffix in (PARQUET_SUFFIX, ERRORS_SUFFIX):
        day_log.with_name(stem + suffix).unlink(missing_ok=True)


def harvest_last_hour(ws: Workspace, market: SampleMarket, end_ms: int, out: Path) -> None:
    """The last hour through `calreport harvest --from-file`, as a cron job would append it."""
    for t in market.harvest_times(end_ms - MS_PER_HOUR + 1, end_ms, 15):
        snap = write_json(out / f"{market.underlying}-harvest-{_stamp(int(t))}.json", market.snapshot_payload(int(t)))
        actions.harvest(ws, market.underlying, from_file=snap)


def _live(
    ws: Workspace, market: SampleMarket, t_ms: int, out: Path, log: Callable[[str], None], **snapshot_kw: object
) -> LiveRun:
    tag = "-usd" if snapshot_kw.get("unit_error") else "-thin" if snapshot_kw.get("limit") else ""
    snap = write_json(out / f"{market.underlying}-{_stamp(t_ms)}{tag}.json", market.snapshot_payload(t_ms, **snapshot_kw))
    prices = write_json(out / f"{market.underlying}-prices-{_stamp(t_ms)}.json", market.chart_payload(t_ms))
    run = actions.calibrate(ws, market.underlying, snap, prices=prices)
    rec = run.recommended.global_ if run.recommended and run.recommended.global_ is not None else None
    sm = run.smoothed.global_ if run.smoothed and run.smoothed.global_ is not None else None
    log(
        f"  live {market.underlying} {iso_ms(t_ms)}{tag}: recommended {fmt.mult(rec)}, smoothed {fmt.mult(sm)}, "
        f"{run.status} -> {run.decision} ({run.decision_reason})"
    )
    return run


def _auto(ws: Workspace, name: str, lookback: str, as_of_ms: int, log: Callable[[str], None]) -> AutoRun:
    as_of = datetime.fromtimestamp(as_of_ms / 1000, tz=UTC)
    run = actions.auto_calibrate(ws, name, lookback=lookback, as_of=as_of)
    log(
        f"  auto {name} {run.dte_min:g}-{run.dte_max:g}d {lookback} to {iso_ms(as_of_ms)}: multiplier {fmt.mult(run.multiplier)}, "
        f"MAE {fmt.pct(run.mae_pct)}, vega MAE {fmt.pct(run.vega_weighted_mae_pct)} -> {run.status} ({run.reason})"
    )
    return run


def legacy_settings(ws: Workspace) -> Workspace:
    """The workspace's root and hooks under the old system's filters (no minimum mark price).

    The settings are changed in memory only: config/calibration.yaml is never rewritten, so a demo
    killed mid-run cannot leave the legacy filters behind, and the run's settings hash says which
    settings it was fitted with.
    """
    cfg = ws.config
    legacy = cfg.model_copy(update={"filters": cfg.filters.model_copy(update=LEGACY_FILTERS)})
    return Workspace(ws.root, config=legacy, after_apply=(), renderer=None, warn=ws.warn)  # an auto run never applies


def _legacy_auto(ws: Workspace, name: str, lookback: str, as_of_ms: int, log: Callable[[str], None]) -> AutoRun:
    """An auto run the old system's way (no minimum mark price); the realism check must fail it."""
    run = actions.run_auto_calibration(legacy_settings(ws), name, lookback=lookback, as_of=datetime.fromtimestamp(as_of_ms / 1000, tz=UTC))
    ws.rerender()  # the dashboard is rendered with the real settings
    log(
        f"  auto {name} {run.dte_min:g}-{run.dte_max:g}d {lookback} to {iso_ms(as_of_ms)} (marks / forward, min mark 0): "
        f"multiplier {fmt.mult(run.multiplier)}, MAE {fmt.pct(run.mae_pct)} -> {run.status} ({run.reason})"
    )
    return run


def run_demo(ws: Workspace, *, log: Callable[[str], None], anchor_ms: int | None = None) -> int:
    """Build the demo in the workspace's root and run the flow; `log` gets one line per step and,
    last, where the dashboard is (the CLI prints them). Returns the exit status.

    Every step runs in this one workspace: the config is read once, after `init` wrote it.
    The sample market ends at `anchor_ms` (default: `demo_anchor()`, the wall clock).
    """
    started = time.perf_counter()
    root = ws.root
    end = demo_anchor() if anchor_ms is None else int(anchor_ms)
    log(f"calreport demo in {root.path} (sample market ends {iso_ms(end)})")
    actions.init(ws)
    final = ws  # renders once, at the end
    # the steps write without re-rendering: one render of the finished root shows the same files (17 renders
    # of the growing root were 2.6 s of a 22 s demo); the steps share the workspace's config and hooks
    ws = Workspace(root, config=final.config, after_apply=final.after_apply, renderer=None, warn=final.warn)
    out = root.path / DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    markets = {u: SampleMarket(u, end - (HARVEST_DAYS + 1) * MS_PER_DAY, end, seed=SEED) for u in ("BTC", "ETH")}

    counts = build_harvest(root, markets, end)
    log("  harvest: " + ", ".join(f"{u} {n:,} rows" for u, n in counts.items()) + f" over {HARVEST_DAYS} days")
    harvest_last_hour(ws, markets["BTC"], end, out)
    for u in markets:  # what the harvester does at each UTC midnight: closed days -> Parquet
        rep = actions.compact_harvest(ws, u)
        if rep.done:
            log(f"  harvest compact {u}: {len(rep.done)} closed days -> Parquet "
                f"({sum(r.schema_errors for r in rep.done)} torn lines kept in the .errors.json sidecars)")

    btc, eth = markets["BTC"], markets["ETH"]
    h = MS_PER_HOUR
    # Live runs: the policy applies the first ones, holds a thin book, the user forces one,
    # a snapshot with USD marks fails realism, later runs apply or hold on the change size or a thin book.
    _live(ws, btc, end - 66 * h, out, log)
    _live(ws, btc, end - 54 * h, out, log)
    _live(ws, eth, end - 50 * h, out, log)
    _live(ws, btc, end - 42 * h, out, log, limit=40)
    ev = actions.force_apply(ws, "BTC")
    log(f"  force-apply BTC: run {ev.run_id} -> global {fmt.mult(ev.applied.global_ if ev.applied else None)} ({ev.reason})")
    _live(ws, btc, end - 30 * h, out, log)
    _live(ws, eth, end - 26 * h, out, log)
    _live(ws, btc, end - 18 * h, out, log, unit_error="usd")
    _live(ws, eth, end - 6 * h, out, log)
    _live(ws, btc, end - 2 * h, out, log)
    # the smile's nodes keep converging run after run, so few runs hold on the change size: a last thin
    # book stays held (the earlier one was forced and so superseded)
    _live(ws, eth, end - 1 * h, out, log, limit=40)

    # Auto-calibrate: history only, never the applied multipliers.
    bugs = unit_error_windows(end)
    _auto(ws, "BTC", "6h", bugs["usd"][1], log)  # the harvester's USD-mark hours: data quality fails
    _legacy_auto(ws, "BTC", "6h", bugs["per_forward"][1], log)  # marks / forward: unrealistic 0.5
    _auto(ws, "BTC", "14d", end, log)
    _auto(ws, "ETH", "1d", end, log)
    _auto(ws, "BTC", "1d", end, log)
    final.rerender()

    log(f"done in {time.perf_counter() - started:.1f}s. Dashboard: {root.index_html}")
    log(f"  open it in a browser, or run: calreport serve --root {root.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(Workspace.open(sys.argv[1] if len(sys.argv) > 1 else "demo-root"), log=print))
