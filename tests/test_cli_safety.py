"""Commands that could hurt a real root refuse, and a mistyped root never fakes success."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calreport.commands.cli import main
from calreport.commands.demo import demo_target
from calreport.errors import RefusedError
from calreport.store.paths import Root


def tree(path: Path) -> dict[str, str]:
    """Every file under `path` with a hash of its bytes: what "changes nothing" compares."""
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*")) if p.is_file()
    }


def test_demo_into_a_real_root_changes_nothing_and_exits_1(root: Root, capsys) -> None:
    before = tree(root.path)
    assert main(["demo", "--root", str(root.path)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(root.path) in err and "--force" in err
    assert tree(root.path) == before


def test_demo_with_calreport_root_set_refuses_that_root(root: Root, capsys, monkeypatch) -> None:
    monkeypatch.setenv("CALREPORT_ROOT", str(root.path))
    before = tree(root.path)
    assert main(["demo"]) == 1
    assert str(root.path) in capsys.readouterr().err
    assert tree(root.path) == before


def test_demo_refuses_any_directory_with_files_in_it(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RefusedError, match="not empty"):
        demo_target(Root(tmp_path))
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_demo_accepts_a_new_or_empty_directory(tmp_path: Path) -> None:
    assert demo_target(Root(tmp_path / "new")) is None
    (tmp_path / "empty").mkdir()
    assert demo_target(Root(tmp_path / "empty")) is None


def test_demo_force_moves_every_file_to_a_backup_beside_the_root(root: Root) -> None:
    before = tree(root.path)
    backup = demo_target(root, force=True, now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC))
    assert backup == root.path.with_name(f"{root.path.name}.backup-20260102T030405Z")
    assert list(root.path.iterdir()) == []
    assert tree(backup) == before


def test_demo_force_prints_the_backup_path(root: Root, capsys, monkeypatch) -> None:
    import calreport.commands.demo as demo

    monkeypatch.setattr(demo, "run_demo", lambda ws, log: 0)  # the flow itself: test_sample_demo
    assert main(["demo", "--force", "--root", str(root.path)]) == 0
    out = capsys.readouterr().out
    backups = list(root.path.parent.glob(f"{root.path.name}.backup-*"))
    assert len(backups) == 1 and str(backups[0]) in out
    assert (backups[0] / "config" / "applied_multipliers.yaml").exists()


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["render"], ["doctor"], ["log"], ["force-apply", "--underlying", "BTC"]])
def test_a_directory_that_is_not_a_root_is_refused_in_one_line(tmp_path: Path, capsys, command: list[str]) -> None:
    where = tmp_path / "typo"
    assert main([*command, "--root", str(where)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and str(where) in err and "not a calreport root" in err
    assert not where.exists()  # render never creates a dashboard there


def test_init_and_schema_need_no_root(tmp_path: Path, capsys) -> None:
    assert main(["schema", "--root", str(tmp_path / "none")]) == 0
    assert main(["init", "--root", str(tmp_path / "new")]) == 0
    assert main(["status", "--root", str(tmp_path / "new")]) == 0
