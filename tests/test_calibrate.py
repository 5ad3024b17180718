"""Live calibration: fit recovery, filters, RV, smoothing, failure rows, the CLI end to end."""

from __future__ import annotations

import json
from calendar import timegm
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from calreport.calibration.atm import atm_iv_7d
from calreport.calibration.fit import fit_multiplier, vega_weights
from calreport.calibration.pricing import black76_price, year_fraction
from calreport.calibration.select import select_quotes
from calreport.calibration.smoothing import ewma
from calreport.commands import cli
from calreport.commands import usecases as actions
from calreport.commands.cli import describe_run
from calreport.commands.usecases import run_live_calibration
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.market.deribit import load_snapshot
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import realised_vol
from calreport.model import FilterConfig, Multipliers, RunDetail
from calreport.store.applied import read_applied
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SNAP_DIR = SHARED / "deribit-snapshots"
NOW_MS = timegm((2025, 12, 11, 12, 0, 0)) * 1000
MONTHS = "JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split()


def synth_rows(
    rv: float = 0.45,
    multiplier: float = 1.1,
    underlying: str = "BTC",
    spot: float = 92_000.0,
    expiries_days: tuple[int, ...] = (3, 5, 10, 17, 24, 45, 80),
    strikes_per_side: int = 6,
    smile: float = 0.0,
) -> list[dict]:
    """Deribit-shaped book summary rows priced at sigma = rv x multiplier (plus an optional smile)."""
    rows = []
    for days in expiries_days:
        exp = datetime.fromtimestamp(NOW_MS / 1000 + days * 86400, tz=timezone.utc)
        exp_ms = timegm((exp.year, exp.month, exp.day, 8, 0, 0)) * 1000
        T = (exp_ms - NOW_MS) / (365 * 86_400_000)
        F = spot * (1 + 0.05 * T)
        tag = f"{exp.day}{MONTHS[exp.month - 1]}{exp.year % 100:02d}"
        width = rv * multiplier * np.sqrt(T)
        for j in range(-strikes_per_side, strikes_per_side + 1):
            K = float(round(F * np.exp(0.35 * width * j) / 500) * 500)
            for cp in "CP":
                sig = rv * multiplier * (1 + smile * np.log(K / F) ** 2)
                mark = float(black76_price(F, K, T, sig, cp == "C"))
                rows.append({
                    "instrument_name": f"{underlying}-{tag}-{int(K)}-{cp}", "base_currency": underlying,
                    "quote_currency": underlying, "mark_price": mark, "mark_iv": sig * 100, "underlying_price": F,
                    "bid_price": None, "ask_price": None, "mid_price": None, "open_interest": 10.0, "volume": 1.0,
                    "interest_rate": 0.0, "creation_timestamp": NOW_MS,
                })
    return rows


def write_snapshot(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"jsonrpc": "2.0", "result": rows}))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Root:
    r = Root(tmp_path / "root")
    actions.init(Workspace.open(r))
    return r


# --------------------------------------------------------------------------- the fit


def _arrays(rows: list[dict]):  # type: ignore[no-untyped-def]
    q = QuoteArrays.from_rows(rows)
    T = year_fraction(q.expiry_ms, NOW_MS)
    return q, T


@pytest.mark.parametrize("truth", [0.62, 0.93, 1.1, 1.47, 2.3])
def test_fit_recovers_a_known_multiplier_within_half_a_percent(truth: float) -> None:
    q, T = _arrays(synth_rows(rv=0.4, multiplier=truth))
    w = vega_weights(q.underlying_price, q.strike, T, q.mark_iv, 0.4)
    fit = fit_multiplier(q.underlying_price, q.strike, T, q.is_call, q.mark_price, 0.4, w, bounds=(0.5, 3.0))
    assert fit.multiplier == pytest.approx(truth, rel=0.005)
    assert not fit.on_bound and fit.objective is not None and fit.objective < 0.01


