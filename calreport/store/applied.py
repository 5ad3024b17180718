"""config/applied_multipliers.yaml: its strict reader, its format and its only writer.

Every write is one transaction under the file's lock (`transaction`): read and validate the
current file, let the caller decide against *those* values, write the new file by atomic replace,
append the apply event to history/live_calibration.jsonl. If the event cannot be written the old
file is restored, so the YAML and the last apply event agree. What may be written, and when, is
calreport/apply.py's (the rules and the transactions that decide); this module reads, locks,
formats and writes. What happens after an apply (the git audit commit, the re-render) is the
command's business: nothing here runs hooks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path

from filelock import Timeout
from pydantic import ValidationError

from calreport import fmt
from calreport.errors import CalreportError, excerpt
from calreport.model import (
    APPLIED_SCHEMA_VERSION,
    AppliedDocument,
    AppliedEntry,
    ApplyEvent,
    AutoRun,
    CalibrationConfig,
    LiveRun,
    Multipliers,
    Smile,
    SurfaceSpec,
    default_entry,
    quoted_surface,
)
from calreport.store.config import load_config
from calreport.store.files import atomic_write, backup_link, present, restore_backup
from calreport.store.history import append_row, locked
from calreport.store.paths import Root, lock_path
from calreport.store.query import HistoryQuery, HistoryTail
from calreport.store.yamlio import load_strict, scalar, validation_problem
from calreport.timeutil import iso_utc, parse_time, utc_now

HEADER = (
    "# Applied IV multipliers: the single source of truth for the synthetic engine\n"
    "# (sigma = base x multiplier x smile(x); a band's multiplier / smile when present, else global;\n"
    "# x = ln(K/F) / (base x multiplier x sqrt(T)), each smile value commented with its node x).\n"
    "# An entry with a surface block is quoted by the continuous surface (CALIBRATION_NOTES): each band's\n"
    "# multiplier and smile are a pillar at surface.pillars days of variance time; without one, the step model.\n"
    "# Written only by calreport (calreport/store/applied.py) via `calreport calibrate`,\n"
    "# `calreport force-apply` or `calreport rollback`; the engine hot-reloads it.\n"
)


def read_applied(root: Root, config: CalibrationConfig | None = None) -> AppliedDocument:
    """Read and strictly validate the YAML. Missing file = every underlying at 1.0 (not an error).
    Every band label must be a band of the config, except in an entry quoted by its surface block
    (labels that are all its own pillars): bands edited in the config reach it at the next live run."""
    path = root.applied
    if not present(path):
        return AppliedDocument()
    data = load_strict(path)
    if data is None:
        raise CalreportError("file is empty (expected schema_version and underlyings)", path)
    if not isinstance(data, dict):
        raise CalreportError("expected a mapping with schema_version and underlyings", path)
    try:
        doc = AppliedDocument.model_validate(data)
    except ValidationError as exc:
        raise CalreportError(f"invalid applied multipliers: {validation_problem(exc)}", path) from None
    cfg = config if config is not None else load_config(root)
    known = set(cfg.band_names())
    for name, entry in doc.underlyings.items():
        problem = cfg.limits.problem_of(entry.multipliers())
        if problem:
            raise CalreportError(f"underlyings.{name}.{problem}", path)
        labels = set(entry.bands) | set(entry.smile.bands if entry.smile else ()) | set(entry.surface.pillars if entry.surface else ())
        unknown = sorted(labels - known)
        spec = quoted_surface(entry, cfg.smile.enabled)
        if unknown and spec is not None and labels <= set(spec.pillars):
            # The surface quotes from the entry alone (each label a pillar at its own variance days,
            # smile.entry_surface), so bands renamed or split in the config leave its quotes as they
            # were until the next live run applies the new pillars (the quoting model changed).
            unknown = []
        if unknown:
            raise UndefinedBand(
                f"underlyings.{name}.bands: band {excerpt(unknown[0], 40)} is not defined in config/calibration.yaml "
                f"(defined: {', '.join(sorted(known)) or 'none'}); the step model takes a band's DTE range from there, "
                "so define it again (the bands were edited since the last apply?)",
                path,
                underlying=name,
                label=unknown[0],
            )
    return doc


class UndefinedBand(CalreportError):
    """The applied YAML names a band the config no longer defines, where the engine would need its DTE
    range (the step model): the fix is in config/calibration.yaml, not in the YAML, when calreport wrote
    that label (doctor checks the apply events: a label no apply wrote is a hand edit of the YAML)."""

    def __init__(self, problem: str, path: Path | str | None = None, *, underlying: str = "", label: str = "") -> None:
        super().__init__(problem, path)
        self.underlying = underlying
        self.label = label


def format_applied(doc: AppliedDocument) -> str:
    """Deterministic YAML: stable key order, 4-decimal multipliers, so git diff shows the change."""
    lines = [HEADER.rstrip("\n"), f"schema_version: {doc.schema_version}", "underlyings:"]
    if not doc.underlyings:
        lines[-1] = "underlyings: {}"
    for name in sorted(doc.underlyings):
        e = doc.underlyings[name]
        lines.append(f"  {name}:")
        lines.append(f"    global: {e.global_:.4f}")
        if e.bands:
            lines.append("    bands:")
            for label, value in e.bands.items():
                lines.append(f"      {scalar(label)}: {value:.4f}")
        else:
            lines.append("    bands: {}")
        if e.smile is not None:
            lines += _smile_lines(e.smile)
        if e.surface is not None:
            lines += _surface_lines(e.surface)
        lines.append(f"    updated_at: {scalar(e.updated_at)}")
        lines.append(f"    source: {e.source}")
        lines.append(f"    run_id: {scalar(e.run_id)}")
        lines.append(f"    reason: {scalar(e.reason)}")
        if e.sigma_mode is not None:  # absent = rv: files of rv-mode roots stay byte for byte as before
            lines.append(f"    sigma_mode: {e.sigma_mode}")
    return "\n".join(lines) + "\n"


def _smile_lines(smile: Smile) -> list[str]:
    """One node value per line, 4 decimals, commented with its x: a git diff names the node that moved."""
    def values(indent: str, vs: list[float]) -> list[str]:
        return [f"{indent}- {v:.4f}  # {fmt.node(x)}" for x, v in zip(smile.nodes, vs)]

    out = ["    smile:", f"      nodes: [{', '.join(repr(float(x)) for x in smile.nodes)}]", "      global:"]
    out += values("        ", smile.global_)
    if smile.bands:
        out.append("      bands:")
        for label, vs in smile.bands.items():
            out.append(f"        {scalar(label)}:")
            out += values("          ", vs)
    else:
        out.append("      bands: {}")
    return out


def _surface_lines(surface: SurfaceSpec) -> list[str]:
    """The quoting model of an entry (schema_version 3): each pillar on its own line, so a diff shows a moved one."""
    out = ["    surface:", f"      model: {surface.model}", "      pillars:"]
    out += [f"        {scalar(label)}: {days:.4f}  # days of variance time" for label, days in surface.pillars.items()]
    out += [f"      weekend_weight: {surface.weekend_weight:g}", f"      wing_slope_cap: {surface.wing_slope_cap:g}"]
    return out


class ApplyTransaction:
    """The applied file as read under its lock, and the one way to replace it in that transaction (`replace`)."""

    def __init__(
        self, root: Root, config: CalibrationConfig, document: AppliedDocument, now: datetime | None, history: HistoryTail | None = None
    ) -> None:
        self.root = root
        self.config = config
        self.document = document
        self._now = now
        self.events: list[ApplyEvent] = []
        # the live history read from its end once for the whole transaction (recovery, then the run's previous runs)
        self.history = history if history is not None else HistoryTail(root.live_history)
        self._recovered = False

    def before_write(self) -> None:
        """Record the apply event a killed writer did not get to append, once, before this transaction's first
        write to the history (its own run row or apply event). Not on opening: a transaction that ends in a
        refusal ("already applied", a sigma-mode mismatch) writes nothing at all, recovery included."""
        if not self._recovered:
            self._recovered = True
            _recover_lost_events(self.root, self.document, self.history)

    def entry(self, underlying: str) -> AppliedEntry:
        """The values on disk for `underlying` (1.0 when never applied), read under the lock."""
        return self.document.entry(underlying)

    def replace(
        self, underlying: str, values: Multipliers, *, source: str, run_id: str | None, reason: str,
        sigma_mode: str | None = None, note: str | None = None,
    ) -> ApplyEvent:
        """Make `values` the engine's multipliers for `underlying`: YAML + apply event, or neither.
        `sigma_mode` is the mode the values were fitted in (None or rv: the line is left out);
        `note` is the user's (force-apply, rollback), recorded in the event only."""
        from calreport.apply import new_entry  # the write path only: reading the file (status) needs no core

        underlying = self.config.check_underlying(underlying)
        self.before_write()
        ts = iso_utc(self._now or utc_now())
        previous = self.entry(underlying)
        entry = new_entry(values, self.config, updated_at=ts, source=source, run_id=run_id, reason=reason, sigma_mode=sigma_mode)
        mode = entry.sigma_mode
        updated = self.document.model_copy(
            update={"underlyings": {**self.document.underlyings, underlying: entry}, "schema_version": APPLIED_SCHEMA_VERSION}
        )
        upgrade = {}
        if self.document.schema_version != APPLIED_SCHEMA_VERSION and self.root.applied.exists():
            upgrade["schema_upgrade"] = f"{self.document.schema_version} -> {APPLIED_SCHEMA_VERSION}"
        event = ApplyEvent(
            schema_version=1,
            run_id=run_id,
            ts=ts,
            underlying=underlying,
            previous=previous.multipliers(),
            applied=entry.multipliers(),
            source=source,
            reason=reason,
            previous_run_id=previous.run_id,
            **upgrade,
            **({"sigma_mode": mode} if mode else {}),
            **({"note": note} if note else {}),
        )
        _write_with_event(self.root, format_applied(updated).encode("utf-8"), event)
        self.document = updated
        self.events.append(event)
        return event


