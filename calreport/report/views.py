"""One view-model per dashboard panel, built from what was read from the files of record.

Everything here is a pure function of plain data (config, applied document, typed history rows,
run details): no file I/O, no clock (the caller passes `now`), no knowledge of how history is
stored. render.read_inputs asks the history query for exactly the rows shown (the newest of each
table, the latest run per underlying, the chart points) and passes them here as lists. Templates
only print these strings, so every number on the page is formatted once, here, through
calreport.fmt, and a missing value is always fmt.MISSING.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import NamedTuple, Sequence

from calreport import fmt
from calreport.apply import RULES, Refused, RollbackTarget, force_refusal, rollback_values, run_thin_rv
from calreport.calibration.sigma import mode_of
from calreport.model import (
    AppliedDocument,
    AppliedEntry,
    ApplyEvent,
    AutoRun,
    CalibrationConfig,
    GroupMetrics,
    HistoryRow,
    LiveRun,
    Multipliers,
    RunDetail,
    RunFlag,
    quoted_in_mode,
)
from calreport.report import charts
from calreport.report.expiry_errors import ExpiryErrorSection, build_expiry_errors
from calreport.report.smile import SKEW_FLAG, SmileSection, build_smile_sections
from calreport.store.state import LEGACY_STATUS, ROLLED_BACK, StatusIndex
from calreport.timeutil import MS_PER_HOUR, iso_utc, time_ms

MISSING = fmt.MISSING
UNKNOWN = "unknown"  # a status that cannot be derived (the YAML is unreadable, or an old row lacks it)
MAX_QUOTES = 2000  # quote-table rows shown for the latest run (the detail file keeps all of them)
CHART_POINTS = 200  # newest runs drawn per chart; the table fallback lists the same points


# --------------------------------------------------------------------------- formatting


def sort_value(x: float | int | None) -> str:
    """A machine-readable number for client-side sorting ('' sorts missing values last)."""
    return repr(float(x)) if fmt.finite(x) else ""


def _global(m: Multipliers | None) -> float | None:
    return None if m is None else m.global_


def _bands(m: Multipliers | None) -> dict[str, float]:
    return {} if m is None else dict(m.bands)


def _se_basis(run: LiveRun) -> str:
    """What a live run's ± rests on: the surface's own refits (fit.surface_se wild, or the resampling refit), or,
    under the default config and in older surface rows, the flat fit's bootstrap: another statistic than the
    fitted levels' (0.3-3x theirs on the shared snapshots, CALIBRATION_NOTES), said so on the card."""
    if _global(run.multiplier_se) is None:
        return ""
    g = (run.uncertainty or {}).get("global")
    if g is not None and g.method in ("surface refit", "wild cluster"):
        return f"{g.method}, {g.draws} {'draws' if g.method == 'surface refit' else 'refits'}"
    if run.recommended is not None and run.recommended.smile is not None:
        return "flat-fit SE, not the surface SE (fit.surface_se: wild gives that)"
    return "bootstrap over expiries" if g is None or g.expiries is None else f"bootstrap over {g.expiries} expiries"


# --------------------------------------------------------------------------- panels


@dataclass(frozen=True)
class Banner:
    level: str  # "error" | "warn"
    title: str
    text: str


SEVERITY = {"error": 0, "warn": 1, "info": 2}  # order of the flag summaries and of the items in each


@dataclass(frozen=True)
class FlagItem:
    """One problem of one underlying: a failed run, a high error, a run flag, an unapplied smile."""

    level: str  # "error" | "warn" | "info" (an auto run's flags: those runs are never applied)
    title: str
    lines: list[str]


@dataclass(frozen=True)
class FlagSummary:
    """Every flag of one underlying, gathered: a one-line summary (the worst first) that expands."""

    underlying: str
    level: str  # the worst item's
    counts: str  # "1 error, 2 warnings"
    worst: str  # the worst item's title
    items: list[FlagItem]


@dataclass(frozen=True)
class ErrorFigure:
    label: str
    value: str
    field: str


@dataclass(frozen=True)
class OverviewCard:
    """The first screen, per underlying: what the engine uses, whether it is healthy, the latest run
    and its one headline error (HEADLINE_ERROR), the other error figures on demand."""

    underlying: str
    applied: str  # the applied global, as the engine reads it
    applied_bands: str  # "0-7d 0.9842, 7-30d 1.0796" or ""
    applied_source: str
    applied_updated: str
    health: str  # "ok" | "warn" | "error"
    health_text: str
    run_present: bool
    run_id: str = MISSING
    run_time: str = MISSING
    run_time_iso: str = ""
    run_age: str = MISSING
    stale: bool = False
    status: str = MISSING
    smoothed: str = MISSING
    headline: str = MISSING  # the headline error's value
    others: list[ErrorFigure] = field(default_factory=list)
    # False when the surface quotes every pillar at its own band's level: the global level is then only a
    # fallback the engine does not use (the card says so instead of "Engine uses (global)")
    global_quoted: bool = True
    # set when the applied values were fitted in another sigma mode than the configured one: the engine
    # quotes the base alone (EngineView.sigma_in_mode), so the card must not present them as quoted
    not_used: str = ""


# The one error the first screen leads with: the vega-weighted mean |sigma_model - sigma_mark| over OTM
# quotes of what the engine quotes NOW (the applied YAML) against the latest live run's marks, in vol points
# (report/expiry_errors.py, the "all fitted" row of IV error per expiry). Not the run's own iv_error_vp: that is
# measured at the values the run tested, which the run's own apply replaced. It is in the units a desk
# quotes, counts each strike once (OTM only) and weights by vega, so a deep-wing quote worth nothing does
# not dominate it; the run's own figures are shown beside it on demand, each saying where it was measured.
HEADLINE_ERROR = "OTM IV error of the applied calibration on the latest live run's marks (vega-weighted, vol points)"


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
    # would `rollback --to run_id` write anything? (apply.rollback_values: no button when it would not)
    can_rollback: bool = False
    rollback_refusal: str = ""


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
    se: str = ""  # the recommended value's standard error (fmt.se), "" for older rows


