"""Everything shown as "applied" is derived here from the YAML, never stored twice.

- the state document (site/api/calibration/state.json) is the YAML's entries plus generated_at;
- a run's display status is derived: `applied` when the YAML's run_id is that run, `rolled-back`
  when its values were applied and the apply that replaced them (the next apply event of its
  underlying after the last one naming it) was a rollback, `superseded` when an apply event names
  it but the YAML no longer does, `failed` when realism failed, `held` otherwise; an imported record
  of the previous system shows `legacy` (`shown_status`): calreport never decided it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Protocol

from calreport.model import (
    AppliedDocument,
    ApplyEvent,
    CalibrationConfig,
    DisplayStatus,
    LiveRun,
    StateDocument,
)
from calreport.store.applied import read_applied
from calreport.store.history import HistoryRead
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from calreport.timeutil import iso_utc, time_ms, utc_now

ROLLED_BACK: DisplayStatus = "rolled-back"
LEGACY_STATUS = "legacy"  # an imported record (calreport never applied or held it)


def state_document(doc: AppliedDocument, now: datetime | None = None) -> StateDocument:
    return StateDocument(schema_version=doc.schema_version, underlyings=dict(doc.underlyings), generated_at=iso_utc(now or utc_now()))


def read_state(root: Root, config: CalibrationConfig | None = None) -> StateDocument:
    """The state document, read from the YAML at call time."""
    return state_document(read_applied(root, config))


class RunKey(Protocol):
    """What status derivation reads of a row: a LiveRun/ApplyEvent or a history index RowRef."""

    @property
    def underlying(self) -> str | None: ...
    @property
    def run_id(self) -> str | None: ...


class EventKey(RunKey, Protocol):
    """What status derivation reads of an apply event (an ApplyEvent or a history index RowRef)."""

    @property
    def source(self) -> str | None: ...
    @property
    def ts(self) -> str | None: ...


class RunStatusKey(RunKey, Protocol):
    @property
    def status(self) -> str | None: ...
    @property
    def is_live(self) -> bool: ...


class _History(Protocol):
    def of_type(self, cls: type[ApplyEvent]) -> Iterable[RunKey]: ...


@dataclass(frozen=True)
class StatusIndex:
    """What is needed to derive any live run's display status without re-reading files."""

    doc: AppliedDocument
    applied_run_ids: frozenset[tuple[str, str]]  # (underlying, run_id) named by an apply event
    # (underlying, run_id) whose values a rollback replaced -> (run re-applied, when)
    rolled_back: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, doc: AppliedDocument, live: HistoryRead | _History) -> "StatusIndex":
        """From the live history: parsed rows (HistoryRead) or a history index."""
        return cls.from_events(doc, live.of_type(ApplyEvent))

    @classmethod
    def from_events(cls, doc: AppliedDocument, events: Iterable[EventKey]) -> "StatusIndex":
        """From the apply events, in any order (parsed rows or index refs: underlying, run_id,
        source and ts are read; the apply time orders them)."""
        named = [e for e in events if e.run_id and e.underlying]
        ids = frozenset((e.underlying, e.run_id) for e in named)
        ordered = sorted(named, key=_apply_time)  # stable: ties keep the given order
        replaced_by: dict[tuple[str, str], EventKey] = {}
        last: dict[str, EventKey] = {}
        for e in ordered:  # the apply after each run's last apply replaced its values
            before = last.get(e.underlying)  # type: ignore[arg-type]
            if before is not None and before.run_id != e.run_id:
                replaced_by[(before.underlying, before.run_id)] = e  # type: ignore[index]
            replaced_by.pop((e.underlying, e.run_id), None)  # type: ignore[arg-type]
            last[e.underlying] = e  # type: ignore[index]
        rolled = {k: (e.run_id, e.ts or "") for k, e in replaced_by.items() if e.source == "rollback"}
        return cls(doc=doc, applied_run_ids=ids, rolled_back=rolled)  # type: ignore[arg-type]

    def status_of(self, run: LiveRun | RunStatusKey) -> DisplayStatus:
        entry = self.doc.underlyings.get(run.underlying or "")
        if entry is not None and run.run_id and entry.run_id == run.run_id:
            return "applied"
        if (run.underlying, run.run_id) in self.rolled_back:
            return ROLLED_BACK
        if (run.underlying, run.run_id) in self.applied_run_ids:
            return "superseded"
        if run.status == "failed":
            return "failed"
        return "held"

    def shown_status(self, run: LiveRun | RunStatusKey) -> str:
        """status_of, except that an imported legacy record shows "legacy": a derived "held" beside the
        old system's own "apply" would contradict its decision (the dashboard, doctor's counts)."""
        return LEGACY_STATUS if not run.is_live else self.status_of(run)

    def rollback_reason(self, run: RunKey) -> str | None:
        """'Rolled back: run R1's values re-applied at <time>' for a rolled-back run, else None."""
        got = self.rolled_back.get((run.underlying or "", run.run_id or ""))
        return None if got is None else f"Rolled back: run {got[0]}'s values re-applied at {got[1] or 'an unknown time'}"


def _apply_time(e: EventKey) -> int:
    """An apply event's time in ms: an index ref's precomputed one, else its parsed `ts`."""
    t = getattr(e, "time_ms", None)
    return t if isinstance(t, int) else time_ms(e.ts) or 0


def status_index(root: Root, config: CalibrationConfig | None = None) -> StatusIndex:
    """The status index of a root, read from its YAML and live history now."""
    return StatusIndex.from_events(read_applied(root, config), HistoryQuery.read(root).apply_event_keys())