def test_fit_takes_one_rv_per_quote() -> None:
    q, T = _arrays(synth_rows(rv=0.5, multiplier=1.2))
    base = np.where(q.is_call, 0.5, 0.5)  # per-quote base sigma, as auto-calibrate passes it
    w = vega_weights(q.underlying_price, q.strike, T, q.mark_iv, base)
    fit = fit_multiplier(q.underlying_price, q.strike, T, q.is_call, q.mark_price, base, w)
    assert fit.multiplier == pytest.approx(1.2, rel=0.005)


def test_fit_reports_an_optimum_on_the_bound() -> None:
    q, T = _arrays(synth_rows(rv=0.4, multiplier=1.1))
    w = vega_weights(q.underlying_price, q.strike, T, q.mark_iv, 0.4)
    unit_error = q.mark_price / q.underlying_price  # marks far too small: the old system's bug
    fit = fit_multiplier(q.underlying_price, q.strike, T, q.is_call, unit_error, 0.4, w, bounds=(0.5, 3.0))
    assert fit.multiplier == pytest.approx(0.5) and fit.on_bound


def test_fit_with_no_quotes_or_no_vega_returns_none() -> None:
    empty = np.zeros(0)
    assert fit_multiplier(empty, empty, empty, empty.astype(bool), empty, 0.4, empty).multiplier is None
    one = np.ones(1)
    assert fit_multiplier(one * 100, one * 100, one, one.astype(bool), one * 0.1, 0.4, one * 0).multiplier is None


# --------------------------------------------------------------------------- filters, ATM IV, RV, smoothing


def test_filters_count_each_drop_once_under_the_first_reason() -> None:
    rows = synth_rows()
    cfg = FilterConfig(max_rel_spread=1.5, max_dte=60, max_abs_log_moneyness=10)
    base = select_quotes(QuoteArrays.from_rows(rows), NOW_MS, cfg, "BTC")
    good = next(r for r in rows if r["mark_price"] > 0.01 and "-80" not in r["instrument_name"])
    extra = [
        {**good, "instrument_name": "BTC-PERPETUAL"},
        {**good, "mark_price": None},
        {**good, "mark_price": 1e-6},
        {**good, "bid_price": 0.001, "ask_price": 0.01},  # (0.009 / 0.0055) > 1.5
        {**good, "bid_price": 0.001, "ask_price": None},  # one-sided: spread not applicable, kept
        {**good, "instrument_name": good["instrument_name"].replace("BTC-", "BTC_USDC-")},
    ]
    sel = select_quotes(QuoteArrays.from_rows(rows + extra), NOW_MS, cfg, "BTC")
    delta = {k: sel.dropped[k] - base.dropped[k] for k in sel.dropped}
    assert delta == {**{k: 0 for k in delta}, "bad_name": 1, "non_finite": 1, "min_mark_price": 1, "spread": 1, "linear": 1}
    assert sel.n == base.n + 1
    assert base.dropped["dte_range"] == 2 * 13  # the 80-day expiry is beyond max_dte
    assert sel.n + sum(sel.dropped.values()) == sel.total == len(rows) + len(extra)
    assert (sel.dte <= 60).all() and (sel.quotes.mark_price >= 0.0005).all()


def test_atm_iv_interpolates_total_variance_to_seven_days() -> None:
    rows = synth_rows(rv=0.5, multiplier=1.0)
    q, T = _arrays(rows)
    atm, source = atm_iv_7d(q, T)
    assert atm == pytest.approx(0.5, abs=1e-6)
    assert source.startswith("interpolated")


def test_rv_uses_adjacent_hour_returns_only() -> None:
    rng = np.random.default_rng(11)
    hours = np.arange(0, 7 * 24 + 1) * 3_600_000
    r = rng.normal(0, 0.6 / np.sqrt(24 * 365), hours.size - 1)
    close = 50_000 * np.exp(np.concatenate([[0], np.cumsum(r)]))
    full = realised_vol(hours, close, int(hours[-1]))
    assert full.n_returns == 168 and full.rv == pytest.approx(np.std(r, ddof=1) * np.sqrt(24 * 365))
    gap = np.ones(hours.size, dtype=bool)
    gap[50:60] = False  # a 10-hour outage removes 11 returns instead of adding one big one
    holed = realised_vol(hours[gap], close[gap], int(hours[-1]))
    assert holed.n_returns == 168 - 11
    few = realised_vol(hours[:2], close[:2], int(hours[1]))
    assert few.rv is None and few.n_returns == 1