@dataclass(frozen=True)
class LatestRunCard:
    underlying: str
    present: bool
    run_id: str = MISSING
    source: str = MISSING
    time: str = MISSING
    time_iso: str = ""
    recommended: str = MISSING
    recommended_se: str = ""
    recommended_ci95: str = ""
    se_basis: str = ""  # what the ± rests on (the flat bootstrap understates a smile-fitted level: say so)
    smoothed: str = MISSING
    bands: list[BandPair] = field(default_factory=list)
    status: str = MISSING
    reason: str = MISSING
    realism_status: str = MISSING
    realism_reason: str = MISSING
    decision: str = MISSING
    decision_reason: str = MISSING
    samples: str = MISSING
    mae: str = MISSING
    # the desk's headline (calibration/desk.py): OTM only, each strike once; IV error in vol points
    otm_vmae: str = MISSING
    iv_error_vp: str = MISSING
    iv_bias_vp: str = MISSING
    otm_samples: str = MISSING
    sigma_mode: str = "rv"
    # the same errors side by side: at the tested calibration (the applied values the metrics were
    # measured at) and at the recommended one, smile included ("-" for rows that lack them)
    tested: str = MISSING
    vmae: str = MISSING
    fit_vmae: str = MISSING
    fit_otm_vmae: str = MISSING
    fit_iv_error_vp: str = MISSING
    # would force-apply write anything? (apply.force_refusal, the realism override allowed: no button when not)
    can_force_apply: bool = False
    force_refusal: str = ""


@dataclass(frozen=True)
class GroupRow:
    name: str
    samples: str
    mae: str
    bias: str
    vmae: str
    recommended: str
    on_bound: str
    se: str = ""


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
    run_id: str = MISSING
    time: str = MISSING
    time_iso: str = ""
    multiplier_tested: str = MISSING
    mae: str = MISSING
    vmae: str = MISSING
    bias: str = MISSING
    mae_vol_points: str = MISSING
    rv_7d: str = MISSING
    atm_iv: str = MISSING
    atm_ratio: str = MISSING
    recommended: str = MISSING
    recommended_se: str = ""
    recommended_on_bound: bool = False
    samples: str = MISSING
    rv_source: str = MISSING
    rv_returns: str = MISSING
    rv_warning: str = ""
    deribit_hv: str = ""  # Deribit's own historical vol at the snapshot (price store), "" when unknown
    atm_source: str = MISSING
    snapshot: str = MISSING
    status: str = MISSING
    reason: str = MISSING
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
    run_id: str = MISSING
    time: str = MISSING
    status: str = MISSING
    reason: str = MISSING
    dq_status: str = MISSING
    snapshots: str = MISSING
    completeness: str = MISSING
    schema_errors: str = MISSING
    expiries: str = MISSING
    strikes: str = MISSING
    rv_returns: str = MISSING
    dte_range: str = MISSING
    lookback: str = MISSING
    period: str = MISSING
    settings_hash: str = MISSING
    issues: list[str] = field(default_factory=list)
    rests_on: str = ""  # the evidence headline (_used)
    stale_harvest: str = ""  # the window ends long after the last snapshot (harvest_gap_hours)


class LiveRow(NamedTuple):
    """One live run as a table row shows it (every field formatted text; a tuple: a long history's
    page makes 100,000 of them, and a compiled row macro takes them in field order)."""

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
    recommended_se: str = ""


class AutoRow(NamedTuple):
    """One auto run as a table row shows it (see LiveRow)."""

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
    multiplier_se: str = ""
    used: str = ""  # snapshots used and the span they really cover (older rows: "")
    ran_at: str = ""  # the wall-clock run time when it differs from the window end shown as Date


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
    smile: list[SmileSection] = field(default_factory=list)
    flags: list[FlagSummary] = field(default_factory=list)
    overview: list[OverviewCard] = field(default_factory=list)
    headline_error: str = HEADLINE_ERROR
    poll_seconds: str = ""
    compare_links: dict[str, str] = field(default_factory=dict)  # live run_id -> compare page (site-relative)
    expiry_errors: list[ExpiryErrorSection] = field(default_factory=list)  # IV error per expiry of the latest run


@dataclass(frozen=True)
class PagePlan:
    """Where one paged history file sits: page k holds rows (k-1)*size+1 .. k*size, numbered oldest
    first, so an append changes only the last page."""

    kind: str
    number: int
    title: str
    range_text: str
    older: PageLink | None  # only neighbours: adding a page must not change every other page
    newer: PageLink | None


@dataclass(frozen=True)
class HistoryPage:
    """One paged history file, ready for history.html.j2."""

    plan: PagePlan
    key: str  # changes whenever the page's rows, their derived status or the code change
    body: str  # the table's rows, newest first, as HTML (render.CompiledRow made them from LiveRow / AutoRow)

    @property
    def kind(self) -> str:
        return self.plan.kind

    @property
    def number(self) -> int:
        return self.plan.number

    @property
    def title(self) -> str:
        return self.plan.title

    @property
    def range_text(self) -> str:
        return self.plan.range_text

    @property
    def older(self) -> PageLink | None:
        return self.plan.older

    @property
    def newer(self) -> PageLink | None:
        return self.plan.newer


@dataclass(frozen=True)
class HistoryShown:
    """The history rows the dashboard shows, newest first by time (see store.query), as typed rows."""

    underlyings: set[str]  # every underlying a live or auto run names
    latest_live: dict[str, LiveRun]  # newest live run proper (not an imported record) per underlying
    latest_auto: dict[str, AutoRun]
    latest_events: dict[str, ApplyEvent]  # newest apply event per underlying
    applying_event: dict[tuple[str, str], ApplyEvent]  # (underlying, run_id) of a latest live run -> its apply
    live_rows: list[LiveRun]  # the newest dashboard.max_rows
    live_total: int
    auto_rows: list[AutoRun]
    auto_total: int
    event_log: list[ApplyEvent]  # the newest dashboard.max_rows
    events_total: int
    chart_runs: dict[str, list[LiveRun]]  # per underlying, the newest CHART_POINTS, oldest first
    chart_events: dict[str, list[ApplyEvent]]  # the applies those charts draw, oldest first
    chart_autos: dict[str, list[AutoRun]]
    skipped: dict[str, tuple[int, list[int]]]  # history file (relative path) -> (count, line numbers)


