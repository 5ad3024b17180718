"""`calreport backtest`: replay the root's harvest through the live calibration and the policy.

Reads the harvest (market.harvest.load_harvest), the root's config and applied values (read only),
and each --variant settings file (store.config.load_config_file); runs the pure core
(calibration/backtest.py); writes backtests/<id>/ (summary.json, decisions.jsonl, variants/<name>.yaml,
index.html). It never writes the applied YAML, the history or site/: `calreport render` links the
page from the dashboard.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from calreport import fmt
from calreport.calibration.auto import parse_lookback
from calreport.calibration.backtest import (
    DEFAULT_MAX_STALENESS_MS,
    IN_SAMPLE,
    Market,
    Progress,
    Variant,
    harvest_rv_at,
    horizon_label,
    run_backtest,
    summarize,
)
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.jsonio import dumps
from calreport.market.harvest import (
    HarvestFrame,
    index_price_per_snapshot,
    load_harvest,
    rv_from_frame,
)
from calreport.market.harvest import Progress as ReadProgress
from calreport.market.rv import WINDOW_DAYS, RealisedVol, manual_rv
from calreport.market.rvsource import resolve_rv
from calreport.model import BacktestDecision, BacktestSummary
from calreport.report.backtest import ROOT_BACK_HREF
from calreport.report.render import render_backtest_page
from calreport.store import applied as applied_store
from calreport.store.config import load_config_file
from calreport.store.files import atomic_write, output_path
from calreport.store.ids import new_run_id
from calreport.timeutil import MS_PER_DAY, iso_ms, iso_utc, parse_time, utc_now

ROOT_VARIANT = "root"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,39}$")


@dataclass(frozen=True)
class BacktestOutcome:
    """What `calreport backtest` made: where, the summary, and the decision rows."""

    id: str
    directory: Path
    summary: BacktestSummary
    decisions: list[dict[str, Any]]


def parse_duration(text: str, option: str) -> int:
    """'1h' / '30m' / '1d' -> milliseconds (the lookback grammar), errors naming the option."""
    try:
        return parse_lookback(text)[1]
    except CalreportError:
        raise CalreportError(f"{option}: expected a length like 1h, 30m or 1d, got {text[:40]!r}") from None


def parse_horizons(text: str) -> list[int]:
    """'1h,6h,24h' -> [3_600_000, ...] (sorted, distinct, each > 0)."""
    parts = [p.strip() for p in str(text).split(",") if p.strip()]
    if not parts:
        raise CalreportError("--horizons: expected lengths like 1h,6h,24h")
    return sorted({parse_duration(p, "--horizons") for p in parts})


def parse_variant(text: str) -> tuple[str, Path]:
    """'NAME=FILE.yaml' -> (name, path); the name becomes a file name, so it is checked."""
    name, sep, path = str(text).partition("=")
    if not sep or not path:
        raise CalreportError(f"--variant: expected NAME=CONFIG.yaml, got {text[:60]!r}")
    if not _NAME_RE.match(name) or name == ROOT_VARIANT:
        raise CalreportError(f"--variant: name {name[:40]!r} must be letters, digits, _ . + - (and not {ROOT_VARIANT!r})")
    return name, Path(path)


def _time_ms(text: str | None, option: str) -> int | None:
    if not text:
        return None
    try:
        return int(parse_time(text).timestamp() * 1000)
    except ValueError as exc:
        raise CalreportError(f"{option}: {exc}") from None


def run(
    ws: Workspace,
    underlying: str,
    *,
    start: str | None = None,
    end: str | None = None,
    every: str = "1h",
    horizons: str = "1h,6h,24h",
    variants: Sequence[str] = (),
    out: Path | None = None,
    mkdir: bool = False,
    rv: float | None = None,
    max_staleness: str | None = None,
    progress: Progress | None = None,
    read_progress: ReadProgress | None = None,
    now: Callable[[], datetime] = utc_now,
) -> BacktestOutcome:
    """The whole command: read, replay, write backtests/<id>/ and its page. Bad arguments are
    one-line errors before anything is read or written."""
    t_start = time.perf_counter()
    root, cfg = ws.root, ws.config
    name = cfg.check_underlying(underlying)
    every_ms = parse_duration(every, "--every")
    horizon_ms = parse_horizons(horizons)
    stale_ms = parse_duration(max_staleness, "--max-staleness") if max_staleness else DEFAULT_MAX_STALENESS_MS
    fixed_rv = manual_rv(rv).rv if rv is not None else None
    parsed = [parse_variant(v) for v in variants]
    names = [n for n, _ in parsed]
    if len(set(names)) != len(names):
        raise CalreportError("--variant: each variant needs its own name")
    from_ms, to_ms = _time_ms(start, "--from"), _time_ms(end, "--to")
    if from_ms is not None and to_ms is not None and to_ms < from_ms:
        raise CalreportError("--to is before --from")
    if out is not None:  # never into the files of record (site/ included: the dashboard is not a backtest)
        out = output_path(root, out, mkdir=mkdir, directory=True)
    start_entry = applied_store.read_applied(root, cfg).entry(name)  # read only: the simulation starts here
    configs = [Variant(ROOT_VARIANT, cfg, start_entry, source=str(root.calibration_config.relative_to(root.path)))]
    configs += [Variant(n, load_config_file(p), start_entry, source=str(p)) for n, p in parsed]

    lo = 0 if from_ms is None else from_ms - int(WINDOW_DAYS * MS_PER_DAY)  # RV needs the week before
    hi = (1 << 62) if to_ms is None else to_ms + horizon_ms[-1] + stale_ms
    frame = load_harvest(root, name, lo, hi, progress=read_progress)
    if len(frame) == 0:
        span = "" if from_ms is None and to_ms is None else f" from {iso_ms(max(lo, 0))}" + (f" to {iso_ms(hi)}" if to_ms is not None else "")
        raise CalreportError(f"no harvested {name} snapshots{span}", root.harvest_dir(name))
    times = frame.snapshot_times()
    first = from_ms if from_ms is not None else int(times[0])
    last = to_ms if to_ms is not None else int(times[-1])
    decisions = list(range(first, last + 1, every_ms))
    if not decisions:
        raise CalreportError("no decision time between --from and --to")
    idx_t, idx_p = index_price_per_snapshot(frame)
    market = Market(frame.to_quotes(), idx_t, idx_p, window_rv=_window_rv(frame))
    harvest_rv = harvest_rv_at(market)

    def rv_at(t_ms: int) -> RealisedVol:  # calibrate's order (price store, then harvest), as of t
        return resolve_rv(root, name, t_ms, None, None, harvest=harvest_rv)

    # single-threaded BLAS: every command runs under cli.main's threadpool limit (why: see there)
    result = run_backtest(
        market, underlying=name, decisions_ms=decisions, horizons_ms=horizon_ms, variants=configs,
        max_staleness_ms=stale_ms, rv=fixed_rv, rv_at=rv_at, progress=progress,
    )
    per_variant = summarize(result, configs, max(last - first, every_ms))

    bt_id = new_run_id()
    directory = out if out is not None else root.backtests_dir / bt_id
    for v in configs:
        per_variant[v.name]["config_file"] = f"variants/{v.name}.yaml"
    summary = BacktestSummary(
        id=bt_id, underlying=name, created=iso_utc(now()), start=iso_ms(first), end=iso_ms(last),
        every=horizon_label(every_ms), horizons=result.horizons, max_staleness_minutes=stale_ms / 60_000,
        rv=fixed_rv, snapshots=result.n_snapshots, rows=result.n_rows,
        elapsed_s=round(time.perf_counter() - t_start, 3), variants=per_variant,
    )
    rows = [d.to_row() for d in result.decisions]
    write_backtest(directory, summary, rows, configs, in_root=out is None)
    return BacktestOutcome(bt_id, directory, summary, rows)


def _window_rv(frame: HarvestFrame) -> Callable[[int], RealisedVol] | None:
    """RV_7d at t exactly as rv_from_harvest gets it (the rows harvested in [t - 7 days, t], through
    harvest.rv_from_frame). Only needed when some snapshot recorded Deribit's index: otherwise the
    forward proxy per snapshot does not depend on the window, and the core's arrays give the same."""
    if not bool(np.isfinite(frame.index_price).any()):
        return None
    t = frame.harvested_at

    def at(end_ms: int) -> RealisedVol:
        start = int(end_ms - WINDOW_DAYS * MS_PER_DAY)
        lo, hi = int(np.searchsorted(t, start, side="left")), int(np.searchsorted(t, end_ms, side="right"))
        return rv_from_frame(frame.take(slice(lo, hi)), end_ms)  # a view of the window's rows

    return at


