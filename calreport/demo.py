"""`calreport demo`: build a root from generated sample data and run the whole flow.

Everything goes through the same actions the CLI uses (init, harvest, calibrate, force-apply,
auto-calibrate), so the demo's dashboard shows what a real root would: live runs that the policy
applied, held and later superseded, a run forced by the user, a run that failed realism (marks in
USD), and auto-calibrate runs that are ok, degraded and failed.

The sample market is seeded and anchored at a fixed time (DEMO_END), so two demos produce the
same numbers. Re-running on an existing root works: the harvest days are rewritten with the
same data, and the new runs are appended to the history (nothing is deleted).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from calreport import actions
from calreport.harvest import harvest_command
from calreport.models import AutoRun, LiveRun, iso_utc
from calreport.paths import Root
from calreport.sample import (
    MS_PER_DAY,
    MS_PER_HOUR,
    SampleMarket,
    write_harvest,
    write_json,
)

DEMO_END = 1765627200000  # 2025-12-13T12:00:00Z
SEED = 7
HARVEST_DAYS = 7  # RV_7d from the harvest needs a week of index history
FINE_DAYS = 2  # the last days at 5 minutes; older days hourly keep the demo small
DATA_DIR = "data/demo"  # snapshot and price files of the live runs


def _iso(ms: int) -> str:
    return iso_utc(datetime.fromtimestamp(ms / 1000, tz=UTC))


def _stamp(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H%MZ")


def build_harvest(root: Root, markets: dict[str, SampleMarket], end_ms: int = DEMO_END) -> dict[str, int]:
    """Several days of harvested snapshots per underlying (older days coarser), with the warts.

    BTC's harvester wrote marks in USD for six hours two days before the end (a unit error that
    the demo's short auto run fails on), and its first hours lack bid/ask as real early harvests do.
    Returns the number of rows written per underlying.
    """
    counts = {}
    for name, m in markets.items():
        start = end_ms - HARVEST_DAYS * MS_PER_DAY
        fine_start = end_ms - FINE_DAYS * MS_PER_DAY
        times = np.concatenate(
            [m.harvest_times(start, fine_start - 1, 60), m.harvest_times(fine_start, end_ms - MS_PER_HOUR, 5)]
        )
        bug = (fine_start + 6 * MS_PER_HOUR, fine_start + 12 * MS_PER_HOUR) if name == "BTC" else None
        files = write_harvest(root, m, times, unit_error_window=bug, early_until=start + 4 * MS_PER_HOUR)
        # a harvester killed mid-write leaves a torn line: counted as a schema error, never fatal
        with open(files[0], "ab") as fh:
            fh.write(b'{"instrument_name": "' + name.encode() + b'-13DEC25-9\n')
        counts[name] = sum(f.read_bytes().count(b"\n") for f in files)
    return counts


def harvest_last_hour(root: Root, market: SampleMarket, end_ms: int, out: Path) -> None:
    """The last hour through `calreport harvest --from-file`, as a cron job would append it."""
    for t in market.harvest_times(end_ms - MS_PER_HOUR + 1, end_ms, 15):
        snap = write_json(out / f"{market.underlying}-harvest-{_stamp(int(t))}.json", market.snapshot_payload(int(t)))
        harvest_command(root, market.underlying, from_file=snap)


def _live(
    root: Root, market: SampleMarket, t_ms: int, out: Path, log: Callable[[str], None], **snapshot_kw: object
) -> LiveRun:
    tag = "-usd" if snapshot_kw.get("unit_error") else "-thin" if snapshot_kw.get("limit") else ""
    snap = write_json(out / f"{market.underlying}-{_stamp(t_ms)}{tag}.json", market.snapshot_payload(t_ms, **snapshot_kw))
    prices = write_json(out / f"{market.underlying}-prices-{_stamp(t_ms)}.json", market.chart_payload(t_ms))
    run = actions.calibrate(root, market.underlying, snap, prices=prices)
    rec = run.recommended.global_ if run.recommended and run.recommended.global_ is not None else None
    sm = run.smoothed.global_ if run.smoothed and run.smoothed.global_ is not None else None
    log(
        f"  live {market.underlying} {_iso(t_ms)}{tag}: recommended {_f(rec)}, smoothed {_f(sm)}, "
        f"{run.status} -> {run.decision} ({run.decision_reason})"
    )
    return run


def _auto(root: Root, name: str, lookback: str, as_of_ms: int, log: Callable[[str], None]) -> AutoRun:
    as_of = datetime.fromtimestamp(as_of_ms / 1000, tz=UTC)
    run = actions.auto_calibrate(root, name, lookback=lookback, as_of=as_of)
    log(
        f"  auto {name} {run.dte_min:g}-{run.dte_max:g}d {lookback} to {_iso(as_of_ms)}: multiplier {_f(run.multiplier)}, "
        f"MAE {_f(run.mae_pct, 2)}%, vega MAE {_f(run.vega_weighted_mae_pct, 2)}% -> {run.status} ({run.reason})"
    )
    return run


def _f(x: float | None, nd: int = 4) -> str:
    return "-" if x is None else f"{x:,.{nd}f}"


def run_demo(root: Root, *, log: Callable[[str], None] = print) -> int:
    """Build the demo root and run the flow; prints where the dashboard is. Returns the exit status."""
    started = time.perf_counter()
    log(f"calreport demo in {root.path}")
    actions.init(root)
    out = root.path / DATA_DIR
    out.mkdir(parents=True, exist_ok=True)
    end = DEMO_END
    markets = {u: SampleMarket(u, end - (HARVEST_DAYS + 1) * MS_PER_DAY, end, seed=SEED) for u in ("BTC", "ETH")}

    counts = build_harvest(root, markets, end)
    log("  harvest: " + ", ".join(f"{u} {n:,} rows" for u, n in counts.items()) + f" over {HARVEST_DAYS} days")
    harvest_last_hour(root, markets["BTC"], end, out)

    btc, eth = markets["BTC"], markets["ETH"]
    h = MS_PER_HOUR
    # Live runs: the policy applies the first ones, holds a thin book, the user forces one,
    # a snapshot with USD marks fails realism, later runs apply or hold on the change size.
    _live(root, btc, end - 66 * h, out, log)
    _live(root, btc, end - 54 * h, out, log)
    _live(root, eth, end - 50 * h, out, log)
    _live(root, btc, end - 42 * h, out, log, limit=40)
    ev = actions.force_apply(root, "BTC")
    log(f"  force-apply BTC: run {ev.run_id} -> global {_f(ev.applied.global_ if ev.applied else None)} ({ev.reason})")
    _live(root, btc, end - 30 * h, out, log)
    _live(root, eth, end - 26 * h, out, log)
    _live(root, btc, end - 18 * h, out, log, unit_error="usd")
    _live(root, eth, end - 6 * h, out, log)
    _live(root, btc, end - 2 * h, out, log)

    # Auto-calibrate: history only, never the applied multipliers.
    fine_start = end - FINE_DAYS * MS_PER_DAY
    _auto(root, "BTC", "1d", end, log)
    _auto(root, "BTC", "14d", end, log)
    _auto(root, "ETH", "1d", end, log)
    _auto(root, "BTC", "6h", fine_start + 12 * h, log)  # the harvester's USD-mark hours

    log(f"done in {time.perf_counter() - started:.1f}s. Dashboard: {root.index_html}")
    log(f"  open it in a browser, or run: calreport serve --root {root.path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(run_demo(Root.resolve(sys.argv[1] if len(sys.argv) > 1 else "demo-root")))