@dataclass(frozen=True)
class Inputs:
    """Everything the dashboard is built from, as read by render.py."""

    config: CalibrationConfig
    config_error: str | None
    applied: AppliedDocument | None
    applied_error: str | None
    history: HistoryShown
    statuses: StatusIndex | None  # None when the YAML is unreadable: statuses cannot be derived
    details: dict[str, RunDetail]  # run_id -> detail, for the latest live run of each underlying
    detail_errors: dict[str, str]
    now: datetime
    state_json_exists: bool = True


# --------------------------------------------------------------------------- building


def underlyings_of(inp: Inputs) -> list[str]:
    """Configured underlyings first, then any the YAML or the history mention."""
    names = list(inp.config.underlyings)
    extra: set[str] = set(inp.history.underlyings)
    if inp.applied is not None:
        extra.update(inp.applied.underlyings)
    return names + sorted(extra - set(names))


def derive_status(index: StatusIndex | None, run: LiveRun) -> str:
    """The display status (StatusIndex.shown_status: an imported legacy record shows "legacy")."""
    if not run.is_live:
        return LEGACY_STATUS
    return UNKNOWN if index is None else index.shown_status(run)


def legacy_decision(run: LiveRun) -> str:
    """What the old system decided, as its own words: "legacy: applied" / "legacy: held"."""
    return f"legacy: {'applied' if run.legacy_applied or run.decision == 'apply' else 'held'}"


def legacy_vega_note(run: LiveRun) -> str:
    """The old system's vega_sum was a placeholder (10 per quote: 880 for 88 quotes), not a vega."""
    v, n = run.vega_sum, run.samples
    if run.is_live or v is None:
        return ""
    if n and abs(v - 10.0 * n) < 1e-9:
        return f" [legacy vega {fmt.num(v, 0)} is the old system's placeholder (10 per quote), not a Black-76 vega]"
    return f" [legacy vega {fmt.num(v, 0)}: as recorded by the old system, not recomputed]"


def _rollback_refusal(e: ApplyEvent, inp: Inputs) -> str | None:
    """Why the log row's "Roll back to this" would be refused (None: it would write); only the
    newest event of a run is a target (what `rollback --to` re-applies)."""
    if not e.run_id or e.applied is None or e.applied.global_ is None or inp.applied is None or not e.underlying:
        return "no applied values to re-apply"
    entry = inp.applied.entry(e.underlying)
    got = rollback_values(RollbackTarget(e.run_id, e.applied, e.sigma_mode), e.underlying, inp.config, entry)
    return got.reason if isinstance(got, Refused) else None


def _rollback_flags(inp: Inputs) -> list[dict[str, object]]:
    """can_rollback / rollback_refusal of each shown apply event (newest first)."""
    seen: dict[tuple[str | None, str | None], str | None] = {}
    out: list[dict[str, object]] = []
    for e in inp.history.event_log:
        key = (e.underlying, e.run_id)
        why = _rollback_refusal(e, inp) if key not in seen else seen[key]
        seen.setdefault(key, why)
        out.append({"can_rollback": why is None, "rollback_refusal": why or ""})
    return out


def build_applied(inp: Inputs, names: list[str]) -> AppliedPanel:
    shown = inp.history
    log_rows = [
        ApplyLogRow(
            time=fmt.time(e.ts),
            time_iso=e.ts or "",
            underlying=fmt.text(e.underlying),
            source=fmt.text(e.source),
            previous=fmt.mult(_global(e.previous)),
            applied=fmt.mult(_global(e.applied)),
            bands=", ".join(f"{k} {fmt.mult(v)}" for k, v in _bands(e.applied).items()) or MISSING,
            reason=fmt.text(e.reason),
            run_id=fmt.text(e.run_id),
            **flags,  # type: ignore[arg-type]
        )
        for e, flags in zip(shown.event_log, _rollback_flags(inp))
    ]
    if inp.applied is None:
        return AppliedPanel(cards=[], error=inp.applied_error or "unreadable", log=log_rows, log_total=shown.events_total)
    last_event = shown.latest_events
    cards = []
    for name in names:
        entry = inp.applied.underlyings.get(name)
        if entry is None:
            cards.append(
                AppliedCard(
                    underlying=name,
                    values=[AppliedValue(name, "global", fmt.mult(1.0), MISSING, False)],
                    never_applied=True,
                    updated_at=MISSING,
                    updated_iso="",
                    source=MISSING,
                    reason="default, never applied",
                    run_id=MISSING,
                    previous_run_id=MISSING,
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
                fmt.mult(entry.global_),
                fmt.mult(_global(prev)),
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
                    fmt.mult(value),
                    fmt.mult(pv) if prev is not None else MISSING,
                    prev is not None and (pv is None or round(pv, 4) != round(value, 4)),
                )
            )
        cards.append(
            AppliedCard(
                underlying=name,
                values=values,
                never_applied=False,
                updated_at=fmt.time(entry.updated_at),
                updated_iso=entry.updated_at or "",
                source=entry.source,
                reason=fmt.text(entry.reason),
                run_id=fmt.text(entry.run_id),
                previous_run_id=fmt.text(ev.previous_run_id) if matches and ev is not None else MISSING,
                note=note,
            )
        )
    return AppliedPanel(cards=cards, error=None, log=log_rows, log_total=shown.events_total)


