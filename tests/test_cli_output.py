"""The command line reads the same everywhere: help on every option, no silent underlying, NOUN VERB
sub-commands, --json on every command that reports a result, short output unless -v, and notes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from foundation_helpers import add_live_run
from test_calibrate import synth_rows, write_snapshot

from calreport.commands import usecases as actions
from calreport.commands.adapters.gitaudit import SUBJECT_MAX, commit_message
from calreport.commands.cli import build_parser, main
from calreport.commands.dashboard import parse_body
from calreport.commands.workspace import Workspace
from calreport.market.sample import SampleMarket, write_json
from calreport.model import ApplyEvent
from calreport.store.query import HistoryQuery
from calreport.store.paths import Root

JSON_COMMANDS = ("calibrate", "auto-calibrate", "force-apply", "rollback", "log", "doctor", "backtest", "prices", "harvest")


def subcommands() -> dict:
    parser = build_parser()
    return next(a for a in parser._actions if a.dest == "command").choices


def test_every_option_of_every_command_has_help() -> None:
    missing = [(name, a.dest) for name, sp in subcommands().items() for a in sp._actions if not a.help]
    assert missing == []


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_every_command_that_reports_a_result_has_json(command: str) -> None:
    assert any("--json" in a.option_strings for a in subcommands()[command]._actions)


def test_serve_help_shows_the_default_port(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    assert "(default: 8765)" in capsys.readouterr().out


def test_harvest_is_noun_verb_and_the_old_spelling_still_parses() -> None:
    parser = build_parser()
    assert parser.parse_args(["harvest", "fetch", "--underlying", "BTC"]).action == "fetch"
    assert parser.parse_args(["harvest", "--underlying", "BTC"]).action == "fetch"  # the old spelling
    assert parser.parse_args(["harvest", "compact"]).action == "compact"
    assert parser.parse_args(["prices", "fetch", "--underlying", "BTC"]).action == "fetch"


@pytest.mark.parametrize("command", [["force-apply"], ["rollback"]])
def test_no_silent_underlying_when_the_config_lists_several(root: Root, capsys, command: list[str]) -> None:
    add_live_run(root, "BTC", smoothed=1.08)
    before = root.applied.read_bytes()
    assert main([*command, "--root", str(root.path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--underlying is required" in err and "BTC, ETH" in err
    assert root.applied.read_bytes() == before


def test_the_only_configured_underlying_is_the_default(root: Root, capsys) -> None:
    text = root.calibration_config.read_text()
    root.calibration_config.write_text(text.replace("underlyings: [BTC, ETH]", "underlyings: [ETH]"))
    assert "underlyings: [ETH]" in root.calibration_config.read_text()
    add_live_run(root, "ETH", smoothed=1.08)
    assert main(["force-apply", "--root", str(root.path)]) == 0
    assert HistoryQuery.file_order(root, "apply", "ETH")[-1].applied.global_ == 1.08


def test_force_apply_and_rollback_notes_are_recorded_and_json_is_the_event(root: Root, capsys) -> None:
    a = add_live_run(root, "BTC", smoothed=1.05)
    assert main(["force-apply", "--root", str(root.path), "--underlying", "BTC", "--note", "desk  asked\n for it"]) == 0
    add_live_run(root, "BTC", smoothed=1.10)
    capsys.readouterr()
    assert main(["force-apply", "--root", str(root.path), "--underlying", "BTC", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert ApplyEvent.model_validate(doc).source == "force" and "note" not in doc  # sparse: absent without one
    assert main(["rollback", "--root", str(root.path), "--underlying", "BTC", "--note", "bad fit", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["run_id"] == a.run_id and doc["note"] == "bad fit"
    notes = [e.note for e in HistoryQuery.file_order(root, "apply", "BTC")]
    assert notes == ["desk asked for it", None, "bad fit"]  # one line
    assert main(["log", "--root", str(root.path), "-v"]) == 0
    assert "note: bad fit" in capsys.readouterr().out


def test_a_note_longer_than_the_limit_is_refused(root: Root, capsys) -> None:
    add_live_run(root, "BTC", smoothed=1.05)
    before = root.applied.read_bytes()
    assert main(["force-apply", "--root", str(root.path), "--underlying", "BTC", "--note", "x" * 501]) == 1
    assert "at most 500" in capsys.readouterr().err and root.applied.read_bytes() == before


def test_the_dashboard_body_takes_an_optional_note() -> None:
    assert parse_body({"underlying": "BTC", "note": "from the desk"}).note == "from the desk"
    assert parse_body({"underlying": "BTC"}).note is None


def test_commit_subject_is_short_and_the_detail_is_in_the_body(demo_root: Root) -> None:
    event = HistoryQuery.file_order(demo_root, "apply", "BTC")[-1]
    event = event.model_copy(update={"note": "checked by hand"})
    subject, blank, *body = commit_message(event).splitlines()
    assert len(subject) <= SUBJECT_MAX and subject.startswith("calreport: BTC ") and blank == ""
    text = "\n".join(body)
    assert f"Run: {event.run_id}" in text and "Note: checked by hand" in text and f"Reason: {event.reason}" in text
    assert sum(1 for line in body if line.startswith("  ")) > 5  # one line per value that moved


def test_git_audit_outside_a_work_tree_warns(root: Root, capsys) -> None:
    root.calibration_config.write_text(root.calibration_config.read_text().replace("git_commit: false", "git_commit: true"))
    add_live_run(root)
    assert main(["force-apply", "--root", str(root.path), "--underlying", "BTC"]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning" in err and "not inside a git work tree" in err


def test_git_audit_without_git_warns(root: Root, capsys, monkeypatch) -> None:
    root.calibration_config.write_text(root.calibration_config.read_text().replace("git_commit: false", "git_commit: true"))
    add_live_run(root)
    monkeypatch.setenv("PATH", str(root.path))  # no git on it
    assert main(["force-apply", "--root", str(root.path), "--underlying", "BTC"]) == 0
    assert "git is not installed" in capsys.readouterr().err


def test_calibrate_prints_one_line_by_default_the_paragraph_with_v_and_the_row_with_json(root: Root, tmp_path: Path, capsys) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.3))
    assert main(["calibrate", "--root", str(root.path), "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45"]) == 0
    short = capsys.readouterr().out
    assert short.count("\n") == 1 and len(short) < 300 and "BTC live run" in short
    assert main(["calibrate", "--root", str(root.path), "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45", "-v"]) == 0
    assert len(capsys.readouterr().out) > len(short)
    assert main(["calibrate", "--root", str(root.path), "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["type"] == "live_run" and doc["underlying"] == "BTC"


def test_log_lines_are_short_by_default(demo_root: Root, capsys) -> None:
    assert main(["log", "--root", str(demo_root.path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines and max(len(line) for line in lines) <= 250
    assert main(["log", "--root", str(demo_root.path), "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert len(events) == len(lines) and all(e["type"] == "apply" for e in events)


def test_doctor_json_is_one_document(demo_root: Root, capsys) -> None:
    assert main(["doctor", "--root", str(demo_root.path), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["consistent"] is True and doc["problems"] == []


def _old_snapshot(root: Root, tmp_path: Path) -> Path:
    """A snapshot of a closed UTC day in the past, harvested as a file (a replayed harvest)."""
    t = 1765627200000  # 2025-12-13T12:00:00Z
    market = SampleMarket("BTC", t - 10 * 86_400_000, t + 86_400_000, seed=7)
    return write_json(tmp_path / "old.json", market.snapshot_payload(t))


def test_harvest_json_and_auto_calibrate_names_the_harvest_range_and_the_conversion(root: Root, tmp_path: Path, capsys) -> None:
    snap = _old_snapshot(root, tmp_path)
    assert main(["harvest", "fetch", "--root", str(root.path), "--underlying", "BTC", "--from-file", str(snap), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rows"] > 0 and doc["path"].endswith("2025-12-13.jsonl")
    assert main(["auto-calibrate", "--root", str(root.path), "--underlying", "BTC"]) == 0
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "FAILED" in out
    assert "converted BTC 2025-12-13" in err and "2025-12-13.jsonl" in err  # the day log became Parquet: said
    assert "covers 2025-12-13 to 2025-12-13" in err and "--as-of 2025-12-13T23:59:59Z" in err
    assert main(["auto-calibrate", "--root", str(root.path), "--underlying", "BTC", "--as-of", "2025-12-13T23:59:59Z", "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["type"] == "auto_run" and "covers" not in err


def test_auto_calibrate_on_a_read_only_harvest_says_its_days_are_read_as_they_are_not_converted(root: Root, tmp_path: Path, capsys) -> None:
    """A harvest copied from a read-only share (cp -p keeps r-x / r--): nothing is converted, and the line said
    "converted BTC 2025-12-13: not compacted: BTC is read-only"."""
    snap = _old_snapshot(root, tmp_path)
    assert main(["harvest", "fetch", "--root", str(root.path), "--underlying", "BTC", "--from-file", str(snap), "--json"]) == 0
    capsys.readouterr()
    d = root.harvest_dir("BTC")
    for f in d.iterdir():
        f.chmod(0o444)
    d.chmod(0o555)
    try:
        assert main(["auto-calibrate", "--root", str(root.path), "--underlying", "BTC"]) == 0
        _out, err = capsys.readouterr()
    finally:
        d.chmod(0o755)
    assert "converted" not in err
    (line,) = [x for x in err.splitlines() if "2025-12-13" in x and "compacted" in x]
    assert line == "calreport: BTC 2025-12-13: not compacted: harvest directory BTC is read-only (its day logs are read as they are)"
    assert not list(d.glob("*.parquet"))


def test_days_skipped_for_one_reason_read_as_one_line() -> None:
    from calreport.commands.harvester import format_compact
    from calreport.market.compact import CompactReport

    why = "harvest directory BTC is read-only (its day logs are read as they are)"
    rep = CompactReport(skipped=[("2025-12-07", why), ("2025-12-08", why), ("2025-12-10", why), ("2025-12-11", "disk full")])
    assert format_compact("BTC", rep) == [
        f"BTC 2025-12-07 to 2025-12-10 (3 days): not compacted: {why}", "BTC 2025-12-11: not compacted: disk full"
    ]


def test_a_workspace_apply_records_the_note_in_the_event(root: Root) -> None:
    add_live_run(root)
    ev = actions.force_apply(Workspace.open(root, renderer=None), "BTC", note="why not")
    assert HistoryQuery.file_order(root, "apply", "BTC")[-1].note == "why not" == ev.note


def test_git_commit_body_carries_the_note(root: Root) -> None:
    root.calibration_config.write_text(root.calibration_config.read_text().replace("git_commit: false", "git_commit: true"))
    for args in (["init", "-q"], ["config", "user.email", "t@example.com"], ["config", "user.name", "T"]):
        subprocess.run(["git", *args], cwd=root.path, check=True)
    add_live_run(root)
    assert main(["force-apply", "--root", str(root.path), "--underlying", "BTC", "--note", "audit me"]) == 0
    log = subprocess.run(["git", "log", "-1", "--format=%s%n%b"], cwd=root.path, capture_output=True, text=True, check=True).stdout
    subject = log.splitlines()[0]
    assert len(subject) <= SUBJECT_MAX and "Note: audit me" in log
