"""A trader edits the DTE bands in config/calibration.yaml (splits 0-7d into 0-2d and 2-7d). Under the
default config the applied entries carry a surface block, which quotes from the entry alone (its pillars
at their own variance days), so the root stays usable: status, doctor, price and the engine read the
YAML, the quotes stay exactly as they were, and the next live run applies the fit under the new bands
(the quoting model changed). Before, every command refused the YAML ("band '0-7d' is not defined"),
calibrate included, and doctor's fix was to restore the YAML, which was never the problem.
A step-model entry still needs the config's DTE range of each band it names: refused, naming the config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from calreport.commands.cli import main
from calreport.engine import EngineView
from calreport.store.applied import read_applied
from calreport.store.config import load_config
from calreport.store.paths import Root
from tests.foundation_helpers import live_run_rows

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
DEC11 = SNAP / "BTC-2025-12-11T1936Z.json"
needs_data = pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")


def _split_front_band(root: Path) -> None:
    f = root / "config" / "calibration.yaml"
    cfg = yaml.safe_load(f.read_text())
    assert cfg["bands"][0]["name"] == "0-7d"
    cfg["bands"][0:1] = [{"name": "0-2d", "min_dte": 0, "max_dte": 2}, {"name": "2-7d", "min_dte": 2, "max_dte": 7}]
    f.write_text(yaml.safe_dump(cfg))


def _edit(root: Path, section: str, **changes: object) -> None:
    f = root / "config" / "calibration.yaml"
    cfg = yaml.safe_load(f.read_text())
    cfg[section].update(changes)
    f.write_text(yaml.safe_dump(cfg))


def _price(root: Path, out: Path) -> list[dict]:  # type: ignore[type-arg]
    args = ["--root", str(root), "price", "--underlying", "BTC", "--snapshot", str(DEC11), "--rv", "0.43", "--out", str(out)]
    assert main(args) == 0
    return json.loads(out.read_text())


@pytest.mark.realdata
@needs_data
def test_splitting_a_band_keeps_the_applied_surface_quoted_until_the_next_run_applies_the_new_bands(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    calibrate = ["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC11), "--rv", "0.43"]
    assert main(calibrate) == 0
    before = _price(root, tmp_path / "before.json")
    _split_front_band(root)
    capsys.readouterr()

    assert main(["--root", str(root), "status"]) == 0
    assert main(["--root", str(root), "doctor"]) == 0, capsys.readouterr().out
    after = _price(root, tmp_path / "after.json")
    assert [r["sigma"] for r in after] == [r["sigma"] for r in before]  # no config edit moves a quote before an apply
    view = EngineView.from_document(read_applied(Root(root)), load_config(Root(root)))
    line = view.describe(["BTC"])[0]
    assert "0-7d" in line and "0-2d" not in line  # the watcher names the levels the surface quotes
    # the latest run was fitted under the old bands: forcing it would write bands the config lacks
    yaml_bytes = (root / "config" / "applied_multipliers.yaml").read_bytes()
    capsys.readouterr()
    assert main(["--root", str(root), "force-apply", "--underlying", "BTC"]) == 1
    err = capsys.readouterr().err
    assert "'0-7d' is not defined in config/calibration.yaml (values fitted under other bands; the next live run" in err
    assert (root / "config" / "applied_multipliers.yaml").read_bytes() == yaml_bytes

    assert main(calibrate) == 0
    run = live_run_rows(root)[-1]
    assert run["decision"] == "apply", run["decision_reason"]
    assert run["decision_reason"].startswith("quoting model changed (surface pillar 0-2d - -> ")
    entry = yaml.safe_load((root / "config" / "applied_multipliers.yaml").read_text())["underlyings"]["BTC"]
    assert list(entry["bands"]) == ["0-2d", "2-7d", "7-30d", "30-90d"]
    assert list(entry["surface"]["pillars"]) == ["0-2d", "2-7d", "7-30d", "30-90d"]
    capsys.readouterr()
    assert main(["--root", str(root), "doctor"]) == 0, capsys.readouterr().out


@pytest.mark.realdata
@needs_data
@pytest.mark.parametrize("model_edit", [("surface", {"enabled": False}), ("smile", {"enabled": False})])
def test_a_band_the_step_model_cannot_place_is_refused_naming_the_config_not_the_yaml(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], model_edit: tuple[str, dict[str, object]]
) -> None:
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    section, change = model_edit
    if section == "surface":  # a step-model entry; with the smile off a surface entry is quoted by the step model
        _edit(root, section, **change)
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC11), "--rv", "0.43"]) == 0
    if section == "smile":
        _edit(root, section, **change)
    yaml_bytes = (root / "config" / "applied_multipliers.yaml").read_bytes()
    _split_front_band(root)
    capsys.readouterr()

    assert main(["--root", str(root), "status"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "band '0-7d' is not defined in config/calibration.yaml" in err[0], err
    assert "define it again" in err[0]
    assert main(["--root", str(root), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "define the band in config/calibration.yaml again" in out
    assert "git checkout" not in out  # restoring the YAML would not help: it is as calreport wrote it
    assert (root / "config" / "applied_multipliers.yaml").read_bytes() == yaml_bytes
