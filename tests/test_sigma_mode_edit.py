"""A trader switches BTC to `sigma_mode: {BTC: atm_iv}` in config/calibration.yaml. Until a run in atm_iv is
applied, the engine does not use the rv-fitted values: it quotes the ATM IV alone (EngineView.sigma_in_mode),
and so does `calreport price`. The dashboard's first screen and IV error per expiry, and `calreport status`,
must say so and show the error of what is quoted. Before, the card read "Quoted 0-7d 0.8652 ... (the
surface's pillar levels)" with a headline error of 0.34 vp (the rv surface on RV_7d) while `price` quoted
every strike at the ATM IV (2.22 vp on the same marks), and status printed the values as if in force."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from calreport.commands.cli import main

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
DEC13 = SNAP / "BTC-2025-12-13T1543Z.json"
needs_data = pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")


def _otm_iv_error_vp(rows: list[dict], run_quotes: set[str]) -> float:  # type: ignore[type-arg]
    """Vega-weighted mean |sigma - mark_iv| over the run's OTM quotes, from `calreport price` rows (vol points)."""
    from scipy.stats import norm

    w, e = [], []
    for r in rows:
        if r["instrument_name"] not in run_quotes or r["mark_iv"] is None:
            continue
        K, F, T, s = r["strike"], r["forward"], r["T"], r["mark_iv"]
        call = r["instrument_name"].endswith("-C")
        if not ((call and K >= F) or (not call and K < F)):
            continue
        d1 = (np.log(F / K) + 0.5 * s * s * T) / (s * np.sqrt(T))
        w.append(norm.pdf(d1) * np.sqrt(T))
        e.append(abs(r["sigma"] - s) * 100)
    return float(np.average(e, weights=w))


@pytest.mark.realdata
@needs_data
def test_values_fitted_in_another_sigma_mode_show_as_not_used_with_the_error_of_what_the_engine_quotes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC13), "--rv", "0.43"]) == 0
    cfg_file = root / "config" / "calibration.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["sigma_mode"] = {"BTC": "atm_iv"}
    cfg_file.write_text(yaml.safe_dump(cfg))
    capsys.readouterr()

    out = tmp_path / "price.json"
    assert main(["--root", str(root), "price", "--underlying", "BTC", "--snapshot", str(DEC13), "--out", str(out)]) == 0
    rows = json.loads(out.read_text())
    by_expiry: dict[str, set[float]] = {}
    for r in rows:
        by_expiry.setdefault(r["expiry"], set()).add(round(r["sigma"], 12))
    assert all(len(s) == 1 for s in by_expiry.values())  # the ATM IV alone: one sigma per expiry, no smile
    run = [json.loads(x) for x in (root / "history" / "live_calibration.jsonl").read_text().splitlines()][-2]
    assert run["type"] == "live_run"
    detail = json.loads((root / "history" / "runs" / f"{run['run_id']}.json").read_text())
    quoted_error = _otm_iv_error_vp(rows, {q["instrument"] for q in detail["quotes"]})

    assert main(["--root", str(root), "render"]) == 0
    html = (root / "site" / "index.html").read_text()
    card = html[html.index('data-underlying="BTC"'):]
    card = card[: card.index("</dl>")]
    assert "Applied global (not used)" in card and "the surface's pillar levels" not in card
    assert "not used: fitted in sigma_mode rv, configured atm_iv" in card
    headline = float(re.search(r'data-field="headline">([0-9.]+) vp', card).group(1))  # type: ignore[union-attr]
    assert headline == pytest.approx(quoted_error, abs=0.006)  # what the engine quotes, as `price` prices it
    assert headline > 1.0  # the rv-fitted surface on RV_7d would read 0.34 vp on these marks
    assert "applied values not used (fitted in sigma_mode rv, configured atm_iv: sigma = base alone)" in html

    capsys.readouterr()
    assert main(["--root", str(root), "status"]) == 0
    btc = capsys.readouterr().out.split("ETH:")[0]
    assert "quoted: NOT USED (fitted in sigma_mode rv, configured atm_iv)" in btc


@pytest.mark.realdata
@needs_data
def test_status_says_the_bands_of_a_surface_entry_are_its_pillar_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(DEC13), "--rv", "0.43"]) == 0
    capsys.readouterr()
    assert main(["--root", str(root), "status"]) == 0
    btc, eth = capsys.readouterr().out.split("ETH:")
    assert "quoted: surface pillars-pchip-1: the bands are its pillar levels at 0-7d 1.75d, 7-30d 16.4957d" in btc
    assert "quoted: step model" in eth  # never applied: 1.0 everywhere, no surface block
    cfg_file = root / "config" / "calibration.yaml"
    cfg = yaml.safe_load(cfg_file.read_text())
    cfg["smile"]["enabled"] = False
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert main(["--root", str(root), "status"]) == 0
    assert "quoted: step model, flat (smile.enabled false: the file's smile and surface are not quoted)" in capsys.readouterr().out
