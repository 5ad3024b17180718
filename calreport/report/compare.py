"""Two calibrations side by side: levels, bands, smile nodes and errors, with the difference.

One home for the comparison: the dashboard's compare pages, `calreport diff` (text and --json) and
the confirm dialog's smile rows all render the plain Comparison built here. A side is a live run
(its smoothed values: what applying it writes) or the applied state (the YAML entry). Each side's
errors are those measured at exactly the values it shows: a run's fit (its recommended values, on its
own snapshot) when those are the values shown, else none. A run's iv_error_vp & co. are not: they were
measured at the values applied *before* it (`tested`). Pure: no file is opened here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from calreport import fmt
from calreport.calibration.smile import flat, regrid
from calreport.model import AppliedEntry, LiveRun, Multipliers, Smile

APPLIED = "applied"  # the label of the applied-state side

# (key, label, unit, LiveRun attribute): the error figures compared, each in its own unit, all measured
# at the run's recommended values (the fit_* figures; calibration/live.py)
ERRORS: tuple[tuple[str, str, str, str], ...] = (
    ("iv_error_vp", "OTM IV error (vega-weighted)", "vp", "fit_iv_error_vp"),
    ("otm_vmae", "Price vMAE, OTM quotes", "%", "fit_otm_vega_weighted_mae_pct"),
    ("vmae", "Price vMAE, all quotes", "%", "fit_vega_weighted_mae_pct"),
)


def _errors_at(values: Multipliers | None, run: LiveRun | None) -> dict[str, float | None]:
    """The run's fit errors when `values` are its recommended values (as the YAML rounds them), else None each."""
    rec = run.recommended if run is not None else None
    same = values is not None and rec is not None and values.rounded(4) == rec.rounded(4)
    return {k: (getattr(run, attr) if same else None) for k, _l, _u, attr in ERRORS}


@dataclass(frozen=True)
class Side:
    """One calibration: its values (global, bands, smile) and the errors measured for it."""

    label: str  # the run id, or "applied"
    run_id: str | None
    time: str | None  # the run's snapshot time, or the YAML's updated_at
    global_: float | None
    bands: dict[str, float]
    smile: Smile | None
    errors: dict[str, float | None]
    status: str | None = None


@dataclass(frozen=True)
class Row:
    section: str  # "level" | "band" | "smile" | "error"
    name: str
    a: str
    b: str
    diff: str
    changed: bool
    unit: str = ""


@dataclass(frozen=True)
class Comparison:
    a: Side
    b: Side
    rows: list[Row] = field(default_factory=list)

    def section(self, name: str) -> list[Row]:
        return [r for r in self.rows if r.section == name]

    def to_json(self) -> dict[str, Any]:
        def side(s: Side) -> dict[str, Any]:
            return {"label": s.label, "run_id": s.run_id, "time": s.time, "status": s.status}

        return {"a": side(self.a), "b": side(self.b), "rows": [asdict(r) for r in self.rows]}


def side_of_run(run: LiveRun, status: str | None = None) -> Side:
    """A live run as the values applying it would write (its smoothed multipliers)."""
    m = run.smoothed
    return Side(
        label=run.run_id or "?", run_id=run.run_id, time=run.ts,
        global_=m.global_ if m else None, bands=dict(m.bands) if m else {}, smile=m.smile if m else None,
        errors=_errors_at(m, run), status=status or run.status,
    )


def side_of_applied(entry: AppliedEntry, run: LiveRun | None) -> Side:
    """The applied state; its errors are the fit errors of the run it came from when the YAML holds that fit."""
    errors = _errors_at(entry.multipliers(), run)
    return Side(
        label=APPLIED, run_id=entry.run_id, time=entry.updated_at, global_=entry.global_, bands=dict(entry.bands),
        smile=entry.smile, errors=errors, status=entry.source,
    )


def _diff(a: float | None, b: float | None, nd: int = 4, unit: str = "") -> tuple[str, bool]:
    if not (fmt.finite(a) and fmt.finite(b)):
        return ("" if a is None and b is None else "changed" if (a is None) != (b is None) else fmt.MISSING), (a is None) != (b is None)
    d = float(b) - float(a)  # type: ignore[arg-type]
    return f"{d:+.{nd}f}{unit}", round(d, nd) != 0


def smile_rows(a: Smile | None, b: Smile | None) -> list[Row]:
    """Every smile node either side has, on b's grid (a's values regridded; no smile = flat 1.0)."""
    if a is None and b is None:
        return []
    grid = (b or a).nodes  # type: ignore[union-attr]
    labels = list(dict.fromkeys(["global", *(a.bands if a else {}), *(b.bands if b else {})]))

    def values(s: Smile | None, label: str) -> list[float]:
        if s is None:
            return flat(grid)
        return regrid(s.nodes, s.for_band(None if label == "global" else label), grid)

    rows = []
    for label in labels:
        va, vb = values(a, label), values(b, label)
        for x, x_a, x_b in zip(grid, va, vb):
            if x == 0:
                continue  # 1 at x = 0 by construction
            d, changed = _diff(x_a, x_b)
            rows.append(Row("smile", f"{label} {fmt.node(x)}", fmt.mult(x_a), fmt.mult(x_b), d, changed))
    return rows


def compare(a: Side, b: Side) -> Comparison:
    """a -> b: each figure of both sides and b - a."""
    rows = []
    d, ch = _diff(a.global_, b.global_)
    rows.append(Row("level", "global", fmt.mult(a.global_), fmt.mult(b.global_), d, ch))
    for band in dict.fromkeys([*a.bands, *b.bands]):
        va, vb = a.bands.get(band), b.bands.get(band)
        d, ch = _diff(va, vb)
        rows.append(Row("band", band, fmt.mult(va) if va is not None else "none (global)",
                        fmt.mult(vb) if vb is not None else "none (global)", d, ch))
    rows += smile_rows(a.smile, b.smile)
    for key, label, unit, _attr in ERRORS:
        ea, eb = a.errors.get(key), b.errors.get(key)
        show = fmt.vp if unit == "vp" else fmt.pct
        d, ch = _diff(ea, eb, 2, " vp" if unit == "vp" else " pp")
        rows.append(Row("error", label, show(ea), show(eb), d, ch, unit))
    return Comparison(a, b, rows)


def text_lines(c: Comparison, *, only_changed: bool = False) -> list[str]:
    """`calreport diff`'s human output: one line per figure (changed ones marked)."""
    head = f"{c.a.label} ({fmt.time(c.a.time)}) -> {c.b.label} ({fmt.time(c.b.time)})"
    out = [head]
    for r in c.rows:
        if only_changed and not r.changed:
            continue
        mark = "*" if r.changed else " "
        out.append(f"{mark} {r.section:<5} {r.name:<32} {r.a:>14} -> {r.b:<14} {r.diff}")
    return out


def changed_smile_nodes(old: Smile | None, new: Smile | None) -> list[dict[str, str]]:
    """The smile nodes an apply would move (the confirm dialog's rows): node, now, after."""
    return [{"node": r.name, "old": r.a, "new": r.b} for r in smile_rows(old, new) if r.changed]


def page_name(run_id: str) -> str:
    """site/compare/<run_id>.html: the run against the applied state."""
    return f"compare/{run_id}.html"


def sections(c: Comparison) -> Sequence[tuple[str, list[Row]]]:
    titles = (("level", "Level"), ("band", "Bands"), ("smile", "Smile nodes"), ("error", "Errors"))
    return [(t, c.section(k)) for k, t in titles if c.section(k)]