@contextmanager
def transaction(root: Root, config: CalibrationConfig, *, now: datetime | None = None) -> Iterator[ApplyTransaction]:
    """Hold the applied file's lock; yield its validated contents to decide on, and the writer.

    Whatever the caller decides inside the block is decided against the values on disk: no other
    apply can change them until the block ends. A hand-broken file stops here and is never
    overwritten; an apply event a killed writer did not get to append is recorded before the block's
    first write (ApplyTransaction.before_write), so a block that ends in a refusal writes nothing.
    """
    path = root.applied
    lock = locked(path)
    try:
        lock.acquire()
    except Timeout:
        raise CalreportError(f"timed out waiting for the lock {lock_path(path)}", path) from None
    try:
        yield ApplyTransaction(root, config, read_applied(root, config), now, HistoryTail(root.live_history))
    finally:
        lock.release()


def apply_values(
    root: Root,
    underlying: str,
    values: Multipliers,
    *,
    source: str,
    run_id: str | None,
    reason: str,
    now: datetime | None = None,
    config: CalibrationConfig | None = None,
    sigma_mode: str | None = None,
) -> ApplyEvent:
    """Make `values` the engine's multipliers for `underlying`, unconditionally, in one transaction."""
    cfg = config if config is not None else load_config(root)
    underlying = cfg.check_underlying(underlying)
    from calreport.apply import accepted, checked_values  # the write path only, as in replace

    accepted(checked_values(values, cfg))  # refuse bad values before taking the lock
    with transaction(root, cfg, now=now) as tx:
        return tx.replace(underlying, values, source=source, run_id=run_id, reason=reason, sigma_mode=sigma_mode)


