"""`calreport doctor` says consistent only when the YAML equals the last apply events, else what differs."""

from __future__ import annotations

from pathlib import Path

import pytest
from foundation_helpers import add_auto_run, add_live_run

from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.commands.doctor import check_consistency
from calreport.commands.workspace import Workspace
from calreport.store.applied import AppliedEntry, format_applied, read_applied
from calreport.store.files import atomic_write
from calreport.store.paths import Root


def _doctor(root, capsys) -> tuple[int, str]:
    code = main(["--root", str(root.path), "doctor"])
    return code, capsys.readouterr().out


def test_fresh_root_and_applied_root_are_consistent(root, capsys):
    assert check_consistency(Workspace.open(root)) == []
    add_live_run(root, smoothed=1.0833, bands={"0-7d": 1.05})
    actions.force_apply(Workspace.open(root), "BTC")
    add_auto_run(root)
    assert check_consistency(Workspace.open(root)) == []
    code, out = _doctor(root, capsys)
    assert code == 0
    assert "consistent: BTC global 1.0833" in out and "1 apply events" in out and "1 auto runs" in out


def test_hand_edited_global_is_named_with_both_values_and_the_rollback_fix(root, capsys):
    run = add_live_run(root, smoothed=1.0833)
    ev = actions.force_apply(Workspace.open(root), "BTC")
    root.applied.write_text(root.applied.read_text().replace("global: 1.0833", "global: 1.2000"))
    code, out = _doctor(root, capsys)
    assert code == 1
    assert f"BTC global in YAML 1.2000 != last apply event 1.0833 (run {run.run_id} at {ev.ts}" in out
    assert "edited by hand" in out
    assert f"calreport rollback --underlying BTC --to {run.run_id}" in out
    assert "NOT consistent: 1 error(s)" in out
    # the suggested fix works: after it, doctor is happy (the hand edit stays visible as a warning)
    assert main(["--root", str(root.path), "rollback", "--underlying", "BTC", "--to", run.run_id]) == 0
    capsys.readouterr()
    code, out = _doctor(root, capsys)
    assert code == 0, out
    assert "WARNING" in out and "found global 1.2000" in out and "left 1.0833" in out


def test_hand_added_band_and_metadata_edit_are_reported(root):
    add_live_run(root, smoothed=1.0833)
    actions.force_apply(Workspace.open(root), "BTC")
    text = root.applied.read_text().replace("    bands: {}\n", "    bands:\n      0-7d: 1.5000\n", 1)
    root.applied.write_text(text.replace("source: force", "source: policy", 1))
    problems = check_consistency(Workspace.open(root))
    messages = " | ".join(p.message for p in problems)
    assert "band 0-7d in YAML 1.5000 != last apply event -" in messages
    assert "source policy != force" in messages
    assert all(p.severity == "error" and p.underlying == "BTC" for p in problems)


def test_yaml_entry_without_any_apply_event_is_an_error(root):
    doc = read_applied(root)
    doc.underlyings["BTC"] = AppliedEntry(global_=1.3, source="force", run_id="ghost", reason="Forced by user")
    atomic_write(root.applied, format_applied(doc).encode())
    problems = check_consistency(Workspace.open(root))
    assert [p.code for p in problems] == ["no-apply-event"]
    assert "history has no apply event" in problems[0].message


def test_broken_yaml_is_an_error_naming_the_file_and_the_last_applied_values(root, capsys):
    add_live_run(root, smoothed=1.0833)
    actions.force_apply(Workspace.open(root), "BTC")
    root.applied.write_text("schema_version: 1\nunderlyings:\n  BTC: {global: 1.1, global: 1.2}\n")
    code, out = _doctor(root, capsys)
    assert code == 1
    assert "applied_multipliers.yaml: invalid YAML" in out and "duplicate key 'global'" in out
    assert "the last apply events say: BTC 1.0833" in out


def test_unreadable_history_lines_are_counted_with_line_numbers_but_not_fatal(root, capsys):
    add_live_run(root)
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type": "live_run", "run_id": "torn')  # a crash mid-append
    with open(root.auto_history, "ab") as fh:
        fh.write(b"not json\n")
    add_auto_run(root)
    code, out = _doctor(root, capsys)
    assert code == 0
    assert "history/live_calibration.jsonl: 1 unreadable line(s) (line 2)" in out
    assert "history/auto_calibrate.jsonl: 1 unreadable line(s) (line 1)" in out
    assert "2 unreadable line(s)" in out


