"""`calreport backtest`: replay the root's harvest through the live calibration and the policy.

Reads the harvest (market.harvest.load_harvest), the root's config and applied values (read only),
and each --variant settings file (store.config.load_config_file); runs the pure core
(calibration/backtest.py); writes backtests/<id>/ (summary.json, decisions.jsonl, variants/<name>.yaml,
index.html). It never writes the applied YAML, the history or site/: `calreport render` links the
page from the dashboard.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
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
    in_process,
    paired_differences,
    replay_variant,
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
from calreport.market.sample import SampleMarket
from calreport.model import BacktestDecision, BacktestSummary, CalibrationConfig, default_entry
from calreport.report.backtest import ROOT_BACK_HREF
from calreport.report.render import render_backtest_page
from calreport.store import applied as applied_store
from calreport.store.config import load_config_file
from calreport.store.files import atomic_write, output_path
from calreport.store.ids import new_run_id
from calreport.timeutil import MS_PER_DAY, MS_PER_HOUR, iso_ms, iso_utc, parse_time, utc_now

ROOT_VARIANT = "root"
SCHEDULER_TIMEOUT = "10s"  # how long `--scheduler` keeps trying to reach the Dask scheduler before one line says it cannot
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
    sweep: Sequence[str] = (),
    workers: int | None = None,
    scheduler: str | None = None,
    generated: float | None = None,
    seed: int = 7,
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
    grid = parse_sweeps(sweep)
    if workers is not None and workers < 1:
        raise CalreportError("--workers: expected 1 or more")
    if scheduler is not None and not re.match(r"^(tcp|tls|inproc|ucx)://\S+$", scheduler):
        raise CalreportError(f"--scheduler: expected tcp://HOST:PORT, got {scheduler[:60]!r}")
    if generated is not None and not 0 < generated <= 3660:
        raise CalreportError("--generated: expected a number of days between 0 and 3660")
    from_ms, to_ms = _time_ms(start, "--from"), _time_ms(end, "--to")
    if from_ms is not None and to_ms is not None and to_ms < from_ms:
        raise CalreportError("--to is before --from")
    if out is not None:  # never into the files of record (site/ included: the dashboard is not a backtest)
        out = output_path(root, out, mkdir=mkdir, directory=True)
    start_entry = applied_store.read_applied(root, cfg).entry(name)  # read only: the simulation starts here
    if generated is not None:
        start_entry = default_entry()  # a generated market owes nothing to the root's applied values
    swept = _sweep_combinations(cfg, grid)
    as_root = [src for _, c, src in swept if c == cfg]  # a swept combination that is the root's own settings
    root_source = str(root.calibration_config.relative_to(root.path)) + (f" (also the sweep's {'; '.join(as_root)})" if as_root else "")
    configs = [Variant(ROOT_VARIANT, cfg, start_entry, source=root_source)]
    configs += [Variant(n, load_config_file(p), start_entry, source=str(p)) for n, p in parsed]
    configs += [Variant(n, c, start_entry, source=f"sweep {src}") for n, c, src in swept if c != cfg]
    names = [v.name for v in configs]
    if len(set(names)) != len(names):
        raise CalreportError("--variant/--sweep: each variant needs its own name")
    if generated is not None:
        return _finish(ws, name, configs, *_generated_market(name, generated, seed, every_ms, from_ms), horizon_ms, stale_ms, fixed_rv,
                       None, progress, now, t_start, out, every_ms, workers, scheduler, grid,
                       {"days": generated, "seed": seed, "every_minutes": every_ms / 60_000})

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

    return _finish(ws, name, configs, market, decisions, first, last, horizon_ms, stale_ms, fixed_rv, rv_at, progress, now, t_start, out,
                   every_ms, workers, scheduler, grid, None)


def _finish(
    ws: Workspace, name: str, configs: list[Variant], market: Market, decisions: list[int], first: int, last: int,
    horizon_ms: list[int], stale_ms: int, fixed_rv: float | None, rv_at: Callable[[int], RealisedVol] | None,
    progress: Progress | None, now: Callable[[], datetime], t_start: float, out: Path | None, every_ms: int,
    workers: int | None, scheduler: str | None, grid: list[tuple[str, list[Any]]], generated: dict[str, Any] | None,
) -> BacktestOutcome:
    """Replay (in process, on a local pool or on a Dask cluster), summarise, write."""
    root = ws.root
    n_workers = min(len(configs), workers if workers is not None else (os.cpu_count() or 1))
    with variant_runner(n_workers, scheduler) as (mapper, label):
        # single-threaded BLAS: every command runs under cli.main's threadpool limit (why: see there)
        result = run_backtest(
            market, underlying=name, decisions_ms=decisions, horizons_ms=horizon_ms, variants=configs,
            max_staleness_ms=stale_ms, rv=fixed_rv, rv_at=rv_at, progress=progress, mapper=mapper,
        )
    per_variant = summarize(result, configs, max(last - first, every_ms))
    differences = paired_differences(result, [v.name for v in configs], every_ms)

    bt_id = new_run_id()
    directory = out if out is not None else root.backtests_dir / bt_id
    for v in configs:
        per_variant[v.name]["config_file"] = f"variants/{v.name}.yaml"
    summary = BacktestSummary(
        id=bt_id, underlying=name, created=iso_utc(now()), start=iso_ms(first), end=iso_ms(last),
        every=horizon_label(every_ms), horizons=result.horizons, max_staleness_minutes=stale_ms / 60_000,
        rv=fixed_rv, snapshots=result.n_snapshots, rows=result.n_rows,
        elapsed_s=round(time.perf_counter() - t_start, 3), variants=per_variant, differences=differences,
        generated=generated, sweep={k: v for k, v in grid} or None, workers=label,
    )
    rows = [d.to_row() for d in result.decisions]
    write_backtest(directory, summary, rows, configs, in_root=out is None)
    return BacktestOutcome(bt_id, directory, summary, rows)


# --------------------------------------------------------------------------- sweeps


def parse_sweeps(texts: Sequence[str]) -> list[tuple[str, list[Any]]]:
    """['alpha=0.3,0.5,1', 'smoothing.half_life_hours=2,6'] -> [(key, [values])] (values read as YAML scalars)."""
    out: list[tuple[str, list[Any]]] = []
    for text in texts:
        key, sep, values = str(text).partition("=")
        key = key.strip()
        parts = [v.strip() for v in values.split(",") if v.strip()]
        if not sep or not key or not parts or not re.match(r"^[A-Za-z_][A-Za-z0-9_.]*$", key):
            raise CalreportError(f"--sweep: expected KEY=V1,V2,... (KEY a setting, e.g. smoothing.alpha), got {str(text)[:60]!r}")
        if any(k == key for k, _ in out):
            raise CalreportError(f"--sweep: {key} given twice")
        out.append((key, [yaml.safe_load(v) for v in parts]))
    return out


def _paths(tree: Any, prefix: str = "") -> Iterator[str]:
    if isinstance(tree, dict):
        for k, v in tree.items():
            path = f"{prefix}{k}"
            yield path
            yield from _paths(v, path + ".")


def resolve_setting(cfg: CalibrationConfig, key: str) -> str:
    """A setting by dotted path ('smoothing.alpha'), or by its last part when that names one setting ('alpha')."""
    paths = list(_paths(cfg.model_dump(by_alias=True, mode="json")))
    if key in paths:
        return key
    hits = [p for p in paths if p.rsplit(".", 1)[-1] == key]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise CalreportError(f"--sweep: {key} is ambiguous ({', '.join(hits)}): give the dotted path")
    raise CalreportError(f"--sweep: no setting {key!r} in the calibration config")


def sweep_configs(cfg: CalibrationConfig, grid: list[tuple[str, list[Any]]]) -> list[tuple[str, CalibrationConfig, str]]:
    """Every combination of the swept values over the root's config but the root's own settings (the root
    variant is that one; a second copy would replay the same decisions under another name): (name, config, what was set)."""
    return [made for made in _sweep_combinations(cfg, grid) if made[1] != cfg]


def _sweep_combinations(cfg: CalibrationConfig, grid: list[tuple[str, list[Any]]]) -> list[tuple[str, CalibrationConfig, str]]:
    """Every combination of the swept values over the root's config: (name, config, what was set)."""
    if not grid:
        return []
    paths = [resolve_setting(cfg, k) for k, _ in grid]
    combos: list[list[tuple[str, Any]]] = [[]]
    for path, (_, values) in zip(paths, grid):  # a grid of a few settings x a few values
        combos = [c + [(path, v)] for c in combos for v in values]
    out = []
    for combo in combos:
        tree = cfg.model_dump(by_alias=True, mode="json")
        for path, value in combo:
            node = tree
            *parents, leaf = path.split(".")
            for p in parents:
                node = node[p]
            node[leaf] = value
        text = ", ".join(f"{p}={v}" for p, v in combo)
        try:
            variant_cfg = CalibrationConfig.model_validate(tree)
        except ValueError as exc:
            first = str(exc).splitlines()
            raise CalreportError(f"--sweep: {text}: {first[2].strip() if len(first) > 2 else first[0]}") from None
        name = "+".join(f"{p.rsplit('.', 1)[-1]}{v}" for p, v in combo)
        out.append((re.sub(r"[^A-Za-z0-9_.+-]", "_", name)[:60], variant_cfg, text))
    return out


