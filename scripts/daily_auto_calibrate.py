#!/usr/bin/env python3
"""The daily auto-calibrate job: one run per configured underlying x DTE range x lookback.

History only: every run is appended to history/auto_calibrate.jsonl and the dashboard is
re-rendered; the applied multipliers are never touched (only live runs and force-apply do that).

Exit status: 0 when every run is ok, 1 when some are degraded or failed (but not all failed),
2 when all failed (or the root is unusable), so cron mail flags a broken harvest.

    python scripts/daily_auto_calibrate.py [--root DIR] [--as-of T]

Crontab (06:15 UTC every day, from a checkout with its venv):

    15 6 * * * cd /srv/calreport && .venv/bin/python scripts/daily_auto_calibrate.py --root /srv/calreport >> logs/auto.log 2>&1
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from calreport.commands import usecases as actions
from calreport.commands.cli import describe_auto_run, empty_window_hint, harvest_progress, warn
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.store.paths import Root
from calreport.timeutil import parse_time


def exit_code(statuses: list[str]) -> int:
    """0 all ok; 2 all failed (or nothing ran); 1 anything in between."""
    if not statuses or all(s == "failed" for s in statuses):
        return 2
    return 0 if all(s == "ok" for s in statuses) else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--root", default=None, help="calibration root (default: $CALREPORT_ROOT or the current directory)")
    p.add_argument("--as-of", dest="as_of", help="window end: ISO 8601 or epoch ms (default: now)")
    args = p.parse_args(argv)
    try:
        ws = Workspace.open(Root.resolve(args.root), warn=warn)
        cfg = ws.config  # read once for every run of the job
        as_of = parse_time(args.as_of) if args.as_of else None
    except (CalreportError, ValueError) as exc:
        print(f"daily_auto_calibrate: error: {exc}", file=sys.stderr)
        return 2
    statuses: list[str] = []
    try:
        for underlying in cfg.auto.underlyings:
            for dte in cfg.auto.dte_ranges:
                for lookback in cfg.auto.lookbacks:
                    try:
                        with harvest_progress(f"reading {underlying} harvest") as progress:
                            run = actions.run_auto_calibration(
                                ws, underlying, dte=dte, lookback=lookback, as_of=as_of, progress=progress
                            )
                    except CalreportError as exc:  # e.g. an underlying not in config.underlyings
                        print(f"{underlying} {dte} {lookback}: error: {exc.one_line()}", file=sys.stderr)
                        statuses.append("failed")
                        continue
                    print(describe_auto_run(run))
                    hint = empty_window_hint(ws, run.underlying or underlying, run, as_of_given=as_of is not None)
                    if hint:
                        warn(hint)
                    statuses.append(run.status or "failed")
    finally:
        ws.rerender()  # once, after every run of the job
    code = exit_code(statuses)
    print(f"daily auto-calibrate: {len(statuses)} runs: "
          + ", ".join(f"{s} {statuses.count(s)}" for s in ("ok", "degraded", "failed") if statuses.count(s))
          + f"; exit {code}")
    return code


if __name__ == "__main__":
    sys.exit(main())
