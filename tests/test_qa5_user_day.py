"""A quant's ordinary day under the default config (QA wave 5): each test pins down a message or a
figure that misled, found by using calreport on the shared Deribit data."""

from __future__ import annotations

from pathlib import Path

import pytest

from calreport.commands.cli import main

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
DEC11, DEC13 = SNAP / "BTC-2025-12-11T1936Z.json", SNAP / "BTC-2025-12-13T1543Z.json"
needs_data = pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")


def _init(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    return root


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("written", "said"),
    [
        ("atm-iv", "sigma_mode: must be one of rv, atm_iv, mark_iv or a mapping underlying -> mode (e.g. {BTC: atm_iv}), got 'atm-iv'"),
        ("{BTC: atm-iv}", "sigma_mode: BTC: must be one of rv, atm_iv, mark_iv, got 'atm-iv'"),
    ],
)
def test_a_misspelt_sigma_mode_is_one_readable_line_naming_the_modes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], written: str, said: str
) -> None:
    root = _init(tmp_path)
    _edit(root / "config" / "calibration.yaml", "\nsigma_mode: rv\n", f"\nsigma_mode: {written}\n")
    capsys.readouterr()
    assert main(["--root", str(root), "status"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.endswith(said), err
    assert "literal[" not in err and "dict[" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(("key", "why"), [("btc", "bad underlying 'btc'"), ("BTCC", "'BTCC' is not a configured underlying")])
def test_a_sigma_mode_for_an_underlying_that_is_never_looked_up_is_refused_not_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], key: str, why: str
) -> None:
    """{btc: atm_iv} used to load and leave BTC in rv without a word (the lookup is by the upper-case name)."""
    root = _init(tmp_path)
    cfg = root / "config" / "calibration.yaml"
    _edit(cfg, "\nsigma_mode: rv\n", f"\nsigma_mode: {{{key}: atm_iv}}\n")
    capsys.readouterr()
    assert main(["--root", str(root), "status"]) == 1
    err = capsys.readouterr().err
    assert str(cfg) in err and why in err


@needs_data
@pytest.mark.realdata
def test_doctor_tells_a_band_typed_into_the_yaml_by_hand_to_repair_the_yaml_not_the_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A typo in the applied YAML's band label ('7-31d') used to be answered with "define the band in
    config/calibration.yaml again (the YAML is as calreport wrote it ...)": advice that would add a bogus
    band to the config, about a YAML calreport never wrote."""
    root = _init(tmp_path)
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC13), "--rv", "0.43"]) == 0
    yaml_path = root / "config" / "applied_multipliers.yaml"
    _edit(yaml_path, "      7-30d: ", "      7-31d: ")
    capsys.readouterr()
    assert main(["--root", str(root), "doctor"]) == 1
    out = capsys.readouterr().out
    assert "band '7-31d' is neither defined in config/calibration.yaml nor written by the last apply of BTC" in out
    assert "define the band in config/calibration.yaml" not in out
    assert "repair the file by hand or restore it" in out


LEGACY = SNAP.parent / "legacy-calibration-runs"


def test_the_auto_chart_never_says_no_runs_yet_when_runs_failed_before_a_fit(tmp_path: Path) -> None:
    """ETH's only auto run failed (RV history too short: no multiplier): the chart said "No auto-calibrate
    runs yet." beside an Auto history listing it; a chart with fitted runs now says which runs it leaves out."""
    from calreport.model import AutoRun, DataQuality
    from calreport.report.charts import auto_chart

    def run(ts: str, multiplier: float | None, status: str) -> AutoRun:
        return AutoRun(
            schema_version=1, run_id=f"r{ts}", ts=ts, underlying="ETH", multiplier=multiplier, status=status,  # type: ignore[arg-type]
            data_quality=DataQuality(status="failed" if multiplier is None else "ok", issues=[]),
        )

    failed = run("2025-12-12T11:00:00Z", None, "failed")
    only_failed = auto_chart("ETH", [failed])
    assert only_failed.empty_text == "1 auto-calibrate run(s), none with a multiplier (failed before a fit; see Auto history)."
    assert auto_chart("ETH", []).empty_text == "No auto-calibrate runs yet."
    mixed = auto_chart("ETH", [failed, run("2025-12-13T16:00:00Z", 0.95, "ok")])
    assert len(mixed.rows) == 1 and "1 run(s) without a multiplier (failed before a fit) are not drawn" in mixed.description


@needs_data
@pytest.mark.realdata
def test_a_legacy_harvested_record_with_no_samples_imports_without_a_multiplier(tmp_path: Path) -> None:
    """The old system wrote recommended 1.0 for a run over 0 samples: imported as multiplier 1.0000 it was
    plotted as a fitted (failed) value on the auto chart."""
    from calreport.store.paths import Root
    from calreport.store.query import HistoryQuery

    root = _init(tmp_path)
    assert main(["--root", str(root), "import-legacy", str(LEGACY / "20251210_224208_BTC_harvested.json")]) == 0
    (row,) = HistoryQuery.read(Root(root)).auto_runs()
    assert row.samples == 0 and row.status == "failed" and row.multiplier is None
    assert row.legacy is not None and row.legacy["recommended_iv_multiplier"] == 1.0  # the record itself kept as it was


