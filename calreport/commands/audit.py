"""The audit trail: how a change reads and `calreport log` (rollback's rules are calreport/apply.py's;
the git commit of each apply is the adapter commands/adapters/gitaudit.py).

- `log` reads the apply events in history/live_calibration.jsonl, which record the previous and
  the applied values of every change (what `calreport rollback` re-applies).
"""

from __future__ import annotations

from calreport import fmt
from calreport.calibration.smile import regrid
from calreport.errors import excerpt
from calreport.model import ApplyEvent, Multipliers, Smile, surface_changes
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

# --------------------------------------------------------------------------- describing changes


def describe_change(previous: Multipliers | None, applied: Multipliers | None) -> str:
    """'global 1.0000 -> 1.0833, 0-7d - -> 1.0500' (bands listed only when they changed)."""
    prev = previous or Multipliers()
    new = applied or Multipliers()
    parts = [f"global {fmt.mult(prev.global_)} -> {fmt.mult(new.global_)}"]
    for label in list(dict.fromkeys([*new.bands, *prev.bands])):
        a, b = prev.bands.get(label), new.bands.get(label)
        if a is None or b is None or round(a, 4) != round(b, 4):
            parts.append(f"{label} {fmt.mult(a)} -> {fmt.mult(b)}")
    parts += smile_changes(prev, new)
    parts += [f"{what} {a} -> {b}" for what, a, b in surface_changes(prev.surface, new.surface)]
    return ", ".join(parts)


def smile_changes(previous: Multipliers, applied: Multipliers) -> list[str]:
    """'smile 7-30d x=-1.50 1.1200 -> 1.1500' for every node that moved (a missing smile is flat: 1)."""
    a, b = previous.smile, applied.smile
    if a is None and b is None:
        return []
    nodes = (b or a).nodes  # type: ignore[union-attr]
    labels = ["global", *dict.fromkeys([*(b.bands if b else {}), *(a.bands if a else {})])]
    out = []
    for label in labels:  # global + a handful of bands
        va = _smile_of(a, label, nodes)
        vb = _smile_of(b, label, nodes)
        out += [f"smile {label} {fmt.node(x)} {fmt.mult(p)} -> {fmt.mult(q)}" for x, p, q in zip(nodes, va, vb) if round(p, 4) != round(q, 4)]
    return out


def _smile_of(smile: Smile | None, label: str, nodes: list[float]) -> list[float]:
    if smile is None:
        return [1.0] * len(nodes)
    values = smile.global_ if label == "global" else smile.bands.get(label, smile.global_)
    return regrid(smile.nodes, values, nodes)  # another node grid: the same curve read at these nodes


# --------------------------------------------------------------------------- log


REASON_SHORT = 60  # characters of an apply's reason on a short `calreport log` line


def log_line(e: ApplyEvent) -> str:
    """One short line per apply: when, what, its global change (and how many other values moved), run, why."""
    parts = describe_change(e.previous, e.applied).split(", ")
    more = f" (+{len(parts) - 1} more)" if len(parts) > 1 else ""
    return (
        f"{e.ts or '?'}  {e.underlying}  {e.source or '?'}  {parts[0]}{more}  run {fmt.text(e.run_id)}  "
        f"{excerpt(fmt.text(e.reason), REASON_SHORT, plain=True)}" + (f"  note: {excerpt(e.note, REASON_SHORT, plain=True)}" if e.note else "")
    )


def log_lines(root: Root, underlying: str | None = None, *, verbose: bool = False) -> list[str]:
    """`calreport log`: every applied change, newest first: one short line each (log_line), or with
    `verbose` every value that moved, the whole reason, the run it replaced and the note."""
    name = underlying.upper() if underlying else None
    events = list(HistoryQuery.tail(root, "apply", name))  # newest first, as appended
    if not events:
        which = f" for {name}" if name else ""
        return [f"no applied changes{which} in {root.live_history}"]
    if not verbose:
        return [log_line(e) for e in events]
    return [
        f"{e.ts or '?'}  {e.underlying}  {describe_change(e.previous, e.applied)}  "
        f"[{e.source or '?'}] {fmt.text(e.reason)}  run {fmt.text(e.run_id)}"
        + (f"  note: {e.note}" if e.note else "")
        + (f" (replaced run {e.previous_run_id})" if e.previous_run_id else "")
        + (f" (YAML schema_version {e.schema_upgrade})" if e.schema_upgrade else "")
        for e in events
    ]
