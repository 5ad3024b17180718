"""The command line: parse arguments, open the command's one workspace, call one use case, print.

Everything a command shows is formatted and printed here (run summaries, the harvest progress bar,
warnings, the demo's steps, `price` and `schema` output); the use cases and the core below return
values and never print.

Start-up is part of the interface: `calreport --help` and `calreport status` must not pay for
scipy, pyarrow or the backtest. So this module imports only the standard library and calreport's
bottom layer at the top; each handler imports the modules its command needs when it runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from calreport import __version__, fmt
from calreport.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_STALE_DASHBOARD,
    EXIT_USAGE,
    CalreportError,
    excerpt,
)

if TYPE_CHECKING:
    from datetime import datetime

    from calreport.commands.workspace import Workspace
    from calreport.engine import EngineView
    from calreport.market.compact import CompactReport
    from calreport.market.harvest import Progress
    from calreport.model import AppliedEntry, AutoRun, CalibrationConfig, LiveRun, Smile
    from calreport.store.paths import Root

Handler = Callable[[argparse.Namespace, "Workspace"], int]
PRICE_FORMATS = ("json", "csv")  # calreport price --format: commands/price.format_rows writes each
PROGRESS_DELAY_S = 0.5  # a harvest read that ends sooner draws no bar at all


def warn(message: str) -> None:
    """A warning of the command (e.g. the apply stood but its git commit failed): one line on stderr."""
    print(f"calreport: warning: {message}", file=sys.stderr)


def print_json(doc: object) -> None:
    """`--json`: the command's result as one JSON document on stdout (paths and other objects as text)."""
    import json

    print(json.dumps(doc, indent=2, default=str))


def plain(result: object) -> dict[str, object]:
    """A result dataclass (PricesFetched, AppendResult, ...) as a JSON-ready dict."""
    import dataclasses

    return dataclasses.asdict(result)  # type: ignore[call-overload]


def one_underlying(arg: str | None, ws: Workspace) -> str:
    """--underlying, or the config's only underlying: never a silent pick among several."""
    if arg:
        return arg
    names = list(ws.config.underlyings)
    if len(names) == 1:
        return names[0]
    raise CalreportError(
        f"--underlying is required: config/calibration.yaml lists {', '.join(names) or 'none'}", exit_code=EXIT_USAGE
    )


def open_workspace(args: argparse.Namespace) -> Workspace:
    """The command's one workspace: root from --root / $CALREPORT_ROOT / cwd, config read once."""
    from calreport.commands.workspace import Workspace
    from calreport.store.paths import Root

    existing = not getattr(args, "any_dir", False)  # init, demo and schema need no root yet
    return Workspace.open(Root.resolve(getattr(args, "root", None)), warn=warn, existing=existing)


@contextmanager
def harvest_progress(label: str, stream: TextIO | None = None) -> Iterator[Progress]:
    """A tqdm bar over the harvest days being read; quiet unless `stream` (stderr) is a terminal."""
    from tqdm import tqdm

    out = sys.stderr if stream is None else stream
    isatty = getattr(out, "isatty", None)
    bar = tqdm(
        total=0, desc=label, unit="day", file=out, leave=False, delay=PROGRESS_DELAY_S,
        disable=not (isatty and isatty()),
    )

    def update(done: int, total: int, name: str) -> None:
        bar.total = total
        bar.set_postfix_str(name, refresh=False)
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


# --------------------------------------------------------------------------- summaries


SHORT_REASON = 100  # characters of a reason on a one-line summary (-v prints it whole)


def describe_run_short(run: LiveRun) -> str:
    """`calreport calibrate`'s one line: the run, what its fit delivers, realism and the decision. A run that
    fitted a surface reports the surface (the OTM IV error at the recommended values and the static-arbitrage
    counts of the recommended surface); an older step-model run its global multipliers and vega MAE."""
    rec = run.recommended
    if rec is not None and rec.surface is not None:
        fit = f"surface fit: OTM IV error {fmt.num(run.fit_iv_error_vp, 2)} vp at the recommended values, {describe_arbitrage_short(run)}"
    else:
        sm = run.smoothed.global_ if run.smoothed else None
        fit = f"recommended {fmt.mult(rec.global_ if rec else None)}, smoothed {fmt.mult(sm)}, vega MAE {fmt.pct(run.vega_weighted_mae_pct)}"
    return (
        f"{run.underlying} live run {run.run_id}: {fit}; {run.status} -> {run.decision} "
        f"({excerpt(run.decision_reason or run.reason or '', SHORT_REASON, plain=True)})"
    )


def describe_arbitrage_short(run: LiveRun) -> str:
    """'arbitrage 0 listed, 0 grid': violations (butterflies + call spreads + calendars) of the recommended surface."""
    checks = run.arbitrage or {}
    parts = [f"{checks[k].total} {k.split(' ', 1)[1]}" for k in ("recommended listed", "recommended grid") if k in checks]
    return "arbitrage " + (", ".join(parts) if parts else fmt.MISSING)


def describe_auto_run_short(run: AutoRun) -> str:
    """`calreport auto-calibrate`'s one line: window, verdict, multiplier, run (history only)."""
    return (
        f"{run.underlying} auto-calibrate {run.dte_min:g}-{run.dte_max:g}d over {run.lookback} to {run.as_of}: "
        f"{(run.status or fmt.MISSING).upper()} ({excerpt(run.reason or '', SHORT_REASON, plain=True)}); "
        f"multiplier {fmt.mult(run.multiplier)}, vega MAE {fmt.pct(run.vega_weighted_mae_pct)}; run {run.run_id} (history only)"
    )


