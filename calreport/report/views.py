"""One view-model per dashboard panel, built from what was read from the files of record.

Everything here is a pure function of (config, applied document, history reads, run details):
no file I/O, no clock (the caller passes `now`). Templates only print these strings, so every
number on the page is formatted once, here, and a missing value is always "-".

History comes as indexes (history.HistoryIndex): counts, latest-per-underlying, derived status
and page keys use a RowRef of every row; any number shown comes from `index.row(ref)`, the full
row validated again from the file's bytes, so only the rows on screen are parsed.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Iterable, Sequence

from calreport.report import charts
from calreport.store.config import CalibrationConfig
from calreport.store.history import HistoryIndex, RowRef
from calreport.store.models import (
    AppliedDocument,
    ApplyEvent,
    AutoRun,
    GroupMetrics,
    LiveRun,
    Multipliers,
    RunDetail,
    iso_utc,
    parse_time,
)
from calreport.store.state import StatusIndex

DASH = "-"
UNKNOWN = "unknown"  # a status that cannot be derived (the YAML is unreadable, or an old row lacks it)
MAX_QUOTES = 2000  # quote-table rows shown for the latest run (the detail file keeps all of them)
CHART_POINTS = 200  # newest runs drawn per chart; the table fallback lists the same points


# --------------------------------------------------------------------------- formatting


def _finite(x: float | int | None) -> bool:
    return x is not None and not isinstance(x, bool) and math.isfinite(float(x))


def fmt_mult(x: float | None) -> str:
    """Multipliers always with 4 decimals, as in the YAML."""
    return f"{float(x):.4f}" if _finite(x) else DASH


def fmt_pct(x: float | None, nd: int = 2) -> str:
    """A value already in percent (MAE 15.74 -> '15.74%'), with thousands separators."""
    return f"{float(x):,.{nd}f}%" if _finite(x) else DASH


def fmt_vol(x: float | None, nd: int = 1) -> str:
    """A vol stored as a fraction (0.432 -> '43.2%')."""
    return f"{float(x) * 100:,.{nd}f}%" if _finite(x) else DASH


def fmt_num(x: float | None, nd: int = 2) -> str:
    return f"{float(x):,.{nd}f}" if _finite(x) else DASH


def fmt_int(x: int | float | None) -> str:
    return f"{int(x):,}" if _finite(x) else DASH


def fmt_time(ts: str | None) -> str:
    """'2025-12-11T10:16:00Z' -> '2025-12-11 10:16 UTC'; unparseable text is shown as it is."""
    if not ts:
        return DASH
    try:
        return parse_time(ts).strftime("%Y-%m-%d %H:%M UTC")
    except ValueError:
        return str(ts)


def fmt_text(x: object) -> str:
    if x is None:
        return DASH
    text = str(x).strip()
    return text if text else DASH


def sort_value(x: float | int | None) -> str:
    """A machine-readable number for client-side sorting ('' sorts missing values last)."""
    return repr(float(x)) if _finite(x) else ""


def _global(m: Multipliers | None) -> float | None:
    return None if m is None else m.global_


def _bands(m: Multipliers | None) -> dict[str, float]:
    return {} if m is None else dict(m.bands)


# --------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Banner:
    level: str  # "error" | "warn"
    title: str
    text: str


@dataclass(frozen=True)
class AppliedValue:
    underlying: str
    band: str  # "global" or the band label
    multiplier: str
    previous: str
    changed: bool


@dataclass(frozen=True)
class AppliedCard:
    underlying: str
    values: list[AppliedValue]
    never_applied: bool
    updated_at: str
    updated_iso: str
    source: str
    reason: str
    run_id: str
    previous_run_id: str
    note: str | None = None


@dataclass(frozen=True)
class ApplyLogRow:
    time: str
    time_iso: str
    underlying: str
    source: str
    previous: str
    applied: str
    bands: str
    reason: str
    run_id: str


@dataclass(frozen=True)
class AppliedPanel:
    cards: list[AppliedCard]
    error: str | None
    log: list[ApplyLogRow]
    log_total: int


@dataclass(frozen=True)
class BandPair:
    band: str
    recommended: str
    smoothed: str


@dataclass(frozen=True)
class LatestRunCard:
    underlying: str
    present: bool
    run_id: str = DASH
    source: str = DASH
    time: str = DASH
    time_iso: str = ""
    recommended: str = DASH
    smoothed: str = DASH
    bands: list[BandPair] = field(default_factory=list)
    status: str = DASH
    reason: str = DASH
    realism_status: str = DASH
    realism_reason: str = DASH
    decision: str = DASH
    decision_reason: str = DASH
    samples: str = DASH
    mae: str = DASH


@dataclass(frozen=True)
class GroupRow:
    name: str
    samples: str
    mae: str
    bias: str
    vmae: str
    recommended: str
    on_bound: str


@dataclass(frozen=True)
class QuoteRow:
    instrument: str
    dte: str
    strike: str
    type: str
    mark: str
    synthetic: str
    diff: str
    diff_class: str
    sort: dict[str, str]


@dataclass(frozen=True)
class LiveCard:
    underlying: str
    present: bool
    run_id: str = DASH
    time: str = DASH
    time_iso: str = ""
    multiplier_tested: str = DASH
    mae: str = DASH
    vmae: str = DASH
    bias: str = DASH
    mae_vol_points: str = DASH
    rv_7d: str = DASH
    atm_iv: str = DASH
    atm_ratio: str = DASH
    recommended: str = DASH
    recommended_on_bound: bool = False
    samples: str = DASH
    rv_source: str = DASH
    rv_returns: str = DASH
    atm_source: str = DASH
    snapshot: str = DASH
    status: str = DASH
    reason: str = DASH
    dropped: list[tuple[str, str]] = field(default_factory=list)
    by_type: list[GroupRow] = field(default_factory=list)
    by_band: list[GroupRow] = field(default_factory=list)
    quotes: list[QuoteRow] = field(default_factory=list)
    quotes_total: int = 0
    detail_note: str | None = None


@dataclass(frozen=True)
class PolicyDecision:
    underlying: str
    run_id: str
    time: str
    status: str
    decision: str
    decision_reason: str


@dataclass(frozen=True)
class PolicyPanel:
    thresholds: list[tuple[str, str, str]]  # (label, value, what it means)
    decisions: list[PolicyDecision]
    config_error: str | None


@dataclass(frozen=True)
class HealthCard:
    underlying: str
    present: bool
    run_id: str = DASH
    time: str = DASH
    status: str = DASH
    reason: str = DASH
    dq_status: str = DASH
    snapshots: str = DASH
    completeness: str = DASH
    schema_errors: str = DASH
    expiries: str = DASH
    strikes: str = DASH
    rv_returns: str = DASH
    dte_range: str = DASH
    lookback: str = DASH
    period: str = DASH
    settings_hash: str = DASH
    issues: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LiveRow:
    time: str
    time_iso: str
    underlying: str
    run_id: str
    status: str
    decision: str
    tested: str
    recommended: str
    smoothed: str
    mae: str
    vmae: str
    rv_7d: str
    atm_iv: str
    samples: str
    reason: str


@dataclass(frozen=True)
class AutoRow:
    time: str
    time_iso: str
    underlying: str
    run_id: str
    status: str
    dte_range: str
    lookback: str
    multiplier: str
    vmae: str
    mae: str
    samples: str
    reason: str


@dataclass(frozen=True)
class PageLink:
    number: int
    href: str
    label: str


@dataclass(frozen=True)
class HistoryTable:
    kind: str  # "live" | "auto"
    rows: list
    shown: int
    total: int
    pages: list[PageLink]

    @property
    def showing(self) -> str:
        return f"showing {self.shown:,} of {self.total:,}"


@dataclass(frozen=True)
class ChartGroup:
    underlying: str
    charts: list[charts.Chart]


@dataclass(frozen=True)
class Dashboard:
    generated_at: str
    generated_iso: str
    banners: list[Banner]
    applied: AppliedPanel
    latest: list[LatestRunCard]
    live: list[LiveCard]
    policy: PolicyPanel
    health: list[HealthCard]
    live_table: HistoryTable
    auto_table: HistoryTable
    chart_groups: list[ChartGroup]
    settings_hash: str
    state_kept: bool


@dataclass(frozen=True)
class HistoryPage:
    """One paged history file; `rows()` formats its rows only when the page must be rewritten."""

    kind: str
    number: int
    title: str
    range_text: str
    older: PageLink | None  # only neighbours: adding a page must not change every other page
    newer: PageLink | None
    key: str
    chunk: list[RowRef]
    statuses: list[str]
    load: Callable[[Sequence[RowRef], bool], list]  # HistoryIndex.rows_of: RowRefs -> validated rows

    def rows(self) -> list:
        full = self.load(self.chunk, False)  # a page's rows are used once: not kept in memory
        if self.kind == "live":
            return [live_row(r, s) for r, s in zip(reversed(full), reversed(self.statuses))]
        return [auto_row(r) for r in reversed(full)]


@dataclass(frozen=True)
class Inputs:
    """Everything the dashboard is built from, as read by render.py."""

    config: CalibrationConfig
    config_error: str | None
    applied: AppliedDocument | None
    applied_error: str | None
    live: HistoryIndex
    auto: HistoryIndex
    details: dict[str, RunDetail]  # run_id -> detail, for the latest live run of each underlying
    detail_errors: dict[str, str]
    now: datetime
    state_json_exists: bool = True


# --------------------------------------------------------------------------- building


def underlyings_of(inp: Inputs, live_runs: Sequence[RowRef], auto_runs: Sequence[RowRef]) -> list[str]:
    """Configured underlyings first, then any the YAML or the history mention."""
    names = list(inp.config.underlyings)
    extra: set[str] = set()
    if inp.applied is not None:
        extra.update(inp.applied.underlyings)
    extra.update(r.underlying for r in live_runs if r.underlying)
    extra.update(r.underlying for r in auto_runs if r.underlying)
    return names + sorted(extra - set(names))


def latest_by_underlying(runs: Iterable) -> dict[str, object]:
    """Newest row per underlying (file order is time order: history is append-only)."""
    out: dict[str, object] = {}
    for r in runs:
        if r.underlying:
            out[r.underlying] = r
    return out


def live_only(runs: Sequence[RowRef]) -> list[RowRef]:
    """Live runs proper (the same filter force-apply uses to pick its candidate)."""
    return [r for r in runs if (r.source or "live") == "live"]


def derive_status(index: StatusIndex | None, run: LiveRun | RowRef) -> str:
    """StatusIndex.status_of reads only underlying, run_id and status, which a RowRef carries."""
    return UNKNOWN if index is None else index.status_of(run)


def status_index(inp: Inputs) -> StatusIndex | None:
    # StatusIndex.build reads (underlying, run_id) of `of_type(ApplyEvent)`: RowRefs carry both
    return StatusIndex.build(inp.applied, inp.live) if inp.applied is not None else None


def build_applied(
    inp: Inputs, names: list[str], event_refs: Sequence[RowRef]
) -> AppliedPanel:
    events: list[ApplyEvent] = inp.live.rows_of(event_refs[-inp.config.dashboard.max_rows :])
    log_rows = [
        ApplyLogRow(
            time=fmt_time(e.ts),
            time_iso=e.ts or "",
            underlying=fmt_text(e.underlying),
            source=fmt_text(e.source),
            previous=fmt_mult(_global(e.previous)),
            applied=fmt_mult(_global(e.applied)),
            bands=", ".join(f"{k} {fmt_mult(v)}" for k, v in _bands(e.applied).items()) or DASH,
            reason=fmt_text(e.reason),
            run_id=fmt_text(e.run_id),
        )
        for e in reversed(events)
    ]
    if inp.applied is None:
        return AppliedPanel(cards=[], error=inp.applied_error or "unreadable", log=log_rows, log_total=len(event_refs))
    last_event: dict[str, ApplyEvent] = {
        u: inp.live.row(ref) for u, ref in latest_by_underlying(event_refs).items()  # type: ignore[arg-type]
    }
    cards = []
    for name in names:
        entry = inp.applied.underlyings.get(name)
        if entry is None:
            cards.append(
                AppliedCard(
                    underlying=name,
                    values=[AppliedValue(name, "global", fmt_mult(1.0), DASH, False)],
                    never_applied=True,
                    updated_at=DASH,
                    updated_iso="",
                    source=DASH,
                    reason="default, never applied",
                    run_id=DASH,
                    previous_run_id=DASH,
                )
            )
            continue
        ev = last_event.get(name)
        # The previous value comes from the apply event that wrote the current entry; if the YAML
        # does not match that event (edited by hand?), say so instead of guessing.
        matches = (
            ev is not None
            and ev.applied is not None
            and ev.run_id == entry.run_id
            and ev.applied.global_ is not None
            and round(ev.applied.global_, 4) == round(entry.global_, 4)
        )
        prev = ev.previous if matches and ev is not None else None
        note = None
        if ev is not None and not matches:
            note = "The YAML differs from the last apply event in history (edited outside calreport?)."
        values = [
            AppliedValue(
                name,
                "global",
                fmt_mult(entry.global_),
                fmt_mult(_global(prev)),
                prev is not None and _global(prev) is not None and round(_global(prev) or 0, 4) != round(entry.global_, 4),
            )
        ]
        prev_bands = _bands(prev)
        for label, value in entry.bands.items():
            pv = prev_bands.get(label)
            values.append(
                AppliedValue(
                    name,
                    label,
                    fmt_mult(value),
                    fmt_mult(pv) if prev is not None else DASH,
                    prev is not None and (pv is None or round(pv, 4) != round(value, 4)),
                )
            )
        cards.append(
            AppliedCard(
                underlying=name,
                values=values,
                never_applied=False,
                updated_at=fmt_time(entry.updated_at),
                updated_iso=entry.updated_at or "",
                source=entry.source,
                reason=fmt_text(entry.reason),
                run_id=fmt_text(entry.run_id),
                previous_run_id=fmt_text(ev.previous_run_id) if matches and ev is not None else DASH,
                note=note,
            )
        )
    return AppliedPanel(cards=cards, error=None, log=log_rows, log_total=len(event_refs))


def display_reason(
    status: str, run: LiveRun, inp: Inputs, events_by_run: dict[tuple[str, str], RowRef]
) -> str:
    """Why the run has its status: the apply's reason when applied, else realism or policy."""
    if status == "applied" and inp.applied is not None:
        entry = inp.applied.underlyings.get(run.underlying or "")
        return fmt_text(entry.reason if entry else None)
    if status == "superseded":
        ref = events_by_run.get((run.underlying or "", run.run_id or ""))
        return fmt_text(inp.live.row(ref).reason if ref else None)
    if status == "failed":
        return fmt_text(run.reason)
    return fmt_text(run.decision_reason or run.reason)