def test_a_backtest_decision_step_is_documented_as_the_band_level_move_it_records() -> None:
    """decisions.jsonl's `step` read "|global after - global before|" in FILES.md and the schema, while it
    records the largest band-level move: on the shared harvest an apply moving the global 0.0037 and no
    band more than 0.0027 recorded step 0.0027."""
    from calreport.calibration.backtest import step_of
    from calreport.model import BacktestDecision, Multipliers

    before = Multipliers(global_=0.9427, bands={"0-7d": 0.8189, "7-30d": 0.9107, "30-90d": 0.9565})
    after = Multipliers(global_=0.9464, bands={"0-7d": 0.8216, "7-30d": 0.9113, "30-90d": 0.9577})
    assert step_of(before, after, ["0-7d", "7-30d", "30-90d"]) == pytest.approx(0.0027)
    said = BacktestDecision.model_fields["step"].description or ""
    assert "global after - global before" not in said and "band's quoted level" in said
    files = (Path(__file__).resolve().parents[1] / "docs" / "FILES.md").read_text()
    assert "| `step` | number or null | |global after - global before|" not in files


@needs_data
@pytest.mark.realdata
def test_price_rows_past_the_last_pillar_quote_the_last_pillar_level_as_the_contract_says(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """FILES.md said a row with band null is quoted at "global multiplier and smile"; under the surface
    (the default) the 2026 expiries past 90 days are quoted at the 30-90d pillar's level (flat beyond it)."""
    import json

    import yaml

    root = _init(tmp_path)
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC11), "--rv", "0.45"]) == 0
    entry = yaml.safe_load((root / "config" / "applied_multipliers.yaml").read_text())["underlyings"]["BTC"]
    assert "surface" in entry and abs(entry["global"] - entry["bands"]["30-90d"]) > 0.005
    out = tmp_path / "rows.json"
    assert main(["--root", str(root), "price", "--underlying", "BTC", "--snapshot", str(DEC13), "--rv", "0.43", "--out", str(out)]) == 0
    rows = [r for r in json.loads(out.read_text()) if r["band"] is None]
    atm = min(rows, key=lambda r: abs(r["strike"] / r["forward"] - 1))
    assert atm["T"] > 90 / 365 and abs(atm["strike"] / atm["forward"] - 1) < 0.02
    assert atm["sigma"] == pytest.approx(0.43 * entry["bands"]["30-90d"], abs=0.004)
    assert abs(atm["sigma"] - 0.43 * entry["global"]) > 0.002
    files = (Path(__file__).resolve().parents[1] / "docs" / "FILES.md").read_text()
    assert "null outside every band (global multiplier and smile)" not in files


@needs_data
@pytest.mark.realdata
def test_a_rollback_across_a_quoting_model_change_says_the_model_changes_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """surface.enabled: false, a live run applies the step model, then `rollback`: the engine went back to the
    surface while the line said only "rolled back to run R: global 0.9442" (force-apply says the model change)."""
    root = _init(tmp_path)
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC11), "--rv", "0.45"]) == 0
    _edit(root / "config" / "calibration.yaml", "surface: {enabled: true,", "surface: {enabled: false,")
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC13), "--rv", "0.43"]) == 0
    capsys.readouterr()
    assert main(["--root", str(root), "rollback", "--underlying", "BTC"]) == 0
    out = capsys.readouterr().out
    assert "surface none (step model) -> pillars-pchip-1" in out
    assert "config/calibration.yaml fits the step model: the next applied live run switches back" in out
    assert main(["--root", str(root), "rollback", "--underlying", "BTC"]) == 0
    out = capsys.readouterr().out
    assert "surface pillars-pchip-1 -> none (step model)" in out and "switches back" not in out


def test_doctor_warns_when_the_bands_leave_a_gap_the_step_model_quotes_at_the_global_multiplier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Editing 7-30d to start at 8 days left options of 7-8 days in no band: a step-model entry quotes them at the
    global multiplier, and nothing said so (found by QA). Contiguous bands, and the ends (before the first band,
    past the last), are not gaps."""
    from calreport.model import CalibrationConfig

    root = _init(tmp_path)
    assert CalibrationConfig().band_gaps() == []
    assert main(["--root", str(root), "doctor"]) == 0
    assert "in no band" not in capsys.readouterr().out
    _edit(root / "config" / "calibration.yaml", "{name: 7-30d, min_dte: 7, max_dte: 30}", "{name: 7-30d, min_dte: 8, max_dte: 30}")
    assert main(["--root", str(root), "doctor"]) == 0  # a warning: the root stays consistent
    out = capsys.readouterr().out
    assert "WARNING: config/calibration.yaml: the bands leave DTE [7, 8) in no band" in out and "global multiplier" in out
    assert "1 warning(s)" in out