def test_ewma_weights_the_new_run_and_keeps_unrecommended_bands() -> None:
    rec = Multipliers(global_=1.2, bands={"0-7d": 1.3})
    prev = Multipliers(global_=1.0, bands={"30-90d": 0.9})
    out = ewma(rec, prev, 0.3, ["0-7d", "7-30d", "30-90d"])
    assert out.global_ == pytest.approx(1.06)
    assert out.bands == {"0-7d": pytest.approx(1.09), "30-90d": 0.9}


# --------------------------------------------------------------------------- the live run


def test_live_run_writes_row_then_applies_the_smoothed_values(root: Root, tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.3))
    run = run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert run.recommended is not None and run.recommended.global_ == pytest.approx(1.3, rel=0.005)
    assert run.smoothed is not None and run.smoothed_from == "applied"
    assert run.smoothed.global_ == pytest.approx(run.recommended.global_, abs=1e-4)  # over the untouched defaults: the fit
    assert run.ts == "2025-12-11T12:00:00Z" and run.rv_source == "manual"
    assert run.status == "ok" and run.decision == "apply", run.decision_reason
    rows = HistoryQuery.file_order(root, "live", "BTC")
    events = HistoryQuery.file_order(root, "apply", "BTC")
    assert [r.run_id for r in rows] == [run.run_id] and events[-1].run_id == run.run_id
    entry = read_applied(root).entry("BTC")
    assert entry.global_ == run.smoothed.global_ and entry.bands == run.smoothed.bands
    assert entry.source == "policy" and entry.reason == run.decision_reason
    # the row precedes its apply event in the file
    lines = [json.loads(x) for x in root.live_history.read_text().splitlines()]
    assert [x["type"] for x in lines] == ["live_run", "apply"]
    detail = RunDetail.model_validate_json(root.run_detail(run.run_id).read_text())
    assert len(detail.quotes) == run.samples and detail.expiries
    assert "Decision: apply" in describe_run(run)


def test_second_run_smooths_from_the_first(root: Root, tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    first = run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    second = run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert second.smoothed_from == f"run {first.run_id}"
    expected = 0.3 * second.recommended.global_ + 0.7 * first.smoothed.global_  # type: ignore[union-attr]
    assert second.smoothed.global_ == pytest.approx(expected, abs=1e-4)  # type: ignore[union-attr]
    assert second.multiplier_tested == first.smoothed.global_  # type: ignore[union-attr]


def test_a_run_that_failed_realism_never_feeds_the_smoothing(root: Root, tmp_path: Path) -> None:
    good = run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "g.json", synth_rows(rv=0.45, multiplier=1.1)), rv=0.45)
    # marks far too rich for the RV: the fit pins at the upper bound and realism fails
    bad = run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "b.json", synth_rows(rv=0.45, multiplier=3.5)), rv=0.45)
    assert bad.status == "failed" and bad.smoothed_from == f"run {good.run_id}"
    after = run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "a.json", synth_rows(rv=0.45, multiplier=1.1)), rv=0.45)
    assert after.smoothed_from == f"run {good.run_id}"


def test_eth_is_compared_with_eth_values(root: Root, tmp_path: Path) -> None:
    # the step model: a flat synthetic chain at 1.0 then changes nothing (the surface re-times it on the variance clock)
    root.calibration_config.write_text(root.calibration_config.read_text().replace("surface: {enabled: true", "surface: {enabled: false"))
    snap = write_snapshot(tmp_path / "e.json", synth_rows(rv=0.6, multiplier=1.0, underlying="ETH", spot=3200))
    run = run_live_calibration(Workspace.open(root), "ETH", snap, rv=0.6)
    assert run.decision == "hold" and run.decision_reason.startswith("Change too small")  # type: ignore[union-attr]
    assert read_applied(root).entry("BTC").global_ == 1.0