def describe_run(run: LiveRun) -> str:
    """The one-paragraph summary `calreport calibrate -v` prints."""
    from calreport.calibration.select import dropped_text

    rv_part = f"RV_7d {fmt.vol(run.rv_7d)} ({run.rv_source}" + (
        f", {run.rv_returns} hourly returns)" if run.rv_source != "manual" else ")"
    )
    head = (
        f"{run.underlying} live run {run.run_id} at {run.ts}: {run.samples} quotes used "
        f"(dropped: {dropped_text(run.dropped or {})}); {rv_part}, ATM IV 7d {fmt.vol(run.atm_iv)}"
        + (f" (ratio {run.atm_ratio:.3f})" if run.atm_ratio is not None else "")
        + ". "
    )
    verdict = f"Status {run.status}: {run.reason}. Decision: {run.decision} ({run.decision_reason})."
    if run.recommended is None:
        return head + verdict
    gap = f", bias {fmt.pct(run.bias_pct)}, IV gap {fmt.num(run.mae_vol_points)} vol pts" if run.mae_vol_points is not None else ""
    bound = " (on the search bound)" if run.recommended_on_bound else ""
    rec, sm = run.recommended, run.smoothed
    se = run.multiplier_se.global_ if run.multiplier_se else None
    ci = fmt.interval(run.multiplier_ci95.global_ if run.multiplier_ci95 else None)
    se_part = f" (SE {fmt.mult(se)}, 95 % {ci})" if se is not None and ci else ""
    flags = f" Flags: {', '.join(dict.fromkeys(f.code for f in run.flags))}." if run.flags else ""
    return head + (
        f"At the applied multiplier {fmt.mult(run.multiplier_tested)}: MAE {fmt.pct(run.mae_pct)}, "
        f"vega-weighted MAE {fmt.pct(run.vega_weighted_mae_pct)}{gap}. "
        f"Recommended {fmt.multipliers(rec.global_, rec.bands)}{bound}{se_part}; "
        f"smoothed {fmt.multipliers(sm.global_ if sm else None, sm.bands if sm else None)}. "
    ) + describe_smile_fit(run) + verdict + flags


def describe_smile_fit(run: LiveRun) -> str:
    """'Smile: global x=-2.50 1.4500 ... (154 OTM quotes, IV error 0.40 vp); own smiles: 7-30d, 30-90d. '"""
    rec = run.recommended
    stats = (run.smile_fit or {}).get("global")
    if rec is None or rec.smile is None or stats is None:
        return ""
    nodes = ", ".join(f"{fmt.node(x)} {fmt.mult(v)}" for x, v in zip(rec.smile.nodes, rec.smile.global_))
    own = ", ".join(b for b, s in (run.smile_fit or {}).items() if b != "global" and s.source == "fitted") or "none"
    return (
        f"Smile fitted: global {nodes} ({fmt.integer(stats.samples)} OTM quotes, IV error {fmt.num(stats.iv_error_vp, 2)} vp); "
        f"bands with their own smile: {own}. "
    )


def describe_auto_run(run: AutoRun) -> str:
    """The auto-calibrate summary: one line of verdict, one of numbers, one per data-quality issue."""
    from calreport.calibration.select import dropped_text
    from calreport.model import DataQuality

    dq = run.data_quality or DataQuality()
    lines = [
        (
            f"{run.underlying} auto-calibrate {run.dte_min:g}-{run.dte_max:g}d over {run.lookback} to {run.as_of}: "
            f"{(run.status or fmt.MISSING).upper()} - {run.reason}"
        ),
        (
            f"    multiplier {fmt.mult(run.multiplier)}{' (on fit bound)' if run.multiplier_on_bound else ''}, "
            f"MAE {fmt.pct(run.mae_pct)}, vega MAE {fmt.pct(run.vega_weighted_mae_pct)}, samples {fmt.integer(run.samples or 0)}, "
            f"RV_7d {fmt.vol(run.rv_7d)}, snapshots {run.snapshots_used or 0}/{run.snapshots_expected or 0}; "
            f"data quality {dq.status}"
        ),
    ]
    if run.multiplier_se is not None or run.span_hours is not None:
        lines.append(
            f"    SE {fmt.mult(run.multiplier_se)} (95 % {fmt.interval(run.multiplier_ci95) or fmt.MISSING}); "
            f"sigma mode {run.sigma_mode or 'rv'}; used {run.snapshots_used or 0} of {run.snapshots_in_window or 0} "
            f"snapshots over {fmt.span(run.span_hours)} (dropped: {dropped_text(run.snapshots_dropped or {})})"
        )
    if run.flags:
        lines.append(f"    flags: {', '.join(dict.fromkeys(f.code for f in run.flags))}")
    lines += [f"    - {issue}" for issue in dq.issues]
    lines.append(f"    run {run.run_id} (history only; the applied multipliers are unchanged)")
    return "\n".join(lines)


def describe_view(view: EngineView, underlyings: list[str], observer: str | None) -> list[str]:
    """What `calreport watch` prints for one engine view."""
    how = f", watching with {observer}" if observer else ""
    return [f"version {view.version} loaded {view.loaded_at}{how}:", *(f"  {line}" for line in view.describe(underlyings))]


def _relative(path: Path, root: Root) -> str:
    try:
        return str(path.relative_to(root.path))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------- foundation


