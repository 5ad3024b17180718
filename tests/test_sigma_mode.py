"""Sigma modes (calibration/sigma.py): what the multiplier multiplies, per underlying.

rv = RV_7d (as before), atm_iv = the expiry's ATM IV (total-variance interpolated), mark_iv = the
option's own mark IV. The applied YAML records the mode of its values (absent = rv), a run of
another mode is never applied, and the engine answers sigma in the configured mode. The real-data
test recomputes the atm_iv-mode optimum on the shared BTC snapshot independently.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from foundation_helpers import force_apply
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import norm

from calreport.apply import decide
from calreport.calibration.sigma import atm_iv_at, base_sigma
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.engine import AppliedMultipliersWatcher
from calreport.errors import CalreportError, RefusedError
from calreport.model import (
    AppliedEntry,
    CalibrationConfig,
    LiveRun,
    Multipliers,
    PolicyConfig,
    RunDetail,
)
from calreport.store.applied import read_applied
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from tests.independent import b76, copy_compacted_harvest, expiry_seconds
from tests.test_calibrate import synth_rows, write_snapshot

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SNAP = SHARED / "deribit-snapshots" / "BTC-2025-12-13T1543Z.json"


def _mode(root: Root, text: str) -> None:
    cfg = root.calibration_config.read_text()
    root.calibration_config.write_text(cfg.replace("\nsigma_mode: rv\n", f"\nsigma_mode: {text}\n"))


def test_atm_iv_is_exact_at_expiries_linear_in_total_variance_between_and_flat_outside() -> None:
    at, iv = np.array([0.02, 0.1]), np.array([0.3, 0.5])
    T = np.array([0.01, 0.02, 0.06, 0.1, 0.2])
    got = atm_iv_at(T, at, iv)
    w_mid = 0.3**2 * 0.02 + (0.5**2 * 0.1 - 0.3**2 * 0.02) * (0.06 - 0.02) / (0.1 - 0.02)
    assert got.tolist() == pytest.approx([0.3, 0.3, math.sqrt(w_mid / 0.06), 0.5, 0.5])


def test_base_sigma_per_mode_and_nan_where_a_mode_has_no_base() -> None:
    T = np.array([0.05, 0.05])
    assert base_sigma("rv", rv=0.45, T=T).tolist() == [0.45, 0.45]
    assert base_sigma("mark_iv", rv=None, T=T, sigma_mark=np.array([0.5, np.nan]))[0] == 0.5
    assert np.isnan(base_sigma("mark_iv", rv=None, T=T, sigma_mark=np.array([0.5, np.nan]))[1])
    assert np.isnan(base_sigma("atm_iv", rv=0.4, T=T, atm_T=np.array([]), atm_iv=np.array([]))).all()


def test_config_takes_one_mode_or_a_mode_per_underlying() -> None:
    assert CalibrationConfig().sigma_mode_for("BTC") == "rv"
    assert CalibrationConfig(sigma_mode="atm_iv").sigma_mode_for("ETH") == "atm_iv"
    cfg = CalibrationConfig(sigma_mode={"BTC": "mark_iv"})
    assert (cfg.sigma_mode_for("BTC"), cfg.sigma_mode_for("ETH")) == ("mark_iv", "rv")
    with pytest.raises(ValueError):
        CalibrationConfig(sigma_mode="vix")


def test_iv_modes_measure_the_engines_bias_not_rv_noise(tmp_path: Path) -> None:
    """Marks at 1.1 x 0.45 (flat): rv mode with RV 0.45 says 1.1; the IV modes say 1.0."""
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    got = {}
    for mode in ("rv", "atm_iv", "mark_iv"):
        root = Root(tmp_path / mode)
        actions.init(Workspace.open(root))
        _mode(root, mode)
        run = actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
        got[mode] = (run.recommended.global_, run.sigma_mode)  # type: ignore[union-attr]
    assert got["rv"] == (pytest.approx(1.1, abs=2e-3), "rv")
    assert got["atm_iv"] == (pytest.approx(1.0, abs=2e-3), "atm_iv")
    assert got["mark_iv"] == (pytest.approx(1.0, abs=1e-3), "mark_iv")


def test_applied_yaml_records_an_iv_mode_and_rv_files_stay_as_before(tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)  # rv mode: applied, no sigma_mode line
    assert "sigma_mode" not in root.applied.read_text()
    _mode(root, "atm_iv")
    run = actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert run.decision == "apply" and (run.decision_reason or "").startswith("sigma mode rv -> atm_iv")
    assert run.smoothed_from.startswith("restart")  # type: ignore[union-attr]  # rv values never seed an atm_iv EWMA
    assert "    sigma_mode: atm_iv\n" in root.applied.read_text()
    assert read_applied(root).entry("BTC").sigma_mode == "atm_iv"
    assert HistoryQuery.file_order(root, "apply", "BTC")[-1].sigma_mode == "atm_iv"  # type: ignore[attr-defined]


def test_a_run_of_another_mode_is_never_applied_by_the_policy_nor_by_force(tmp_path: Path) -> None:
    run = LiveRun(run_id="r", ts="2025-12-11T10:00:00Z", underlying="BTC", samples=200, vega_sum=20.0, status="ok",
                  recommended=Multipliers(global_=1.2), smoothed=Multipliers(global_=1.2), rv_source="manual")
    assert decide(run, AppliedEntry(global_=1.0), PolicyConfig(), sigma_mode="atm_iv") == (
        "hold", "Sigma mode mismatch: fitted in rv, configured atm_iv")
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    _mode(root, "mark_iv")
    with pytest.raises(RefusedError, match="fitted in sigma_mode rv, configured is mark_iv"):
        force_apply(root, "BTC")


def test_engine_answers_sigma_in_the_configured_mode_and_ignores_values_of_another(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    text = root.applied.read_text().replace("  BTC:\n    global: 1.0000", "  BTC:\n    global: 1.2000", 1)
    root.applied.write_text(text)
    with AppliedMultipliersWatcher(root, observer="none") as w:
        view = w.snapshot()
        assert view.sigma_for("BTC", 10.0, rv=0.4) == pytest.approx(0.48)
        with pytest.raises(CalreportError, match="needs rv="):
            view.sigma_for("BTC", 10.0, atm_iv=0.5)
    _mode(root, "atm_iv")
    with AppliedMultipliersWatcher(root, observer="none") as w:
        view = w.snapshot()
        assert view.sigma_mode("BTC") == "atm_iv" and not view.mode_matches("BTC")
        assert view.sigma_for("BTC", 10.0, atm_iv=0.5) == pytest.approx(0.5)  # rv-mode 1.2 is not used
        with pytest.raises(CalreportError, match="needs atm_iv="):
            view.sigma_for("BTC", 10.0, rv=0.4)
        assert any("NOT USED" in line for line in view.describe(["BTC"]))


# ------------------------------------------------------------------ independent cross-check

@pytest.mark.realdata
def test_atm_iv_mode_on_the_shared_btc_snapshot_recommends_near_one_as_an_independent_fit_does(tmp_path: Path) -> None:
    if not SNAP.is_file():
        pytest.skip("../shared/data is absent")
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    _mode(root, "atm_iv")
    smiled = actions.run_live_calibration(Workspace.open(root), "BTC", SNAP)  # no RV needed in atm_iv mode; smile on (default)
    assert 0.85 <= smiled.recommended.global_ <= 1.15  # type: ignore[union-attr, operator]
    flat_root = Root(tmp_path / "flat")  # the flat model: what the independent fit below reproduces
    actions.init(Workspace.open(flat_root))
    _mode(flat_root, "atm_iv")
    cfg = flat_root.calibration_config.read_text()
    flat_root.calibration_config.write_text(cfg.replace("smile:\n  enabled: true", "smile:\n  enabled: false"))
    root, run = flat_root, actions.run_live_calibration(Workspace.open(flat_root), "BTC", SNAP)
    m = run.recommended.global_  # type: ignore[union-attr]
    assert 0.85 <= m <= 1.15

    rows = json.loads(SNAP.read_text())["result"]
    now = max(r["creation_timestamp"] for r in rows) / 1000.0
    # ATM IV per expiry: OTM marks' IV, linear in ln(K/F), read at 0 (own loop over expiries)
    by_exp: dict[float, list[tuple[float, float]]] = {}
    for r in rows:
        parts = r["instrument_name"].split("-")
        if len(parts) != 4 or not r.get("mark_iv"):
            continue
        e, K, F = expiry_seconds(parts[1]), float(parts[2]), float(r["underlying_price"])
        x = math.log(K / F)
        if e > now and ((parts[3] == "C" and x >= 0) or (parts[3] == "P" and x < 0)):
            by_exp.setdefault(e, []).append((x, r["mark_iv"] / 100.0))
    atm = {}
    for e, pts in by_exp.items():
        pts.sort()
        xs, vs = [p[0] for p in pts], [p[1] for p in pts]
        if xs[0] <= 0 <= xs[-1]:
            atm[(e - now) / (365 * 86400)] = float(np.interp(0.0, xs, vs))
    ts = sorted(atm)
    detail = RunDetail.model_validate_json((root.path / run.detail_file).read_text())  # type: ignore[operator]
    by_name = {r["instrument_name"]: r for r in rows}
    F, K, t, call, mark, base = [], [], [], [], [], []
    for q in detail.quotes:
        r = by_name[q.instrument]
        _, d, k, cp = q.instrument.split("-")
        tt = (expiry_seconds(d) - now) / (365 * 86400)
        if tt <= ts[0]:
            b = atm[ts[0]]
        elif tt >= ts[-1]:
            b = atm[ts[-1]]
        else:
            j = next(i for i in range(len(ts)) if ts[i] >= tt)
            w0, w1 = atm[ts[j - 1]] ** 2 * ts[j - 1], atm[ts[j]] ** 2 * ts[j]
            b = math.sqrt((w0 + (w1 - w0) * (tt - ts[j - 1]) / (ts[j] - ts[j - 1])) / tt)
        F.append(r["underlying_price"]); K.append(float(k)); t.append(tt); call.append(cp == "C")
        mark.append(r["mark_price"]); base.append(b)
    F, K, t, mark, base = (np.array(a, dtype=float) for a in (F, K, t, mark, base))
    call = np.array(call)
    iv = np.array([brentq(lambda s, i=i: float(b76(F[i], K[i], t[i], s, call[i])) - mark[i], 1e-4, 10.0)
                   for i in range(mark.size)])
    w = norm.pdf(np.log(F / K) / (iv * np.sqrt(t)) + 0.5 * iv * np.sqrt(t)) * np.sqrt(t)

    def f(x: float) -> float:
        return float((w * np.abs(b76(F, K, t, base * x, call) - mark) / mark).sum() / w.sum())

    res = minimize_scalar(f, bounds=(0.7, 1.4), method="bounded", options={"xatol": 1e-7})
    assert m == pytest.approx(float(res.x), rel=0.005)
    assert run.multiplier_se.global_ is not None and run.uncertainty["global"].se_rv is None  # type: ignore[union-attr, index]


def test_grouped_atm_iv_reads_each_group_at_the_money_between_its_nearest_otm_strikes() -> None:
    from calreport.calibration.sigma import atm_iv_grouped

    F = np.full(6, 100.0)
    K = np.array([90.0, 95.0, 105.0, 110.0, 95.0, 105.0])
    c = K >= F
    iv = np.array([0.6, 0.5, 0.4, 0.45, 0.7, 0.9])
    g = np.array([1, 1, 1, 1, 2, 3])  # group 2 and 3 lack a side
    got = atm_iv_grouped(g, F, K, iv, c)
    x0, x1 = math.log(0.95), math.log(1.05)
    want = 0.5 + (0 - x0) / (x1 - x0) * (0.4 - 0.5)
    assert got[:4] == pytest.approx([want] * 4) and np.isnan(got[4:]).all()


@pytest.mark.realdata
def test_grouped_atm_iv_equals_the_per_expiry_reading_on_the_shared_snapshot() -> None:
    from calreport.calibration.atm import atm_iv_by_expiry
    from calreport.calibration.pricing import year_fraction
    from calreport.calibration.sigma import atm_iv_grouped
    from calreport.market.deribit import load_snapshot
    from calreport.market.quotes import QuoteArrays

    if not SNAP.is_file():
        pytest.skip("../shared/data is absent")
    rows, meta = load_snapshot(SNAP, "BTC")
    q = QuoteArrays.from_rows(rows)
    q = q.take(q.valid_name)
    T = year_fraction(q.expiry_ms, meta.now_ms)
    q, T = q.take(T > 0), T[T > 0]
    exps, _, ivs = atm_iv_by_expiry(q, T)
    got = atm_iv_grouped(q.expiry_ms, q.underlying_price, q.strike, q.mark_iv, q.is_call)
    per_exp = dict(zip(q.expiry_ms.tolist(), got.tolist(), strict=True))
    assert len(exps) >= 8 and [per_exp[int(e)] for e in exps] == pytest.approx(ivs.tolist(), abs=1e-12)


@pytest.mark.realdata
def test_auto_run_in_atm_iv_mode_uses_the_whole_window_and_lands_near_one(tmp_path: Path, compacted_btc_harvest: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    _mode(root, "atm_iv")
    copy_compacted_harvest(compacted_btc_harvest, root)  # the run's compacted copy of the shared harvest (the format is not the point)
    run = actions.run_auto_calibration(Workspace.open(root), "BTC", lookback="14d", as_of=datetime(2025, 12, 13, 16, tzinfo=UTC), compact=False)
    assert run.sigma_mode == "atm_iv" and 0.85 <= run.multiplier <= 1.15  # type: ignore[operator]
    assert run.snapshots_dropped["rv_history"] == 0 and run.snapshots_used > 200  # type: ignore[index, operator]
    assert not any(f.code == "THIN_RV" for f in run.flags or [])


def test_an_engine_started_on_an_unreadable_config_raises_a_one_line_error(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    root.calibration_config.write_text(root.calibration_config.read_text() + "sigma_mode: atm_iv\n")  # duplicate key
    with pytest.raises(CalreportError, match="duplicate key 'sigma_mode'"):
        AppliedMultipliersWatcher(root, observer="none").start()


def test_calreport_price_quotes_in_the_configured_sigma_mode(tmp_path: Path) -> None:
    """`calreport price` asks the engine in the configured mode: mark_iv with nothing applied quotes
    each option at its own mark IV (base alone), no RV needed."""
    from calreport.commands.price import price_table
    from calreport.commands.workspace import Workspace

    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    _mode(root, "mark_iv")
    rows = price_table(Workspace.open(root, renderer=None), "BTC", snap)[0]
    assert rows and all(r["sigma"] == pytest.approx(r["mark_iv"], abs=1e-9) for r in rows)


def test_backtest_scoring_prices_in_the_configured_mode_without_needing_rv(tmp_path: Path) -> None:
    """score_applied (the backtest's out-of-sample score) prices like a live run: in atm_iv mode the
    flat marks at 1.1 x 0.45 are met exactly at multiplier 1.0, and no RV is needed."""
    from calreport.calibration.live import score_applied
    from calreport.market.deribit import load_snapshot
    from calreport.market.quotes import QuoteArrays
    from calreport.market.rv import RealisedVol
    from calreport.model import AppliedEntry

    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    rows, meta = load_snapshot(snap, "BTC")
    cfg = CalibrationConfig(sigma_mode="atm_iv")
    got = score_applied(QuoteArrays.from_rows(rows), underlying="BTC", now_ms=meta.now_ms, rv=RealisedVol(None, 0, "harvest"),
                        applied=AppliedEntry(global_=1.0, sigma_mode="atm_iv"), config=cfg)
    assert got is not None and got["all"].iv_error_vp == pytest.approx(0.0, abs=0.05)
    assert score_applied(QuoteArrays.from_rows(rows), underlying="BTC", now_ms=meta.now_ms, rv=RealisedVol(None, 0, "harvest"),
                         applied=AppliedEntry(global_=1.0), config=CalibrationConfig()) is None  # rv mode needs RV
