"""The page of one backtest (backtests/<id>/index.html, copied to site/backtests/<id>.html by render).

View objects are built from the stored summary and decision rows (pure), then filled into
templates/backtest.html.j2: per horizon, the OTM IV error of each variant over decision time
(inline SVG, table beneath), the summary table, the settings.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from calreport import fmt
from calreport.calibration.backtest import IN_SAMPLE, NO_EVIDENCE
from calreport.jsonio import loads
from calreport.model import BacktestSummary
from calreport.report import charts
from calreport.store.files import atomic_write
from calreport.store.paths import Root
from calreport.timeutil import time_ms

MEASURE_LABELS = {
    "iv_error_vp": ("OTM IV error", "vp"),
    "otm_vega_weighted_mae_pct": ("OTM vega-weighted price error", "%"),
    "all_vega_weighted_mae_pct": ("all-quote vega-weighted price error", "%"),
}


@dataclass(frozen=True)
class PolicyRow:
    """One variant's policy figures."""

    variant: str
    applies: str
    per_day: str
    mean_step: str
    thin_rv: str
    holds: str
    skipped: str
    source: str


@dataclass(frozen=True)
class BacktestPage:
    id: str
    title: str
    settings: list[tuple[str, str]]
    charts: list[charts.Chart]
    policy_rows: list[PolicyRow]
    error_headers: list[str]
    error_rows: list[list[str]]  # variant, horizon, per measure "mean / median / p90", paired in-sample mean
    band_headers: list[str] = field(default_factory=list)
    band_rows: list[list[str]] = field(default_factory=list)
    back_href: str | None = None
    difference_rows: list[DifferenceRow] = field(default_factory=list)


@dataclass(frozen=True)
class DifferenceRow:
    """One paired difference: a - b at one horizon, its interval and verdict (greyed without an interval)."""

    horizon: str
    pair: str
    n: str
    mean: str
    interval: str
    block: str
    verdict: str
    muted: bool


def _stat(s: dict[str, Any] | None) -> str:
    s = s or {}
    return " / ".join(fmt.num(s.get(k), 2) for k in ("mean", "median", "p90")) + f" (n={s.get('n', 0)})"


def _every_s(summary: BacktestSummary) -> float:
    m = re.match(r"^(\d+)([hm])$", summary.every)
    return (int(m[1]) * (3600 if m[2] == "h" else 60)) if m else 3600.0


