"""Audit trail: one git commit per apply (only the YAML), `calreport log`, `calreport rollback`."""

from __future__ import annotations

import subprocess

import pytest
from foundation_helpers import add_auto_run, add_live_run, rollback

from calreport.commands import usecases as actions
from calreport.commands.adapters.gitaudit import commit_message
from calreport.commands.audit import describe_change
from calreport.commands.cli import main
from calreport.commands.workspace import Workspace
from calreport.errors import RefusedError
from calreport.model import Multipliers
from calreport.store.applied import apply_values, read_applied
from calreport.store.query import HistoryQuery


def git(root, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root.path, capture_output=True, text=True, check=True).stdout


@pytest.fixture
def git_root(root):
    """A root that is a git work tree with `git_commit: true` and everything committed."""
    cfg = root.calibration_config.read_text().replace("git_commit: false", "git_commit: true")
    root.calibration_config.write_text(cfg)
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    git(root, "add", "config", "history")
    git(root, "commit", "-q", "-m", "initial")
    return root


def test_describe_change_lists_global_and_changed_bands_only():
    prev = Multipliers(global_=1.0, bands={"7-30d": 1.09, "0-7d": 1.05})
    new = Multipliers(global_=1.0833, bands={"0-7d": 1.05, "30-90d": 1.2})
    assert describe_change(prev, new) == "global 1.0000 -> 1.0833, 30-90d - -> 1.2000, 7-30d 1.0900 -> -"


def test_each_apply_commits_only_the_yaml_and_leaves_other_staged_files_alone(git_root):
    root = git_root
    (root.path / "notes.txt").write_text("staged by the user\n")
    git(root, "add", "notes.txt")
    run = add_live_run(root, smoothed=1.0833)
    actions.force_apply(Workspace.open(root), "BTC")
    assert git(root, "log", "-1", "--format=%s").strip() == "calreport: BTC force global 1.0000 -> 1.0833"
    assert f"Run: {run.run_id}" in git(root, "log", "-1", "--format=%b")
    assert git(root, "show", "--name-only", "--format=", "HEAD").split() == ["config/applied_multipliers.yaml"]
    assert git(root, "diff", "--cached", "--name-only").split() == ["notes.txt"]  # still staged, not committed
    assert "global: 1.0833" in git(root, "show", "HEAD:config/applied_multipliers.yaml")
    assert git(root, "status", "--porcelain", "config/applied_multipliers.yaml") == ""


def test_an_untracked_yaml_is_added_and_committed(root):
    root.calibration_config.write_text(root.calibration_config.read_text().replace("git_commit: false", "git_commit: true"))
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "Test")
    add_live_run(root, smoothed=1.1)
    actions.force_apply(Workspace.open(root), "BTC")
    assert git(root, "ls-files").split() == ["config/applied_multipliers.yaml"]


def test_no_commit_when_git_commit_is_false(root):
    git(root, "init", "-q")
    add_live_run(root)
    actions.force_apply(Workspace.open(root), "BTC")
    assert subprocess.run(["git", "rev-parse", "HEAD"], cwd=root.path, capture_output=True, check=False).returncode != 0


def test_a_failing_commit_is_a_warning_and_the_apply_stands(git_root, capsys):
    root = git_root
    hook = root.path / ".git" / "hooks" / "pre-commit"
    hook.write_text("#!/bin/sh\necho 'rejected by policy' >&2\nexit 1\n")
    hook.chmod(0o755)
    add_live_run(root, smoothed=1.0833)
    assert main(["--root", str(root.path), "force-apply", "--underlying", "BTC"]) == 0
    err = capsys.readouterr().err
    assert "warning: the apply succeeded but its git commit did not" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert read_applied(root).entry("BTC").global_ == 1.0833
    assert git(root, "log", "-1", "--format=%s").strip() == "initial"


def test_outside_a_git_work_tree_the_apply_stands_and_says_it_was_not_committed(root, caplog):
    root.calibration_config.write_text(root.calibration_config.read_text().replace("git_commit: false", "git_commit: true"))
    add_live_run(root)
    ev = actions.force_apply(Workspace.open(root), "BTC")
    assert read_applied(root).entry("BTC").run_id == ev.run_id
    assert "not inside a git work tree" in caplog.text and "not committed" in caplog.text


