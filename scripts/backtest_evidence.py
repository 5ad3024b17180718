#!/usr/bin/env python3
"""Rerun the backtests behind the defaults in CALIBRATION_NOTES.md ("Walk-forward backtest: evidence").

    python scripts/backtest_evidence.py [--underlying BTC|ETH] [--harvest ../shared/data/deribit-harvest-2025-12]
                                        [--extra NAME=YAML ...]

Builds throw-away roots in a temporary directory (the underlying's shared harvest copied in; a generated
sample market of the same underlying), runs `calreport backtest` with every variant below in each scenario, and prints one
Markdown table per scenario (mean OTM IV error in vol points in-sample / +1h / +6h / +24h, the same
at +1h / +24h over the second half of the decisions only (the cold start from the root's applied
values left out), applies, mean |step|, thin-RV share, holds). Nothing outside the temporary directory is written.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from calreport.commands import usecases as actions  # noqa: E402
from calreport.commands.cli import main  # noqa: E402
from calreport.commands.workspace import Workspace  # noqa: E402
from calreport.market.sample import MS_PER_DAY, SampleMarket, write_harvest  # noqa: E402
from calreport.model import CalibrationConfig  # noqa: E402
from calreport.store.paths import Root  # noqa: E402
from calreport.timeutil import iso_ms  # noqa: E402

VARIANTS = {
    "flat": "smile: {enabled: false}\n",
    "alpha1": "smoothing: {alpha: 1.0}\n",
    "alpha0.5": "smoothing: {alpha: 0.5}\n",
    "half_life12h": "smoothing: {alpha: 0.3, half_life_hours: 12}\n",
    "min_delta0.01": "policy: {min_delta: 0.01}\n",
    "step0.10": "policy: {max_rel_step: 0.10}\n",
    "otm_iv_fit": "fit: {objective: otm_iv_vega}\n",
    "thin_rv_ok": "fit: {min_rv_returns: 12}\n",
}
if "sigma_mode" in CalibrationConfig.model_fields:  # sigma modes, where the code has them
    VARIANTS["atm_iv"] = "sigma_mode: atm_iv\n"
SAMPLE_END = 1_765_540_800_000  # 2025-12-12T12:00Z
# Fixed RVs per underlying, bracketing the harvest's ATM IV (5-40 day expiries, median over the
# snapshots): BTC about 0.43, ETH about 0.65. The first is also the one of the 15-minute run.
FIXED_RV = {"BTC": ("0.45", "0.40"), "ETH": ("0.65", "0.60")}


def _root(base: Path, name: str) -> Root:
    root = Root(base / name)
    actions.init(Workspace.open(root, renderer=None))
    return root


def _run(root: Root, variants: dict[str, Path], args: list[str], underlying: str = "BTC") -> dict:
    argv = ["--root", str(root.path), "backtest", "--underlying", underlying, *args]
    for name, path in variants.items():
        argv += ["--variant", f"{name}={path}"]
    with contextlib.redirect_stdout(io.StringIO()):
        if main(argv) != 0:
            raise SystemExit(f"backtest failed: {' '.join(argv)}")
    d = max(root.backtests_dir.iterdir())
    summary = json.loads((d / "summary.json").read_text())
    rows = [json.loads(ln) for ln in (d / "decisions.jsonl").read_text().splitlines()]
    half = sorted({r["decision_ts"] for r in rows})[len({r["decision_ts"] for r in rows}) // 2]
    for name, v in summary["variants"].items():  # the second half only: the cold start from the root's values left out
        late = [r for r in rows if r["variant"] == name and r["decision_ts"] >= half]
        for h in ("1h", "24h"):
            vals = [r["scores"][h]["iv_error_vp"] for r in late if (r.get("scores") or {}).get(h, {}).get("iv_error_vp") is not None]
            v.setdefault("late", {})[h] = (float(np.mean(vals)), len(vals)) if vals else (None, 0)
    return summary


def table(title: str, summary: dict) -> list[str]:
    hs = summary["horizons"]
    head = ["variant", *[("in-sample" if h == "0h" else f"+{h}") for h in hs], "2nd half +1h / +24h", "+24h OTM price err %", "applies / runs",
            "mean abs step", "thin RV", "holds"]
    out = [f"**{title}** ({summary['start']} to {summary['end']}, every {summary['every']}, "
           f"RV {'fixed ' + str(summary['rv']) if summary['rv'] is not None else 'from the harvest'})", "",
           "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in summary["variants"].items():
        cells = [name]
        for h in hs:
            s = v["horizons"][h]["iv_error_vp"]
            cells.append("-" if s["mean"] is None else f"{s['mean']:.2f} (n={s['n']})")
        late = v.get("late", {})
        cells.append(" / ".join("-" if late.get(h, (None, 0))[0] is None else f"{late[h][0]:.2f}" for h in ("1h", "24h")))
        p = v["horizons"].get("24h", {}).get("otm_vega_weighted_mae_pct", {}).get("mean")
        cells.append("-" if p is None else f"{p:.1f}")
        cells.append(f"{v['applies']} / {v['runs']}")
        cells.append("-" if v["mean_abs_step"] is None else f"{v['mean_abs_step']:.4f}")
        cells.append("-" if v["thin_rv_share"] is None else f"{v['thin_rv_share'] * 100:.0f} %")
        cells.append(", ".join(f"{k} {n}" for k, n in v["holds"].items()) or "none")
        out.append("| " + " | ".join(cells) + " |")
    return out + [""]


def main_(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--harvest", default=str(Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-harvest-2025-12"))
    p.add_argument("--underlying", default="BTC", choices=sorted(FIXED_RV), help="which harvest and sample market (default BTC)")
    p.add_argument("--extra", action="append", default=[], metavar="NAME=YAML", help="another variant as inline YAML")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="calreport-evidence-") as tmp:
        base = Path(tmp)
        files = {}
        for name, text in {**VARIANTS, **dict(e.split("=", 1) for e in args.extra)}.items():
            files[name] = base / f"{name}.yaml"
            files[name].write_text(text)
        lines: list[str] = []
        u = args.underlying
        rvs = FIXED_RV[u]
        src = Path(args.harvest) / u
        if src.is_dir():
            shared = _root(base, "shared")
            shutil.copytree(src, shared.harvest_dir(u))
            window = ["--from", "2025-12-10T00:00:00Z", "--to", "2025-12-13T16:00:00Z", "--every", "1h", "--horizons", "1h,6h,24h"]
            lines += table(f"Shared {u} harvest, RV from the harvest", _run(shared, files, window, u))
            for rv in rvs:
                lines += table(f"Shared {u} harvest, RV fixed at {rv}", _run(shared, files, [*window, "--rv", rv], u))
            dense = [*window[:4], "--every", "15m", *window[6:], "--rv", rvs[0]]  # 4x the decisions where the harvest has data
            lines += table(f"Shared {u} harvest, RV fixed at {rvs[0]}, decisions every 15 min", _run(shared, files, dense, u))
        else:
            print(f"(no shared harvest at {src}; sample market only)", file=sys.stderr)
        sample = _root(base, "sample")
        m = SampleMarket(u, SAMPLE_END - 10 * MS_PER_DAY, SAMPLE_END + MS_PER_DAY, seed=7)
        write_harvest(sample, m, m.harvest_times(SAMPLE_END - 10 * MS_PER_DAY, SAMPLE_END + MS_PER_DAY, interval_minutes=15))
        window = ["--from", iso_ms(SAMPLE_END - 3 * MS_PER_DAY), "--to", iso_ms(SAMPLE_END), "--every", "1h", "--horizons", "1h,6h,24h"]
        title = "Generated sample market" if u == "BTC" else f"Generated {u} sample market"
        lines += table(f"{title} (seed 7, 15-min harvest), RV from the harvest", _run(sample, files, window, u))
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    np.seterr(all="ignore")
    sys.exit(main_())
