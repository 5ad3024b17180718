"""What the dashboard and the one-line summary show of the quoted surface: the IV error per expiry under the
applied YAML, the smile chart's curves past the end nodes, and calibrate's line reporting the surface fit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from calreport.commands.cli import main
from calreport.engine import EngineView
from calreport.model import AppliedDocument, AppliedEntry, CalibrationConfig, LiveRun, RunDetail, Smile, SurfaceSpec
from calreport.report.expiry_errors import expiry_errors
from calreport.report.smile import CURVE_X_SPAN, quoted_iv_pct
from calreport.store.applied import read_applied
from calreport.store.paths import Root
from calreport.timeutil import time_ms

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
NODES = [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
SKEW = [1.45, 1.22, 1.07, 1.0, 0.97, 0.99, 1.06]


def _surface_entry() -> AppliedEntry:
    spec = SurfaceSpec(pillars={"0-7d": 1.75, "7-30d": 16.4957, "30-90d": 55.9808}, weekend_weight=0.35, wing_slope_cap=1.8)
    return AppliedEntry(global_=1.0, bands={"0-7d": 0.9, "7-30d": 0.95, "30-90d": 1.0}, smile=Smile(nodes=NODES, global_=SKEW), surface=spec)


def _live_run(root: Path) -> LiveRun:
    """The one live run of the history (the file also holds its apply event)."""
    rows = [json.loads(line) for line in (root / "history" / "live_calibration.jsonl").read_text().splitlines()]
    (run,) = [r for r in rows if r.get("type") == "live_run"]
    return LiveRun.model_validate(run)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    if not SNAP.is_dir():
        pytest.skip("shared data absent")
    root = tmp_path_factory.mktemp("r") / "root"
    assert main(["--root", str(root), "init"]) == 0
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(SNAP / "BTC-2025-12-13T1543Z.json"), "--rv", "0.43"])
    assert rc == 0
    return root, buf.getvalue()


@pytest.mark.realdata
def test_the_per_expiry_iv_error_is_the_engine_quote_against_the_marks_and_sums_to_the_run_figure(calibrated) -> None:  # type: ignore[no-untyped-def]
    root, _ = calibrated
    run = _live_run(root)
    detail = RunDetail.model_validate(json.loads((root / "history" / "runs" / f"{run.run_id}.json").read_text()))
    cfg = CalibrationConfig()
    entry = read_applied(Root(root), cfg).entry("BTC")
    assert entry.surface is not None  # the first apply over defaults took the fitted surface
    rows, total = expiry_errors(detail, run, entry, cfg)
    # independently: the engine's own entry point (EngineView.sigma), per expiry by hand
    view = EngineView(1, AppliedDocument(underlyings={"BTC": entry}), tuple(cfg.bands), None, "t")

    def by_hand(quotes):  # type: ignore[no-untyped-def]
        qs = [q for q in quotes if q.mark_iv is not None and q.forward is not None
              and (q.strike >= q.forward if q.type == "C" else q.strike < q.forward) and q.vega > 0]
        expected = {}
        for dte in sorted({q.dte for q in qs}):  # per expiry (a test)
            g = [q for q in qs if q.dte == dte]
            K = np.array([q.strike for q in g])
            F = np.array([q.forward for q in g])
            s = view.sigma("BTC", K, F, np.full(K.size, dte / 365.0), run.rv_7d, now_ms=time_ms(run.ts))
            v = np.array([q.vega for q in g])
            iv = np.array([q.mark_iv for q in g])
            expected[dte] = (len(g), float(np.sum(v * np.abs(s - iv)) / v.sum() * 100.0), float(np.sum(v * (s - iv)) / v.sum() * 100.0))
        return expected

    # the front: the 14DEC25 expiry, 0.68 days out, is nearer than filters.min_dte (1): not fitted, but the
    # engine quotes it, so its rows come first, marked, and stay out of the "all fitted" figures
    front, fitted = [r for r in rows if not r.fitted], [r for r in rows if r.fitted]
    assert front and rows[: len(front)] == front and all(r.dte < cfg.filters.min_dte for r in front)
    for got, want in ((fitted, by_hand(detail.quotes)), (front, by_hand(detail.front_quotes))):
        assert [r.dte for r in got] == sorted(want)
        for r in got:
            n, err, bias = want[r.dte]
            assert r.quotes == n and r.iv_error_vp == pytest.approx(err, abs=1e-9) and r.iv_bias_vp == pytest.approx(bias, abs=1e-9)
            assert r.expiry.endswith("25") or r.expiry.endswith("26")  # the instruments' expiry code
    # the whole run under the fit applied whole is the run's own OTM IV error at the recommended values
    assert total is not None and total[0] == run.otm_samples
    assert total[1] == pytest.approx(run.fit_iv_error_vp, abs=0.01)
    html = (root / "site" / "index.html").read_text()
    section = html[html.index('id="expiry-errors"'):]
    assert f'data-expiry="{fitted[0].expiry}"' in section and "applied surface" in section[:2000]
    assert f'data-expiry="{front[0].expiry}" data-fitted="no"' in section and "not fitted (DTE &lt; 1)" in section


@pytest.mark.realdata
def test_calibrate_prints_the_surface_fit_and_its_arbitrage_counts_on_one_line(calibrated) -> None:  # type: ignore[no-untyped-def]
    root, out = calibrated
    line = out.strip()
    assert line.count("\n") == 0
    m = re.search(r"surface fit: OTM IV error (\d+\.\d\d) vp at the recommended values, arbitrage (\d+) listed, (\d+) grid", line)
    assert m is not None, line
    run = _live_run(root)
    assert float(m.group(1)) == pytest.approx(run.fit_iv_error_vp, abs=0.005)
    assert int(m.group(2)) == run.arbitrage["recommended listed"].total and int(m.group(3)) == run.arbitrage["recommended grid"].total
    assert "global" not in line and "recommended 0." not in line and "recommended 1." not in line


def test_the_smile_chart_draws_the_surface_wings_past_the_end_nodes_as_the_engine_quotes_them() -> None:
    entry, base, now = _surface_entry(), 0.45, 1_765_481_778_183
    grid = np.linspace(-CURVE_X_SPAN, CURVE_X_SPAN, 81)
    assert CURVE_X_SPAN >= 4.0
    m_fit = 0.95
    iv = quoted_iv_pct(entry, "7-30d", grid, 0.95, m_fit, base, now, SKEW, NODES)
    # independently: the engine at the band's pillar, strikes at the chart's abscissae
    T = 16.4957 / 365.0
    F = 90_000.0
    K = F * np.exp(grid * base * m_fit * np.sqrt(T))
    view = EngineView(1, AppliedDocument(underlyings={"BTC": entry}), tuple(CalibrationConfig().bands), None, "t")
    engine = view.sigma("BTC", K, np.full(K.size, F), np.full(K.size, T), base, now_ms=now) * 100.0
    np.testing.assert_allclose(iv, engine, rtol=1e-12)
    beyond = grid > NODES[-1]
    assert np.all(np.diff(iv[beyond]) > 0)  # the right wing keeps rising past the last node (not flat)
    assert np.all(np.diff(iv[grid < NODES[0]]) < 0)


def test_the_smile_chart_of_a_step_model_entry_is_flat_past_the_end_nodes() -> None:
    entry = AppliedEntry(global_=1.0, bands={"7-30d": 0.95}, smile=Smile(nodes=NODES, global_=SKEW))
    grid = np.linspace(-CURVE_X_SPAN, CURVE_X_SPAN, 81)
    iv = quoted_iv_pct(entry, "7-30d", grid, 0.95, 0.95, 0.45, 1_765_481_778_183, SKEW, NODES)
    assert np.allclose(iv[grid >= NODES[-1]], 0.45 * 0.95 * SKEW[-1] * 100.0)
    assert np.allclose(iv[grid <= NODES[0]], 0.45 * 0.95 * SKEW[0] * 100.0)