def build_latest(
    names: list[str], latest: dict[str, LiveRun], index: StatusIndex | None, inp: Inputs,
    events_by_run: dict[tuple[str, str], RowRef],
) -> list[LatestRunCard]:
    cards = []
    for name in names:
        run = latest.get(name)
        if run is None:
            cards.append(LatestRunCard(underlying=name, present=False))
            continue
        status = derive_status(index, run)
        rec_b, sm_b = _bands(run.recommended), _bands(run.smoothed)
        labels = [b for b in inp.config.band_names() if b in rec_b or b in sm_b]
        labels += sorted((set(rec_b) | set(sm_b)) - set(labels))
        cards.append(
            LatestRunCard(
                underlying=name,
                present=True,
                run_id=fmt_text(run.run_id),
                source=fmt_text(run.source),
                time=fmt_time(run.ts),
                time_iso=run.ts or "",
                recommended=fmt_mult(_global(run.recommended)),
                smoothed=fmt_mult(_global(run.smoothed)),
                bands=[BandPair(b, fmt_mult(rec_b.get(b)), fmt_mult(sm_b.get(b))) for b in labels],
                status=status,
                reason=display_reason(status, run, inp, events_by_run),
                realism_status=fmt_text(run.status),
                realism_reason=fmt_text(run.reason),
                decision=fmt_text(run.decision),
                decision_reason=fmt_text(run.decision_reason),
                samples=fmt_int(run.samples),
                mae=fmt_pct(run.mae_pct),
            )
        )
    return cards