def cmd_init(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions

    root = ws.root
    created = actions.init(ws)
    print(f"calreport root {root.path}: " + (", ".join(str(p.relative_to(root.path)) for p in created) or "already initialised"))
    return 0


def cmd_status(args: argparse.Namespace, ws: Workspace) -> int:
    import json

    from calreport.store.state import read_state

    state = read_state(ws.root, ws.config)
    if args.json:
        print(json.dumps(state.to_json_dict(), indent=2))
        return 0
    names = list(dict.fromkeys([*ws.config.underlyings, *state.underlyings]))
    for name in names:
        e = state.underlyings.get(name)
        if e is None:
            print(f"{name}: global 1.0000 (default: never applied)")
            continue
        bands = ", ".join(f"{k} {fmt.mult(v)}" for k, v in e.bands.items()) or "none (global everywhere)"
        print(f"{name}: global {fmt.mult(e.global_)}; bands: {bands}")
        print(f"    {describe_quoting(e, ws.config, name)}")
        for line in describe_smile(e.smile):
            print(f"    {line}")
        print(f"    updated {fmt.text(e.updated_at)} by {e.source}; run {fmt.text(e.run_id)}; reason: {fmt.text(e.reason)}")
    return 0


def describe_quoting(entry: AppliedEntry, config: CalibrationConfig, name: str) -> str:
    """How the engine quotes an applied entry under the config in force (EngineView's rules): the values
    unused (fitted in another sigma mode), the surface (its bands are pillar levels), or the step model."""
    from calreport.model import DEFAULT_SIGMA_MODE, quoted_in_mode, quoted_surface

    mode = config.sigma_mode_for(name)
    if not quoted_in_mode(entry.sigma_mode, mode):
        return (f"quoted: NOT USED (fitted in sigma_mode {entry.sigma_mode or DEFAULT_SIGMA_MODE}, configured {mode}): "
                f"sigma = base alone until a run in {mode} is applied")
    where = "" if mode == "rv" else f" on the {mode} base"
    spec = quoted_surface(entry, config.smile.enabled)
    if spec is not None:
        pillars = ", ".join(f"{k} {v:g}d" for k, v in spec.pillars.items())
        return (f"quoted: surface {spec.model}{where}: the bands are its pillar levels at {pillars} of variance time, "
                f"weekend weight {spec.weekend_weight:g}")
    flat = "" if config.smile.enabled else ", flat (smile.enabled false: the file's smile and surface are not quoted)"
    return f"quoted: step model{where}{flat}"


def describe_smile(smile: Smile | None) -> list[str]:
    """'smile global: x=-2.50 1.4500, ...' per smile of an applied entry ('smile: flat' without one)."""
    if smile is None:
        return ["smile: flat (none applied)"]
    curves = [("global", smile.global_), *smile.bands.items()]
    return [f"smile {label}: " + ", ".join(f"{fmt.node(x)} {fmt.mult(v)}" for x, v in zip(smile.nodes, vs)) for label, vs in curves]


def cmd_force_apply(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions
    from calreport.commands.audit import smile_changes
    from calreport.model import surface_changes
    from calreport.model import Multipliers

    ev = actions.force_apply(ws, one_underlying(args.underlying, ws), allow_unrealistic=args.allow_unrealistic, note=args.note)
    if args.json:
        print_json(ev.to_json_dict())
        return 0
    applied = ev.applied
    bands = ", ".join(f"{k} {fmt.mult(v)}" for k, v in (applied.bands if applied else {}).items()) or "none"
    prev = ev.previous.global_ if ev.previous else None
    moved = smile_changes(ev.previous or Multipliers(), applied or Multipliers())
    surface = "".join(
        f"; {what} {a} -> {b}" for what, a, b in surface_changes(ev.previous.surface if ev.previous else None, applied.surface if applied else None)
    )
    print(
        f"{ev.underlying}: applied run {ev.run_id}: global {fmt.mult(prev)} -> {fmt.mult(applied.global_ if applied else None)}; "
        f"bands: {bands}; smile nodes moved: {len(moved)}{surface} ({ev.reason})"
    )
    return 0


def cmd_render(args: argparse.Namespace, ws: Workspace) -> int:
    ws.rerender(strict=True)  # rendering is what was asked for: its failure is the command's failure
    print(f"rendered {ws.root.index_html}")
    return 0


# --------------------------------------------------------------------------- calibration


def cmd_calibrate(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions

    snapshot = Path(args.snapshot) if args.snapshot else None  # none: fetch the chain now (kept in data/snapshots/)
    run = actions.calibrate(ws, args.underlying, snapshot, prices=args.prices and Path(args.prices), rv=args.rv)
    if args.json:
        print_json(run.to_json_dict())
    else:
        print(describe_run(run) if args.verbose else describe_run_short(run))
    return 0


def parse_as_of(text: str | None) -> datetime | None:
    """--as-of: ISO 8601 or epoch ms; None means now."""
    from calreport.timeutil import parse_time

    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise CalreportError(f"--as-of: {exc}") from None


def cmd_auto_calibrate(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions

    from calreport.commands.harvester import format_compact

    as_of = parse_as_of(args.as_of)
    name = args.underlying.upper()

    def compacted(rep: CompactReport) -> None:  # the user's day logs become Parquet: say so
        for line in format_compact(name, rep, ws.root, verb="converted "):
            print(f"calreport: {line}", file=sys.stderr)

    with harvest_progress(f"reading {name} harvest") as progress:
        run = actions.auto_calibrate(
            ws, args.underlying, dte=args.dte, lookback=args.lookback, as_of=as_of, progress=progress, on_compact=compacted
        )
    if args.json:
        print_json(run.to_json_dict())
    else:
        print(describe_auto_run(run) if args.verbose else describe_auto_run_short(run))
    hint = empty_window_hint(ws, name, run, as_of_given=args.as_of is not None)
    if hint:
        warn(hint)
    return 0


def empty_window_hint(ws: Workspace, name: str, run: AutoRun, *, as_of_given: bool) -> str | None:
    """Why an auto run ending now found nothing: the days the harvest does cover and the --as-of that reaches
    them (`auto-calibrate` and the daily job, which cron runs without --as-of); None when it found data or
    the user chose the window."""
    from calreport.commands.harvester import harvest_span

    if run.status != "failed" or run.snapshots_in_window or as_of_given:
        return None
    span = harvest_span(ws.root, name)
    if span:
        return (
            f"the {name} harvest covers {span[0]} to {span[1]} (UTC days), not the window ending now; "
            f"pass --as-of {span[1]}T23:59:59Z (or an earlier time) to calibrate over it"
        )
    return f"the {name} harvest ({_relative(ws.root.harvest_dir(name), ws.root)}) has no days"


def cmd_prices_fetch(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions
    from calreport.timeutil import iso_ms

    res = actions.prices_fetch(ws, args.underlying, days=args.days)
    if args.json:
        print_json(plain(res))
        return 0
    span = f"{iso_ms(res.first_ms)} to {iso_ms(res.last_ms)}" if res.first_ms is not None and res.last_ms is not None else "empty"
    print(
        f"{args.underlying.upper()}: {res.closes_added} new hourly closes ({res.closes_total} stored, {span}), "
        f"{res.hv_added} new historical-vol points -> {_relative(res.path.parent, ws.root)}"
    )
    return 0


def _log_line(text: str) -> None:
    """The harvester's log: one timestamped line on stderr per event."""
    import time

    from calreport.timeutil import iso_ms

    print(f"{iso_ms(int(time.time() * 1000))} {text}", file=sys.stderr, flush=True)


def _underlyings(arg: str | None, ws: Workspace) -> list[str]:
    """--underlying BTC or BTC,ETH; absent: every underlying the config lists."""
    return [u.strip() for u in arg.split(",") if u.strip()] if arg else list(ws.config.underlyings)


def cmd_harvest(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions
    from calreport.commands.harvester import format_compact, run_harvester
    from calreport.timeutil import iso_ms

    if args.action == "compact":
        if args.from_file or args.every is not None:
            raise CalreportError("harvest compact takes only --underlying")
        reports = {}
        for name in _underlyings(args.underlying, ws):
            rep = reports[name.upper()] = actions.compact_harvest(ws, ws.config.check_underlying(name))
            lines = format_compact(name.upper(), rep, ws.root) or [f"{name.upper()}: nothing to compact (no closed day has a log)"]
            for line in lines if not args.json else ():
                print(line)
        if args.json:
            print_json({name: plain(rep) for name, rep in reports.items()})
        skipped = sum(len(rep.skipped) for rep in reports.values())
        if skipped:  # the days stay readable as they are, but what was asked for was not done
            raise CalreportError(f"harvest compact: {skipped} day(s) not compacted (listed in the output)")
        return 0
    if args.every is not None:
        if args.from_file:
            raise CalreportError("--every fetches from Deribit; it cannot be combined with --from-file")
        stats = run_harvester(ws, _underlyings(args.underlying, ws), args.every, log=_log_line)
        if args.json:
            print_json(plain(stats))
            return 0
        print(f"harvested {stats.snapshots} snapshots in {stats.cycles} cycles ({stats.errors} fetch errors); "
              f"compacted {len(stats.compacted)} days; stopped by {stats.stopped_by or 'request'}")
        return 0
    if not args.underlying:
        raise CalreportError("harvest: --underlying is required (or use `harvest --every SECONDS` / `harvest compact`)")
    res = actions.harvest(ws, args.underlying, from_file=args.from_file and Path(args.from_file))
    if args.json:
        print_json(plain(res))
        return 0
    name, when, rel = args.underlying.upper(), iso_ms(res.harvested_at_ms), _relative(res.path, ws.root)
    if res.skipped_duplicate:
        print(f"{name}: snapshot of {when} already harvested in {rel}; nothing appended")
    else:
        print(f"{name}: harvested {res.rows} quotes of {when} -> {rel}")
    return 0


def cmd_import_harvest(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands.harvester import format_import
    from calreport.market.compact import import_harvest

    src = Path(args.dir)
    names = _underlyings(args.underlying, ws)
    if not args.underlying:  # every configured underlying the directory has
        names = [u for u in names if (src / u).is_dir()] or names
    for name in names:
        res = import_harvest(src, ws.root.harvest_dir(ws.config.check_underlying(name)), name)
        for line in format_import(name.upper(), res):
            print(line)
    return 0


def cmd_demo(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands.demo import demo_target, run_demo

    backup = demo_target(ws.root, force=args.force)
    if backup is not None:
        print(f"moved the existing files of {ws.root.path} to {backup}", flush=True)
    return run_demo(ws, log=lambda line: print(line, flush=True))


@contextmanager
def steps_progress(label: str, unit: str, stream: TextIO | None = None) -> Iterator[Callable[[int, int], None]]:
    """A tqdm bar over counted steps (backtest decisions); quiet unless stderr is a terminal."""
    from tqdm import tqdm

    out = sys.stderr if stream is None else stream
    isatty = getattr(out, "isatty", None)
    bar = tqdm(total=0, desc=label, unit=unit, file=out, leave=False, delay=PROGRESS_DELAY_S, disable=not (isatty and isatty()))

    def update(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        yield update
    finally:
        bar.close()


def cmd_backtest(args: argparse.Namespace, ws: Workspace) -> int:
    """Replay the harvest; print the table and where the results went (the root's records untouched)."""
    from calreport.commands import backtest as backtest_cmd

    name = args.underlying.upper()
    with harvest_progress(f"reading {name} harvest") as read_progress, steps_progress(f"backtest {name}", "decision") as progress:
        outcome = backtest_cmd.run(
            ws, args.underlying, start=args.start, end=args.end, every=args.every, horizons=args.horizons,
            variants=args.variant or (), out=args.out and Path(args.out), mkdir=args.mkdir, rv=args.rv, max_staleness=args.max_staleness,
            sweep=args.sweep or (), workers=args.workers, scheduler=args.scheduler, generated=args.generated, seed=args.seed,
            progress=progress, read_progress=read_progress,
        )
    s = outcome.summary
    if args.json:
        print_json({"directory": str(outcome.directory), "summary": s.model_dump(by_alias=True, mode="json")})
        return 0
    print(f"{s.underlying} backtest {s.id}: decisions every {s.every} from {s.start} to {s.end}, horizons {', '.join(s.horizons)} "
          f"({s.snapshots} snapshots, {s.rows:,} rows read, {fmt.num(s.elapsed_s, 1)} s); OTM IV error in vol points:")
    for line in backtest_cmd.table_lines(s):
        print(f"  {line}")
    if s.differences:
        print("paired differences of the OTM IV error (a - b, vp; 95 % block-bootstrap interval over decisions):")
        for line in backtest_cmd.difference_lines(s):
            print(f"  {line}")
    print(f"results: {_relative(outcome.directory, ws.root)}/ (summary.json, decisions.jsonl, variants/, index.html); "
          "the applied multipliers, history and site/ are unchanged (`calreport render` links the page)")
    return 0


# --------------------------------------------------------------------------- dashboard


def cmd_serve(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands.dashboard import DashboardActions
    from calreport.commands.dashboard import parse_body as parse_action_body
    from calreport.report.serve import serve

    if args.read_only:
        return serve(ws.root, port=args.port)
    return serve(ws.root, port=args.port, actions=DashboardActions(ws.root), parse_body=parse_action_body)


# --------------------------------------------------------------------------- engine, audit


def cmd_watch(args: argparse.Namespace, ws: Workspace) -> int:
    """Print the effective multipliers now and after every change, until Ctrl-C."""
    import queue

    from calreport.engine import AppliedMultipliersWatcher

    events: queue.Queue[EngineView | CalreportError] = queue.Queue()
    watcher = AppliedMultipliersWatcher(ws.root, on_change=events.put, on_error=events.put)
    try:
        with watcher:
            shown = watcher.snapshot()
            for line in describe_view(shown, watcher.configured_underlyings(), watcher.observer_kind):
                print(line, flush=True)
            while True:
                try:
                    item = events.get(timeout=0.5)
                except queue.Empty:
                    continue
                if isinstance(item, CalreportError):
                    print(f"calreport watch: {item.one_line()}; the engine keeps version {watcher.version}", file=sys.stderr, flush=True)
                elif item.version > shown.version:  # the initial load is queued too: print it once
                    shown = item
                    for line in describe_view(item, watcher.configured_underlyings(), None):
                        print(line, flush=True)
    except KeyboardInterrupt:
        return 0


def cmd_doctor(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands.doctor import format_doctor, run_doctor

    report = run_doctor(ws)
    if args.json:
        print_json({
            "root": report.root, "consistent": report.consistent,
            "problems": [{"severity": p.severity, "code": p.code, "message": p.message, "fix": p.fix, "underlying": p.underlying}
                         for p in report.problems],
            "live_runs": report.live_runs, "apply_events": report.apply_events, "auto_runs": report.auto_runs,
            "unreadable_lines": report.unreadable_lines, "live_statuses": report.live_statuses,
        })
        return report.exit_code
    print("\n".join(format_doctor(report)))
    return report.exit_code


def cmd_log(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands.audit import log_lines
    from calreport.store.query import HistoryQuery

    if args.json:  # every apply event, newest first, as history records it
        print_json([e.to_json_dict() for e in HistoryQuery.tail(ws.root, "apply", args.underlying.upper() if args.underlying else None)])
        return 0
    for line in log_lines(ws.root, underlying=args.underlying, verbose=args.verbose):
        print(line)
    return 0


def cmd_rollback(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands import usecases as actions

    ev = actions.rollback(ws, one_underlying(args.underlying, ws), to=args.to, note=args.note)
    if args.json:
        print_json(ev.to_json_dict())
        return 0
    from calreport.calibration.surface import quoting_model
    from calreport.model import DEFAULT_SIGMA_MODE, surface_changes

    g = ev.applied.global_ if ev.applied else None
    restored = ev.applied.surface if ev.applied else None
    # the quoting model travels with the values: say so, as force-apply does, and when the config fits another
    model = "".join(f"; {what} {a} -> {b}" for what, a, b in surface_changes(ev.previous.surface if ev.previous else None, restored))
    configured = quoting_model(ws.config, ev.sigma_mode or DEFAULT_SIGMA_MODE)
    if model and surface_changes(restored, configured):
        model += f" (config/calibration.yaml fits {'the step model' if configured is None else configured.model}: the next applied live run switches back)"
    print(f"{ev.underlying}: rolled back to run {ev.run_id}: global {fmt.mult(g)}{model} ({ev.reason})")
    return 0


def cmd_import_legacy(args: argparse.Namespace, ws: Workspace) -> int:
    from calreport.commands.legacy import format_import as format_legacy_import
    from calreport.commands.legacy import import_legacy

    result = import_legacy(ws, [Path(f) for f in args.files])
    out, err = format_legacy_import(result, ws.root)
    for line in err:
        print(line, file=sys.stderr)
    for line in out:
        print(line)
    if result.changed:
        ws.rerender()
    return result.exit_code


# --------------------------------------------------------------------------- price, schema


def cmd_price(args: argparse.Namespace, ws: Workspace) -> int:
    """The engine's quotes for every option of a snapshot, to stdout or (atomically) to --out."""
    from calreport.commands.price import arbitrage_summary, format_rows, price_table
    from calreport.store.files import atomic_write, output_path

    out = args.out and output_path(ws.root, args.out, mkdir=args.mkdir)
    rows, checks = price_table(
        ws, args.underlying, args.snapshot and Path(args.snapshot),
        prices=args.prices and Path(args.prices), rv=args.rv, grid=args.grid, warn=warn,
    )
    data = format_rows(rows, args.format)
    print(arbitrage_summary(checks), file=sys.stderr)
    if args.out:  # nothing is written unless the whole table was built
        atomic_write(out, data)
        print(f"{len(rows)} {args.underlying.upper()} options priced -> {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def cmd_schema(args: argparse.Namespace, ws: Workspace) -> int:
    """With no NAME list the formats; with one print its JSON Schema; an unknown NAME exits 2."""
    import json

    from calreport.commands.schema import SCHEMAS, list_schemas, schema_json

    name = args.name
    if not name:
        width = max(len(n) for n in SCHEMAS)
        for n, text in list_schemas():
            print(f"{n:<{width}}  {text}")
        return 0
    if name not in SCHEMAS:
        raise CalreportError(f"unknown schema {excerpt(name)} (known: {', '.join(SCHEMAS)})", exit_code=EXIT_USAGE)
    print(json.dumps(schema_json(name), indent=2))
    return 0


# --------------------------------------------------------------------------- parser


def _port(text: str) -> int:
    """--port: a TCP port (0 = any free one); anything else is a usage error (exit 2)."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {excerpt(text, 40)}")
    return int(text)


def _lookback(text: str) -> str:
    """--lookback: a window length within the config's lookback range; else a usage error (exit 2)."""
    from calreport.model.config import MAX_LOOKBACK_DAYS, valid_lookback

    if not valid_lookback(text):
        raise argparse.ArgumentTypeError(f"expected a length like 14d, 12h or 90m of at most {MAX_LOOKBACK_DAYS} days, got {excerpt(text, 40)}")
    return text


def _in_range(lo: float, hi: float, *, lo_open: bool = True) -> Callable[[str], float]:
    """An argparse type: a finite number in (lo, hi] ([lo, hi] when not lo_open); else a usage error (exit 2)."""

    def parse(text: str) -> float:
        from calreport.numbers import as_float

        try:
            x = as_float(float(text)) if len(text) < 40 else None
        except ValueError:
            x = None
        if x is None or not ((lo < x) if lo_open else (lo <= x)) or x > hi:
            raise argparse.ArgumentTypeError(
                f"expected a number in {'(' if lo_open else '['}{lo:g}, {hi:g}], got {excerpt(text, 40)}"
            )
        return x

    return parse


MAX_FETCH_DAYS = 60.0  # prices fetch --days: Deribit's hourly closes further back add nothing to RV_7d
HARVEST_EVERY_S = (1.0, 86_400.0)  # harvest --every: at most once a second, at least once a day


def build_parser() -> argparse.ArgumentParser:
    root_help = "calibration root (default: $CALREPORT_ROOT or the current directory)"
    # --root is accepted before or after the command; the subcommand's copy must not reset it.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", default=argparse.SUPPRESS, help=root_help)

    p = argparse.ArgumentParser(prog="calreport", description="calreport: calibration control plane")
    p.add_argument("--root", default=None, help=root_help)
    p.add_argument("--version", action="version", version=f"calreport {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Handler, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_, parents=[common])
        sp.set_defaults(handler=handler)
        return sp

    U_ONE = "underlying, e.g. BTC (one the config lists)"
    U_PICK = "underlying, e.g. BTC; required when the config lists more than one"

    def json_flag(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("--json", action="store_true", help=f"print {what} as one JSON document instead of the summary")

    def verbose_flag(sp: argparse.ArgumentParser, what: str) -> None:
        sp.add_argument("-v", "--verbose", action="store_true", help=f"print {what} (default: one short line)")

    def note_flag(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--note", metavar="TEXT", help="why, in your words: kept in the apply event and the git commit")

    sp = add("init", cmd_init, "create a root: default config, applied multipliers at 1.0, empty history")
    sp.set_defaults(any_dir=True)

    sp = add("status", cmd_status, "show the applied multipliers (the state document with --json)")
    sp.add_argument("--json", action="store_true", help="print the state document")

    sp = add("force-apply", cmd_force_apply, "apply the latest live run's smoothed multipliers (reason: Forced by user)")
    sp.add_argument("--underlying", help=U_PICK)
    sp.add_argument("--allow-unrealistic", action="store_true", help="apply even if the run failed realism")
    note_flag(sp)
    json_flag(sp, "the apply event")

    add("render", cmd_render, "regenerate site/ from the files of record")

    sp = add("calibrate", cmd_calibrate, "one live calibration against Deribit's chain (fetched now, or --snapshot FILE)")
    sp.add_argument("--underlying", required=True, help=U_ONE)
    json_flag(sp, "the run's history row")
    verbose_flag(sp, "the whole run: quotes, RV, errors, smile fit, flags")
    sp.add_argument(
        "--snapshot",
        help="replay a Deribit get_book_summary_by_currency response (JSON, or .json.gz); without it the chain is "
        "fetched now and kept in data/snapshots/<U>/",
    )
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--prices", help="Deribit get_tradingview_chart_data response for RV_7d")
    g.add_argument("--rv", type=float, help="RV_7d as a fraction (0.43) instead of computing it")

    sp = add("auto-calibrate", cmd_auto_calibrate, "one auto-calibrate run over the harvest (never applies)")
    sp.add_argument("--underlying", required=True, help=U_ONE)
    json_flag(sp, "the run's history row")
    verbose_flag(sp, "the numbers, uncertainty and every data-quality issue")
    sp.add_argument("--dte", help="DTE range, e.g. 3-10")
    sp.add_argument("--lookback", type=_lookback, help="window length, e.g. 1d, 14d, 12h")
    sp.add_argument("--as-of", dest="as_of", help="window end: ISO 8601 or epoch ms (default: now)")

    sp = add("prices", cmd_prices_fetch, "price store for RV_7d: `prices fetch` stores hourly perpetual closes + Deribit's historical vol")
    sp.add_argument("action", choices=["fetch"], help="fetch: append the last --days of hourly closes (de-duplicated)")
    sp.add_argument("--underlying", required=True, help=U_ONE)
    sp.add_argument("--days", type=_in_range(0.0, MAX_FETCH_DAYS), default=8.0, help="days of hourly closes to fetch (default 8: a full RV_7d week plus margin)")
    json_flag(sp, "what was stored")

    sp = add("harvest", cmd_harvest, "`harvest fetch`: append a Deribit snapshot (fetched, or --from-file) to the harvest; "
             "--every SECONDS keeps harvesting; `harvest compact` turns closed days into Parquet")
    sp.add_argument("action", nargs="?", choices=("fetch", "compact"), default="fetch",
                    help="fetch (the default, so `harvest` alone still works): one snapshot; compact: closed UTC days -> Parquet")
    sp.add_argument("--underlying", help="BTC (or BTC,ETH with --every / compact; default: the config's list)")
    sp.add_argument("--from-file", dest="from_file", metavar="FILE", help="a saved get_book_summary_by_currency response instead of fetching")
    json_flag(sp, "what was harvested or compacted")
    sp.add_argument("--every", type=_in_range(*HARVEST_EVERY_S, lo_open=False), metavar="SECONDS", help="harvest every SECONDS until SIGINT/SIGTERM")

    sp = add("import-harvest", cmd_import_harvest,
             "import a harvest (DIR/<U>/YYYY/MM/DD/*.parquet or DIR/<U>/YYYY-MM-DD.jsonl.gz) into data/harvest (idempotent)")
    sp.add_argument("dir", metavar="DIR", help="the harvest directory: the previous system's (<U>/YYYY/MM/DD/*.parquet) or calreport's own layout (<U>/YYYY-MM-DD.jsonl.gz)")
    sp.add_argument("--underlying", help="BTC, or BTC,ETH (default: every underlying the config lists that DIR has)")

    sp = add("backtest", cmd_backtest, "replay the harvest through the live calibration and policy; score out of sample")
    sp.add_argument("--underlying", required=True, help=U_ONE)
    json_flag(sp, "the summary (summary.json) and where the results went")
    sp.add_argument("--from", dest="start", help="first decision time: ISO 8601 or epoch ms (default: first snapshot)")
    sp.add_argument("--to", dest="end", help="last decision time (default: last snapshot)")
    sp.add_argument("--every", default="1h", help="time between decisions (default 1h)")
    sp.add_argument("--horizons", default="1h,6h,24h", help="scoring horizons after each decision (default 1h,6h,24h)")
    sp.add_argument("--variant", action="append", metavar="NAME=CONFIG.yaml", help="another settings file to replay (repeatable)")
    sp.add_argument("--out", help="output directory (default backtests/<id>/ in the root; never inside config/, history/, data/, site/)")
    sp.add_argument("--mkdir", action="store_true", help="create --out's parent directories if missing")
    sp.add_argument("--rv", type=float, help="fixed RV_7d as a fraction (default: RV_7d from the harvest as of each snapshot)")
    sp.add_argument("--max-staleness", dest="max_staleness", help="furthest a snapshot may be from a decision or horizon time (default 30m)")
    sp.add_argument("--sweep", action="append", metavar="KEY=V1,V2", help="a grid of variants over the root's config: a setting by dotted "
                    "path or last part (smoothing.alpha, alpha) and its values; repeat for more settings (the grid is every combination; one equal to the root's config is the root variant)")
    sp.add_argument("--workers", type=int, help="local worker processes for the variants (default: one per core, at most one per variant; 1 runs here)")
    sp.add_argument("--scheduler", metavar="tcp://HOST:PORT", help="run the variants on this existing Dask cluster (dask.distributed)")
    sp.add_argument("--generated", type=float, metavar="DAYS", help="replay market/sample.py's generated market over DAYS (a snapshot each "
                    "--every, its true surface known: scores beside the marks how far the applied surface is from the truth) instead of the harvest")
    sp.add_argument("--seed", type=int, default=7, help="the generated market's seed (default %(default)s)")

    sp = add("demo", cmd_demo, "build a new root (an empty directory) from bundled sample data and run the whole flow")
    sp.add_argument("--force", action="store_true", help="the directory is not empty: move its files to ROOT.backup-TIME first")
    sp.set_defaults(any_dir=True)

    sp = add("serve", cmd_serve, "serve site/ on 127.0.0.1 with the live state endpoint")
    sp.add_argument("--port", type=_port, default=8765, help="port on 127.0.0.1 (default: %(default)s)")
    sp.add_argument("--read-only", action="store_true", help="no Force-Apply / Roll back buttons on the served page")

    add("watch", cmd_watch, "print the engine's effective multipliers each time they change")
    sp = add("doctor", cmd_doctor, "check that the YAML, the history and the apply events agree")
    json_flag(sp, "the findings")

    sp = add("log", cmd_log, "list applied changes from history, newest first (one line each)")
    sp.add_argument("--underlying", help="only this underlying (default: all)")
    json_flag(sp, "the apply events")
    verbose_flag(sp, "every value that moved, the whole reason and the note")

    sp = add("rollback", cmd_rollback, "re-apply an earlier applied run's values as a new apply event")
    sp.add_argument("--underlying", help=U_PICK)
    sp.add_argument("--to", help="run id to roll back to (default: the previous applied run)")
    note_flag(sp)
    json_flag(sp, "the apply event")

    sp = add("import-legacy", cmd_import_legacy, "import the old system's run records into history")
    sp.add_argument("files", nargs="+", metavar="FILE", help="the old system's run records (JSON)")

    sp = add("schema", cmd_schema, "print the JSON Schema of a file format (with no NAME, list the formats)")
    sp.add_argument("name", nargs="?", metavar="NAME", help="a format name (`calreport schema` lists them)")
    sp.set_defaults(any_dir=True)

    sp = add("price", cmd_price, "price every option of a snapshot (or the live chain) as the engine does under the applied YAML")
    sp.add_argument("--underlying", required=True, help=U_ONE)
    sp.add_argument("--snapshot", help="Deribit get_book_summary_by_currency response (JSON); default: fetch the live chain")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--prices", help="Deribit get_tradingview_chart_data response for RV_7d")
    g.add_argument("--rv", type=float, help="RV_7d as a fraction (0.43): the base of sigma")
    sp.add_argument("--format", choices=PRICE_FORMATS, default="json", help="json (a list of objects) or csv")
    sp.add_argument("--grid", action="store_true", help="price the dense grid (K/F 0.3-3 x 1 day-1 year) instead of the listed options")
    sp.add_argument("--out", help="write to FILE (atomically) instead of stdout; never inside config/, history/, data/, site/")
    sp.add_argument("--mkdir", action="store_true", help="create --out's parent directories if missing")
    # `calreport diff RUN [RUN]`: the comparison report/compare.py builds (the compare pages render the same)
    def cmd_diff(args: argparse.Namespace, ws: Workspace) -> int:
        import json

        from calreport.report import compare
        from calreport.store.applied import read_applied
        from calreport.store.query import HistoryQuery

        runs = {r.run_id: r for r in HistoryQuery.file_order(ws.root, "live") if r.run_id}
        for rid in filter(None, (args.run, args.other)):
            if rid not in runs:
                raise CalreportError(f"history/live_calibration.jsonl: no live run {rid!r}")
        run = runs[args.run]
        if args.other:
            c = compare.compare(compare.side_of_run(run), compare.side_of_run(runs[args.other]))
        else:  # the applied state of the run's underlying -> the run: what applying it would change
            entry = read_applied(ws.root, ws.config).entry(run.underlying or "")
            c = compare.compare(compare.side_of_applied(entry, runs.get(entry.run_id or "")), compare.side_of_run(run))
        if args.json:
            print(json.dumps(c.to_json(), indent=2))
        else:
            print("\n".join(compare.text_lines(c, only_changed=not args.all)))
        return 0

    sp = add("diff", cmd_diff, "compare two live runs, or a run with the applied state: levels, bands, smile nodes, errors")
    sp.add_argument("run", metavar="RUN", help="a live run id (`calreport log` and the dashboard show them)")
    sp.add_argument("other", nargs="?", metavar="RUN2", help="a second live run id (default: the applied state of RUN's underlying)")
    sp.add_argument("--all", action="store_true", help="list unchanged figures too (default: changed ones only)")
    sp.add_argument("--json", action="store_true", help="print the comparison as JSON (every figure)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # exit codes: calreport/errors.py (0 ok, 1 refused, 2 usage, 3 stale dashboard, 70 internal, 130 interrupted)
    try:
        ws = open_workspace(args)
        # Small fits one after another: a multi-threaded BLAS only adds hand-over cost (measured: a live
        # run with the smile fit 0.92 s with OpenBLAS's 2 threads on a busy 2-core machine, 0.11 s with
        # one; results identical), so every command runs with one BLAS thread.
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            code = int(args.handler(args, ws) or EXIT_OK)
        # the write stood (stdout said what) but site/ could not be regenerated: warned on stderr
        return EXIT_STALE_DASHBOARD if code == EXIT_OK and ws.stale is not None else code
    except CalreportError as exc:
        print(f"calreport: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("calreport: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_REFUSED
    except OSError as exc:
        where = f"{excerpt(exc.filename, 200, plain=True)}: " if getattr(exc, "filename", None) else ""
        print(f"calreport: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_REFUSED
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("CALREPORT_DEBUG"):
            raise
        print(
            f"calreport: internal error: {type(exc).__name__}: {excerpt(str(exc), 200, plain=True)} "
            "(set CALREPORT_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