def display_reason(status: str, run: LiveRun, inp: Inputs) -> str:
    """Why the run has its status: the apply's reason when applied, else realism or policy."""
    if status == LEGACY_STATUS:
        return fmt.text(run.decision_reason or run.reason) + legacy_vega_note(run)
    if status == "applied" and inp.applied is not None:
        entry = inp.applied.underlyings.get(run.underlying or "")
        return fmt.text(entry.reason if entry else None)
    if status == ROLLED_BACK and inp.statuses is not None:
        return fmt.text(inp.statuses.rollback_reason(run))
    if status == "superseded":
        event = inp.history.applying_event.get((run.underlying or "", run.run_id or ""))
        return fmt.text(event.reason if event else None)
    if status == "failed":
        return fmt.text(run.reason)
    return fmt.text(run.decision_reason or run.reason)


def build_latest(names: list[str], inp: Inputs) -> list[LatestRunCard]:
    latest, index = inp.history.latest_live, inp.statuses
    cards = []
    for name in names:
        run = latest.get(name)
        if run is None:
            cards.append(LatestRunCard(underlying=name, present=False))
            continue
        status = derive_status(index, run)
        refused = (
            force_refusal(run, name, inp.applied.entry(name), inp.config, allow_unrealistic=True) if inp.applied is not None
            else Refused("the applied YAML is unreadable")
        )
        rec_b, sm_b = _bands(run.recommended), _bands(run.smoothed)
        labels = [b for b in inp.config.band_names() if b in rec_b or b in sm_b]
        labels += sorted((set(rec_b) | set(sm_b)) - set(labels))
        cards.append(
            LatestRunCard(
                underlying=name,
                present=True,
                run_id=fmt.text(run.run_id),
                source=fmt.text(run.source),
                time=fmt.time(run.ts),
                time_iso=run.ts or "",
                recommended=fmt.mult(_global(run.recommended)),
                smoothed=fmt.mult(_global(run.smoothed)),
                recommended_se=fmt.se(_global(run.multiplier_se)),
                recommended_ci95=fmt.interval(run.multiplier_ci95.global_ if run.multiplier_ci95 else None),
                se_basis=_se_basis(run),
                bands=[
                    BandPair(b, fmt.mult(rec_b.get(b)), fmt.mult(sm_b.get(b)), fmt.se(_bands(run.multiplier_se).get(b)))
                    for b in labels
                ],
                status=status,
                reason=display_reason(status, run, inp),
                realism_status=fmt.text(run.status),
                realism_reason=fmt.text(run.reason),
                decision=legacy_decision(run) if not run.is_live else fmt.text(run.decision),
                decision_reason=fmt.text(run.decision_reason) + legacy_vega_note(run),
                samples=fmt.integer(run.samples),
                mae=fmt.pct(run.mae_pct),
                otm_vmae=fmt.pct(run.otm_vega_weighted_mae_pct),
                iv_error_vp=fmt.num(run.iv_error_vp, 2),
                iv_bias_vp=fmt.num(run.iv_bias_vp, 2),
                otm_samples=fmt.integer(run.otm_samples),
                sigma_mode=run.sigma_mode or "rv",
                tested=fmt.mult(run.multiplier_tested),
                vmae=fmt.pct(run.vega_weighted_mae_pct),
                fit_vmae=fmt.pct(run.fit_vega_weighted_mae_pct),
                fit_otm_vmae=fmt.pct(run.fit_otm_vega_weighted_mae_pct),
                fit_iv_error_vp=fmt.num(run.fit_iv_error_vp, 2),
                can_force_apply=refused is None,
                force_refusal=refused.reason if refused is not None else "",
            )
        )
    return cards


def _group_rows(
    groups: dict[str, GroupMetrics] | None, order: Sequence[str] = (), ses: dict[str, float] | None = None
) -> list[GroupRow]:
    if not groups:
        return []
    ses = ses or {}
    names = [n for n in order if n in groups] + sorted(set(groups) - set(order))
    return [
        GroupRow(
            name=n,
            samples=fmt.integer(groups[n].samples),
            mae=fmt.pct(groups[n].mae_pct),
            bias=fmt.pct(groups[n].bias_pct),
            vmae=fmt.pct(groups[n].vega_weighted_mae_pct),
            recommended=fmt.mult(groups[n].recommended),
            on_bound="at fit bound" if groups[n].on_bound else "",
            se=fmt.se(ses.get(n)),
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
                dte=fmt.num(q.dte, 2),
                strike=fmt.num(q.strike, 0),
                type=q.type,
                mark=fmt.num(q.mark, 4),
                synthetic=fmt.num(q.synthetic, 4),
                diff=fmt.pct(q.diff_pct, 1),
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


def build_live(names: list[str], inp: Inputs) -> list[LiveCard]:
    latest = inp.history.latest_live
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
                run_id=fmt.text(run.run_id),
                time=fmt.time(run.ts),
                time_iso=run.ts or "",
                multiplier_tested=fmt.mult(run.multiplier_tested),
                mae=fmt.pct(run.mae_pct),
                vmae=fmt.pct(run.vega_weighted_mae_pct),
                bias=fmt.pct(run.bias_pct),
                mae_vol_points=fmt.num(run.mae_vol_points, 2),
                rv_7d=fmt.vol(run.rv_7d),
                atm_iv=fmt.vol(run.atm_iv),
                atm_ratio=fmt.num(run.atm_ratio, 3),
                recommended=fmt.mult(_global(run.recommended)),
                recommended_se=fmt.se(_global(run.multiplier_se)),
                recommended_on_bound=bool(run.recommended_on_bound),
                samples=fmt.integer(run.samples),
                rv_source=fmt.text(run.rv_source),
                rv_returns=fmt.integer(run.rv_returns) if run.rv_source != "manual" else MISSING,  # --rv: no returns behind it
                rv_warning=run.rv_warning or "",
                deribit_hv=(f"{fmt.vol(run.deribit_hv)} at {fmt.time(run.deribit_hv_ts)} (RV_7d {fmt.vol(run.rv_7d)})"
                            if run.deribit_hv is not None else ""),
                atm_source=fmt.text(run.atm_source),
                snapshot=fmt.time(run.snapshot_ts),
                status=fmt.text(run.status),
                reason=fmt.text(run.reason),
                dropped=[(k, fmt.integer(v)) for k, v in sorted((run.dropped or {}).items())],
                by_type=_group_rows(run.by_type, ("C", "P")),
                by_band=_group_rows(run.by_band, inp.config.band_names(), _bands(run.multiplier_se)),
                quotes=_quote_rows(detail) if detail is not None else [],
                quotes_total=len(detail.quotes) if detail is not None else 0,
                detail_note=note,
            )
        )
    return cards


