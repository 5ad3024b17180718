"""Small inline-SVG charts: geometry only (pure functions), drawn by templates/_chart.html.j2.

The template prints coordinates and labels through autoescaping, so no markup is built here and
no chart can smuggle data into the page. Each chart also carries its own table fallback, whose
numbers and times are formatted by calreport.fmt like the rest of the dashboard.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Sequence

from calreport import fmt
from calreport.model import ApplyEvent, AutoRun, LiveRun, RunDetail
from calreport.timeutil import MS_PER_DAY, MS_PER_SECOND, iso_ms, time_ms

WIDTH, HEIGHT = 560, 200
LEFT, RIGHT, TOP, BOTTOM = 46, 12, 10, 26


@dataclass(frozen=True)
class Dot:
    x: str
    y: str
    label: str
    cls: str = ""


@dataclass(frozen=True)
class Series:
    name: str
    cls: str  # CSS class giving the colour: s-rec, s-smooth, s-applied, s-ok, s-market, s-synth
    path: str  # SVG path data ("" for dots only)
    dots: list[Dot] = field(default_factory=list)


@dataclass(frozen=True)
class Tick:
    pos: str
    label: str
    anchor: str = "middle"  # SVG text-anchor: the last x tick ends at the plot's edge instead of being clipped


@dataclass(frozen=True)
class Chart:
    id: str
    title: str
    description: str
    series: list[Series]
    markers: list[Dot]  # failed runs (drawn as crosses)
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    headers: list[str]
    rows: list[list[str]]
    empty_text: str = ""
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def table_label(self) -> str:
        n = len(self.rows)
        return f"Table ({n:,} point{'' if n == 1 else 's'})"


def _f(v: float) -> str:
    """An SVG coordinate (pixels, one decimal): geometry, not a figure shown to the reader."""
    return f"{v:.1f}"


def nice_step(span: float, target: int = 4) -> float:
    """A 1/2/5 x 10^k step giving about `target` intervals over `span`."""
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


@dataclass(frozen=True)
class Scale:
    lo: float
    hi: float
    p0: float
    p1: float

    def __call__(self, v: float) -> float:
        if self.hi == self.lo:
            return (self.p0 + self.p1) / 2
        return self.p0 + (v - self.lo) / (self.hi - self.lo) * (self.p1 - self.p0)


def y_scale(values: Sequence[float], pattern: str = "{:.2f}") -> tuple[Scale, list[Tick]]:
    lo, hi = min(values), max(values)
    if hi == lo:
        pad = abs(lo) * 0.05 or 0.05
        lo, hi = lo - pad, hi + pad
    step = nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    s = Scale(lo, hi, HEIGHT - BOTTOM, TOP)
    ticks = []
    n = int(round((hi - lo) / step))
    for i in range(n + 1):
        v = lo + i * step
        ticks.append(Tick(_f(s(v)), pattern.format(v)))
    return s, ticks


def x_scale_time(times: Sequence[float]) -> tuple[Scale, list[Tick]]:
    lo, hi = min(times), max(times)
    s = Scale(lo, hi, LEFT, WIDTH - RIGHT)
    span = hi - lo
    pattern = "%m-%d" if span > 3 * MS_PER_DAY / MS_PER_SECOND else "%m-%d %H:%M"  # axis labels: short, the table has full times
    if _utc(lo).year != _utc(hi).year:  # a span across a new year says which year
        pattern = "%Y-%m-%d" if span > 3 * MS_PER_DAY / MS_PER_SECOND else "%Y-%m-%d %H:%M"
    points = [lo] if span == 0 else [lo + span * i / 3 for i in range(4)]
    ticks = [Tick(_f(s(t)), _utc(t).strftime(pattern)) for t in points]
    if span:  # the first label starts at the axis, the last ends at the plot's right edge: none is clipped
        ticks[0] = replace(ticks[0], anchor="start")
        ticks[-1] = replace(ticks[-1], anchor="end")
    return s, ticks


def _utc(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def x_scale_num(values: Sequence[float], pattern: str = "{:g}") -> tuple[Scale, list[Tick]]:
    lo, hi = min(values), max(values)
    if hi == lo:
        lo, hi = lo - 1, hi + 1
    step = nice_step(hi - lo)
    lo, hi = math.floor(lo / step) * step, math.ceil(hi / step) * step
    s = Scale(lo, hi, LEFT, WIDTH - RIGHT)
    n = int(round((hi - lo) / step))
    ticks = [Tick(_f(s(lo + i * step)), pattern.format(lo + i * step)) for i in range(n + 1)]
    ticks[-1] = replace(ticks[-1], anchor="end")
    return s, ticks


def _ts(ts: str | None) -> float | None:
    """Epoch seconds of a stored time, or None when it is absent or not a time."""
    ms = time_ms(ts)
    return None if ms is None else ms / 1000.0


def _line(points: Sequence[tuple[float, float]]) -> str:
    return " ".join(("M" if i == 0 else "L") + f"{_f(x)},{_f(y)}" for i, (x, y) in enumerate(points))


def _step(points: Sequence[tuple[float, float]], x_end: float) -> str:
    """Step line: each value holds until the next change, the last one until x_end."""
    if not points:
        return ""
    parts = [f"M{_f(points[0][0])},{_f(points[0][1])}"]
    for x, y in points[1:]:
        parts.append(f"H{_f(x)}V{_f(y)}")
    parts.append(f"H{_f(x_end)}")
    return "".join(parts)


@dataclass(frozen=True)
class Placed:
    t: float  # on the runs' clock (epoch seconds)
    event: ApplyEvent
    after: bool  # written after the run at `t` (a wall-clock time past the newest run drawn)


def event_times(events: Sequence[ApplyEvent], pts: Sequence[tuple[float, LiveRun]]) -> list[Placed]:
    """Every apply on the runs' clock (the time the data describes), in the order they were written.

    A policy apply steps at the snapshot time of the run it applied (it follows that run within
    seconds, or replays it). A force-apply or rollback happened when the user acted: it is placed
    at its wall-clock time, but never past the newest run drawn (on replayed data the wall clock is
    a year after the market; there it is drawn at the newest run, as written after it), and never
    before an apply written earlier.
    """
    run_time = {r.run_id: t for t, r in pts if r.run_id}
    t_last = max((t for t, _ in pts), default=None)
    written = sorted(((w, e) for e in events if (w := _ts(e.ts)) is not None), key=lambda p: p[0])  # stable
    out: list[Placed] = []
    for wall, e in written:
        t = run_time.get(e.run_id or "") if (e.source or "policy") == "policy" else None
        after = False
        if t is None:
            t, after = (wall, False) if t_last is None or wall <= t_last else (t_last, True)
        if out and t < out[-1].t:
            t, after = out[-1].t, out[-1].after
        out.append(Placed(t, e, after))
    return out


def _in_force(placed: Sequence[Placed], t: float, initial: float | None) -> float | None:
    """The applied global at run time t: the last apply placed before t (or at t, unless written after it)."""
    value = initial
    for p in placed:
        if p.t < t or (p.t == t and not p.after):
            if p.event.applied and fmt.finite(p.event.applied.global_):
                value = p.event.applied.global_
        else:
            break
    return value


def multiplier_chart(underlying: str, runs: Sequence[LiveRun], events: Sequence[ApplyEvent]) -> Chart:
    """Recommended (dots), smoothed (line) and applied (step line) global multiplier over time, one clock."""
    title = f"{underlying} multiplier over time (global)"
    pts = [(t, r) for r in runs if (t := _ts(r.ts)) is not None]  # in time order (the history query's)
    rec_rows = [(t, r.recommended.global_, r) for t, r in pts if r.recommended and fmt.finite(r.recommended.global_)]
    rec = [(t, v) for t, v, _r in rec_rows]
    # a failed run (or one whose decision kept it out of the EWMA) never fed the smoothed line
    smo_rows = [
        (t, r.smoothed.global_, r) for t, r in pts
        if r.smoothed and fmt.finite(r.smoothed.global_) and r.status != "failed" and r.feeds_smoothing is not False
    ]
    smo = [(t, v) for t, v, _r in smo_rows]
    placed = event_times(events, pts)
    ev_rows = [(p.t, p.event.applied.global_, p.event) for p in placed if p.event.applied and fmt.finite(p.event.applied.global_)]
    # before the first apply, the YAML held what that apply replaced
    first_prev = placed[0].event.previous.global_ if placed and placed[0].event.previous else None
    initial = first_prev if fmt.finite(first_prev) else None
    times = [t for t, _ in rec + smo]
    if not times:
        return Chart(f"mult-{underlying}", title, "", [], [], [], [], [], [], empty_text="No live runs yet.")
    t0, t1 = min(times), max(times)
    # the step line: the value in force at t0, then each apply placed inside the window
    before = [p for p in ev_rows if p[0] <= t0]
    inside = [p for p in ev_rows if t0 < p[0]]
    start = before[-1][1] if before else initial
    steps = ([(t0, start)] if start is not None else []) + [(t, v) for t, v, _e in inside]
    ys_float = [float(v) for _, v in rec + smo + steps if v is not None]
    xs, xt = x_scale_time(times)
    ysc, yt = y_scale(ys_float, "{:.2f}")
    marked = [(t, v, e) for t, v, e in ev_rows if t0 <= t and (e.source or "policy") in ("force", "rollback")]
    series = [
        Series(
            "applied", "s-applied", _step([(xs(t), ysc(v)) for t, v in steps], xs(t1)),
            [Dot(_f(xs(t)), _f(ysc(v)), f"{fmt.time(_iso(t))} applied {fmt.mult(v)} ({fmt.text(e.source)}, written {fmt.time(e.ts)})", "step")
             for t, v, e in ev_rows if t0 <= t],
        ),
        Series(
            "smoothed", "s-smooth", _line([(xs(t), ysc(v)) for t, v in smo]),
            [Dot(_f(xs(t)), _f(ysc(v)), f"{fmt.time(r.ts)} smoothed {fmt.mult(v)}") for t, v, r in smo_rows],
        ),
        Series(
            "recommended",
            "s-rec",
            "",
            [Dot(_f(xs(t)), _f(ysc(v)), f"{fmt.time(r.ts)} recommended {fmt.mult(v)}") for t, v, r in rec_rows],
        ),
    ]
    if marked:
        series.append(Series(
            "force-apply / rollback", "s-event", "",
            [Dot(_f(xs(t)), _f(ysc(v)), f"{fmt.text(e.source)} written {fmt.time(e.ts)}: run {fmt.text(e.run_id)} -> {fmt.mult(v)}", e.source or "")
             for t, v, e in marked],
        ))
    rows = [
        [fmt.time(r.ts), fmt.mult(r.recommended.global_ if r.recommended else None), fmt.mult(r.smoothed.global_ if r.smoothed else None),
         fmt.mult(_in_force(placed, t, initial))]
        for t, r in reversed(pts)
    ]
    return Chart(
        f"mult-{underlying}",
        title,
        "Recommended (dots), smoothed (line and dots; failed runs never fed it) and applied (step) global multiplier "
        "per live run, all at the run's snapshot time: a policy apply or force-apply steps at the time of the run it "
        "applied; force-applies and rollbacks are marked where they happened, on the same clock.",
        series,
        [],
        xt,
        yt,
        ["Time", "Recommended", "Smoothed", "Applied at that time"],
        rows,
    )


def auto_chart(underlying: str, runs: Sequence[AutoRun]) -> Chart:
    """Auto-calibrate multiplier over time; failed runs are crosses, so an insane 0.5 stands out.

    A run sits at the end of its harvest window (`as_of`; `ts` for rows without it): a backfill
    run today over last week's harvest belongs to last week.
    """
    title = f"{underlying} auto-calibrate multiplier"
    pts = sorted(
        ((t, r) for r in runs if (t := _ts(r.as_of or r.ts)) is not None and fmt.finite(r.multiplier)), key=lambda p: p[0]
    )
    unfitted = len(runs) - len(pts)  # failed before a fit: no multiplier to draw, but they ran
    if not pts:
        empty = (
            f"{unfitted} auto-calibrate run(s), none with a multiplier (failed before a fit; see Auto history)."
            if unfitted else "No auto-calibrate runs yet."
        )
        return Chart(f"auto-{underlying}", title, "", [], [], [], [], [], [], empty_text=empty)
    xs, xt = x_scale_time([t for t, _ in pts])
    ysc, yt = y_scale([float(r.multiplier or 0) for _, r in pts], "{:.2f}")
    good = [(t, r) for t, r in pts if r.status != "failed"]
    bad = [(t, r) for t, r in pts if r.status == "failed"]
    series = [
        Series(
            "ok / degraded",
            "s-ok",
            _line([(xs(t), ysc(float(r.multiplier or 0))) for t, r in good]),
            [
                Dot(_f(xs(t)), _f(ysc(float(r.multiplier or 0))), f"{fmt.time(r.as_of or r.ts)} {fmt.text(r.status)} {fmt.mult(r.multiplier)}",
                    "degraded" if r.status == "degraded" else "")
                for t, r in good
            ],
        )
    ]
    markers = [
        Dot(_f(xs(t)), _f(ysc(float(r.multiplier or 0))), f"{fmt.time(r.as_of or r.ts)} failed {fmt.mult(r.multiplier)}: {fmt.text(r.reason)}")
        for t, r in bad
    ]
    rows = [
        [fmt.time(r.as_of or r.ts), fmt.text(r.status), fmt.mult(r.multiplier), fmt.pct(r.mae_pct)]
        for _t, r in reversed(pts)
    ]
    return Chart(
        f"auto-{underlying}",
        title,
        "Multiplier of each auto-calibrate run; failed runs are drawn as red crosses"
        + (f"; {unfitted} run(s) without a multiplier (failed before a fit) are not drawn." if unfitted else "."),
        series,
        markers,
        xt,
        yt,
        ["Window end", "Status", "Multiplier", "MAE %"],
        rows,
    )


def iv_chart(underlying: str, run: LiveRun | None, detail: RunDetail | None) -> Chart:
    """Market ATM IV vs synthetic IV (RV_7d x multiplier tested) by DTE for the latest live run."""
    title = f"{underlying} ATM IV vs synthetic IV by DTE (latest live run)"
    exps = [e for e in (detail.expiries if detail else []) if fmt.finite(e.dte)]
    exps.sort(key=lambda e: e.dte)
    market = [(e.dte, e.atm_mark_iv * 100) for e in exps if fmt.finite(e.atm_mark_iv)]
    synth = [(e.dte, e.synthetic_iv * 100) for e in exps if fmt.finite(e.synthetic_iv)]
    if not market and not synth:
        why = "No live run yet." if run is None else "No per-expiry detail for the latest run."
        return Chart(f"iv-{underlying}", title, "", [], [], [], [], [], [], empty_text=why)
    xs, xt = x_scale_num([d for d, _ in market + synth])
    ysc, yt = y_scale([v for _, v in market + synth], "{:.0f}%")
    series = [
        Series(
            "market ATM IV",
            "s-market",
            _line([(xs(d), ysc(v)) for d, v in market]),
            [Dot(_f(xs(d)), _f(ysc(v)), f"DTE {fmt.num(d, 1)}: market ATM IV {fmt.pct(v, 1)}") for d, v in market],
        ),
        Series(
            "synthetic IV",
            "s-synth",
            _line([(xs(d), ysc(v)) for d, v in synth]),
            [Dot(_f(xs(d)), _f(ysc(v)), f"DTE {fmt.num(d, 1)}: synthetic IV {fmt.pct(v, 1)}") for d, v in synth],
        ),
    ]
    rows = [
        [
            e.expiry,
            fmt.num(e.dte, 1),
            fmt.vol(e.atm_mark_iv),
            fmt.vol(e.synthetic_iv),
            fmt.integer(e.samples),
        ]
        for e in exps
    ]
    return Chart(
        f"iv-{underlying}",
        title,
        "Market ATM implied vol per expiry against the synthetic engine's vol at the multiplier tested.",
        series,
        [],
        xt,
        yt,
        ["Expiry", "DTE", "Market ATM IV", "Synthetic IV", "Quotes"],
        rows,
    )


SERIES_CLASSES = ("s-v0", "s-v1", "s-v2", "s-v3", "s-v4", "s-v5")  # one colour per variant (style.css.j2)


def _broken_line(points: Sequence[tuple[float, float]], breaks: set[int]) -> str:
    """A line through the points that starts a new piece at each index in `breaks` (a data gap)."""
    return " ".join(("M" if i == 0 or i in breaks else "L") + f"{_f(x)},{_f(y)}" for i, (x, y) in enumerate(points))


def time_lines_chart(
    chart_id: str, title: str, description: str, lines: Sequence[tuple[str, Sequence[tuple[float, float | None]]]], *,
    value_header: str, pattern: str = "{:.1f}", empty_text: str = "No points.", max_gap_s: float | None = None,
) -> Chart:
    """Several named series over time (epoch seconds, value), each a line with dots; one table row
    per time with a column per series. Missing values are left out; two points further apart than
    `max_gap_s` are not joined (a harvest gap is not drawn as a trend)."""
    pts = [(name, [(t, float(v)) for t, v in series if fmt.finite(v)]) for name, series in lines]
    times = sorted({t for _, s in pts for t, _ in s})
    if not times:
        return Chart(chart_id, title, "", [], [], [], [], [], [], empty_text=empty_text)
    xs, xt = x_scale_time(times)
    ysc, yt = y_scale([v for _, s in pts for _, v in s], pattern)
    series = []
    for i, (name, s) in enumerate(pts):
        breaks = {k for k in range(1, len(s)) if max_gap_s is not None and s[k][0] - s[k - 1][0] > max_gap_s}
        series.append(Series(
            name, SERIES_CLASSES[i % len(SERIES_CLASSES)], _broken_line([(xs(t), ysc(v)) for t, v in s], breaks),
            [Dot(_f(xs(t)), _f(ysc(v)), f"{name} {fmt.time(_iso(t))}: {pattern.format(v)}") for t, v in s],
        ))
    lookup = [dict(s) for _, s in pts]
    rows = [[fmt.time(_iso(t)), *(pattern.format(d[t]) if t in d else fmt.MISSING for d in lookup)] for t in reversed(times)]
    return Chart(chart_id, title, description, series, [], xt, yt, ["Time", *(f"{n} {value_header}" for n, _ in pts)], rows)


def _iso(t: float) -> str:
    return iso_ms(t * MS_PER_SECOND)