def _group_rows(groups: dict[str, GroupMetrics] | None, order: Sequence[str] = ()) -> list[GroupRow]:
    if not groups:
        return []
    names = [n for n in order if n in groups] + sorted(set(groups) - set(order))
    return [
        GroupRow(
            name=n,
            samples=fmt_int(groups[n].samples),
            mae=fmt_pct(groups[n].mae_pct),
            bias=fmt_pct(groups[n].bias_pct),
            vmae=fmt_pct(groups[n].vega_weighted_mae_pct),
            recommended=fmt_mult(groups[n].recommended),
            on_bound="at fit bound" if groups[n].on_bound else "",
        )
        for n in names
    ]


def _quote_rows(detail: RunDetail) -> list[QuoteRow]:
    rows = []
    for q in detail.quotes[:MAX_QUOTES]:
        diff_class = "neg" if q.diff_pct < 0 else "pos"
        rows.append(
            QuoteRow(
                instrument=q.instrument,
                dte=fmt_num(q.dte, 2),
                strike=fmt_num(q.strike, 0),
                type=q.type,
                mark=fmt_num(q.mark, 4),
                synthetic=fmt_num(q.synthetic, 4),
                diff=fmt_pct(q.diff_pct, 1),
                diff_class=diff_class,
                sort={
                    "dte": sort_value(q.dte),
                    "strike": sort_value(q.strike),
                    "mark": sort_value(q.mark),
                    "synthetic": sort_value(q.synthetic),
                    "diff": sort_value(q.diff_pct),
                },
            )
        )
    return rows