def build_policy(inp: Inputs, names: list[str]) -> PolicyPanel:
    """The rules as calreport/apply.py's table states them (the same templates its reasons use)."""
    latest, index = inp.history.latest_live, inp.statuses
    thresholds = [rule.panel_row(inp.config) for rule in RULES]
    decisions = [
        PolicyDecision(
            underlying=n,
            run_id=fmt.text(run.run_id),
            time=fmt.time(run.ts),
            status=derive_status(index, run),
            decision=fmt.text(run.decision),
            decision_reason=fmt.text(run.decision_reason),
        )
        for n in names
        if (run := latest.get(n)) is not None
    ]
    return PolicyPanel(thresholds=thresholds, decisions=decisions, config_error=inp.config_error)


def harvest_gap_hours(run: AutoRun | None) -> float | None:
    """Hours from an auto run's last harvested snapshot to the end of its window (None: no snapshot or
    no window end): a harvester that stopped shows here, while the run over the data before it is fine."""
    if run is None:
        return None
    end, last = time_ms(run.as_of or run.ts), time_ms(run.harvest_end)
    return None if end is None or last is None else (end - last) / MS_PER_HOUR


def stale_harvest(run: AutoRun | None, inp: Inputs) -> str:
    """The stale-harvest sentence (empty when the harvest reaches the window end within dashboard.stale_after_hours)."""
    gap, limit = harvest_gap_hours(run), inp.config.dashboard.stale_after_hours
    if gap is None or gap <= limit or run is None:
        return ""
    text = (
        f"{run.underlying} harvest ends {fmt.span(gap)} before the window end of its latest auto run "
        f"({fmt.time(run.harvest_end)} vs {fmt.time(run.as_of or run.ts)}; more than dashboard.stale_after_hours = "
        f"{fmt.span(limit)})"
    )
    before = past_window_hours(run, limit)
    if before is not None:
        return text + (f": a gap in the harvest at the end of a window that ended {fmt.span(before)} before the run "
                       "(--as-of), not a sign that the harvester stopped")
    return text + ": is the harvester running?"


def past_window_hours(run: AutoRun | None, limit: float) -> float | None:
    """Hours from the window's end to the run, when more than `limit` (a `--as-of` well before the run: a backfill
    or a study of a past window, whose last hours without snapshots are a gap, not news of the harvester); else None."""
    end, ran = (time_ms(run.as_of), time_ms(run.ts)) if run is not None else (None, None)
    hours = None if end is None or ran is None else (ran - end) / MS_PER_HOUR
    return hours if hours is not None and hours > limit else None


def build_health(names: list[str], inp: Inputs) -> list[HealthCard]:
    latest_auto = inp.history.latest_auto
    cards = []
    for name in names:
        run = latest_auto.get(name)
        if run is None:
            cards.append(HealthCard(underlying=name, present=False))
            continue
        dq = run.data_quality
        used, expected = run.snapshots_used, run.snapshots_expected
        snapshots = MISSING if used is None else (fmt.integer(used) + (f" of {fmt.integer(expected)}" if expected else ""))
        start, end = run.harvest_start, run.harvest_end
        period = MISSING if not (start or end) else f"{fmt.time(start)} to {fmt.time(end)}"
        cards.append(
            HealthCard(
                underlying=name,
                present=True,
                run_id=fmt.text(run.run_id),
                time=fmt.time(run.ts),
                status=fmt.text(run.status),
                reason=fmt.text(run.reason),
                dq_status=fmt.text(dq.status if dq else None),
                snapshots=snapshots,
                rests_on=_used(run),
                completeness=fmt.pct(dq.completeness * 100, 1) if dq and fmt.finite(dq.completeness) else MISSING,
                schema_errors=fmt.integer(dq.schema_errors if dq else None),
                expiries=fmt.integer(dq.expiries if dq else None),
                strikes=fmt.integer(dq.strikes if dq else None),
                rv_returns=fmt.integer(dq.rv_returns if dq else None),
                dte_range=dte_range(run),
                lookback=fmt.text(run.lookback),
                period=period,
                settings_hash=fmt.text(run.settings_hash),
                issues=[str(i) for i in (dq.issues if dq else [])],
                stale_harvest=stale_harvest(run, inp),
            )
        )
    return cards


def dte_range(run: AutoRun) -> str:
    f = run.__dict__  # see auto_row
    dte_min, dte_max = f["dte_min"], f["dte_max"]
    if dte_min is None and dte_max is None:
        return MISSING
    lo = MISSING if dte_min is None else f"{dte_min:g}"
    hi = MISSING if dte_max is None else f"{dte_max:g}"
    return f"{lo}-{hi}d"


def live_row(run: LiveRun, status: str) -> LiveRow:
    if not run.is_live:  # an imported legacy record: its own decision and reason, the fake vega labelled
        reason = fmt.text(run.decision_reason or run.reason) + legacy_vega_note(run)
        decision = legacy_decision(run)
    else:
        reason = fmt.text(run.decision_reason if run.status != "failed" and run.decision_reason else run.reason)
        decision = fmt.text(run.decision)
    return LiveRow(
        time=fmt.time(run.ts),
        time_iso=run.ts or "",
        underlying=fmt.text(run.underlying),
        run_id=fmt.text(run.run_id),
        status=status,
        decision=decision,
        tested=fmt.mult(run.multiplier_tested),
        recommended=fmt.mult(_global(run.recommended)),
        smoothed=fmt.mult(_global(run.smoothed)),
        mae=fmt.pct(run.mae_pct),
        vmae=fmt.pct(run.vega_weighted_mae_pct),
        rv_7d=fmt.vol(run.rv_7d),
        atm_iv=fmt.vol(run.atm_iv),
        samples=fmt.integer(run.samples),
        reason=reason,
        recommended_se=fmt.se(_global(run.multiplier_se)),
    )


