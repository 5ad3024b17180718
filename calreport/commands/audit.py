"""The audit trail: git commits of the applied YAML and `calreport log` (rollback's rules are calreport/apply.py's).

- With `git_commit: true` and the root inside a git work tree, every apply commits
  config/applied_multipliers.yaml and nothing else (`git commit --only -- <path>`: whatever else
  the user has staged stays staged and uncommitted). A failed commit is a warning, never a failed
  apply: the YAML and its apply event are already the truth. The commit runs as an after-apply
  hook the command's workspace passes explicitly (commands.workspace), never by importing this.
- `log` reads the apply events in history/live_calibration.jsonl, which record the previous and
  the applied values of every change (what `calreport rollback` re-applies).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from calreport import fmt
from calreport.calibration.smile import regrid
from calreport.errors import CalreportError, excerpt
from calreport.model import ApplyEvent, CalibrationConfig, Multipliers, Smile
from calreport.store.applied import read_applied
from calreport.store.files import locked
from calreport.store.history import apply_events
from calreport.store.paths import Root

GIT_TIMEOUT_S = 30.0
COMMIT_WARNING = "the apply succeeded but its git commit did not"


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


SUBJECT_MAX = 72  # git's convention: `git log --oneline` and mail subjects show this much


def commit_subject(event: ApplyEvent) -> str:
    """'calreport: BTC force global 1.0651 -> 1.0937 (+3 bands, 12 smile nodes)', at most SUBJECT_MAX characters."""
    prev, new = event.previous or Multipliers(), event.applied or Multipliers()
    parts = describe_change(prev, new).split(", ")
    rest = len(parts) - 1
    subject = f"calreport: {event.underlying} {event.source or 'apply'} {parts[0]}" + (f" (+{rest} more)" if rest else "")
    return subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 3] + "..."


def commit_message(event: ApplyEvent) -> str:
    """The commit's subject line, a blank line, then the detail: run, reason, note, one line per change."""
    body = [
        f"Run: {fmt.text(event.run_id)} (replaced run {fmt.text(event.previous_run_id)})",
        f"Reason: {fmt.text(event.reason)}",
        *([f"Note: {event.note}"] if event.note else []),
        f"Applied at: {fmt.text(event.ts)}",
        "",
        "Changes:",
        *(f"  {part}" for part in describe_change(event.previous, event.applied).split(", ")),
    ]
    return commit_subject(event) + "\n\n" + "\n".join(body) + "\n"


# --------------------------------------------------------------------------- git commit hook


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT_S, env=env, check=False
    )


def _identity_env(cwd: Path) -> dict[str, str]:
    """Use the user's git identity; fall back to calreport's only where none is configured."""
    env = dict(os.environ)
    if not _git(cwd, "config", "user.email").stdout.strip() and "GIT_AUTHOR_EMAIL" not in env:
        env.setdefault("GIT_AUTHOR_NAME", "calreport")
        env.setdefault("GIT_AUTHOR_EMAIL", "calreport@localhost")
        env.setdefault("GIT_COMMITTER_NAME", env["GIT_AUTHOR_NAME"])
        env.setdefault("GIT_COMMITTER_EMAIL", env["GIT_AUTHOR_EMAIL"])
    return env


def commit_applied(root: Root, event: ApplyEvent, config: CalibrationConfig) -> str | None:
    """Commit only the applied YAML for `event`. Returns the commit hash, None when a later apply
    already replaced the file (that apply's own commit carries it).

    Raises CalreportError when it cannot commit: git missing, the root not in a git work tree, or
    git failing. Runs under the YAML's lock so the committed file is the one this event wrote.
    """
    cwd = root.path
    try:
        probe = _git(cwd, "rev-parse", "--is-inside-work-tree")
    except FileNotFoundError:
        raise CalreportError("git_commit is true but git is not installed (not on PATH); not committed", root.applied) from None
    if probe.returncode != 0 or probe.stdout.strip() != "true":
        raise CalreportError(
            f"git_commit is true but {cwd} is not inside a git work tree (`git init` there, or set git_commit: false); "
            "not committed",
            root.applied,
        )
    path = root.applied
    with locked(path):
        current = read_applied(root, config).underlyings.get(event.underlying or "")
        if current is None or current.updated_at != event.ts or current.run_id != event.run_id:
            return None
        env = _identity_env(cwd)
        rel = os.path.relpath(path, cwd)
        tracked = _git(cwd, "ls-files", "--error-unmatch", "--", rel).returncode == 0
        if not tracked:
            added = _git(cwd, "add", "--", rel, env=env)
            if added.returncode != 0:
                raise CalreportError(f"git add failed: {_first_line(added)}", path)
        done = _git(cwd, "commit", "--only", "--quiet", "-m", commit_message(event), "--", rel, env=env)
        if done.returncode != 0:
            raise CalreportError(f"git commit failed: {_first_line(done)}", path)
        head = _git(cwd, "rev-parse", "HEAD")
        return head.stdout.strip() or None


def _first_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or f"exit status {proc.returncode}").strip()
    return text.splitlines()[0] if text else f"exit status {proc.returncode}"


class GitAudit:
    """After-apply hook for `git_commit: true`: commit the YAML of each apply; a failure is a warning."""

    def __init__(self, root: Root, config: CalibrationConfig, warn: Callable[[str], None]) -> None:
        self.root = root
        self.config = config
        self.warn = warn

    def __call__(self, event: ApplyEvent) -> None:
        try:
            commit_applied(self.root, event, self.config)
        except (CalreportError, OSError, subprocess.SubprocessError) as exc:
            msg = exc.one_line() if isinstance(exc, CalreportError) else f"{type(exc).__name__}: {exc}"
            self.warn(f"{COMMIT_WARNING}: {' '.join(msg.split())}")


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
    events = apply_events(root, name)
    if not events:
        which = f" for {name}" if name else ""
        return [f"no applied changes{which} in {root.live_history}"]
    if not verbose:
        return [log_line(e) for e in reversed(events)]
    return [
        f"{e.ts or '?'}  {e.underlying}  {describe_change(e.previous, e.applied)}  "
        f"[{e.source or '?'}] {fmt.text(e.reason)}  run {fmt.text(e.run_id)}"
        + (f"  note: {e.note}" if e.note else "")
        + (f" (replaced run {e.previous_run_id})" if e.previous_run_id else "")
        + (f" (YAML schema_version {e.schema_upgrade})" if e.schema_upgrade else "")
        for e in reversed(events)
    ]