def build_live(names: list[str], latest: dict[str, LiveRun], inp: Inputs) -> list[LiveCard]:
    cards = []
    for name in names:
        run = latest.get(name)
        if run is None:
            cards.append(LiveCard(underlying=name, present=False))
            continue
        detail = inp.details.get(run.run_id or "")
        note = inp.detail_errors.get(run.run_id or "")
        if detail is None and note is None:
            note = "No quote-level detail file for this run."
        cards.append(
            LiveCard(
                underlying=name,
                present=True,
                run_id=fmt_text(run.run_id),
                time=fmt_time(run.ts),
                time_iso=run.ts or "",
                multiplier_tested=fmt_mult(run.multiplier_tested),
                mae=fmt_pct(run.mae_pct),
                vmae=fmt_pct(run.vega_weighted_mae_pct),
                bias=fmt_pct(run.bias_pct),
                mae_vol_points=fmt_num(run.mae_vol_points, 2),
                rv_7d=fmt_vol(run.rv_7d),
                atm_iv=fmt_vol(run.atm_iv),
                atm_ratio=fmt_num(run.atm_ratio, 3),
                recommended=fmt_mult(_global(run.recommended)),
                recommended_on_bound=bool(run.recommended_on_bound),
                samples=fmt_int(run.samples),
                rv_source=fmt_text(run.rv_source),
                rv_returns=fmt_int(run.rv_returns),
                atm_source=fmt_text(run.atm_source),
                snapshot=fmt_time(run.snapshot_ts),
                status=fmt_text(run.status),
                reason=fmt_text(run.reason),
                dropped=[(k, fmt_int(v)) for k, v in sorted((run.dropped or {}).items())],
                by_type=_group_rows(run.by_type, ("C", "P")),
                by_band=_group_rows(run.by_band, inp.config.band_names()),
                quotes=_quote_rows(detail) if detail is not None else [],
                quotes_total=len(detail.quotes) if detail is not None else 0,
                detail_note=note,
            )
        )
    return cards