def backtest_page(summary: BacktestSummary, rows: Sequence[dict[str, Any]], *, back_href: str | None) -> BacktestPage:
    """The view of one backtest: error and policy tables, per-band table, charts per horizon, settings."""
    hs = summary.horizons
    measures = list(MEASURE_LABELS)
    error_headers = ["Variant", "Horizon"] + [f"{MEASURE_LABELS[m][0]} ({MEASURE_LABELS[m][1]}) mean / median / p90" for m in measures]
    error_headers.append("In-sample OTM IV error on the same decisions (vp)")
    truth = any("truth_error_vp" in (v.get("horizons", {}).get(h) or {}) for v in summary.variants.values() for h in hs)
    if truth:
        error_headers.append("Distance from the true surface (vp) mean / median / p90")
    policy_rows: list[PolicyRow] = []
    error_rows: list[list[str]] = []
    band_rows: list[list[str]] = []
    bands: list[str] = []
    for name, v in summary.variants.items():
        hz = v.get("horizons", {})
        share = v.get("thin_rv_share")
        policy_rows.append(PolicyRow(
            variant=name,
            applies=f"{v.get('applies', 0)} of {v.get('runs', 0)} runs",
            per_day=fmt.num(v.get("applies_per_day"), 2),
            mean_step=fmt.num(v.get("mean_abs_step"), 4),
            thin_rv="-" if share is None else f"{share * 100:.0f} % ({v.get('thin_rv_runs', 0)} runs)",
            holds=", ".join(f"{k}: {n}" for k, n in (v.get("holds") or {}).items()) or "none",
            skipped=", ".join(f"{k}: {n}" for k, n in (v.get("skipped") or {}).items()) or "none",
            source=str(v.get("source", "")),
        ))
        for h in hs:
            cell = hz.get(h, {})
            label = f"{h} (in-sample)" if h == IN_SAMPLE else f"+{h}"
            error_rows.append([name, label, *(_stat(cell.get(m)) for m in measures), fmt.num(cell.get("paired_in_sample_mean"), 2),
                               *([_stat(cell.get("truth_error_vp"))] if truth else [])])
            for b in cell.get("by_band") or {}:
                if b not in bands:
                    bands.append(b)
    for name, v in summary.variants.items():
        for h in hs:
            by_band = v.get("horizons", {}).get(h, {}).get("by_band") or {}
            band_rows.append([name, h, *(fmt.num((by_band.get(b) or {}).get("iv_error_vp"), 2) for b in bands)])
    chart_list = []
    for h in hs:
        lines = []
        for name in summary.variants:
            pts = [
                (ms / 1000.0, (r.get("scores") or {}).get(h, {}).get("iv_error_vp"))
                for r in rows
                if r.get("variant") == name and (ms := time_ms(r.get("decision_ts"))) is not None
            ]
            lines.append((name, pts))
        label = "in-sample (the decision's own snapshot)" if h == IN_SAMPLE else f"{h} after the decision"
        chart_list.append(charts.time_lines_chart(
            f"bt-{h}", f"OTM IV error, {label}",
            "Vega-weighted mean |sigma_syn - sigma_mark| over OTM quotes of the applied calibration, vol points, "
            "per decision time and variant.",
            lines, value_header="(vp)", pattern="{:.2f}", empty_text="No scored decisions at this horizon.",
            max_gap_s=2.5 * _every_s(summary),
        ))
    difference_rows = [
        DifferenceRow(
            horizon=d.horizon if d.horizon != IN_SAMPLE else f"{d.horizon} (in-sample)", pair=f"{d.a} - {d.b}", n=fmt.integer(d.n),
            mean=fmt.num(d.mean, 3), interval="-" if d.low is None else f"[{fmt.num(d.low, 3)}, {fmt.num(d.high, 3)}]",
            block="-" if d.block is None else fmt.integer(d.block), verdict=d.verdict or "", muted=d.low is None or d.verdict == NO_EVIDENCE,
        )
        for d in summary.differences
    ]
    settings = [
        ("Underlying", summary.underlying),
        ("Decisions", f"every {summary.every} from {fmt.time(summary.start)} to {fmt.time(summary.end)}"),
        ("Horizons", ", ".join(hs)),
        ("Snapshot staleness allowed", f"{summary.max_staleness_minutes:g} min"),
        ("RV_7d", "fixed " + fmt.vol(summary.rv) if summary.rv is not None else "from the harvest as of each snapshot"),
        ("Harvest read", f"{fmt.integer(summary.rows)} rows, {fmt.integer(summary.snapshots)} snapshots"),
        ("Ran", f"{fmt.time(summary.created)} in {fmt.num(summary.elapsed_s, 1)} s" + (f" ({summary.workers})" if summary.workers else "")),
    ]
    if summary.generated:
        g = summary.generated
        settings.append(("Market", f"generated (market/sample.py, seed {g.get('seed')}): {fmt.num(g.get('days'), 1)} days, its true surface known"))
    if summary.sweep:
        settings.append(("Sweep", "; ".join(f"{k} = {', '.join(map(str, v))}" for k, v in summary.sweep.items())))
    return BacktestPage(
        id=summary.id, title=f"Backtest {summary.underlying} {summary.id}", settings=settings, charts=chart_list,
        policy_rows=policy_rows, error_headers=error_headers, error_rows=error_rows,
        band_headers=["Variant", "Horizon", *(f"{b} IV error (vp)" for b in bands)], band_rows=band_rows, back_href=back_href,
        difference_rows=difference_rows,
    )


# --------------------------------------------------------------------------- links from the dashboard


@dataclass(frozen=True)
class BacktestLink:
    id: str
    href: str
    text: str


SITE_SUBDIR = "backtests"
ROOT_BACK_HREF = "../../site/index.html"  # from backtests/<id>/index.html to the dashboard


def sync_backtest_pages(root: Root) -> list[BacktestLink]:
    """Copy each backtests/<id>/index.html into site/backtests/<id>.html (only when it differs) and
    return the links the index shows, newest first. A backtest without a readable summary is skipped."""
    base = root.backtests_dir
    if not base.is_dir():
        return []
    links = []
    for d in sorted(base.iterdir(), reverse=True):  # ULID names sort by creation time
        try:
            summary = BacktestSummary.model_validate(loads((d / "summary.json").read_bytes()))
            page = (d / "index.html").read_bytes()
        except (OSError, ValueError):
            continue
        name = f"{d.name}.html"
        target = root.site_dir / SITE_SUBDIR / name
        site_page = page.replace(f'href="{ROOT_BACK_HREF}"'.encode(), b'href="../index.html"')
        try:
            same = target.read_bytes() == site_page
        except OSError:
            same = False
        if not same:
            atomic_write(target, site_page)
        variants = ", ".join(summary.variants)
        links.append(BacktestLink(d.name, f"{SITE_SUBDIR}/{name}", f"{summary.underlying} {fmt.time(summary.start)} to "
                                  f"{fmt.time(summary.end)}, every {summary.every}, horizons {', '.join(summary.horizons)}; {variants}"))
    return links