def write_backtest(
    directory: Path, summary: BacktestSummary, rows: list[dict[str, Any]], variants: Sequence[Variant], *, in_root: bool = True
) -> None:
    """backtests/<id>/: every variant's settings, the decisions, the summary, then the page (each
    file by atomic replace; the summary is written last of the records, so its presence means done)."""
    for v in variants:
        text = yaml.safe_dump(v.config.model_dump(by_alias=True, mode="json"), sort_keys=False)
        atomic_write(directory / "variants" / f"{v.name}.yaml", f"# backtest variant {v.name} (from {v.source})\n{text}".encode())
    atomic_write(directory / "decisions.jsonl", b"".join(dumps(BacktestDecision.model_validate(r).model_dump(mode="json")) + b"\n" for r in rows))
    atomic_write(directory / "summary.json", dumps(summary.model_dump(mode="json")) + b"\n")
    back = ROOT_BACK_HREF if in_root else None
    atomic_write(directory / "index.html", render_backtest_page(summary, rows, back_href=back).encode("utf-8"))


# --------------------------------------------------------------------------- the printed table


def table_lines(summary: BacktestSummary) -> list[str]:
    """One row per variant: per horizon mean / median / p90 OTM IV error (vp), then the policy figures."""
    hs = summary.horizons
    head = ["variant", *[f"{h}{' (in)' if h == IN_SAMPLE else ''} mean/med/p90 vp" for h in hs], "applies", "/day", "mean|step|", "thin RV", "holds"]
    body = []
    for name, v in summary.variants.items():
        cells = [name]
        for h in hs:
            s = v["horizons"].get(h, {}).get("iv_error_vp", {})
            cells.append("/".join(fmt.num(s.get(k), 2) for k in ("mean", "median", "p90")) + f" (n={s.get('n', 0)})")
        holds = ", ".join(f"{k} {n}" for k, n in v["holds"].items()) or "none"
        share = v.get("thin_rv_share")
        cells += [f"{v['applies']}/{v['runs']}", fmt.num(v["applies_per_day"], 2), fmt.num(v["mean_abs_step"], 4),
                  "-" if share is None else f"{share * 100:.0f} %", holds]
        body.append(cells)
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return [line(head), *(line(r) for r in body)]