def build_policy(inp: Inputs, names: list[str], latest: dict[str, LiveRun], index: StatusIndex | None) -> PolicyPanel:
    p, r, s = inp.config.policy, inp.config.realism, inp.config.smoothing
    thresholds = [
        ("Min samples", fmt_int(p.min_samples), "a run with fewer usable quotes is held"),
        ("Min vega sum", fmt_num(p.min_vega_sum, 2), "total vega of the quotes used"),
        ("Min change", fmt_pct(p.min_delta * 100, 1), "smaller relative moves are held (no churn)"),
        ("Max step", fmt_pct(p.max_rel_step * 100, 1), "larger relative moves are held for review"),
        ("Smoothing alpha", fmt_num(s.alpha, 2), "smoothed = alpha x recommended + (1 - alpha) x applied"),
        ("Sane multiplier", f"{fmt_num(r.min_mult, 2)} - {fmt_num(r.max_mult, 2)}", "outside: realism failed"),
        ("Max MAE", fmt_pct(r.max_mae, 0), "above: realism failed"),
        ("Max vega MAE", fmt_pct(r.max_vega_mae, 0), "above: realism failed"),
    ]
    decisions = [
        PolicyDecision(
            underlying=n,
            run_id=fmt_text(run.run_id),
            time=fmt_time(run.ts),
            status=derive_status(index, run),
            decision=fmt_text(run.decision),
            decision_reason=fmt_text(run.decision_reason),
        )
        for n in names
        if (run := latest.get(n)) is not None
    ]
    return PolicyPanel(thresholds=thresholds, decisions=decisions, config_error=inp.config_error)