def test_log_lists_changes_newest_first_with_bands_previous_source_and_reason(root, capsys):
    first = add_live_run(root, smoothed=1.0833, bands={"0-7d": 1.05})
    actions.force_apply(Workspace.open(root), "BTC")
    apply_values(root, "ETH", Multipliers(global_=1.2), source="policy", run_id="eth-run", reason="policy: delta 0.2")
    second = add_live_run(root, smoothed=1.12)
    actions.force_apply(Workspace.open(root), "BTC")
    assert main(["--root", str(root.path), "log", "-v"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert "BTC  global 1.0833 -> 1.1200, 0-7d 1.0500 -> -  [force] Forced by user  run " + second.run_id in lines[0]
    assert f"(replaced run {first.run_id})" in lines[0]
    assert "ETH  global 1.0000 -> 1.2000  [policy] policy: delta 0.2  run eth-run" in lines[1]
    assert "BTC  global 1.0000 -> 1.0833, 0-7d - -> 1.0500" in lines[2]
    assert main(["--root", str(root.path), "log", "--underlying", "eth"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1


def test_rollback_defaults_to_the_previous_distinct_applied_run(root):
    a = add_live_run(root, smoothed=1.0833, bands={"0-7d": 1.05})
    actions.force_apply(Workspace.open(root), "BTC")
    b = add_live_run(root, smoothed=1.12)
    actions.force_apply(Workspace.open(root), "BTC")
    ev = rollback(root, "BTC")
    assert (ev.source, ev.run_id, ev.reason) == ("rollback", a.run_id, f"Rollback to run {a.run_id}")
    entry = read_applied(root).entry("BTC")
    assert (entry.global_, entry.bands, entry.run_id, entry.source) == (1.0833, {"0-7d": 1.05}, a.run_id, "rollback")
    assert ev.previous.global_ == 1.12
    ev2 = rollback(root, "BTC")  # undoing the rollback goes back to b
    assert ev2.run_id == b.run_id and read_applied(root).entry("BTC").global_ == 1.12
    assert [e.source for e in HistoryQuery.file_order(root, "apply", "BTC")] == ["force", "force", "rollback", "rollback"]


def test_rollback_to_a_named_run(root):
    a = add_live_run(root, smoothed=1.05)
    actions.force_apply(Workspace.open(root), "BTC")
    add_live_run(root, smoothed=1.10)
    actions.force_apply(Workspace.open(root), "BTC")
    add_live_run(root, smoothed=1.15)
    actions.force_apply(Workspace.open(root), "BTC")
    ev = actions.rollback(Workspace.open(root), "BTC", to=a.run_id)
    assert ev.run_id == a.run_id and read_applied(root).entry("BTC").global_ == 1.05


def test_rollback_refusals(root, capsys):
    with pytest.raises(RefusedError, match="nothing to roll back to"):
        rollback(root, "BTC")
    only = add_live_run(root, smoothed=1.05)
    actions.force_apply(Workspace.open(root), "BTC")
    with pytest.raises(RefusedError, match="nothing to roll back to"):
        rollback(root, "BTC")
    held = add_live_run(root, smoothed=1.3)
    with pytest.raises(RefusedError, match="never applied"):
        rollback(root, "BTC", to=held.run_id)
    auto = add_auto_run(root)
    with pytest.raises(RefusedError, match="auto-calibrate run"):
        rollback(root, "BTC", to=auto.run_id)
    with pytest.raises(RefusedError, match=r"\(BTC\) was never applied to ETH"):
        rollback(root, "ETH", to=only.run_id)
    before = root.applied.read_bytes()
    assert main(["--root", str(root.path), "rollback", "--underlying", "BTC", "--to", "no-such-run"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no run no-such-run" in err
    assert root.applied.read_bytes() == before


def test_commit_message_shape():
    from calreport.model import ApplyEvent

    ev = ApplyEvent(
        underlying="BTC",
        run_id="R1",
        previous=Multipliers(global_=1.0),
        applied=Multipliers(global_=1.0833),
        source="force",
        reason="Forced by user",
    )
    assert commit_message(ev) == (
        "calreport: BTC force global 1.0000 -> 1.0833\n\n"
        "Run: R1 (replaced run -)\nReason: Forced by user\nApplied at: -\n\nChanges:\n  global 1.0000 -> 1.0833\n"
    )


def test_the_live_calibration_use_case_alone_commits_its_policy_apply(git_root, tmp_path):
    """No CLI, no import of audit by the caller: the workspace the use case opens carries the hook."""
    from test_calibrate import synth_rows, write_snapshot

    from calreport.commands.usecases import run_live_calibration

    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.3))
    run = run_live_calibration(Workspace.open(git_root), "BTC", snap, rv=0.45)
    assert run.decision == "apply", run.decision_reason
    (event,) = HistoryQuery.file_order(git_root, "apply", "BTC")
    assert event.run_id == run.run_id
    assert git(git_root, "log", "-1", "--format=%B").strip() == commit_message(event).strip()
    assert f"global 1.0000 -> {run.smoothed.global_:.4f}" in commit_message(event)
    assert git(git_root, "status", "--porcelain", "config/applied_multipliers.yaml") == ""


def test_after_apply_hooks_are_exactly_the_ones_the_workspace_passes(git_root):
    from calreport.commands.workspace import Workspace

    add_live_run(git_root, smoothed=1.0833)
    seen = []
    ws = Workspace.open(git_root, after_apply=[seen.append], renderer=None)
    ev = actions.force_apply(ws, "BTC")
    assert seen == [ev]
    assert git(git_root, "log", "-1", "--format=%s").strip() == "initial"  # the git hook was not passed
    assert [type(h).__name__ for h in Workspace.open(git_root).after_apply] == ["GitAudit"]  # git_commit: true


def test_a_change_of_the_surface_block_is_described_not_read_as_no_change():
    """An apply that adds, drops or moves the surface block changes what the engine quotes even when the
    levels and smile are the same: `calreport log` and the git message must not read "global 0.9947 -> 0.9947"."""
    from calreport.model import SurfaceSpec

    spec = SurfaceSpec(pillars={"0-7d": 1.75, "7-30d": 16.4957}, weekend_weight=0.35, wing_slope_cap=1.8)
    step = Multipliers(global_=0.9947, bands={"0-7d": 0.8652})
    surf = step.model_copy(update={"surface": spec})
    assert describe_change(step, surf) == "global 0.9947 -> 0.9947, surface none (step model) -> pillars-pchip-1"
    assert describe_change(surf, step) == "global 0.9947 -> 0.9947, surface pillars-pchip-1 -> none (step model)"
    moved = surf.model_copy(update={"surface": spec.model_copy(update={"pillars": {"0-7d": 2.0, "7-30d": 16.4957}})})
    assert describe_change(surf, moved) == "global 0.9947 -> 0.9947, surface pillar 0-7d 1.7500 -> 2.0000"
    assert describe_change(surf, surf) == "global 0.9947 -> 0.9947"