def auto_row(run: AutoRun) -> AutoRow:
    """The Date column is the time the table is ordered by (store.history.row_time_ms): the end of
    the harvest window (`as_of`), the time the data describes; the wall-clock run time sits beside it.
    Built positionally, in AutoRow's field order (a cold render makes 100,000), from the row's field
    dict: every attribute read of a pydantic model goes through its __getattr__ hook, a dict read does not."""
    f = run.__dict__
    as_of, ts = f["as_of"], f["ts"]
    return tuple.__new__(AutoRow, (
        fmt.time(as_of or ts),  # time
        as_of or ts or "",  # time_iso
        fmt.text(f["underlying"]),  # underlying
        fmt.text(f["run_id"]),  # run_id
        f["status"] or UNKNOWN,  # status
        dte_range(run),  # dte_range
        fmt.text(f["lookback"]),  # lookback
        fmt.mult(f["multiplier"]),  # multiplier
        fmt.pct(f["vega_weighted_mae_pct"]),  # vmae
        fmt.pct(f["mae_pct"]),  # mae
        fmt.integer(f["samples"]),  # samples
        fmt.text(f["reason"]),  # reason
        fmt.se(f["multiplier_se"]),  # multiplier_se
        _used(run),  # used
        fmt.time(ts) if as_of and as_of != ts else "",  # ran_at
    ))


def _used(run: AutoRun) -> str:
    """The evidence headline: 'rests on 24 of 276 snapshots over 1.9 h, 2 expiries, RV from 24-26 returns'
    (what a lookback really covered; older rows carry less, and say less; none: '')."""
    f = run.__dict__  # see auto_row
    used, window, hours = f["snapshots_used"], f["snapshots_in_window"], f["span_hours"]
    if used is None or hours is None and window is None:
        return ""
    text = f"rests on {fmt.integer(used)} of {fmt.integer(window)} snapshots" if window is not None else f"rests on {fmt.integer(used)} snapshots"
    if not used:  # nothing was used: no span, expiries or RV to speak of
        return text
    if hours is not None:
        text += f" over {fmt.span(hours)}"
    dq = f["data_quality"]
    if dq is not None and dq.expiries is not None:
        text += f", {fmt.integer(dq.expiries)} expiries"
    if f["sigma_mode"] in (None, "rv"):
        lo, hi = f["rv_returns_min"], f["rv_returns_max"]
        if lo is not None and hi is not None:
            text += f", RV from {lo} returns" if lo == hi else f", RV from {lo}-{hi} returns"
        elif f["rv_returns_median"] is not None:
            text += f", RV from a median {f['rv_returns_median']} returns"
    return text


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


def build_tables(inp: Inputs) -> tuple[HistoryTable, HistoryTable]:
    shown, size = inp.history, inp.config.dashboard.page_size
    paged = inp.config.dashboard.max_rows
    live_t = HistoryTable(
        kind="live",
        rows=[live_row(r, derive_status(inp.statuses, r)) for r in shown.live_rows],
        shown=len(shown.live_rows),
        total=shown.live_total,
        pages=page_links("live", shown.live_total, size) if shown.live_total > paged else [],
    )
    auto_t = HistoryTable(
        kind="auto",
        rows=[auto_row(r) for r in shown.auto_rows],
        shown=len(shown.auto_rows),
        total=shown.auto_total,
        pages=page_links("auto", shown.auto_total, size) if shown.auto_total > paged else [],
    )
    return live_t, auto_t


def run_age_hours(run: LiveRun | None, now: datetime) -> float | None:
    """Hours from the run's snapshot time to `now` (the render time); None without a readable time."""
    ms = time_ms(run.ts) if run is not None else None
    return None if ms is None else (now.timestamp() * 1000 - ms) / MS_PER_HOUR


def is_stale(run: LiveRun | None, inp: Inputs) -> bool:
    age = run_age_hours(run, inp.now)
    return age is not None and age > inp.config.dashboard.stale_after_hours


def build_banners(inp: Inputs, names: list[str]) -> list[Banner]:
    """What concerns the whole page: unreadable files, skipped history lines, stale live runs, a stale harvest.
    Each underlying's own problems are gathered in its flag summary (build_flags)."""
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
    stale = [(n, run) for n in names if (run := inp.history.latest_live.get(n)) is not None and is_stale(run, inp)]
    if stale:
        out.append(
            Banner(
                "warn",
                "Stale: no recent live run",
                "; ".join(f"{n} latest live run {fmt.span(run_age_hours(run, inp.now))} old ({fmt.time(run.ts)})" for n, run in stale)
                + f". Older than dashboard.stale_after_hours = {fmt.span(dash.stale_after_hours)} at render time "
                f"{fmt.time(iso_utc(inp.now))}: the applied values may no longer fit the market.",
            )
        )
    harvests = [(run, text) for n in names if (text := stale_harvest(run := inp.history.latest_auto.get(n), inp))]
    if harvests:
        past = all(past_window_hours(run, dash.stale_after_hours) is not None for run, _ in harvests)
        out.append(Banner("warn", "Harvest gap" if past else "Stale harvest", "; ".join(text for _, text in harvests)))
    for path, (count, line_numbers) in inp.history.skipped.items():
        if count:
            lines = ", ".join(str(n) for n in line_numbers[:5]) + (" ..." if count > 5 else "")
            out.append(
                Banner("warn", f"{path}: {count} unreadable line(s) skipped", f"line(s) {lines}; the file is not modified")
            )
    return out