def test_missing_underlying_in_yaml_after_an_apply_is_an_error(root):
    add_live_run(root, underlying="ETH", smoothed=1.1)
    actions.force_apply(Workspace.open(root), "ETH")
    doc = read_applied(root)
    del doc.underlyings["ETH"]
    atomic_write(root.applied, format_applied(doc).encode())
    (p,) = check_consistency(Workspace.open(root))
    assert p.code == "missing-in-yaml" and "engine uses 1.0000" in p.message


def test_invalid_config_is_reported_not_raised(root):
    root.calibration_config.write_text("realism: {min_mult: 0.7, mystery: 1}\n")
    problems = check_consistency(Workspace.open(root))
    assert problems and problems[0].code == "invalid-config" and "calibration.yaml" in problems[0].message


def test_temp_files_left_by_a_killed_apply_are_a_warning(root, capsys):
    (root.config_dir / ".applied_multipliers.yaml.abc123.tmp").write_text("schema_ver")
    code, out = _doctor(root, capsys)
    assert code == 0
    assert "1 temp file(s) left in config/ by interrupted writes" in out


def _yaml_and_event(root, *, yaml_global: float, updated_at: str, event_ts: str) -> None:
    """A YAML entry and the apply event that should have written it, built directly."""
    from calreport.model import ApplyEvent, Multipliers
    from calreport.report.render import render_site
    from calreport.store.history import append_row

    common = {"source": "force", "run_id": "R1", "reason": "Forced by user"}
    append_row(root.live_history, ApplyEvent(ts=event_ts, underlying="BTC", previous=Multipliers(global_=1.0),
                                             applied=Multipliers(global_=1.0833), **common))
    doc = read_applied(root)
    doc.underlyings["BTC"] = AppliedEntry(global_=yaml_global, updated_at=updated_at, **common)
    atomic_write(root.applied, format_applied(doc).encode())
    render_site(root)  # as every write does: site/ shows this YAML


def test_doctor_orders_timestamps_as_instants_not_as_text(root):
    """'10:16:00Z' sorts after '10:16:00.500Z' as text but is half a second before it: the YAML is
    older than the last apply, so it was restored from an old copy, not written after the apply."""
    _yaml_and_event(root, yaml_global=1.2, updated_at="2025-12-11T10:16:00Z", event_ts="2025-12-11T10:16:00.500Z")
    problems = {p.code: p.message for p in check_consistency(Workspace.open(root))}
    assert "restored from an old copy" in problems["values-differ"]
    assert "written after the last recorded apply" not in problems["values-differ"]
    assert "updated_at 2025-12-11T10:16:00Z != 2025-12-11T10:16:00.500Z" in problems["metadata-differs"]


def test_the_same_instant_written_two_ways_is_not_a_metadata_difference(root):
    _yaml_and_event(root, yaml_global=1.0833, updated_at="2025-12-11T11:16:00.5+01:00", event_ts="2025-12-11T10:16:00.500Z")
    assert check_consistency(Workspace.open(root)) == []


def test_run_doctor_returns_a_report_and_prints_nothing(root, capsys):
    from calreport.commands.doctor import format_doctor, run_doctor

    add_live_run(root, smoothed=1.0833)
    actions.force_apply(Workspace.open(root), "BTC")
    add_live_run(root, smoothed=1.09)  # newer, not applied: held
    capsys.readouterr()
    report = run_doctor(Workspace.open(root))
    assert capsys.readouterr() == ("", "")
    assert report.exit_code == 0 and (report.live_runs, report.apply_events, report.auto_runs) == (2, 1, 0)
    assert report.live_statuses == {"applied": 1, "held": 1}
    lines = format_doctor(report)
    assert lines[0] == f"calreport doctor: {root.path}" and lines[-1].startswith("consistent: BTC global 1.0833")
    assert "history: 2 live runs (1 applied, 1 held), 1 apply events" in lines[-1]


def _live_with_smile(root, smoothed: float, wing: float) -> None:
    """A live run whose smoothed values carry a smile (force-apply writes it whole)."""
    from calreport.model import LiveRun, Multipliers, Smile
    from calreport.store.history import append_row
    from calreport.store.ids import new_run_id

    smile = Smile(nodes=[-1.5, 0.0, 1.5], global_=[wing, 1.0, 0.97])
    append_row(root.live_history, LiveRun(
        schema_version=1, run_id=new_run_id(), ts="2025-12-11T10:16:00Z", underlying="BTC", multiplier_tested=1.0,
        rv_7d=0.43, recommended=Multipliers(global_=smoothed), smoothed=Multipliers(global_=smoothed, smile=smile),
        samples=80, status="ok", reason="ok", decision="hold", decision_reason="test",
    ))


