"""Everything shown as "applied" is derived here from the YAML, never stored twice.

- the state document (site/api/calibration/state.json) is the YAML's entries plus generated_at;
- a run's display status is derived: `applied` when the YAML's run_id is that run, `superseded`
  when an apply event names it but the YAML no longer does, `failed` when realism failed,
  `held` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from calreport.timeutil import iso_utc, utc_now


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


class RunStatusKey(RunKey, Protocol):
    @property
    def status(self) -> str | None: ...


class _History(Protocol):
    def of_type(self, cls: type[ApplyEvent]) -> Iterable[RunKey]: ...


@dataclass(frozen=True)
class StatusIndex:
    """What is needed to derive any live run's display status without re-reading files."""

    doc: AppliedDocument
    applied_run_ids: frozenset[tuple[str, str]]  # (underlying, run_id) named by an apply event

    @classmethod
    def build(cls, doc: AppliedDocument, live: HistoryRead | _History) -> "StatusIndex":
        """From the live history: parsed rows (HistoryRead) or a history index."""
        return cls.from_events(doc, live.of_type(ApplyEvent))

    @classmethod
    def from_events(cls, doc: AppliedDocument, events: Iterable[RunKey]) -> "StatusIndex":
        """From the apply events (parsed rows or index refs: only underlying and run_id are read)."""
        ids = frozenset((e.underlying, e.run_id) for e in events if e.run_id and e.underlying)
        return cls(doc=doc, applied_run_ids=ids)  # type: ignore[arg-type]

    def status_of(self, run: LiveRun | RunStatusKey) -> DisplayStatus:
        entry = self.doc.underlyings.get(run.underlying or "")
        if entry is not None and run.run_id and entry.run_id == run.run_id:
            return "applied"
        if (run.underlying, run.run_id) in self.applied_run_ids:
            return "superseded"
        if run.status == "failed":
            return "failed"
        return "held"


def status_index(root: Root, config: CalibrationConfig | None = None) -> StatusIndex:
    """The status index of a root, read from its YAML and live history now."""
    return StatusIndex.from_events(read_applied(root, config), HistoryQuery.read(root).apply_event_keys())
