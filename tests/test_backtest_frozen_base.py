"""Out-of-sample scores hold the base frozen at the decision's chain: a variant cannot score well by
seeing the chain it is scored on."""

from __future__ import annotations

import numpy as np
import pytest

from calreport.calibration.backtest import Market, Variant, run_backtest
from calreport.calibration.pricing import black76_price, black76_vega, year_fraction
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import RealisedVol
from calreport.market.sample import MS_PER_DAY, MS_PER_HOUR, SampleMarket
from calreport.model import CalibrationConfig, default_entry

T0 = 1_765_540_800_000  # 2025-12-12T12:00Z
SHIFT_VP = 3.0  # every mark IV of the later chain is this many vol points higher


def _chains() -> Market:
    """Two snapshots one hour apart, same instruments and forwards; the later one's IVs (and marks)
    are the earlier one's + SHIFT_VP."""
    m = SampleMarket("BTC", T0 - 8 * MS_PER_DAY, T0 + MS_PER_DAY, seed=3)
    rows0 = m.book_summary(T0)
    rows1 = []
    for r in rows0:  # building the second chain's rows: the test's own per-quote loop
        r1 = dict(r, creation_timestamp=T0 + MS_PER_HOUR, mark_iv=round(r["mark_iv"] + SHIFT_VP, 2))
        rows1.append(r1)
    q1 = QuoteArrays.from_rows(rows1)
    T1 = year_fraction(q1.expiry_ms, T0 + MS_PER_HOUR)
    price1 = black76_price(q1.underlying_price, q1.strike, T1, q1.mark_iv, q1.is_call)
    for r, p in zip(rows1, price1.tolist()):
        r["mark_price"] = max(round(p, 8), 1e-6)
    q = QuoteArrays.from_rows(rows0 + rows1)
    return Market(q, np.array([T0, T0 + MS_PER_HOUR]), np.array([m.spot(T0), m.spot(T0)]))


def _score(mode: str) -> dict:
    cfg = CalibrationConfig.model_validate({"sigma_mode": mode, "smile": {"enabled": False}})
    res = run_backtest(
        _chains(), underlying="BTC", decisions_ms=[T0], horizons_ms=[MS_PER_HOUR],
        variants=[Variant(mode, cfg, default_entry())], rv_at=lambda t: RealisedVol(0.45 if t == T0 else 0.60, 168, "harvest"),
    )
    (d,) = res.decisions
    return d.to_row()


def test_a_mark_iv_variant_scores_the_later_chains_iv_shift_out_of_sample_not_zero() -> None:
    """The engine holds each instrument's mark IV from the decision's chain: one hour later the marks
    sit SHIFT_VP higher, so its error there is the shift (times the applied multiplier's effect).
    Taking the base from the scored chain would give ~0 again."""
    row = _score("mark_iv")
    m = row["applied_after"]["global"]
    assert all(abs(v - m) < 1e-12 for v in row["applied_after"]["bands"].values()) or not row["applied_after"]["bands"]
    q = _chains().quotes
    first = q.creation_ms == T0
    later = ~first
    # independent: engine sigma = m x the earlier mark IV of the same instrument, scored on the later marks
    iv0, iv1 = q.mark_iv[first], q.mark_iv[later]
    F, K, call = q.underlying_price[later], q.strike[later], q.is_call[later]
    T1 = year_fraction(q.expiry_ms[later], T0 + MS_PER_HOUR)
    dte = T1 * 365
    otm = np.where(call, K >= F, K < F)
    keep = otm & (dte >= 1) & (dte <= 90) & (np.abs(np.log(K / F)) <= 0.5) & (q.mark_price[later] >= 0.0005)
    w = black76_vega(F, K, T1, iv1)[keep]
    expected = float(np.sum(w * np.abs(m * iv0[keep] - iv1[keep])) / np.sum(w) * 100)
    in_sample = row["scores"]["0h"]["iv_error_vp"]
    out = row["scores"]["1h"]["iv_error_vp"]
    assert out == pytest.approx(expected, abs=0.02)
    assert abs(out - (SHIFT_VP + in_sample)) < 0.3  # ~ the shift on top of the in-sample error
    assert out > SHIFT_VP - 0.3  # a leak (base from the scored chain) scores ~in-sample, ~0


def test_an_atm_iv_variant_holds_the_decisions_atm_curve_so_a_level_shift_shows_out_of_sample() -> None:
    row = _score("atm_iv")
    assert row["scores"]["1h"]["iv_error_vp"] > row["scores"]["0h"]["iv_error_vp"] + 0.6 * SHIFT_VP


def test_an_rv_variant_holds_the_decisions_rv_in_its_out_of_sample_scores() -> None:
    """RV as of the later snapshot is 0.60; the engine still quotes off the decision's 0.45."""
    row = _score("rv")
    assert row["scores"]["1h"]["rv_7d"] == row["rv_7d"] == 0.45
    assert row["scores"]["1h"]["iv_error_vp"] > row["scores"]["0h"]["iv_error_vp"] + 0.6 * SHIFT_VP
