"""The dashboard's smile panel: plain view objects built from the files of record (pure, no I/O).

Per underlying and band, a chart of implied vol against normalised moneyness x of the latest live run:
- dots: the market's OTM IV (the run detail's mark_iv: the mark inverted) of that band's quotes, at
  x = ln(K/F) / (base m_fit sqrt(T));
- the applied curve: what the engine quotes under the applied YAML at the same strikes. Step-model
  entries: base x m_applied x smile_applied(x x m_fit / m_applied) (T cancels out; flat beyond the end
  nodes). Surface entries (schema 3): sqrt(w(k, tau) / T) of calibration/surface.py at the band's pillar
  (T = the pillar's days / 365 from the run's time, tau on the variance clock, k = x base m_fit sqrt(T)),
  so the curve shows the wings the engine quotes beyond the end nodes;
- the latest fitted curve, dashed: the same formula on the run's recommended values;
the curves span at least x = +-CURVE_X_SPAN (past the end nodes) and every market dot.
with a table of the nodes beneath, and the latest run's delta-bucket table (calibration/desk.py).
`base` is the run's base (RV_7d). SKEW_NOT_APPLIED flags a band whose fitted smile differs from the
applied one by more than smile.skew_flag_vp vol points at any node: base x m_applied x |s_fit - s_applied| x 100.
Templates only loop and print these strings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from calreport import fmt
from calreport.calibration.bands import band_value
from calreport.calibration.desk import BUCKET_LABELS, BUCKETS
from calreport.calibration.smile import entry_surface, flat, regrid, smile_at, surface_tau
from calreport.calibration.surface import DAYS_PER_YEAR
from calreport.model import AppliedEntry, CalibrationConfig, LiveRun, Multipliers, RunDetail
from calreport.timeutil import time_ms
from calreport.report.charts import Chart, Dot, Series, _f, _line, x_scale_num, y_scale

CURVE_POINTS = 81
CURVE_X_SPAN = 4.0  # the curves reach at least |x| = 4: the wings past the end nodes are what the engine quotes there
SKEW_FLAG = "SKEW_NOT_APPLIED"


@dataclass(frozen=True)
class NodeRow:
    node: str
    applied: str
    fitted: str
    gap_vp: str
    quotes: str
    flagged: bool


@dataclass(frozen=True)
class SmilePanel:
    band: str
    chart: Chart
    nodes: list[NodeRow]
    flagged: bool
    max_gap_vp: str
    source: str  # how the fitted smile came about: own fit, the global smile, no fit


@dataclass(frozen=True)
class BucketRow:
    group: str
    bucket: str
    samples: str
    market_iv: str
    synthetic_iv: str
    gap_vp: str
    price_error: str


@dataclass(frozen=True)
class SmileSection:
    underlying: str
    present: bool
    run_id: str = fmt.MISSING
    time: str = fmt.MISSING
    base: str = fmt.MISSING
    panels: list[SmilePanel] = field(default_factory=list)
    buckets: list[BucketRow] = field(default_factory=list)
    flagged_bands: list[str] = field(default_factory=list)
    flag_text: str = ""
    note: str = ""


def _curve(nodes: Sequence[float], values: Sequence[float] | None) -> list[float]:
    return list(values) if values is not None else flat(nodes)


def _applied_curve(entry: AppliedEntry | None, label: str, nodes: Sequence[float]) -> list[float]:
    if entry is None or entry.smile is None:
        return flat(nodes)
    return regrid(entry.smile.nodes, entry.smile.for_band(label), nodes)


def quoted_iv_pct(
    values: AppliedEntry | Multipliers | None, label: str, grid: np.ndarray, m: float, m_fit: float, base: float,
    now_ms: int | None, step_curve: Sequence[float], nodes: Sequence[float],
) -> np.ndarray:
    """IV (percent) quoted by `values` at chart abscissae x (normalised under the fitted level m_fit): the
    surface at the band's pillar when the values carry a surface block, else the step model's
    base x m x smile(x m_fit / m), flat beyond the end nodes."""
    surface = entry_surface(values, base) if values is not None and now_ms is not None and base > 0 else None
    spec = values.surface if values is not None else None
    if surface is None or spec is None or label not in spec.pillars:
        return base * m * smile_at(grid * m_fit / m, nodes, step_curve) * 100.0
    T = spec.pillars[label] / DAYS_PER_YEAR
    tau = surface_tau(np.array([T]), float(now_ms), spec.weekend_weight)  # type: ignore[arg-type]
    k = grid * base * m_fit * np.sqrt(T)
    return np.sqrt(surface.total_variance(k, np.full(grid.shape, max(float(tau[0]), 1e-12))) / T) * 100.0


def _bucket_rows(run: LiveRun, band_order: Sequence[str]) -> list[BucketRow]:
    groups = run.by_delta_bucket or {}
    order = [g for g in ["all", *band_order] if g in groups] + sorted(set(groups) - {"all", *band_order})
    rows = []
    for g in order:  # "all" + a handful of bands x five buckets
        for b in BUCKETS:
            s = groups[g].get(b)
            if s is None:
                continue
            rows.append(BucketRow(
                group=g, bucket=BUCKET_LABELS[b], samples=fmt.integer(s.samples),
                market_iv=fmt.pct(s.market_iv_pct, 1), synthetic_iv=fmt.pct(s.synthetic_iv_pct, 1),
                gap_vp=fmt.num(s.gap_vp, 2), price_error=fmt.pct(s.price_error_pct, 1),
            ))
    return rows


def _panel(
    underlying: str, label: str, run: LiveRun, detail: RunDetail | None, entry: AppliedEntry | None, config: CalibrationConfig,
) -> SmilePanel:
    base = float(run.rv_7d or 0.0)
    rec = run.recommended
    smile = rec.smile if rec is not None else None
    nodes = list(smile.nodes) if smile is not None else list(config.smile.nodes)
    fitted = _curve(nodes, smile.for_band(label) if smile is not None else None)
    stats = (run.smile_fit or {}).get(label) or ((run.smile_fit or {}).get("global") if smile is not None else None)
    source = "no smile fitted" if smile is None else ("own fit" if label in smile.bands else "global smile")
    m_fit = band_value(rec, label) if rec is not None and rec.global_ is not None else 1.0
    m_app = band_value(entry, label) if entry is not None else 1.0
    applied = _applied_curve(entry, label, nodes)
    # market dots: the band's OTM quotes of the latest run, at x under the fitted level
    pts: list[tuple[float, float, str]] = []
    for q in (detail.quotes if detail is not None else []):  # the detail file is quote-level by design
        if q.band != label or q.forward is None or q.mark_iv is None or not (q.dte > 0) or base <= 0:
            continue
        otm = q.strike >= q.forward if q.type == "C" else q.strike < q.forward
        if not otm or not fmt.finite(q.mark_iv):
            continue
        x = math.log(q.strike / q.forward) / (base * m_fit * math.sqrt(q.dte / 365.0))
        pts.append((x, q.mark_iv * 100.0, q.instrument))
    lo = min([nodes[0], -CURVE_X_SPAN, *(p[0] for p in pts)])
    hi = max([nodes[-1], CURVE_X_SPAN, *(p[0] for p in pts)])
    grid = np.linspace(lo, hi, CURVE_POINTS)
    now_ms = time_ms(run.ts)
    fit_iv = quoted_iv_pct(rec, label, grid, m_fit, m_fit, base, now_ms, fitted, nodes)
    app_iv = quoted_iv_pct(entry, label, grid, m_app, m_fit, base, now_ms, applied, nodes)
    ys = [*fit_iv.tolist(), *app_iv.tolist(), *(p[1] for p in pts)]
    cid = f"smile-{underlying}-{label}"
    title = f"{underlying} {label} smile: IV by normalised moneyness (latest live run)"
    gaps = [base * m_app * abs(f - a) * 100.0 for f, a in zip(fitted, applied)]
    limit = config.smile.skew_flag_vp
    counts = list(stats.quotes_per_node) if stats is not None and stats.quotes_per_node else []
    node_rows = [
        NodeRow(fmt.node(x), fmt.mult(a), fmt.mult(f), fmt.num(g, 2), fmt.integer(counts[i]) if i < len(counts) else fmt.MISSING, g > limit)
        for i, (x, a, f, g) in enumerate(zip(nodes, applied, fitted, gaps))
    ]
    flagged = smile is not None and any(r.flagged for r in node_rows)
    if base <= 0 or not ys:
        chart = Chart(cid, title, "", [], [], [], [], [], [], empty_text="No RV_7d for the latest run: no vol scale.")
    else:
        xs, xt = x_scale_num([lo, hi], "{:g}")
        ysc, yt = y_scale(ys, "{:.0f}%")
        series = [
            Series("market OTM IV", "s-market", "", [Dot(_f(xs(x)), _f(ysc(y)), f"{name}: x {fmt.num(x, 2)}, IV {fmt.pct(y, 1)}") for x, y, name in pts]),
            Series("applied", "s-applied", _line([(xs(x), ysc(y)) for x, y in zip(grid, app_iv)])),
            Series("fitted (latest run)", "s-fit", _line([(xs(x), ysc(y)) for x, y in zip(grid, fit_iv)])),
        ]
        rows = [[fmt.num(x, 2), fmt.pct(y, 1), name] for x, y, name in sorted(pts)]
        chart = Chart(
            cid, title,
            "Dots: market OTM implied vol per quote; solid: the applied synthetic vol; dashed: the latest fitted vol.",
            series, [], xt, yt, ["x", "Market IV", "Instrument"], rows,
            empty_text="",
        )
    return SmilePanel(label, chart, node_rows, flagged, fmt.num(max(gaps) if gaps else None, 2), source)


def build_smile_sections(names: Sequence[str], latest: dict[str, LiveRun], details: dict[str, RunDetail],
                         applied: dict[str, AppliedEntry] | None, config: CalibrationConfig) -> list[SmileSection]:
    """One section per underlying: a smile panel per band (when the latest run fitted a smile) and its delta buckets."""
    out = []
    for name in names:
        run = latest.get(name)
        if run is None:
            out.append(SmileSection(name, False, note="No live run yet."))
            continue
        entry = (applied or {}).get(name)
        detail = details.get(run.run_id or "")
        has_smile = run.recommended is not None and run.recommended.smile is not None
        panels = [_panel(name, b, run, detail, entry, config) for b in config.band_names()] if has_smile else []
        # with smile.enabled false the engine quotes no smile at all: "not applied" is then the config's choice
        flagged = [p.band for p in panels if p.flagged] if config.smile.enabled else []
        text = (
            f"{SKEW_FLAG}: the latest fitted smile differs from the applied one by more than "
            f"{fmt.num(config.smile.skew_flag_vp, 1)} vol points at a node ({', '.join(flagged)})"
            if flagged else ""
        )
        note = "" if has_smile else "The latest live run fitted no smile (smile.enabled false, or a run from before the smile)."
        if has_smile and not config.smile.enabled:
            note = "smile.enabled is false: the engine quotes no smile; the curves are the latest run's fit, not quoted."
        out.append(SmileSection(
            name, True, run_id=fmt.text(run.run_id), time=fmt.time(run.ts), base=fmt.vol(run.rv_7d), panels=panels,
            buckets=_bucket_rows(run, config.band_names()), flagged_bands=flagged, flag_text=text, note=note,
        ))
    return out