# --------------------------------------------------------------------------- who runs the variants


@contextmanager
def variant_runner(workers: int, scheduler: str | None) -> Iterator[tuple[Any, str]]:
    """(mapper, label): the variants of a backtest are independent (each replays its own decisions in
    order), so they run side by side: on a Dask cluster (`scheduler`), on a local process pool
    (`workers` > 1), or here. Each variant's decisions are computed the same way wherever it runs,
    and the results are put back in variant order, so the files written do not depend on the runner."""
    if scheduler is not None:
        try:
            from distributed import Client  # noqa: PLC0415 - optional: only a --scheduler run needs it
        except ImportError:
            raise CalreportError("--scheduler needs dask.distributed (pip install 'dask[distributed]')") from None
        try:
            client = Client(scheduler, timeout=SCHEDULER_TIMEOUT, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise CalreportError(f"--scheduler: cannot reach {scheduler}: {exc}") from None
        try:
            yield dask_mapper(client), scheduler
        finally:
            client.close()
        return
    if workers <= 1:
        yield in_process, "in-process"
        return
    yield pool_mapper(workers), f"pool:{workers}"


_JOB: Any = None  # a pool worker's replay job, set once when the worker starts


def _set_job(job: Any) -> None:
    global _JOB
    _JOB = job


def _replay_in_worker(variant: Variant) -> list[Any]:
    return replay_variant(_JOB, variant)


def pool_mapper(workers: int) -> Any:
    """A local process pool per backtest: each worker gets the replay job (the market arrays) once,
    when it starts (inherited by fork where the platform forks), then one task per variant."""

    def run(fn: Any, variants: Sequence[Variant]) -> list[Any]:
        job = fn.args[0]  # partial(replay_variant, job)
        with ProcessPoolExecutor(max_workers=workers, initializer=_set_job, initargs=(job,)) as pool:
            return list(pool.map(_replay_in_worker, variants))  # pool.map keeps the order

    return run


def dask_mapper(client: Any) -> Any:
    """Scatter the replay job (the market arrays) once, then one task per variant."""

    def run(fn: Any, variants: Sequence[Variant]) -> list[Any]:
        job = fn.args[0]  # partial(replay_variant, job)
        [remote] = client.scatter([job], broadcast=True, hash=False)
        futures = [client.submit(replay_variant, remote, v, pure=False) for v in variants]
        return client.gather(futures)

    return run


# --------------------------------------------------------------------------- a generated market (known truth)

GENERATED_START_MS = 1_735_689_600_000  # 2025-01-01T00:00Z: a fixed start, so a seed names one market


def _generated_market(
    name: str, days: float, seed: int, every_ms: int, from_ms: int | None
) -> tuple[Market, list[int], int, int]:
    """(market with its true surface, decision times, first, last): market/sample.py's seeded market
    over `days`, a snapshot at every decision time, the index every hour from a week before (RV_7d)."""
    if name not in ("BTC", "ETH"):
        raise CalreportError(f"--generated: a generated market exists for BTC and ETH, not {name}")
    first = GENERATED_START_MS if from_ms is None else from_ms // every_ms * every_ms
    last = first + int(days * MS_PER_DAY)
    sample = SampleMarket(name, first, last + MS_PER_DAY, seed=seed)
    times = np.arange(first, last + 1, every_ms, dtype=np.int64)
    scored_to = last + 2 * MS_PER_DAY  # horizons past the last decision have snapshots too
    snaps = np.arange(first, min(scored_to, sample.t1) + 1, every_ms, dtype=np.int64)
    index_t = np.arange(first - 8 * MS_PER_DAY, int(snaps[-1]) + 1, MS_PER_HOUR, dtype=np.int64)
    index_t = index_t[index_t >= sample.t0]
    market = Market(sample.quotes(snaps), index_t, np.array([sample.spot(int(t)) for t in index_t]), truth=sample.true_iv)
    return market, [int(t) for t in times], first, last


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
    return [line(head), *(line(r) for r in body), *skipped_lines(summary)]


def skipped_lines(summary: BacktestSummary) -> list[str]:
    """Why decisions scored nothing ("0/0 ... holds none" alone reads as a policy that never acted): one line
    for all variants when they skipped alike (the market data decides it), else one per variant that skipped."""
    def line(label: str, v: dict[str, Any]) -> str:
        sk = v["skipped"]
        reasons = ", ".join(f"{reason} {n}" for reason, n in sk.items())
        return f"{label}: {sum(sk.values())} of {v.get('decisions', '?')} decisions: {reasons}"

    skipping = {name: v for name, v in summary.variants.items() if v.get("skipped")}
    if not skipping:
        return []
    first = next(iter(summary.variants.values()))
    if len(skipping) == len(summary.variants) and all(v["skipped"] == first["skipped"] for v in skipping.values()):
        return [line("skipped", first)]
    return [line(f"skipped ({name})", v) for name, v in skipping.items()]


def difference_lines(summary: BacktestSummary) -> list[str]:
    """One line per paired difference: horizon, a - b, decisions, mean and 95 % interval, verdict."""
    out = []
    for d in summary.differences:
        interval = "no interval" if d.low is None else f"[{fmt.num(d.low, 3)}, {fmt.num(d.high, 3)}]"
        out.append(f"{d.horizon:>4}  {d.a} - {d.b}: {fmt.num(d.mean, 3)} vp {interval} over {d.n} decisions: {d.verdict}")
    return out
