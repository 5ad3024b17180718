"""Render time and page size of the dashboard for long histories.

    python -m benchmarks.render_root [N ...]      (default: 1000 100000)

Builds a throwaway root with N history rows (N/2 live runs, every 10th applied, plus N/2 auto runs),
then renders: cold (no history cache, every history page written), one-shot as `calreport render`
in a fresh process (history index loaded from data/cache/history, only shown rows parsed, only
changed pages written), the same after one appended row (only that line parsed), in-process warm,
and as `calreport serve` re-renders after one more append (index kept in memory). Also times
history.read_history of both files: what every one-shot render paid before the index cache.
Prints where the time goes.

It lives with the benchmarks, not in calreport/report/: it drives the `init` use case, and the
report layer imports nothing from commands/.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import (
    AppliedEntry,
    ApplyEvent,
    AutoRun,
    DataQuality,
    LiveRun,
    Multipliers,
)
from calreport.report.render import render_site
from calreport.store.applied import format_applied, read_applied
from calreport.store.files import atomic_write
from calreport.store.history import append_row, dumps_row, read_history
from calreport.store.ids import new_run_id
from calreport.store.paths import Root
from calreport.store.query import HistoryCache
from calreport.timeutil import MS_PER_MIN, iso_ms


def build_root(path: Path, n: int, seed: int = 7) -> Root:
    rng = random.Random(seed)
    root = Root(path)
    actions.init(Workspace.open(root))
    t0 = 1_765_000_000_000
    live, auto = bytearray(), bytearray()
    applied = 1.0
    last_run = None
    for i in range(n):
        u = "BTC" if i % 2 == 0 else "ETH"
        ts_ms = t0 + i * MS_PER_MIN
        rid = new_run_id(ts_ms)
        rec = round(rng.uniform(0.85, 1.25), 4)
        sm = round(0.3 * rec + 0.7 * applied, 4)
        run = LiveRun(
            schema_version=1, run_id=rid, ts=iso_ms(ts_ms),
            underlying=u, multiplier_tested=applied, rv_7d=0.43, atm_iv=0.42, recommended=Multipliers(global_=rec),
            smoothed=Multipliers(global_=sm, bands={"0-7d": sm}), mae_pct=rng.uniform(8, 30),
            vega_weighted_mae_pct=rng.uniform(6, 20), samples=rng.randint(20, 400), status="ok",
            reason="Calibration within thresholds", decision="apply" if i % 10 == 0 else "hold",
            decision_reason="change above threshold" if i % 10 == 0 else "change below threshold",
        )
        live += dumps_row(run)
        if i % 10 == 0:
            live += dumps_row(ApplyEvent(schema_version=1, run_id=rid, ts=run.ts, underlying=u,
                                         previous=Multipliers(global_=applied), applied=Multipliers(global_=sm, bands={"0-7d": sm}),
                                         source="policy", reason="policy"))
            applied, last_run = sm, (u, rid, run.ts)
        a = AutoRun(
            schema_version=1, run_id=new_run_id(ts_ms), ts=run.ts, underlying=u, dte_min=3, dte_max=10, lookback="14d",
            multiplier=round(rng.uniform(0.5, 1.6), 4), mae_pct=rng.uniform(10, 500), vega_weighted_mae_pct=rng.uniform(5, 50),
            samples=rng.randint(500, 3000), data_quality=DataQuality(status="ok"), status=rng.choice(["ok", "ok", "degraded", "failed"]),
            reason="Calibration within thresholds",
        )
        auto += dumps_row(a)
    root.live_history.write_bytes(bytes(live))
    root.auto_history.write_bytes(bytes(auto))
    if last_run is not None:  # make the YAML agree with the last apply event
        u, rid, ts = last_run
        doc = read_applied(root)
        entry = AppliedEntry(global_=applied, bands={"0-7d": applied}, updated_at=ts, source="policy", run_id=rid, reason="policy")
        atomic_write(root.applied, format_applied(doc.model_copy(update={"underlyings": {**doc.underlyings, u: entry}})).encode())
    return root


def _fresh_process_render(root: Root) -> float:
    """Wall time of `python -m calreport --root ROOT render` (imports included)."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "calreport", "--root", str(root.path), "render"], check=True,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def _append_auto(root: Root, ts: str) -> None:
    append_row(root.auto_history, AutoRun(schema_version=1, run_id=new_run_id(), ts=ts, underlying="BTC",
                                          multiplier=1.1, status="ok", reason="appended"))


def measure(n: int) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        root = build_root(Path(tmp) / "root", n // 2)
        t = time.perf_counter()
        read_history(root.live_history), read_history(root.auto_history)
        full_parse_s = time.perf_counter() - t
        t = time.perf_counter()
        cold = render_site(root)
        cold_s = time.perf_counter() - t
        oneshot_s = _fresh_process_render(root)
        _append_auto(root, "2030-01-01T00:00:00Z")
        oneshot_append_s = _fresh_process_render(root)
        t = time.perf_counter()
        warm = render_site(root)
        warm_s = time.perf_counter() - t
        cache = HistoryCache()
        render_site(root, cache=cache)
        _append_auto(root, "2030-01-01T00:01:00Z")
        t = time.perf_counter()
        served = render_site(root, cache=cache)
        served_s = time.perf_counter() - t
        site = sum(p.stat().st_size for p in root.site_dir.rglob("*") if p.is_file())
        index_cache = sum(p.stat().st_size for p in (root.cache_dir / "history").glob("*.index"))
        return {"rows": n, "cold_s": cold_s, "oneshot_s": oneshot_s, "oneshot_append_s": oneshot_append_s,
                "warm_s": warm_s, "index_bytes": warm.index_bytes, "site_bytes": site, "cache_bytes": index_cache,
                "pages": cold.pages_total, "warm_pages_written": warm.pages_written, "served_s": served_s,
                "full_parse_s": full_parse_s, "cold": cold.timings, "warm": warm.timings, "served": served.timings}


def main(argv: list[str]) -> int:
    sizes = [int(a) for a in argv] or [1000, 100_000]
    for n in sizes:
        r = measure(n)
        print(f"{n:>7} history rows: index.html {r['index_bytes'] / 1e6:.2f} MB, site {r['site_bytes'] / 1e6:.1f} MB "
              f"in {r['pages']} history pages, history index cache {r['cache_bytes'] / 1e6:.1f} MB")
        print(f"          cold first render (no cache, every page) {r['cold_s']:.2f} s; "
              f"one-shot `calreport render` in a fresh process {r['oneshot_s']:.2f} s, "
              f"after one append {r['oneshot_append_s']:.2f} s; in-process warm {r['warm_s']:.2f} s "
              f"({r['warm_pages_written']} pages rewritten); serve re-render after an append {r['served_s']:.2f} s")
        print(f"          (before the index cache every one-shot parsed all rows: read_history of both files "
              f"{r['full_parse_s']:.2f} s)")
        for label in ("cold", "warm", "served"):
            parts = ", ".join(f"{k} {v:.3f}" for k, v in r[label].items())  # type: ignore[union-attr]
            print(f"          {label}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