RECOVERED_NOTE = "apply event recovered: the writer stopped after writing the YAML"


def entry_reason(event: ApplyEvent) -> str | None:
    """The reason the YAML entry written with `event` carries: a recovered event's reason is the
    entry's plus the recovery note, so both read the same once the note is taken off."""
    reason = event.reason or None
    suffix = f" ({RECOVERED_NOTE})"
    if event.recovered and reason is not None and reason.endswith(suffix):
        reason = reason[: -len(suffix)]
        return None if reason == "-" else reason
    return reason


def _recover_lost_events(root: Root, doc: AppliedDocument, tail: HistoryTail) -> None:
    """Record the apply event a killed writer did not get to append (caller holds the YAML's lock).

    A process killed between replacing the YAML and appending its event leaves the YAML ahead of
    history: its `updated_at` is newer than the last apply event of that underlying. The next
    apply records that state first, so the history again explains every value the engine used.
    A hand edit that kept `updated_at` is not recorded here; `calreport doctor` reports it.
    """
    entries = {u: e for u, e in doc.underlyings.items() if e.updated_at and (e.source != "init" or e.run_id)}
    if not entries:
        return
    last = HistoryQuery.last_apply_events(root, set(entries), tail)
    for name, e in entries.items():
        ev = last.get(name)
        if ev is not None:
            same = (
                ev.run_id == e.run_id
                and ev.ts == e.updated_at
                and ev.applied is not None
                and ev.applied.global_ == e.global_
                and ev.applied.bands == e.bands
                and ev.applied.smile == e.smile
            )
            if same or ev.ts is None or not _newer(e.updated_at, ev.ts):
                continue
        append_row(
            root.live_history,
            ApplyEvent(
                schema_version=1,
                run_id=e.run_id,
                ts=e.updated_at,
                underlying=name,
                previous=ev.applied if ev is not None and ev.applied is not None else default_entry().multipliers(),
                applied=e.multipliers(),
                source=e.source,
                reason=f"{e.reason or '-'} ({RECOVERED_NOTE})",
                previous_run_id=ev.run_id if ev is not None else None,
                recovered=True,
            ),
        )