def _flag_lines(flags: Sequence[RunFlag]) -> list[str]:
    return [f"{f.code}: {f.message}" for f in flags]


def flag_items(inp: Inputs, name: str, smile: SmileSection | None) -> list[FlagItem]:
    """Every problem of one underlying's latest runs, most severe first (stable within a level)."""
    dash, out = inp.config.dashboard, []
    run = inp.history.latest_live.get(name)
    if run is not None:
        if run.status == "failed":
            out.append(FlagItem("error", f"{name}: latest live run failed", [f"{fmt.text(run.run_id)}: {fmt.text(run.reason)}"]))
        if fmt.finite(run.mae_pct) and (run.mae_pct or 0) > dash.mae_warn_pct:
            out.append(FlagItem("warn", f"{name}: high pricing error", [
                f"latest live run MAE {fmt.pct(run.mae_pct)} is above the warning level {fmt.pct(dash.mae_warn_pct, 0)}"]))
        if run.flags:  # calibration/flags.py: each active flag with its numbers
            codes = ", ".join(dict.fromkeys(f.code for f in run.flags))
            out.append(FlagItem("warn", f"{name}: flags {codes}", _flag_lines(run.flags)))
        min_rv = inp.config.fit.min_rv_returns  # the policy's thin-RV rule (apply.thin_rv), sigma mode included
        if run_thin_rv(run, min_rv):
            out.append(FlagItem("warn", f"{name}: RV_7d from too little history", [
                f"RV_7d {fmt.vol(run.rv_7d)} was computed from {fmt.integer(run.rv_returns)} returns "
                f"(want at least {fmt.integer(min_rv)}; source: {fmt.text(run.rv_source)})"]))
    if smile is not None and smile.flagged_bands:
        out.append(FlagItem("warn", f"{name}: {SKEW_FLAG}", [smile.flag_text.removeprefix(f"{SKEW_FLAG}: ")]))
    auto = inp.history.latest_auto.get(name)
    if auto is not None and auto.flags:
        codes = ", ".join(dict.fromkeys(f.code for f in auto.flags))
        out.append(FlagItem("info", f"{name}: auto run flags {codes}", _flag_lines(auto.flags)))
    return sorted(out, key=lambda i: SEVERITY[i.level])


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def build_flags(inp: Inputs, names: list[str], smile: Sequence[SmileSection]) -> list[FlagSummary]:
    """One summary per underlying with any flag, the most severe underlying first."""
    by_name = {s.underlying: s for s in smile}
    out = []
    for name in names:
        items = flag_items(inp, name, by_name.get(name))
        if not items:
            continue
        counts = [_plural(k, w) for lvl, w in (("error", "error"), ("warn", "warning"), ("info", "note"))
                  if (k := sum(i.level == lvl for i in items))]
        out.append(FlagSummary(name, items[0].level, ", ".join(counts), items[0].title.removeprefix(f"{name}: "), items))
    return sorted(out, key=lambda f: SEVERITY[f.level])


def _health(inp: Inputs, run: LiveRun | None, flags: FlagSummary | None) -> tuple[str, str]:
    """Is what the engine uses sound? The worst of: the YAML readable, the latest live run, its age, its flags."""
    if inp.applied_error:
        return "error", "applied multipliers file is invalid: the engine keeps its last good values"
    if run is None:
        return "warn", "no live run yet: the engine uses the initial values"
    if run.status == "failed":
        return "error", "the latest live run failed realism; the engine keeps the last applied values"
    if is_stale(run, inp):
        return "warn", f"stale: the latest live run is {fmt.span(run_age_hours(run, inp.now))} old"
    if flags is not None and flags.level != "info":
        return flags.level, f"{flags.counts}: {flags.worst}"
    return "ok", "latest live run passed realism and is recent"


def _global_level_quoted(entry: AppliedEntry, config: CalibrationConfig) -> bool:
    """Whether the engine quotes anything at the global level: always for the step model (bands without a
    level use it); for the surface only when a pillar has no band level of its own (smile.entry_surface)."""
    if entry.surface is None or not config.smile.enabled:
        return True
    return any(label not in entry.bands for label in entry.surface.pillars)


def _not_used(entry: AppliedEntry | None, mode: str) -> str:
    """Why the engine quotes none of an entry's values ("" when it quotes them): fitted in another sigma mode."""
    if entry is None or quoted_in_mode(entry.sigma_mode, mode):
        return ""
    return f"not used: fitted in sigma_mode {mode_of(entry.sigma_mode)}, configured {mode}; the engine quotes the base alone until a run in {mode} is applied"