def test_consecutive_applies_with_smiles_are_no_history_gap(root, capsys):
    for g, wing in [(1.05, 1.2), (1.10, 1.3), (1.12, 1.25)]:
        _live_with_smile(root, g, wing)
        actions.force_apply(Workspace.open(root), "BTC")
    code, out = _doctor(root, capsys)
    assert code == 0 and "WARNING" not in out and "changed outside calreport" not in out, out


def test_a_smile_edited_between_two_applies_is_a_history_gap_naming_the_node(root, capsys):
    _live_with_smile(root, 1.05, 1.2)
    actions.force_apply(Workspace.open(root), "BTC")
    text = root.applied.read_text()
    assert "1.2000" in text
    root.applied.write_text(text.replace("1.2000", "1.4000", 1))  # the smile's left wing, by hand
    _live_with_smile(root, 1.10, 1.3)
    actions.force_apply(Workspace.open(root), "BTC")
    code, out = _doctor(root, capsys)
    assert code == 0 and "WARNING" in out
    assert "found smile global x=-1.50 1.4000, left 1.2000" in out and "changed outside calreport" in out


SNAPSHOTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"


def _surface_root(tmp_path) -> Root:
    """A default-config root whose BTC entry the policy applied whole from the 12-11 snapshot (a surface entry)."""
    path = tmp_path / "root"
    assert main(["--root", str(path), "init"]) == 0
    snap = str(SNAPSHOTS / "BTC-2025-12-11T1936Z.json")
    assert main(["--root", str(path), "calibrate", "--underlying", "BTC", "--snapshot", snap, "--rv", "0.43"]) == 0
    return Root(path)


def _drop_surface_block(text: str) -> str:
    out, skipping = [], False
    for line in text.splitlines(keepends=True):
        if line == "    surface:\n":
            skipping = True
            continue
        if skipping and line.startswith("      "):
            continue
        skipping = False
        out.append(line)
    return "".join(out)


@pytest.mark.realdata
@pytest.mark.skipif(not SNAPSHOTS.is_dir(), reason="shared data absent")
def test_a_surface_block_removed_by_hand_is_not_consistent(tmp_path, capsys):
    """Without its surface block the entry is quoted by the step model, not the surface the last apply
    event wrote: the same values, another engine. Doctor compared global, bands and smile only."""
    r = _surface_root(tmp_path)
    text = r.applied.read_text()
    edited = _drop_surface_block(text)
    assert edited != text and "surface:" not in edited.split("  ETH:")[0]
    r.applied.write_text(edited)
    assert read_applied(r).underlyings["BTC"].surface is None
    capsys.readouterr()
    code, out = _doctor(r, capsys)
    assert code == 1, out
    assert "BTC surface in YAML none (step model) != last apply event pillars-pchip-1" in out


@pytest.mark.realdata
@pytest.mark.skipif(not SNAPSHOTS.is_dir(), reason="shared data absent")
def test_a_surface_pillar_edited_by_hand_is_named(tmp_path, capsys):
    r = _surface_root(tmp_path)
    text = r.applied.read_text()
    assert "0-7d: 1.7500  # days of variance time" in text
    r.applied.write_text(text.replace("0-7d: 1.7500  # days", "0-7d: 2.0000  # days", 1))
    capsys.readouterr()
    code, out = _doctor(r, capsys)
    assert code == 1, out
    assert "BTC surface pillar 0-7d in YAML 2.0000 != last apply event 1.7500" in out


LEGACY_RUNS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "legacy-calibration-runs"


@pytest.mark.realdata
@pytest.mark.skipif(not LEGACY_RUNS.is_dir(), reason="shared data absent")
def test_doctor_counts_imported_legacy_records_as_legacy_not_as_held_runs(tmp_path, capsys):
    """The dashboard shows an imported record as "legacy" (calreport never decided it); doctor counted
    the previous system's 12 live records as 12 runs the policy "held"."""
    from calreport.commands.cli import main
    from calreport.commands.doctor import run_doctor

    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    assert main(["--root", str(root), "import-legacy", str(LEGACY_RUNS)]) == 0
    report = run_doctor(Workspace.open(Root(root)))
    assert report.exit_code == 0 and report.live_runs == 12
    assert report.live_statuses == {"legacy": 12}
    capsys.readouterr()
    assert main(["--root", str(root), "doctor"]) == 0
    assert "history: 12 live runs (12 legacy), 0 apply events" in capsys.readouterr().out
