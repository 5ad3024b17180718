"""`calreport doctor`: do the YAML, the history and the apply events tell the same story?

The YAML is what the engine uses; the last apply event of each underlying is what calreport
believes it wrote. They differ only when someone edited the file by hand, restored an old copy, or
a process died between the YAML write and its event. `check_consistency` is a pure check (reads
only) that other code can reuse; `doctor_command` prints its findings with the fix for each.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Literal

from calreport.errors import CalreportError
from calreport.store.applied import read_applied
from calreport.store.config import CalibrationConfig, load_config
from calreport.store.history import HistoryRead, read_history
from calreport.store.models import (
    DEFAULT_MULTIPLIER,
    AppliedDocument,
    AppliedEntry,
    ApplyEvent,
    AutoRun,
    LiveRun,
    Multipliers,
)
from calreport.store.paths import Root

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


def _fmt(x: float | None) -> str:
    return "none" if x is None else f"{x:.4f}"


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isfinite(a) and math.isfinite(b) and abs(a - b) <= TOLERANCE


def _value_differences(entry: AppliedEntry, applied: Multipliers) -> list[str]:
    """Human phrases for every multiplier that differs: 'global 1.2000 != 1.0833', 'band 0-7d ...'."""
    diffs = []
    if not _same(entry.global_, applied.global_):
        diffs.append(("global", entry.global_, applied.global_))
    for label in sorted(set(entry.bands) | set(applied.bands)):
        a, b = entry.bands.get(label), applied.bands.get(label)
        if not _same(a, b):
            diffs.append((f"band {label}", a, b))
    return [f"{what} in YAML {_fmt(a)} != last apply event {_fmt(b)}" for what, a, b in diffs]


def _history_problems(path_label: str, read: HistoryRead) -> list[Problem]:
    if not read.skipped:
        return []
    lines = ", ".join(str(n) for n in read.skipped_lines[:10]) + (" ..." if read.skipped > 10 else "")
    return [
        Problem(
            "warning",
            "unreadable-history",
            f"{path_label}: {read.skipped} unreadable line(s) (line {lines}); readers skip them",
            "nothing to do for a torn last line after a crash (the next append starts a fresh line); "
            "inspect other lines by hand: history is append-only and calreport never rewrites it",
        )
    ]


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
                f"{name} in {rel} says global {entry.global_:.4f} (source {entry.source}, run {entry.run_id or '-'}) "
                "but history has no apply event for it: the file was edited by hand, copied from elsewhere, "
                "or an apply died between writing the YAML and recording its event",
                f"re-apply through calreport (`calreport force-apply --underlying {name}`), or restore the "
                f"initial entry (global 1.0000, source init) by hand",
                name,
            )
        ]
    last = events[-1]
    where = f"run {last.run_id or '-'} at {last.ts or '?'}"
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
                f"global {_fmt(last.applied.global_ if last.applied else None)} ({where})",
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
                    if (entry.updated_at or "") > (last.ts or "")
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
    if (entry.updated_at or None) != (last.ts or None):
        meta.append(f"updated_at {entry.updated_at or 'null'} != {last.ts or 'null'}")
    if (entry.reason or None) != (last.reason or None):
        meta.append(f"reason {entry.reason!r} != {last.reason!r}")
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
    """Each apply's `previous` should be the values the apply before it left: a gap is a past hand edit."""
    out = []
    for before, after in itertools.pairwise(events):
        if before.applied is None or after.previous is None:
            continue
        prev_entry_like = AppliedEntry.model_construct(
            global_=after.previous.global_, bands=dict(after.previous.bands)
        )
        diffs = _value_differences(prev_entry_like, before.applied)
        if diffs:
            out.append(
                Problem(
                    "warning",
                    "history-gap",
                    f"{name}: the apply of run {after.run_id or '-'} at {after.ts} found global "
                    f"{_fmt(after.previous.global_)} but the apply before it (run {before.run_id or '-'} at "
                    f"{before.ts}) left {_fmt(before.applied.global_)}: the YAML was changed outside calreport "
                    "in between",
                    "nothing to fix now (history is append-only); keep the YAML under `git_commit: true` to audit edits",
                    name,
                )
            )
    return out


def check_consistency(root: Root) -> list[Problem]:
    """Every inconsistency between the YAML, the config and history; an empty list means consistent."""
    return _check(root)[0]


def _check(root: Root) -> tuple[list[Problem], HistoryRead, HistoryRead, AppliedDocument | None]:
    """The problems, plus what was read to find them (so the summary does not read it all again)."""
    problems: list[Problem] = []
    rel = "config/applied_multipliers.yaml"
    try:
        cfg = load_config(root)
    except CalreportError as exc:
        problems.append(
            Problem("error", "invalid-config", exc.one_line(), "fix config/calibration.yaml (the message names the key)")
        )
        cfg = CalibrationConfig()
    live = read_history(root.live_history)
    auto = read_history(root.auto_history)
    problems += _history_problems("history/live_calibration.jsonl", live)
    problems += _history_problems("history/auto_calibrate.jsonl", auto)
    events = live.of_type(ApplyEvent)
    try:
        doc = read_applied(root, cfg)
    except CalreportError as exc:
        last = {e.underlying: e for e in events if e.underlying}
        hint = "; ".join(
            f"{u} {_fmt(e.applied.global_ if e.applied else None)} (run {e.run_id or '-'})" for u, e in sorted(last.items())
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
        return problems, live, auto, None
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
    auto_ids = {r.run_id for r in auto.of_type(AutoRun) if r.run_id}
    for e in events:
        if e.run_id and e.run_id in auto_ids:
            problems.append(
                Problem(
                    "error",
                    "auto-run-applied",
                    f"apply event at {e.ts} for {e.underlying} names auto-calibrate run {e.run_id}: auto runs must "
                    "never be applied",
                    f"re-apply a live run (`calreport force-apply --underlying {e.underlying}`) and report this as a bug",
                    e.underlying,
                )
            )
    return problems, live, auto, doc


def doctor_command(root: Root) -> int:
    """Print every problem with its fix; exit 0 only when there is no error (warnings are listed)."""
    problems, live, auto, doc = _check(root)
    errors = [p for p in problems if p.severity == "error"]
    print(f"calreport doctor: {root.path}")
    for p in problems:
        for line in p.lines():
            print(line)
    if errors or doc is None:  # an unreadable YAML is always among the errors
        print(f"NOT consistent: {len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
        return 1
    n_events = len(live.of_type(ApplyEvent))
    summary = ", ".join(
        f"{u} global {e.global_:.4f} (run {e.run_id or '-'}, {e.source})" for u, e in sorted(doc.underlyings.items())
    )
    print(
        f"consistent: {summary or 'no underlyings applied'}; history: {len(live.of_type(LiveRun))} live runs, "
        f"{n_events} apply events, {len(auto.of_type(AutoRun))} auto runs, "
        f"{live.skipped + auto.skipped} unreadable line(s)"
        + (f", {len(problems)} warning(s)" if problems else "")
    )
    return 0