def _newer(a: str | None, b: str) -> bool:
    try:
        return a is not None and parse_time(a) > parse_time(b)
    except ValueError:
        return False


def _write_with_event(root: Root, new_bytes: bytes, event: ApplyEvent) -> None:
    """Replace the YAML, then record the event; if either fails, the old YAML is put back.

    The old file is kept as a hard link and restored by rename, which needs no free space, so a
    full disk cannot leave new values in the YAML without their apply event. The caller holds the lock.
    """
    path = root.applied
    try:
        backup = backup_link(path)
        old_bytes = None
    except OSError:  # no hard links here: fall back to restoring by rewriting the old bytes
        backup, old_bytes = None, path.read_bytes()
    try:
        atomic_write(path, new_bytes)
        append_row(root.live_history, event)
    except BaseException:
        if old_bytes is not None:
            try:
                atomic_write(path, old_bytes)
            except CalreportError:
                pass
        else:
            restore_backup(path, backup)
        raise
    finally:
        if backup is not None:
            try:
                backup.unlink(missing_ok=True)
            except OSError:
                pass


class FileApplyStore:
    """The files force-apply and rollback read (calreport.apply.ApplyStore): the applied YAML's
    transaction and the history's apply events and runs."""

    def __init__(self, root: Root, config: CalibrationConfig) -> None:
        self.root = root
        self.config = config
        self.where = str(root.live_history)

    def transaction(self) -> AbstractContextManager[ApplyTransaction]:
        return transaction(self.root, self.config)

    def latest_live_run(self, underlying: str) -> LiveRun | None:
        return HistoryQuery.latest_live_run(self.root, underlying, refuse_unreadable=True)

    def apply_events(self, underlying: str) -> list[ApplyEvent]:
        return HistoryQuery.file_order(self.root, "apply", underlying)

    def run_of(self, run_id: str) -> LiveRun | AutoRun | None:
        """The run `run_id` names, live or auto (None when neither history has it)."""
        return HistoryQuery.run(self.root, run_id)


def init_applied(root: Root, cfg: CalibrationConfig, now: datetime | None = None) -> bool:
    """Write the initial file (every configured underlying at 1.0) unless one exists."""
    path = root.applied
    with locked(path):
        if present(path):
            return False
        ts = iso_utc(now or utc_now())
        doc = AppliedDocument(
            underlyings={
                u: default_entry().model_copy(update={"updated_at": ts, "reason": "Initial default"})
                for u in cfg.underlyings
            }
        )
        atomic_write(path, format_applied(doc).encode("utf-8"))
        return True