def build_overview(
    inp: Inputs, names: list[str], flags: Sequence[FlagSummary], expiry: dict[str, ExpiryErrorSection] | None = None
) -> list[OverviewCard]:
    flag_of = {f.underlying: f for f in flags}
    index = inp.statuses
    cards = []
    for name in names:
        entry = inp.applied.underlyings.get(name) if inp.applied is not None else None
        run = inp.history.latest_live.get(name)
        health, health_text = _health(inp, run, flag_of.get(name))
        if inp.applied is None:
            applied, bands, source, updated = MISSING, "", MISSING, MISSING
        elif entry is None:
            applied, bands, source, updated = fmt.mult(1.0), "", "default, never applied", MISSING
        else:
            applied = fmt.mult(entry.global_)
            bands = ", ".join(f"{b} {fmt.mult(v)}" for b, v in entry.bands.items())
            source, updated = entry.source, fmt.time(entry.updated_at)
        card = OverviewCard(
            underlying=name, applied=applied, applied_bands=bands, applied_source=source, applied_updated=updated,
            health=health, health_text=health_text, run_present=run is not None,
            global_quoted=entry is None or _global_level_quoted(entry, inp.config),
            not_used=_not_used(entry, inp.config.sigma_mode_for(name)),
        )
        if run is not None:
            status = derive_status(index, run)
            # priced from the run's quote detail (expiry_errors); a run without one (older, imported) has none:
            # its own figures were measured at the values it tested, which may not be what is applied now
            section = (expiry or {}).get(name)
            err, bias = (section.iv_error_vp, section.iv_bias_vp) if section is not None else (None, None)
            card = replace(
                card,
                run_id=fmt.text(run.run_id),
                run_time=fmt.time(run.ts),
                run_time_iso=run.ts or "",
                run_age=fmt.span(run_age_hours(run, inp.now)),
                stale=is_stale(run, inp),
                status=status,
                smoothed=fmt.mult(_global(run.smoothed)),
                headline=fmt.vp(err),
                others=[
                    ErrorFigure("OTM IV bias of the applied calibration, synthetic - mark (vp)", fmt.vp(bias), "iv-bias"),
                    ErrorFigure("OTM IV error at the run's recommended calibration (vp)", fmt.vp(run.fit_iv_error_vp), "fit-iv-error"),
                    ErrorFigure("OTM IV error at the values the run tested, applied before it (vp)", fmt.vp(run.iv_error_vp), "tested-iv-error"),
                    ErrorFigure("Price vMAE, OTM quotes, at the tested values (%)", fmt.pct(run.otm_vega_weighted_mae_pct), "otm-vmae"),
                    ErrorFigure("Price vMAE, all quotes, at the tested values (%)", fmt.pct(run.vega_weighted_mae_pct), "vmae"),
                    ErrorFigure("Price MAE, all quotes, at the tested values (%)", fmt.pct(run.mae_pct), "mae"),
                    ErrorFigure("MAE in vol points, all quotes, at the tested values", fmt.vp(run.mae_vol_points), "mae-vp"),
                ],
            )
        cards.append(card)
    return cards


def build_charts(names: list[str], inp: Inputs) -> list[ChartGroup]:
    shown = inp.history
    groups = []
    for name in names:
        cs = [
            charts.multiplier_chart(name, shown.chart_runs.get(name, []), shown.chart_events.get(name, [])),
            charts.auto_chart(name, shown.chart_autos.get(name, [])),
        ]
        run = shown.latest_live.get(name)
        detail = inp.details.get(run.run_id or "") if run is not None else None
        cs.append(charts.iv_chart(name, run, detail))
        groups.append(ChartGroup(name, cs))
    return groups


def build_smile(names: list[str], inp: Inputs) -> list[SmileSection]:
    """The smile panel (report/smile.py) from the latest live runs, their details and the applied YAML."""
    applied = dict(inp.applied.underlyings) if inp.applied is not None else None
    return build_smile_sections(names, inp.history.latest_live, inp.details, applied, inp.config)


def build_expiry(names: list[str], inp: Inputs) -> list[ExpiryErrorSection]:
    """The IV error per expiry (report/expiry_errors.py) of the latest live runs under the applied YAML."""
    applied = dict(inp.applied.underlyings) if inp.applied is not None else None
    return build_expiry_errors(names, inp.history.latest_live, inp.details, applied, inp.config)


def build_dashboard(inp: Inputs, compare_links: dict[str, str] | None = None) -> Dashboard:
    names = underlyings_of(inp)
    live_t, auto_t = build_tables(inp)
    smile = build_smile(names, inp)
    flags = build_flags(inp, names, smile)
    expiry = build_expiry(names, inp)
    return Dashboard(
        generated_at=fmt.time(iso_utc(inp.now)),
        generated_iso=iso_utc(inp.now),
        banners=build_banners(inp, names),
        applied=build_applied(inp, names),
        latest=build_latest(names, inp),
        live=build_live(names, inp),
        policy=build_policy(inp, names),
        health=build_health(names, inp),
        live_table=live_t,
        auto_table=auto_t,
        chart_groups=build_charts(names, inp),
        settings_hash=inp.config.settings_hash(),
        smile=smile,
        flags=flags,
        overview=build_overview(inp, names, flags, {e.underlying: e for e in expiry}),
        poll_seconds=f"{inp.config.dashboard.poll_seconds:g}",
        compare_links=compare_links or {},
        expiry_errors=expiry,
    )


PAGE_TITLES = {"live": "Live calibration history", "auto": "Calibration History (Auto-Calibrate)"}


def page_plans(kind: str, total: int, size: int) -> list[PagePlan]:
    """Every history page of `kind`, numbered oldest first (page k holds rows (k-1)*size+1 .. k*size)."""
    n_pages = page_count(total, size)
    plans = []
    for k in range(1, n_pages + 1):
        lo = (k - 1) * size
        hi = min(lo + size, total)
        older = PageLink(k - 1, f"{kind}-{k - 1}.html", f"{(k - 2) * size + 1:,}-{lo:,}") if k > 1 else None
        newer = PageLink(k + 1, f"{kind}-{k + 1}.html", f"page {k + 1}") if k < n_pages else None
        plans.append(
            PagePlan(
                kind=kind,
                number=k,
                title=PAGE_TITLES[kind],
                range_text=f"rows {lo + 1:,}-{hi:,} (numbered oldest first), newest first",
                older=older,
                newer=newer,
            )
        )
    return plans


def page_row(run: HistoryRow) -> LiveRow | AutoRow | None:
    """What a history page shows of one row, made once, when the row is validated (the history index's
    scan, or the page when the row came from the persisted index). A live row's status is derived
    per render (with_status sets it); other row types are on no page (None)."""
    if isinstance(run, LiveRun):
        return live_row(run, UNKNOWN)
    if isinstance(run, AutoRun):
        return auto_row(run)
    return None


def with_status(rows: Sequence[LiveRow], statuses: Sequence[str]) -> list[LiveRow]:
    """A live history page's rows with the statuses derived at this render."""
    return [r._replace(status=s) for r, s in zip(rows, statuses)]


def history_page(plan: PagePlan, key: str, body: str) -> HistoryPage:
    return HistoryPage(plan=plan, key=key, body=body)
