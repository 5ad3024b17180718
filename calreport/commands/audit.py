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
from calreport.errors import CalreportError
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


def commit_message(event: ApplyEvent) -> str:
    return (
        f"calreport: {event.underlying} {describe_change(event.previous, event.applied)} "
        f"({event.reason or event.source}, run {fmt.text(event.run_id)})"
    )


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
    """Commit only the applied YAML for `event`. Returns the commit hash, None when skipped.

    Raises CalreportError when git fails. Runs under the YAML's lock so the committed file is the
    one this event wrote; if a later apply already replaced it, that apply's own commit carries it.
    """
    cwd = root.path
    probe = _git(cwd, "rev-parse", "--is-inside-work-tree")
    if probe.returncode != 0 or probe.stdout.strip() != "true":
        return None
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


def log_lines(root: Root, underlying: str | None = None) -> list[str]:
    """`calreport log`: every applied change, newest first (when, what, previous -> new, why, run)."""
    name = underlying.upper() if underlying else None
    events = apply_events(root, name)
    if not events:
        which = f" for {name}" if name else ""
        return [f"no applied changes{which} in {root.live_history}"]
    return [
        f"{e.ts or '?'}  {e.underlying}  {describe_change(e.previous, e.applied)}  "
        f"[{e.source or '?'}] {fmt.text(e.reason)}  run {fmt.text(e.run_id)}"
        + (f" (replaced run {e.previous_run_id})" if e.previous_run_id else "")
        + (f" (YAML schema_version {e.schema_upgrade})" if e.schema_upgrade else "")
        for e in reversed(events)
    ]