def build_health(names: list[str], latest_auto: dict[str, AutoRun]) -> list[HealthCard]:
    cards = []
    for name in names:
        run = latest_auto.get(name)
        if run is None:
            cards.append(HealthCard(underlying=name, present=False))
            continue
        dq = run.data_quality
        used, expected = run.snapshots_used, run.snapshots_expected
        snapshots = DASH if used is None else (fmt_int(used) + (f" of {fmt_int(expected)}" if expected else ""))
        start, end = run.harvest_start, run.harvest_end
        period = DASH if not (start or end) else f"{fmt_time(start)} to {fmt_time(end)}"
        cards.append(
            HealthCard(
                underlying=name,
                present=True,
                run_id=fmt_text(run.run_id),
                time=fmt_time(run.ts),
                status=fmt_text(run.status),
                reason=fmt_text(run.reason),
                dq_status=fmt_text(dq.status if dq else None),
                snapshots=snapshots,
                completeness=fmt_pct(dq.completeness * 100, 1) if dq and _finite(dq.completeness) else DASH,
                schema_errors=fmt_int(dq.schema_errors if dq else None),
                expiries=fmt_int(dq.expiries if dq else None),
                strikes=fmt_int(dq.strikes if dq else None),
                rv_returns=fmt_int(dq.rv_returns if dq else None),
                dte_range=dte_range(run),
                lookback=fmt_text(run.lookback),
                period=period,
                settings_hash=fmt_text(run.settings_hash),
                issues=[str(i) for i in (dq.issues if dq else [])],
            )
        )
    return cards


def dte_range(run: AutoRun) -> str:
    if run.dte_min is None and run.dte_max is None:
        return DASH
    lo = DASH if run.dte_min is None else f"{run.dte_min:g}"
    hi = DASH if run.dte_max is None else f"{run.dte_max:g}"
    return f"{lo}-{hi}d"


def live_row(run: LiveRun, status: str) -> LiveRow:
    return LiveRow(
        time=fmt_time(run.ts),
        time_iso=run.ts or "",
        underlying=fmt_text(run.underlying),
        run_id=fmt_text(run.run_id),
        status=status,
        decision=fmt_text(run.decision),
        tested=fmt_mult(run.multiplier_tested),
        recommended=fmt_mult(_global(run.recommended)),
        smoothed=fmt_mult(_global(run.smoothed)),
        mae=fmt_pct(run.mae_pct),
        vmae=fmt_pct(run.vega_weighted_mae_pct),
        rv_7d=fmt_vol(run.rv_7d),
        atm_iv=fmt_vol(run.atm_iv),
        samples=fmt_int(run.samples),
        reason=fmt_text(run.decision_reason if run.status != "failed" and run.decision_reason else run.reason),
    )


def auto_row(run: AutoRun) -> AutoRow:
    return AutoRow(
        time=fmt_time(run.ts),
        time_iso=run.ts or "",
        underlying=fmt_text(run.underlying),
        run_id=fmt_text(run.run_id),
        status=run.status or UNKNOWN,
        dte_range=dte_range(run),
        lookback=fmt_text(run.lookback),
        multiplier=fmt_mult(run.multiplier),
        vmae=fmt_pct(run.vega_weighted_mae_pct),
        mae=fmt_pct(run.mae_pct),
        samples=fmt_int(run.samples),
        reason=fmt_text(run.reason),
    )


def page_count(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size)) if total else 0


def page_links(kind: str, total: int, page_size: int, prefix: str = "history/") -> list[PageLink]:
    """Pages are numbered oldest first (page 1 = the oldest rows) so appends touch only the last page."""
    n = page_count(total, page_size)
    links = []
    for k in range(n, 0, -1):
        lo, hi = (k - 1) * page_size + 1, min(k * page_size, total)
        links.append(PageLink(k, f"{prefix}{kind}-{k}.html", f"{lo:,}-{hi:,}"))
    return links


