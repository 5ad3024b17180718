"""Git audit adapter: commit the applied YAML after every apply.

With `git_commit: true` and the root inside a git work tree, every apply commits
config/applied_multipliers.yaml and nothing else (`git commit --only -- <path>`: whatever else the
user has staged stays staged and uncommitted). A failed commit is a warning, never a failed apply:
the YAML and its apply event are already the truth; so is a root outside a git work tree, or no git
on PATH (the warning says which). The subject is at most SUBJECT_MAX characters; the body has the run,
reason, note and one line per value that moved. The commit runs as an after-apply hook the
command's workspace passes explicitly (commands.workspace), never by importing this.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

from calreport import fmt
from calreport.commands.audit import describe_change
from calreport.errors import CalreportError
from calreport.model import ApplyEvent, CalibrationConfig, Multipliers
from calreport.store.applied import read_applied
from calreport.store.files import locked
from calreport.store.paths import Root

GIT_TIMEOUT_S = 30.0
COMMIT_WARNING = "the apply succeeded but its git commit did not"
SUBJECT_MAX = 72  # git's convention: `git log --oneline` and mail subjects show this much


def commit_subject(event: ApplyEvent) -> str:
    """'calreport: BTC force global 1.0651 -> 1.0937 (+27 more)', at most SUBJECT_MAX characters."""
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
