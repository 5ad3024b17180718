"""A change of the quoting model in config (surface on or off, its weekend weight, pillars or wing cap) takes
effect at the next live run: the fit under the new model is applied whole and says so, the EWMA restarts
instead of mixing levels that sit on another clock, and a run that could not fit the configured model
never switches the engine to another one. Real snapshots, default config but for the edit under test."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from calreport.apply import QUOTING_MODEL, RULES, decide_run
from calreport.calibration.surface import quoting_model
from calreport.commands.cli import main
from calreport.model import AppliedEntry, LiveRun, Multipliers, Smile
from calreport.store.config import load_config
from calreport.store.paths import Root
from tests.foundation_helpers import live_run_rows

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
DEC11 = SNAP / "BTC-2025-12-11T1936Z.json"
DEC13 = SNAP / "BTC-2025-12-13T1543Z.json"
needs_data = pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")


def _calibrate(root: Path, snap: Path) -> dict:  # type: ignore[type-arg]
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.43"]) == 0
    return live_run_rows(root)[-1]


def _edit_surface(root: Path, **changes: object) -> None:
    f = root / "config" / "calibration.yaml"
    cfg = yaml.safe_load(f.read_text())
    cfg["surface"].update(changes)
    f.write_text(yaml.safe_dump(cfg))


def _applied(root: Path) -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((root / "config" / "applied_multipliers.yaml").read_text())["underlyings"]["BTC"]


@pytest.mark.realdata
@needs_data
def test_a_new_weekend_weight_is_applied_at_the_next_run_with_its_fit_whole(tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path), "init"]) == 0
    first = _calibrate(tmp_path, DEC11)
    assert first["decision"] == "apply" and _applied(tmp_path)["surface"]["weekend_weight"] == 0.35
    _edit_surface(tmp_path, weekend_weight=0.6)
    run = _calibrate(tmp_path, DEC11)  # seconds later: the half-life EWMA alone would keep the old levels
    assert run["decision"] == "apply", run["decision_reason"]
    assert run["decision_reason"].startswith("quoting model changed (surface weekend_weight 0.3500 -> 0.6000)")
    assert run["smoothed_from"].startswith("restart (applied values are quoted by another model")
    entry = _applied(tmp_path)
    assert entry["surface"]["weekend_weight"] == 0.6
    # the levels written are the new model's fit, not an EWMA with levels on the old clock
    assert entry["bands"] == {b: round(v, 4) for b, v in run["recommended"]["bands"].items()}
    assert entry["bands"] != _applied_bands_of(first)


def _applied_bands_of(run: dict) -> dict:  # type: ignore[type-arg]
    return {b: round(v, 4) for b, v in run["recommended"]["bands"].items()}


@pytest.mark.realdata
@needs_data
def test_turning_the_surface_off_applies_the_step_model_and_keeps_applying_it(tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path), "init"]) == 0
    _calibrate(tmp_path, DEC11)
    _edit_surface(tmp_path, enabled=False)
    run = _calibrate(tmp_path, DEC11)
    assert run["decision"] == "apply", run["decision_reason"]
    assert "quoting model changed (surface pillars-pchip-1 -> none (step model))" in run["decision_reason"]
    assert "surface" not in _applied(tmp_path)
    # the next run smooths step-model values and is never checked as a surface it does not carry
    nxt = _calibrate(tmp_path, DEC13)
    assert nxt["smoothed"].get("surface") is None
    assert "arbitrage" not in nxt["decision_reason"], nxt["decision_reason"]
    assert nxt["decision"] == "apply" and "surface" not in _applied(tmp_path)


def test_a_run_that_could_not_fit_the_configured_surface_is_held_and_names_the_mismatch(tmp_path: Path) -> None:
    assert main(["--root", str(tmp_path), "init"]) == 0
    config = load_config(Root(tmp_path))
    spec = quoting_model(config, "rv")
    assert spec is not None
    smile = Smile(nodes=list(config.smile.nodes), global_=[1.0] * len(config.smile.nodes))
    applied = AppliedEntry(global_=1.0, run_id="A", source="policy", smile=smile, surface=spec)
    step = Multipliers(global_=1.1, bands={"0-7d": 1.1}, smile=smile)  # no surface block: a step-model fit
    run = LiveRun(run_id="R", underlying="BTC", samples=500, vega_sum=50.0, status="ok", sigma_mode="rv",
                  recommended=step, smoothed=step)
    out = decide_run(run, applied, config, "BTC")
    assert out.decision == "hold"
    assert out.decision_reason == "Quoting model mismatch (fitted -> configured: surface none (step model) -> pillars-pchip-1)"


def test_the_policy_panel_lists_the_quoting_model_rule() -> None:
    assert QUOTING_MODEL in RULES
    from calreport.model import CalibrationConfig

    name, value, text = QUOTING_MODEL.panel_row(CalibrationConfig())
    assert name == "Quoting model" and value.startswith("surface in rv mode (weekend weight 0.35")
    assert "applied whole" in text
