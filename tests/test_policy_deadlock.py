"""A policy that cannot deadlock: held / thin / failed runs never feed the EWMA,
a large step is capped not held, and the EWMA weight can follow time instead of run count."""

from __future__ import annotations

from pathlib import Path

import pytest

from calreport.calibration.smoothing import smoothing_alpha
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import SmoothingConfig
from calreport.store.applied import read_applied
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from calreport.timeutil import MS_PER_HOUR
from tests.foundation_helpers import apply_flat_surface_seed
from tests.independent import copy_compacted_harvest
from tests.test_calibrate import synth_rows, write_snapshot


def _per_run_policy_root(tmp_path: Path, alpha: float = 0.3) -> Root:
    """A root whose 1.0 was applied by a run (not the untouched defaults, which take a fit whole), with the
    per-run EWMA and a fixed 25 % step cap: the settings these deadlock cases were found under."""
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    cfg = root.calibration_config
    text = cfg.read_text().replace("smoothing: {alpha: 0.3, half_life_hours: 0.5}", f"smoothing: {{alpha: {alpha}, half_life_hours: null}}")
    cfg.write_text(text.replace("max_rel_step: 0.1,", "max_rel_step: 0.25,").replace("max_step_se: 6.0", "max_step_se: 0.0"))
    apply_flat_surface_seed(root)  # of the configured quoting model, so the EWMA continues from it
    return root


def test_three_runs_held_for_sample_size_then_a_healthy_run_moves_at_most_one_step(tmp_path: Path) -> None:
    root = _per_run_policy_root(tmp_path)
    thin = write_snapshot(tmp_path / "thin.json", synth_rows(multiplier=1.55, expiries_days=(10,), strikes_per_side=2))
    for _ in range(3):
        run = actions.run_live_calibration(Workspace.open(root), "BTC", thin, rv=0.45)
        assert run.decision == "hold" and run.decision_reason.startswith("Sample size too small")  # type: ignore[union-attr]
        assert run.feeds_smoothing is False
        assert run.smoothed_from == "applied"  # the held runs before it did not feed the EWMA
    healthy = write_snapshot(tmp_path / "ok.json", synth_rows(multiplier=1.5))
    run = actions.run_live_calibration(Workspace.open(root), "BTC", healthy, rv=0.45)
    assert run.smoothed_from == "applied" and run.decision == "apply"
    assert run.smoothed.global_ == pytest.approx(0.3 * 1.5 + 0.7, abs=2e-3)  # type: ignore[union-attr]
    applied = read_applied(root).entry("BTC").global_
    assert 1.0 < applied <= 1.25 + 1e-12
    _, event = HistoryQuery.file_order(root, "apply", "BTC")  # the seed, then this run's
    assert event.applied.global_ == applied  # type: ignore[union-attr]


def test_a_run_far_from_the_applied_value_is_applied_capped_at_the_max_step(tmp_path: Path) -> None:
    root = _per_run_policy_root(tmp_path, alpha=1.0)
    run = actions.run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "s.json", synth_rows(multiplier=1.55)), rv=0.45)
    assert run.decision == "apply" and "capped at max(0 SE, 25 %) (global 1.55" in (run.decision_reason or "")
    assert read_applied(root).entry("BTC").global_ == 1.25


def test_half_life_makes_the_ewma_weight_depend_on_elapsed_time() -> None:
    cfg = SmoothingConfig(alpha=0.3, half_life_hours=24)
    assert smoothing_alpha(cfg, 0, 24 * MS_PER_HOUR) == pytest.approx(0.5)
    assert smoothing_alpha(cfg, 0, 48 * MS_PER_HOUR) == pytest.approx(0.75)
    assert smoothing_alpha(cfg, 0, MS_PER_HOUR // 60) < 0.001  # a burst of runs barely moves it
    assert smoothing_alpha(cfg, None, 10) == 0.3  # from the applied values: the per-run alpha
    assert smoothing_alpha(SmoothingConfig(alpha=0.3, half_life_hours=None), 0, 10**9) == 0.3


SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "deribit-harvest-2025-12" / "BTC").is_dir(), reason="../shared/data is absent")
def test_real_btc_snapshot_on_harvest_rv_is_held_for_thin_rv_and_not_with_a_manual_rv(tmp_path: Path, compacted_btc_harvest: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    copy_compacted_harvest(compacted_btc_harvest, root)  # the run's compacted copy of the shared harvest (the format is not the point)
    snap = SHARED / "deribit-snapshots" / "BTC-2025-12-11T1936Z.json"
    run = actions.run_live_calibration(Workspace.open(root), "BTC", snap)
    assert run.decision == "hold" and run.decision_reason == "Thin RV: RV_7d from 11 hourly returns (< 120)"
    assert run.feeds_smoothing is False
    run = actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert run.decision == "apply" and not (run.decision_reason or "").startswith("Thin RV")
    assert run.smoothed_from == "applied"  # the thin run did not feed the EWMA


@pytest.mark.realdata
@pytest.mark.skipif(not (SHARED / "deribit-snapshots").is_dir(), reason="../shared/data is absent")
def test_a_replayed_older_snapshot_is_held_for_having_no_weight_and_says_so(tmp_path: Path) -> None:
    """Under the default half-life, a snapshot older than the previous smoothed run's gets alpha 0: it is held
    saying so, not 'Change too small (d=0.0000)' whatever it fitted."""
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    snaps = SHARED / "deribit-snapshots"
    newer = actions.run_live_calibration(Workspace.open(root), "BTC", snaps / "BTC-2025-12-13T1543Z.json", rv=0.43)
    older = actions.run_live_calibration(Workspace.open(root), "BTC", snaps / "BTC-2025-12-11T1936Z.json", rv=0.43)
    assert older.smoothing_alpha == 0.0 and older.decision == "hold"
    assert older.decision_reason.startswith(f"No weight: the snapshot is not newer than the previous smoothed run {newer.run_id}")