def build_tables(
    inp: Inputs, live_runs: Sequence[RowRef], auto_runs: Sequence[RowRef], index: StatusIndex | None
) -> tuple[HistoryTable, HistoryTable]:
    n, size = inp.config.dashboard.max_rows, inp.config.dashboard.page_size
    newest_live: list[LiveRun] = inp.live.rows_of(reversed(live_runs[-n:]))
    newest_auto: list[AutoRun] = inp.auto.rows_of(reversed(auto_runs[-n:]))
    paged_live = len(live_runs) > n
    paged_auto = len(auto_runs) > n
    live_t = HistoryTable(
        kind="live",
        rows=[live_row(r, derive_status(index, r)) for r in newest_live],
        shown=len(newest_live),
        total=len(live_runs),
        pages=page_links("live", len(live_runs), size) if paged_live else [],
    )
    auto_t = HistoryTable(
        kind="auto",
        rows=[auto_row(r) for r in newest_auto],
        shown=len(newest_auto),
        total=len(auto_runs),
        pages=page_links("auto", len(auto_runs), size) if paged_auto else [],
    )
    return live_t, auto_t


def build_banners(
    inp: Inputs, names: list[str], latest: dict[str, LiveRun], index: StatusIndex | None
) -> list[Banner]:
    out: list[Banner] = []
    dash = inp.config.dashboard
    if inp.config_error:
        out.append(Banner("error", "Settings file is invalid", inp.config_error))
    if inp.applied_error:
        kept = (
            "site/api/calibration/state.json still holds the last good state."
            if inp.state_json_exists
            else "No state document has been written yet."
        )
        out.append(
            Banner(
                "error",
                "Applied multipliers file is invalid: no applied values are shown",
                f"{inp.applied_error}. The engine keeps its last good values until the file is fixed. {kept}",
            )
        )
    for name in names:
        run = latest.get(name)
        if run is None:
            continue
        if run.status == "failed":
            out.append(Banner("error", f"{name}: latest live run failed", f"{fmt_text(run.run_id)}: {fmt_text(run.reason)}"))
        if _finite(run.mae_pct) and (run.mae_pct or 0) > dash.mae_warn_pct:
            out.append(
                Banner(
                    "warn",
                    f"{name}: high pricing error",
                    f"latest live run MAE {fmt_pct(run.mae_pct)} is above the warning level {fmt_pct(dash.mae_warn_pct, 0)}",
                )
            )
        manual_rv = (run.rv_source or "").lower() == "manual"  # given with --rv: no history involved
        if run.rv_returns is not None and not manual_rv and run.rv_returns < dash.min_rv_returns:
            out.append(
                Banner(
                    "warn",
                    f"{name}: RV_7d from too little history",
                    f"RV_7d {fmt_vol(run.rv_7d)} was computed from {fmt_int(run.rv_returns)} returns "
                    f"(want at least {fmt_int(dash.min_rv_returns)}; source: {fmt_text(run.rv_source)})",
                )
            )
    for label, read, path in (("live", inp.live, "history/live_calibration.jsonl"), ("auto", inp.auto, "history/auto_calibrate.jsonl")):
        if read.skipped:
            lines = ", ".join(str(n) for n in read.skipped_lines[:5]) + (" ..." if read.skipped > 5 else "")
            out.append(
                Banner("warn", f"{path}: {read.skipped} unreadable line(s) skipped", f"line(s) {lines}; the file is not modified")
            )
    return out


def chart_events(events: Sequence[RowRef], runs: Sequence[RowRef], load: Callable[[RowRef], ApplyEvent]) -> list[ApplyEvent]:
    """The apply events a multiplier chart of `runs` draws: those after its first run's time and the
    last one at or before it that has a value (the applied level the step line starts from). History
    is in time order, so this reads back from the newest event and stops there."""
    times = [t for r in runs if (t := charts._ts(r.ts)) is not None]
    if not times:
        return []
    t_first = min(times)
    out: list[ApplyEvent] = []
    for ref in reversed(events):
        t = charts._ts(ref.ts)
        if t is None:
            continue
        e = load(ref)
        out.append(e)
        if t <= t_first and e.applied is not None and charts._fin(e.applied.global_):
            break
    return out[::-1]


