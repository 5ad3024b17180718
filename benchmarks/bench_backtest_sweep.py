"""`python -m benchmarks.bench_backtest_sweep [--days 60] [--every 1h] [--workers 1,2]`: a sweep of 12 variants
(smoothing.half_life_hours 0.5 / 1 / 4 x policy.min_delta 0.01 / 0.03 x policy.significant_se 1 / 2, plus the
root's config as 'root': see GRID) over generated days (market/sample.py, seed 7), a decision every `--every`,
horizons 1h/6h/24h, run through `calreport backtest --generated` on 1 and on 2 local worker processes.

Prints wall time per worker count, the cost per decision x variant, whether the decisions files
are byte-identical, the 24 h mark and truth errors per variant, and the projection to a year of
5-minute harvest for 2 underlyings (decisions every 5 minutes: 105,120 per underlying per variant).
Not part of `python -m benchmarks` (minutes, not seconds).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from threadpoolctl import threadpool_limits

from calreport.commands import backtest as backtest_cmd
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.store.paths import Root

GRID = ["smoothing.half_life_hours=0.5,1,4", "policy.min_delta=0.01,0.03", "policy.significant_se=1,2"]  # 12 variants
# smoothing.alpha only counts when half_life_hours is null (the default smooths by a 1 h half-life), and
# fit.objective no longer moves the applied surface (the surface is fitted on OTM IVs whatever the objective:
# a sweep over it gave byte-identical scores), so the third axis is the policy's apply-whole threshold.


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=float, default=60)
    ap.add_argument("--workers", default="1,2")
    ap.add_argument("--underlying", default="BTC")
    ap.add_argument("--every", default="1h", help="decision cadence (1h: the issue's hourly run)")
    ap.add_argument("--keep", type=Path, help="copy the last run's summary.json here (paired differences and all)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, threadpool_limits(limits=1):
        root = Root(Path(tmp) / "root")
        actions.init(Workspace.open(root, renderer=None))
        ws = Workspace.open(root, renderer=None)
        digests = {}
        for w in (int(x) for x in args.workers.split(",")):
            t0 = time.perf_counter()
            out = backtest_cmd.run(ws, args.underlying, generated=args.days, every=args.every, horizons="1h,6h,24h", sweep=GRID,
                                   workers=w, out=Path(tmp) / f"w{w}", mkdir=True)
            secs = time.perf_counter() - t0
            s = out.summary
            grid_variants = [n for n in s.variants if n != "root"]
            decisions = s.variants["root"]["decisions"]
            per = secs / (decisions * len(grid_variants) + decisions)
            digests[w] = (out.directory / "decisions.jsonl").read_bytes()
            print(f"workers {w}: every {args.every}, {args.days:g} days: {secs:.1f} s for {len(s.variants)} variants x {decisions} decisions; {per * 1000:.1f} ms per decision x variant (wall)")
            if args.keep:
                args.keep.write_bytes((out.directory / "summary.json").read_bytes())
            if w == 1:
                year = 2 * 365 * 288 * len(s.variants) * per
                print(f"projection, a year of 5-minute decisions for 2 underlyings x {len(s.variants)} variants: {year / 3600:.1f} h on 1 worker")
            if w == int(args.workers.split(",")[-1]):
                print("variant: mean OTM IV error vs marks / vs the true surface (vp) per horizon; applies / runs")
                for n, v in s.variants.items():
                    cells = []
                    for name, h in v["horizons"].items():
                        t = (h.get("truth_error_vp") or {}).get("mean")
                        cells.append(f"{name} {h['iv_error_vp']['mean']:.3f}/{'-' if t is None else f'{t:.3f}'}")
                    print(f"  {n:50s} {'  '.join(cells)}  applies {v['applies']}/{v['runs']}")
        first = next(iter(digests.values()))
        print("decisions.jsonl identical across worker counts:", all(d == first for d in digests.values()))


if __name__ == "__main__":
    main()