def test_too_few_quotes_is_an_honest_failed_row(root: Root, tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(expiries_days=(10,), strikes_per_side=1))
    run = run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert run.status == "failed" and run.decision == "hold"
    assert run.reason.startswith("Too few usable quotes to fit (")  # type: ignore[union-attr]
    assert run.smoothed is None and HistoryQuery.file_order(root, "live", "BTC")[-1].run_id == run.run_id
    assert not HistoryQuery.file_order(root, "apply", "BTC")


def test_no_rv_anywhere_is_a_failed_row_not_a_constant(root: Root, tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows())
    run = run_live_calibration(Workspace.open(root), "BTC", snap)  # no --rv, no --prices, empty harvest
    assert run.status == "failed" and run.rv_7d is None
    assert "No RV_7d" in run.reason  # type: ignore[operator]


def test_prices_file_gives_rv_and_its_source(root: Root, tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows())
    chart = Path(__file__).parent / "fixtures" / "deribit" / "chart_btc_perpetual_1h.json"
    run = run_live_calibration(Workspace.open(root), "BTC", snap, prices=chart)
    assert run.rv_returns == 168 and run.rv_source == "chart:chart_btc_perpetual_1h.json"
    assert 0.3 < run.rv_7d < 0.7  # type: ignore[operator]


def test_wrong_underlying_snapshot_is_a_one_line_error(root: Root, tmp_path: Path) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(underlying="ETH", spot=3200))
    with pytest.raises(CalreportError, match="snapshot is for ETH, not BTC"):
        run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.5)
    assert not HistoryQuery.file_order(root, "live")


# --------------------------------------------------------------------------- real snapshots


@pytest.mark.realdata
@pytest.mark.skipif(not SNAP_DIR.is_dir(), reason="../shared/data is absent")
def test_cli_calibrate_on_a_real_snapshot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root_dir = tmp_path / "r"
    assert cli.main(["--root", str(root_dir), "init"]) == 0
    snap = SNAP_DIR / "BTC-2025-12-11T1936Z.json"
    assert cli.main(["--root", str(root_dir), "calibrate", "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.43"]) == 0
    out = capsys.readouterr().out
    root = Root(root_dir)
    run = HistoryQuery.file_order(root, "live", "BTC")[-1]
    assert run.run_id in out and run.ts == "2025-12-11T19:36:18.183Z"
    assert run.samples and run.samples > 200 and run.rv_7d == 0.43
    assert run.recommended is not None and 0.7 < run.recommended.global_ < 1.6  # type: ignore[operator]
    assert run.mae_pct is not None and run.mae_pct < 40 and run.vega_weighted_mae_pct < 40  # type: ignore[operator]
    entry = read_applied(root).entry("BTC")
    if run.decision == "apply":
        assert entry.global_ == run.smoothed.global_ and entry.bands == run.smoothed.bands  # type: ignore[union-attr]
        assert entry.run_id == run.run_id
    else:
        assert entry.global_ == 1.0


@pytest.mark.realdata
@pytest.mark.skipif(not SNAP_DIR.is_dir(), reason="../shared/data is absent")
def test_unit_error_on_real_marks_fails_realism(tmp_path: Path) -> None:
    """Marks divided by the forward (a USD/coin mix-up) must give a failed run, never ok."""
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    (root.calibration_config).write_text(
        root.calibration_config.read_text().replace("min_mark_price: 0.0005", "min_mark_price: 0.0")
    )
    rows, _ = load_snapshot(SNAP_DIR / "BTC-2025-12-11T1936Z.json")
    broken = [{**r, "mark_price": r["mark_price"] / r["underlying_price"]} for r in rows]
    run = run_live_calibration(Workspace.open(root), "BTC", write_snapshot(tmp_path / "b.json", broken), rv=0.43)
    assert run.status == "failed" and run.decision == "hold"
    assert run.recommended_on_bound and run.mae_pct > 400  # type: ignore[operator]