def build_charts(
    names: list[str],
    live_runs: Sequence[RowRef],
    events: Sequence[RowRef],
    auto_runs: Sequence[RowRef],
    latest: dict[str, LiveRun],
    inp: Inputs,
) -> list[ChartGroup]:
    groups = []
    for name in names:
        run_refs = [r for r in live_runs if r.underlying == name][-CHART_POINTS:]
        runs: list[LiveRun] = inp.live.rows_of(run_refs)
        evs = chart_events([e for e in events if e.underlying == name], run_refs, inp.live.row)
        autos: list[AutoRun] = inp.auto.rows_of([r for r in auto_runs if r.underlying == name][-CHART_POINTS:])
        cs = [
            charts.multiplier_chart(name, runs, evs),
            charts.auto_chart(name, autos),
        ]
        run = latest.get(name)
        detail = inp.details.get(run.run_id or "") if run is not None else None
        cs.append(charts.iv_chart(name, run, detail))
        groups.append(ChartGroup(name, cs))
    return groups


def build_dashboard(inp: Inputs) -> Dashboard:
    live_all = inp.live.of_type(LiveRun)
    events = inp.live.of_type(ApplyEvent)
    auto_all = inp.auto.of_type(AutoRun)
    names = underlyings_of(inp, live_all, auto_all)
    index = status_index(inp)
    live_proper = live_only(live_all)
    latest: dict[str, LiveRun] = {u: inp.live.row(r) for u, r in latest_by_underlying(live_proper).items()}  # type: ignore[arg-type]
    latest_auto: dict[str, AutoRun] = {u: inp.auto.row(r) for u, r in latest_by_underlying(auto_all).items()}  # type: ignore[arg-type]
    events_by_run = {(e.underlying or "", e.run_id or ""): e for e in events}
    live_t, auto_t = build_tables(inp, live_all, auto_all, index)
    return Dashboard(
        generated_at=fmt_time(iso_utc(inp.now)),
        generated_iso=iso_utc(inp.now),
        banners=build_banners(inp, names, latest, index),
        applied=build_applied(inp, names, events),
        latest=build_latest(names, latest, index, inp, events_by_run),
        live=build_live(names, latest, inp),
        policy=build_policy(inp, names, latest, index),
        health=build_health(names, latest_auto),
        live_table=live_t,
        auto_table=auto_t,
        chart_groups=build_charts(names, live_all, events, auto_all, latest, inp),
        settings_hash=inp.config.settings_hash(),
        state_kept=inp.applied_error is not None,
    )


def build_pages(inp: Inputs, kind: str, code_key: str) -> list[HistoryPage]:
    """Every history row, paged oldest first (page k holds rows (k-1)*size+1 .. k*size) so an append
    changes only the last page; a page's key changes only when its rows or their derived status do."""
    size = inp.config.dashboard.page_size
    if kind == "live":
        source = inp.live
        runs = source.of_type(LiveRun)
        index = status_index(inp)
        statuses = [derive_status(index, r) for r in runs]
        title = "Live calibration history"
    else:
        source = inp.auto
        runs = source.of_type(AutoRun)
        statuses = [r.status or UNKNOWN for r in runs]
        title = "Calibration History (Auto-Calibrate)"
    total = len(runs)
    n_pages = page_count(total, size)
    pages = []
    for k in range(1, n_pages + 1):
        lo = (k - 1) * size
        chunk, sts = runs[lo : lo + size], statuses[lo : lo + size]
        older = PageLink(k - 1, f"{kind}-{k - 1}.html", f"{(k - 2) * size + 1:,}-{lo:,}") if k > 1 else None
        newer = PageLink(k + 1, f"{kind}-{k + 1}.html", f"page {k + 1}") if k < n_pages else None
        h = hashlib.sha256(f"{code_key}|{kind}|{size}|{newer is not None}|".encode())
        for r, s in zip(chunk, sts):
            h.update(f"{r.run_id}:{r.ts}:{s}|".encode())
        pages.append(
            HistoryPage(
                kind=kind,
                number=k,
                title=title,
                range_text=f"rows {lo + 1:,}-{lo + len(chunk):,} (numbered oldest first), newest first",
                older=older,
                newer=newer,
                key=h.hexdigest()[:32],
                chunk=chunk,
                statuses=sts,
                load=source.rows_of,
            )
        )
    return pages
