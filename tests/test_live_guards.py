"""The live path is guarded like the auto path: mark checks, realism on the
recommended value, and force-apply refusing such a run without --allow-unrealistic."""

from __future__ import annotations

from pathlib import Path

import pytest

from calreport.commands import cli
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.market.deribit import load_snapshot
from calreport.model import RealismConfig
from calreport.realism import recommended_problem
from calreport.store.applied import read_applied
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from tests.test_calibrate import SNAP_DIR, synth_rows, write_snapshot


def test_a_recommended_value_on_the_fit_bound_is_unrealistic() -> None:
    t = RealismConfig()
    assert "on the fit bound" in recommended_problem(3.0, True, thresholds=t)  # type: ignore[operator]
    assert "outside" in recommended_problem(1.9, False, thresholds=t)  # type: ignore[operator]
    assert recommended_problem(1.1, False, thresholds=t) is None


def test_usd_marks_fail_a_live_run_and_force_apply_refuses_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [{**r, "mark_price": r["mark_price"] * r["underlying_price"]} for r in synth_rows()]
    snap = write_snapshot(tmp_path / "usd.json", rows)
    root_dir = tmp_path / "r"
    assert cli.main(["--root", str(root_dir), "init"]) == 0
    cli.main(["--root", str(root_dir), "calibrate", "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45"])
    run = HistoryQuery.file_order(Root(root_dir), "live", "BTC")[-1]
    assert run.status == "failed" and run.decision == "hold"
    assert "look like USD" in (run.reason or "")
    assert run.data_quality_status == "failed"
    capsys.readouterr()
    assert cli.main(["--root", str(root_dir), "force-apply", "--underlying", "BTC"]) != 0
    assert read_applied(Root(root_dir)).entry("BTC").global_ == 1.0


@pytest.mark.realdata
@pytest.mark.skipif(not SNAP_DIR.is_dir(), reason="../shared/data is absent")
def test_usd_priced_real_snapshot_is_failed_held_and_refused(tmp_path: Path) -> None:
    rows, _ = load_snapshot(SNAP_DIR / "BTC-2025-12-11T1936Z.json")
    usd = [{**r, "mark_price": r["mark_price"] * r["underlying_price"]} for r in rows]
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    run = actions.run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "usd.json", usd), rv=0.45)
    assert run.status == "failed" and run.decision == "hold"
    assert run.recommended_on_bound
    assert "on the fit bound" in (run.reason or "") and "USD" in (run.reason or "")
    with pytest.raises(Exception, match="allow-unrealistic"):
        actions.force_apply(Workspace.open(root), "BTC")
    event = actions.force_apply(Workspace.open(root), "BTC", allow_unrealistic=True)
    assert event.applied is not None


def test_a_few_marks_above_the_bound_degrade_but_do_not_fail(tmp_path: Path) -> None:
    rows = synth_rows()
    rows[0] = {**rows[0], "mark_price": 1.5} if rows[0]["instrument_name"].endswith("C") else rows[0]
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    run = actions.run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "s.json", rows), rv=0.45)
    assert run.data_quality_status == "degraded"
    assert any("no-arbitrage bound" in i for i in run.data_quality_issues or [])
