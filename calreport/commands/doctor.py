"""`calreport doctor`: do the YAML, the history and the apply events tell the same story?

The YAML is what the engine uses; the last apply event of each underlying is what calreport
believes it wrote. They differ only when someone edited the file by hand, restored an old copy, or
a process died between the YAML write and its event. `run_doctor` is a pure check (reads only,
prints nothing) that returns a DoctorReport; `format_doctor` turns it into the lines the CLI prints,
with the fix for each finding.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

from calreport import fmt
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError, excerpt
from calreport.model import (
    APPLIED_SCHEMA_VERSION,
    DEFAULT_MULTIPLIER,
    AppliedDocument,
    AppliedEntry,
    ApplyEvent,
    CalibrationConfig,
    Multipliers,
    StateDocument,
    surface_changes,
)
from calreport.store.applied import UndefinedBand, entry_reason, read_applied
from calreport.store.files import read_input
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery, Skipped
from calreport.store.state import StatusIndex
from calreport.timeutil import time_ms

Severity = Literal["error", "warning"]
TOLERANCE = 5e-5  # the YAML keeps 4 decimals


@dataclass(frozen=True)
class Problem:
    """One finding: what differs, where, and what to run or do about it."""

    severity: Severity
    code: str
    message: str
    fix: str = ""
    underlying: str | None = None

    def lines(self) -> list[str]:
        out = [f"{self.severity.upper()}: {self.message}"]
        if self.fix:
            out.append(f"  fix: {self.fix}")
        return out


def _later(a: str | None, b: str | None) -> bool:
    """Is time `a` after time `b`? Compared as instants ('10:16:00Z' is before '10:16:00.5Z' though it
    sorts after it as text); a time is later than a missing or unreadable one."""
    ta, tb = time_ms(a), time_ms(b)
    if ta is None:
        return False
    return tb is None or ta > tb


def _same_time(a: str | None, b: str | None) -> bool:
    """The same instant however it is written ('...Z', '+00:00', '.000Z'); text equality otherwise."""
    ta, tb = time_ms(a), time_ms(b)
    if ta is not None and tb is not None:
        return ta == tb
    return (a or None) == (b or None)


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE


def _value_differences(entry: AppliedEntry, applied: Multipliers) -> list[str]:
    """Human phrases for every multiplier that differs: 'global 1.2000 != 1.0833', 'band 0-7d ...', and
    the surface block (with or without it the same values are quoted by another model)."""
    return [f"{what} in YAML {fmt.mult(a)} != last apply event {fmt.mult(b)}" for what, a, b in _differences(entry, applied)] + [
        f"{what} in YAML {a} != last apply event {b}" for what, a, b in surface_changes(entry.surface, applied.surface)
    ]


def _differences(entry: AppliedEntry, applied: Multipliers) -> list[tuple[str, float | None, float | None]]:
    """(what, entry's value, applied value) for every multiplier that differs: global, bands, smile nodes."""
    diffs: list[tuple[str, float | None, float | None]] = []
    if not _same(entry.global_, applied.global_):
        diffs.append(("global", entry.global_, applied.global_))
    for label in sorted(set(entry.bands) | set(applied.bands)):
        a, b = entry.bands.get(label), applied.bands.get(label)
        if not _same(a, b):
            diffs.append((f"band {label}", a, b))
    flat_a, flat_b = entry.smile, applied.smile
    for label in ["global", *sorted(set(flat_a.bands if flat_a else ()) | set(flat_b.bands if flat_b else ()))]:
        sa = None if flat_a is None else (flat_a.global_ if label == "global" else flat_a.bands.get(label))
        sb = None if flat_b is None else (flat_b.global_ if label == "global" else flat_b.bands.get(label))
        nodes = (flat_a or flat_b).nodes if (flat_a or flat_b) else []
        for i, x in enumerate(nodes):  # per node (a handful)
            a = sa[i] if sa is not None and i < len(sa) else 1.0
            b = sb[i] if sb is not None and i < len(sb) else 1.0
            if not _same(a, b):
                diffs.append((f"smile {label} {fmt.node(x)}", a, b))
    return diffs


def _history_problems(path_label: str, skipped: Skipped) -> list[Problem]:
    if not skipped.count:
        return []
    lines = ", ".join(str(n) for n in skipped.lines[:10]) + (" ..." if skipped.count > 10 else "")
    return [
        Problem(
            "warning",
            "unreadable-history",
            f"{path_label}: {skipped.count} unreadable line(s) (line {lines}); readers skip them",
            "nothing to do for a torn last line after a crash (the next append starts a fresh line); "
            "inspect other lines by hand: history is append-only and calreport never rewrites it",
        )
    ]


STATE_REL = "site/api/calibration/state.json"
STATE_LIMIT = 16 * 1024 * 1024  # the state document is a few KB per underlying


def _site_problems(root: Root, doc: AppliedDocument, flagged: set[str]) -> list[Problem]:
    """Does the published state document hold exactly the YAML's entries? Absent (never rendered)
    is no finding; different or unreadable is a warning: the engine reads the YAML, but whoever reads
    the dashboard's API is told something else until site/ is rendered again. An underlying already
    `flagged` (its YAML entry disagrees with its history) is left to that finding: its fix is a
    write, which renders site/ again."""
    if not root.state_json.exists():
        return []
    fix = "run `calreport render`"
    try:
        state = StateDocument.model_validate_json(read_input(root.state_json, STATE_LIMIT))
    except CalreportError as exc:
        return [Problem("warning", "site-unreadable", f"{STATE_REL}: {exc.one_line()}", fix)]
    except ValueError as exc:
        return [Problem("warning", "site-unreadable", f"{STATE_REL} is not a state document ({excerpt(str(exc).splitlines()[0], 80)})", fix)]
    names = sorted(set(doc.underlyings) | set(state.underlyings))
    differ = [u for u in names if u not in flagged and doc.underlyings.get(u) != state.underlyings.get(u)]
    if not differ:
        return []
    return [Problem(
        "warning", "site-stale",
        f"{STATE_REL} does not match config/applied_multipliers.yaml for {', '.join(differ)}"
        + " (the dashboard and its API show other values than the engine uses)",
        fix,
    )]


def _underlying_problems(name: str, entry: AppliedEntry | None, events: list[ApplyEvent], rel: str) -> list[Problem]:
    if not events:
        if entry is None:
            return []
        if entry.source == "init" and _same(entry.global_, DEFAULT_MULTIPLIER) and not entry.bands:
            return []
        return [
            Problem(
                "error",
                "no-apply-event",
                f"{name} in {rel} says global {fmt.mult(entry.global_)} (source {entry.source}, run {fmt.text(entry.run_id)}) "
                "but history has no apply event for it: the file was edited by hand, copied from elsewhere, "
                "or an apply died between writing the YAML and recording its event",
                f"re-apply through calreport (`calreport force-apply --underlying {name}`), or restore the "
                f"initial entry (global 1.0000, source init) by hand",
                name,
            )
        ]
    last = events[-1]
    where = f"run {fmt.text(last.run_id)} at {fmt.text(last.ts)}"
    fix = (
        f"run `calreport rollback --underlying {name} --to {last.run_id}` to restore the last applied values "
        f"as a new apply event, or re-apply (`calreport force-apply --underlying {name}`)"
        if last.run_id
        else f"re-apply through calreport (`calreport force-apply --underlying {name}`)"
    )
    if entry is None:
        return [
            Problem(
                "error",
                "missing-in-yaml",
                f"{name} is missing from {rel} (so the engine uses 1.0000) but the last apply event set "
                f"global {fmt.mult(last.applied.global_ if last.applied else None)} ({where})",
                fix,
                name,
            )
        ]
    problems: list[Problem] = []
    applied = last.applied or Multipliers()
    diffs = _value_differences(entry, applied)
    if diffs:
        problems.append(
            Problem(
                "error",
                "values-differ",
                f"{name} " + "; ".join(diffs) + f" ({where}, source {last.source}): "
                + (
                    "the YAML was written after the last recorded apply (hand edit, or an apply that died "
                    "before recording its event)"
                    if _later(entry.updated_at, last.ts)
                    else "the file was edited by hand or restored from an old copy"
                ),
                fix,
                name,
            )
        )
    meta = []
    if (entry.run_id or None) != (last.run_id or None):
        meta.append(f"run_id {entry.run_id or 'null'} != {last.run_id or 'null'}")
    if entry.source != last.source:
        meta.append(f"source {entry.source} != {last.source}")
    if not _same_time(entry.updated_at, last.ts):
        meta.append(f"updated_at {entry.updated_at or 'null'} != {last.ts or 'null'}")
    if (entry.reason or None) != entry_reason(last):
        meta.append(f"reason {excerpt(entry.reason, 60)} != {excerpt(last.reason, 60)}")
    if meta:
        problems.append(
            Problem(
                "error",
                "metadata-differs",
                f"{name} in {rel} vs last apply event ({where}): " + "; ".join(meta),
                fix,
                name,
            )
        )
    return problems


def _chain_problems(name: str, events: list[ApplyEvent]) -> list[Problem]:
    """Each apply's `previous` should be the values the apply before it left: a gap is a past hand edit.
    `events` oldest first."""
    out = []
    for before, after in itertools.pairwise(events):
        if before.applied is None or after.previous is None:
            continue
        # the whole entry the apply found, smile included (a missing smile is flat on both sides)
        prev_entry_like = AppliedEntry.model_construct(
            global_=after.previous.global_, bands=dict(after.previous.bands), smile=after.previous.smile
        )
        diffs = [(what, fmt.mult(a), fmt.mult(b)) for what, a, b in _differences(prev_entry_like, before.applied)]
        diffs += surface_changes(after.previous.surface, before.applied.surface)
        if diffs:
            found = "; ".join(f"found {what} {a}, left {b}" for what, a, b in diffs[:3])
            out.append(
                Problem(
                    "warning",
                    "history-gap",
                    f"{name}: the apply of run {fmt.text(after.run_id)} at {fmt.text(after.ts)} found values the apply "
                    f"before it (run {fmt.text(before.run_id)} at {fmt.text(before.ts)}) did not leave ({found}"
                    + (f"; {len(diffs) - 3} more" if len(diffs) > 3 else "") + "): the YAML was changed outside calreport "
                    "in between",
                    "nothing to fix now (history is append-only); keep the YAML under `git_commit: true` to audit edits",
                    name,
                )
            )
    return out


@dataclass(frozen=True)
class DoctorReport:
    """What `calreport doctor` found, and what it read to find it."""

    root: str
    problems: list[Problem]
    doc: AppliedDocument | None  # None when the YAML is unreadable
    live_runs: int = 0
    apply_events: int = 0
    auto_runs: int = 0
    unreadable_lines: int = 0
    live_statuses: dict[str, int] = field(default_factory=dict)  # derived status -> live runs

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def consistent(self) -> bool:
        return not self.errors and self.doc is not None  # an unreadable YAML is always among the errors

    @property
    def exit_code(self) -> int:
        """0 only when there is no error (warnings are listed but do not fail)."""
        return 0 if self.consistent else 1


def check_consistency(ws: Workspace) -> list[Problem]:
    """Every inconsistency between the YAML, the config and history; an empty list means consistent."""
    return run_doctor(ws).problems


def run_doctor(ws: Workspace) -> DoctorReport:
    """Check the workspace's root (reads only; history through the history query, newest first by time).

    The config is the workspace's (read once for the command); a broken one is a finding, not a failure.
    """
    root = ws.root
    problems: list[Problem] = []
    rel = "config/applied_multipliers.yaml"
    try:
        cfg = ws.config
    except CalreportError as exc:
        problems.append(
            Problem("error", "invalid-config", exc.one_line(), "fix config/calibration.yaml (the message names the key)")
        )
        cfg = CalibrationConfig()
    query = HistoryQuery.read(root)  # no cache: a check writes nothing
    counts = {
        "live_runs": query.total("live"),
        "apply_events": query.total("apply"),
        "auto_runs": query.total("auto"),
        "unreadable_lines": query.skipped("live").count + query.skipped("auto").count,
    }
    problems += _history_problems("history/live_calibration.jsonl", query.skipped("live"))
    problems += _history_problems("history/auto_calibrate.jsonl", query.skipped("auto"))
    events = query.apply_events()[::-1]  # oldest first
    try:
        doc = read_applied(root, cfg)
    except UndefinedBand as exc:
        if not _written_by_an_apply(exc, query.latest_apply_events()):
            typed = CalreportError(
                f"underlyings.{exc.underlying}.bands: band {excerpt(exc.label, 40)} is neither defined in config/calibration.yaml "
                f"nor written by the last apply of {exc.underlying}: the YAML was edited by hand",
                exc.path,
            )
            return _invalid_yaml(root, problems, counts, query, typed)
        problems.append(
            Problem(
                "error",
                "undefined-band",
                f"{exc.one_line()} (the engine keeps its last good values; applies are refused until it is fixed)",
                "define the band in config/calibration.yaml again (the YAML is as calreport wrote it; a step-model "
                "entry's bands must be the config's), then run `calreport doctor` again",
            )
        )
        return DoctorReport(str(root.path), problems, None, **counts)
    except CalreportError as exc:
        return _invalid_yaml(root, problems, counts, query, exc)
    gaps = cfg.band_gaps()
    if gaps:
        spans = ", ".join(f"[{lo:g}, {hi:g})" for lo, hi in gaps)
        problems.append(
            Problem(
                "warning",
                "band-gap",
                f"config/calibration.yaml: the bands leave DTE {spans} in no band, so a step-model entry quotes those "
                "options at the global multiplier (a surface entry interpolates its pillars across them)",
                "make the next band start where the previous one ends (or add a band there), unless that is meant",
            )
        )
    stale = sorted(p.name for p in root.config_dir.glob(f".{root.applied.name}.*.tmp"))
    if stale:
        problems.append(
            Problem(
                "warning",
                "stale-temp-files",
                f"{len(stale)} temp file(s) left in config/ by interrupted writes ({', '.join(stale[:3])}"
                + (" ..." if len(stale) > 3 else "") + "); the engine and calreport ignore them",
                f"delete them when no apply is running: rm {root.config_dir}/.{root.applied.name}.*.tmp",
            )
        )
    if not root.applied.exists():
        problems.append(
            Problem(
                "warning" if not events else "error",
                "no-yaml",
                f"{rel} does not exist, so the engine uses 1.0000 for every underlying",
                "run `calreport init`" if not events else "restore the file (git) or re-apply the runs you want",
            )
        )
    by_underlying: dict[str, list[ApplyEvent]] = {}
    for e in events:
        if e.underlying:
            by_underlying.setdefault(e.underlying, []).append(e)
    names = sorted(set(doc.underlyings) | set(by_underlying))
    for name in names:
        problems += _underlying_problems(name, doc.underlyings.get(name), by_underlying.get(name, []), rel)
        problems += _chain_problems(name, by_underlying.get(name, []))
    problems += _site_problems(root, doc, {p.underlying for p in problems if p.underlying})
    auto_ids = query.auto_run_ids()
    for e in events:
        if e.run_id and e.run_id in auto_ids:
            problems.append(
                Problem(
                    "error",
                    "auto-run-applied",
                    f"apply event at {fmt.text(e.ts)} for {e.underlying} names auto-calibrate run {e.run_id}: auto runs "
                    "must never be applied",
                    f"re-apply a live run (`calreport force-apply --underlying {e.underlying}`) and report this as a bug",
                    e.underlying,
                )
            )
    statuses = query.status_counts("live", StatusIndex.from_events(doc, query.apply_event_keys()).shown_status)
    return DoctorReport(str(root.path), problems, doc, **counts, live_statuses=dict(statuses))


def format_doctor(report: DoctorReport) -> list[str]:
    """The lines `calreport doctor` prints (stdout): every problem with its fix, then a verdict."""
    lines = [f"calreport doctor: {report.root}"]
    for p in report.problems:
        lines += p.lines()
    n_errors = len(report.errors)
    if report.doc is not None:
        doc = report.doc
        smiles = ", ".join(u for u, e in sorted(doc.underlyings.items()) if e.smile is not None) or "none (flat)"
        lines.append(
            f"applied YAML schema_version {doc.schema_version}"
            + (f" (pre-smile format: read as flat smiles; the next apply rewrites it as version {APPLIED_SCHEMA_VERSION})" if doc.schema_version < 2 else "")
            + f"; smiles applied: {smiles}"
            + f"; surface model: {', '.join(u for u, e in sorted(doc.underlyings.items()) if e.surface is not None) or 'none (step model)'}"
        )
    if not report.consistent:
        lines.append(f"NOT consistent: {n_errors} error(s), {len(report.problems) - n_errors} warning(s)")
        return lines
    doc = report.doc or AppliedDocument()
    summary = ", ".join(
        f"{u} global {fmt.mult(e.global_)} (run {fmt.text(e.run_id)}, {e.source})" for u, e in sorted(doc.underlyings.items())
    )
    by_status = ", ".join(f"{n} {s}" for s, n in sorted(report.live_statuses.items()))
    lines.append(
        f"consistent: {summary or 'no underlyings applied'}; history: {report.live_runs} live runs"
        + (f" ({by_status})" if by_status else "") + ", "
        f"{report.apply_events} apply events, {report.auto_runs} auto runs, "
        f"{report.unreadable_lines} unreadable line(s)"
        + (f", {len(report.problems)} warning(s)" if report.problems else "")
    )
    return lines


def _written_by_an_apply(exc: UndefinedBand, last: dict[str, ApplyEvent]) -> bool:
    """Did an apply write the undefined label (the config's bands changed since), or was it typed into the
    YAML by hand (the fix is then the YAML's, not the config's)?"""
    event = last.get(exc.underlying)
    values = event.applied if event is not None else None
    if values is None:
        return False
    labels = set(values.bands) | set(values.smile.bands if values.smile else ()) | set(values.surface.pillars if values.surface else ())
    return exc.label in labels


def _invalid_yaml(root: Root, problems: list[Problem], counts: dict[str, int], query: HistoryQuery, exc: CalreportError) -> DoctorReport:
    """The YAML cannot be read and no apply wrote it so: repair or restore it, with the last applied values to go by."""
    last = query.latest_apply_events()
    hint = "; ".join(
        f"{u} {fmt.mult(e.applied.global_ if e.applied else None)} (run {fmt.text(e.run_id)})"
        for u, e in sorted(last.items())
    )
    problems.append(
        Problem(
            "error",
            "invalid-yaml",
            f"{exc.one_line()} (the engine keeps its last good values; applies are refused until it is fixed)",
            "repair the file by hand or restore it (`git checkout -- config/applied_multipliers.yaml` when under "
            "git), then run `calreport doctor` again"
            + (f"; the last apply events say: {hint}" if hint else ""),
        )
    )
    return DoctorReport(str(root.path), problems, None, **counts)
