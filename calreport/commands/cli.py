"""The command line: parse arguments, call one action, print. No logic of its own."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Callable, Sequence

from calreport import __version__
from calreport.errors import CalreportError
from calreport.store.paths import Root

Handler = Callable[[argparse.Namespace, Root], int]


def _root(args: argparse.Namespace) -> Root:
    return Root.resolve(getattr(args, "root", None))


# --------------------------------------------------------------------------- foundation


def cmd_init(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands import usecases as actions

    created = actions.init(root)
    print(f"calreport root {root.path}: " + (", ".join(str(p.relative_to(root.path)) for p in created) or "already initialised"))
    return 0


def cmd_status(args: argparse.Namespace, root: Root) -> int:
    from calreport.store.config import load_config
    from calreport.store.state import read_state

    cfg = load_config(root)
    state = read_state(root, cfg)
    if args.json:
        print(json.dumps(state.to_json_dict(), indent=2))
        return 0
    names = list(dict.fromkeys([*cfg.underlyings, *state.underlyings]))
    for name in names:
        e = state.underlyings.get(name)
        if e is None:
            print(f"{name}: global 1.0000 (default: never applied)")
            continue
        bands = ", ".join(f"{k} {v:.4f}" for k, v in e.bands.items()) or "none (global everywhere)"
        print(f"{name}: global {e.global_:.4f}; bands: {bands}")
        print(f"    updated {e.updated_at or '-'} by {e.source}; run {e.run_id or '-'}; reason: {e.reason or '-'}")
    return 0


def cmd_force_apply(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands import usecases as actions

    ev = actions.force_apply(root, args.underlying, allow_unrealistic=args.allow_unrealistic)
    applied = ev.applied
    bands = ", ".join(f"{k} {v:.4f}" for k, v in (applied.bands if applied else {}).items()) or "none"
    prev = ev.previous.global_ if ev.previous and ev.previous.global_ is not None else float("nan")
    print(
        f"{ev.underlying}: applied run {ev.run_id}: global {prev:.4f} -> {applied.global_:.4f}; bands: {bands} ({ev.reason})"
    )
    return 0


def cmd_render(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands import usecases as actions

    actions.rerender(root)
    print(f"rendered {root.index_html}")
    return 0


# --------------------------------------------------------------------------- calibration


def cmd_calibrate(args: argparse.Namespace, root: Root) -> int:
    from calreport.calibration.live import describe_run
    from calreport.commands import usecases as actions

    run = actions.calibrate(root, args.underlying, Path(args.snapshot), prices=args.prices and Path(args.prices), rv=args.rv)
    print(describe_run(run))
    return 0


def cmd_auto_calibrate(args: argparse.Namespace, root: Root) -> int:
    from calreport.calibration.auto import describe_auto_run
    from calreport.commands import usecases as actions
    from calreport.store.models import parse_time

    as_of = None
    if args.as_of:
        try:
            as_of = parse_time(args.as_of)
        except ValueError as exc:
            raise CalreportError(f"--as-of: {exc}") from None
    run = actions.auto_calibrate(root, args.underlying, dte=args.dte, lookback=args.lookback, as_of=as_of)
    print(describe_auto_run(run))
    return 0


def cmd_harvest(args: argparse.Namespace, root: Root) -> int:
    from calreport.market.harvest import harvest_command

    return harvest_command(root, args.underlying, from_file=args.from_file and Path(args.from_file))


def cmd_demo(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands.demo import run_demo

    return run_demo(root)


# --------------------------------------------------------------------------- dashboard


def cmd_serve(args: argparse.Namespace, root: Root) -> int:
    from calreport.report.serve import serve

    return serve(root, port=args.port)


# --------------------------------------------------------------------------- engine, audit


def cmd_watch(args: argparse.Namespace, root: Root) -> int:
    from calreport.engine import watch_command

    return watch_command(root)


def cmd_doctor(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands.doctor import doctor_command

    return doctor_command(root)


def cmd_log(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands.audit import log_command

    return log_command(root, underlying=args.underlying)


def cmd_rollback(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands import usecases as actions

    ev = actions.rollback(root, args.underlying, to=args.to)
    g = ev.applied.global_ if ev.applied else None
    print(f"{ev.underlying}: rolled back to run {ev.run_id}: global {g:.4f} ({ev.reason})")
    return 0


def cmd_import_legacy(args: argparse.Namespace, root: Root) -> int:
    from calreport.commands.legacy import import_legacy_command

    return import_legacy_command(root, [Path(f) for f in args.files])


# --------------------------------------------------------------------------- parser


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

    add("init", cmd_init, "create a root: default config, applied multipliers at 1.0, empty history")

    sp = add("status", cmd_status, "show the applied multipliers (the state document with --json)")
    sp.add_argument("--json", action="store_true", help="print the state document")

    sp = add("force-apply", cmd_force_apply, "apply the latest live run's smoothed multipliers (reason: Forced by user)")
    sp.add_argument("--underlying", default="BTC")
    sp.add_argument("--allow-unrealistic", action="store_true", help="apply even if the run failed realism")

    add("render", cmd_render, "regenerate site/ from the files of record")

    sp = add("calibrate", cmd_calibrate, "one live calibration against a Deribit snapshot")
    sp.add_argument("--underlying", required=True)
    sp.add_argument("--snapshot", required=True, help="Deribit get_book_summary_by_currency response (JSON)")
    g = sp.add_mutually_exclusive_group()
    g.add_argument("--prices", help="Deribit get_tradingview_chart_data response for RV_7d")
    g.add_argument("--rv", type=float, help="RV_7d as a fraction (0.43) instead of computing it")

    sp = add("auto-calibrate", cmd_auto_calibrate, "one auto-calibrate run over the harvest (never applies)")
    sp.add_argument("--underlying", required=True)
    sp.add_argument("--dte", help="DTE range, e.g. 3-10")
    sp.add_argument("--lookback", help="window length, e.g. 1d, 14d, 12h")
    sp.add_argument("--as-of", dest="as_of", help="window end: ISO 8601 or epoch ms (default: now)")

    sp = add("harvest", cmd_harvest, "append a Deribit snapshot (fetched, or --from-file) to the harvest")
    sp.add_argument("--underlying", required=True)
    sp.add_argument("--from-file", dest="from_file")

    add("demo", cmd_demo, "build a root from bundled sample data and run the whole flow")

    sp = add("serve", cmd_serve, "serve site/ on 127.0.0.1 with the live state endpoint")
    sp.add_argument("--port", type=int, default=8765)

    add("watch", cmd_watch, "print the engine's effective multipliers each time they change")
    add("doctor", cmd_doctor, "check that the YAML, the history and the apply events agree")

    sp = add("log", cmd_log, "list applied changes from history")
    sp.add_argument("--underlying")

    sp = add("rollback", cmd_rollback, "re-apply an earlier applied run's values as a new apply event")
    sp.add_argument("--underlying", default="BTC")
    sp.add_argument("--to", help="run id to roll back to (default: the previous applied run)")

    sp = add("import-legacy", cmd_import_legacy, "import the old system's run records into history")
    sp.add_argument("files", nargs="+")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        root = _root(args)
        return int(args.handler(args, root) or 0)
    except CalreportError as exc:
        print(f"calreport: error: {exc.one_line()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("calreport: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except OSError as exc:
        where = f"{exc.filename}: " if getattr(exc, "filename", None) else ""
        print(f"calreport: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a bug: still one line unless asked for the traceback
        if os.environ.get("CALREPORT_DEBUG"):
            raise
        print(
            f"calreport: internal error: {type(exc).__name__}: {' '.join(str(exc).split())} "
            "(set CALREPORT_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 70


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
