"""Sample data looks like Deribit's and obeys its conventions; the demo produces every status."""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from calreport.calibration.pricing import black76_price, year_fraction
from calreport.commands.demo import (
    FIXED_ANCHOR,
    HARVEST_DAYS,
    build_harvest,
    demo_anchor,
    run_demo,
)
from calreport.commands.workspace import Workspace
from calreport.market.deribit import (
    check_snapshot_rows,
    load_snapshot,
    parse_chart_data,
)
from calreport.market.harvest import load_harvest
from calreport.market.quotes import QuoteArrays, parse_instrument_name
from calreport.market.rv import realised_vol
from calreport.market.sample import (
    SampleMarket,
    instrument_name,
    listed_expiries,
    write_json,
)
from calreport.model import ApplyEvent, LiveRun
from calreport.store.applied import read_applied
from calreport.store.config import DEFAULT_CONFIG_TEXT
from calreport.store.history import read_history
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from calreport.store.state import StatusIndex
from calreport.timeutil import MS_PER_DAY, parse_time

T0 = FIXED_ANCHOR
DERIBIT_FIELDS = {
    "instrument_name", "base_currency", "quote_currency", "mark_price", "mark_iv", "underlying_price",
    "bid_price", "ask_price", "mid_price", "open_interest", "volume", "interest_rate", "creation_timestamp",
}


@pytest.fixture(scope="module")
def btc() -> SampleMarket:
    return SampleMarket("BTC", T0 - 2 * MS_PER_DAY, T0, seed=11)


def test_same_seed_same_market_different_seed_different_market(btc: SampleMarket) -> None:
    again = SampleMarket("BTC", T0 - 2 * MS_PER_DAY, T0, seed=11)
    assert again.book_summary(T0) == btc.book_summary(T0)
    other = SampleMarket("BTC", T0 - 2 * MS_PER_DAY, T0, seed=12)
    assert other.spot(T0) != btc.spot(T0)


def test_rows_have_deribit_fields_names_and_units(btc: SampleMarket) -> None:
    rows = btc.book_summary(T0)
    assert all(set(r) == DERIBIT_FIELDS for r in rows)
    for r in rows:
        p = parse_instrument_name(r["instrument_name"])
        assert p is not None and p.base == "BTC" and p.expiry_ms > T0
        assert r["creation_timestamp"] == T0 and r["quote_currency"] == "BTC"
    marks = np.array([r["mark_price"] for r in rows])
    ivs = np.array([r["mark_iv"] for r in rows])
    assert marks.max() < 1.0  # coin, not USD
    assert 20 < np.median(ivs) < 100  # percent, not a fraction
    assert instrument_name("BTC", 1589184000000, 11000.0, False) == "BTC-11MAY20-11000-P"  # no zero padding
    assert instrument_name("XRP", 1589184000000, 0.625, True) == "XRP-11MAY20-0d625-C"


def test_black76_at_mark_iv_reproduces_the_mark(btc: SampleMarket) -> None:
    """The issue's convention check, on sample data: coin Black-76 at mark_iv is the mark."""
    q = QuoteArrays.from_rows(btc.book_summary(T0))
    T = year_fraction(q.expiry_ms, T0)
    model = black76_price(q.underlying_price, q.strike, T, q.mark_iv, q.is_call)
    ok = q.mark_price >= 0.0005
    assert ok.sum() > 100
    assert np.median(np.abs(model[ok] / q.mark_price[ok] - 1)) < 0.01


def test_smile_and_term_structure_so_one_multiplier_fits_imperfectly(btc: SampleMarket) -> None:
    c = btc.chain(T0)
    exp0 = c["expiry_ms"] == np.unique(c["expiry_ms"])[3]
    k, iv, f = c["strike"][exp0], c["iv"][exp0], c["forward"][exp0]
    x = np.log(k / f)
    low, high = iv[x < -0.03].mean(), iv[x > 0.03].mean()
    assert low > high  # skew: downside strikes richer
    atm_by_expiry = []
    for e in np.unique(c["expiry_ms"])[2:]:
        sel = (c["expiry_ms"] == e) & c["is_call"]
        xs = np.log(c["strike"][sel] / c["forward"][sel])
        atm_by_expiry.append(np.interp(0.0, xs, c["iv"][sel]))
    assert np.ptp(atm_by_expiry) > 0.01  # a term structure, not one vol


def test_warts_tiny_marks_null_bids_early_rows_usd_marks(btc: SampleMarket) -> None:
    rows = btc.book_summary(T0)
    assert any(r["mark_price"] == 1e-6 for r in rows)
    assert any(r["bid_price"] is None for r in rows)
    early = btc.book_summary(T0, early=True)
    assert all("bid_price" not in r and r["underlying_index"].startswith("SYN.BTC-") for r in early)
    usd = btc.book_summary(T0, unit_error="usd")
    assert max(r["mark_price"] for r in usd) > 100


def test_snapshot_and_chart_payloads_load_like_deribit_responses(btc: SampleMarket, tmp_path: Path) -> None:
    snap = write_json(tmp_path / "s.json", btc.snapshot_payload(T0))
    rows, meta = load_snapshot(snap, "BTC")
    assert meta.now_ms == T0 and len(rows) > 200
    thin = btc.snapshot_payload(T0, limit=40)["result"]
    assert len(thin) == 40 and check_snapshot_rows(thin, "thin").underlying == "BTC"
    ticks, close = parse_chart_data(json.loads(json.dumps(btc.chart_payload(T0))))
    assert ticks[-1] < T0 and np.all(np.diff(ticks) == 3_600_000)
    rv = realised_vol(ticks, close, T0)
    assert rv.n_returns >= 160
    assert 0.5 * btc.vol_regime(T0) < rv.rv < 1.6 * btc.vol_regime(T0)


def test_listed_expiries_look_like_deribits() -> None:
    exps = listed_expiries(T0)
    dte = (exps - T0) / MS_PER_DAY
    assert dte.min() < 1 and 3 <= np.sum(dte < 4) <= 4  # dailies
    assert np.sum((dte > 3) & (dte < 10)) >= 1  # a weekly in the default auto DTE range
    assert dte.max() > 60  # monthlies


def test_demo_anchor_is_the_wall_clock_floored_to_five_minutes() -> None:
    anchor = demo_anchor(datetime(2026, 11, 25, 19, 43, 12, 500000, tzinfo=UTC))
    assert anchor == int(datetime(2026, 11, 25, 19, 40, tzinfo=UTC).timestamp() * 1000)
    assert demo_anchor(datetime.fromtimestamp(anchor / 1000, tz=UTC)) == anchor


def _ms(ts: str | None) -> int:
    assert ts is not None
    return int(parse_time(ts).timestamp() * 1000)


def test_demo_produces_every_status_and_survives_a_rerun(pristine_demo, tmp_path: Path) -> None:
    # the run's demo root (conftest: run_demo at FIXED_ANCHOR, once per test run), copied to rerun it
    lines = pristine_demo.log
    assert str(pristine_demo.root.index_html) in lines[-2] and pristine_demo.root.index_html.exists()
    root = pristine_demo.copy_to(tmp_path / "demo")

    live = read_history(root.live_history)
    index = StatusIndex.build(read_applied(root), live)
    statuses = Counter(index.status_of(r) for r in live.of_type(LiveRun))
    assert {"applied", "held", "superseded", "failed"} <= set(statuses), statuses
    assert any(e.source == "force" for e in live.of_type(ApplyEvent))
    # one time base: the live snapshots are the three days before the anchor
    assert all(T0 - 3 * MS_PER_DAY <= _ms(r.ts) < T0 for r in live.of_type(LiveRun))

    autos = HistoryQuery.file_order(root, "auto")
    assert {"ok", "failed"} <= {r.status for r in autos}
    assert {"1d", "14d"} <= {r.lookback for r in autos}
    assert all(r.vega_weighted_mae_pct is not None for r in autos if r.samples)
    assert all(_ms(r.as_of) == T0 for r in autos if r.lookback in ("1d", "14d"))
    ok = [r for r in autos if r.status == "ok"]
    assert ok and all(0.85 <= (r.multiplier or 0) <= 1.4 and (r.mae_pct or 1e9) < 40 for r in ok)
    # the request's pathological run: marks divided by the forward, no min-price filter
    insane = [r for r in autos if r.multiplier == 0.5]
    assert len(insane) == 1 and insane[0].status == "failed" and insane[0].multiplier_on_bound
    assert insane[0].reason.startswith("Unrealistic auto-calibration: multiplier or MAE outside sane range")
    assert (insane[0].mae_pct or 0) > 1e5
    # and the harvester's USD hours, failed on data quality
    assert any(r.status == "failed" and r.reason.startswith("Data quality failed") for r in autos)
    # the legacy settings were temporary: the settings file is back as init wrote it
    assert root.calibration_config.read_text() == DEFAULT_CONFIG_TEXT

    # the applied YAML is what the last apply event says, never an auto run's value
    doc = read_applied(root)
    btc_events = [e for e in live.of_type(ApplyEvent) if e.underlying == "BTC"]
    assert doc.underlyings["BTC"].global_ == btc_events[-1].applied.global_
    html = root.index_html.read_text()
    assert 'id="auto-history"' in html and 'id="current-applied"' in html
    assert "Unrealistic auto-calibration" in html

    n_live, n_auto = len(HistoryQuery.file_order(root, "live")), len(autos)
    # every day before today (by the wall clock) was compacted: T0's day is a Parquet file now
    stem = f"{datetime.fromtimestamp(T0 / 1000, tz=UTC):%Y-%m-%d}"
    day = root.harvest_dir("BTC") / f"{stem}.parquet"
    assert day.exists() and not (root.harvest_dir("BTC") / f"{stem}.jsonl").exists()
    day_start = T0 // MS_PER_DAY * MS_PER_DAY
    harvested = load_harvest(root, "BTC", day_start, day_start + MS_PER_DAY - 1)
    layout = sorted(p.name for p in root.harvest_dir("BTC").iterdir())
    assert run_demo(Workspace.open(root), log=lambda s: None, anchor_ms=T0) == 0  # re-run on an existing root
    assert len(HistoryQuery.file_order(root, "live")) == 2 * n_live and len(HistoryQuery.file_order(root, "auto")) == 2 * n_auto
    again = load_harvest(root, "BTC", day_start, day_start + MS_PER_DAY - 1)
    assert len(again) == len(harvested) > 0  # the harvest was rewritten, not doubled
    np.testing.assert_array_equal(again.harvested_at, harvested.harvested_at)
    np.testing.assert_array_equal(again.mark_price, harvested.mark_price)
    assert sorted(p.name for p in root.harvest_dir("BTC").iterdir()) == layout


def test_a_later_demo_removes_the_harvest_days_an_earlier_one_wrote_outside_its_week(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    (root.path / "data" / "demo").mkdir(parents=True)
    keep = root.harvest_dir("ETH") / "2020-01-01.jsonl"  # not the demo's: never touched
    keep.parent.mkdir(parents=True)
    keep.write_bytes(b"")

    def days(anchor: int) -> set[str]:
        market = SampleMarket("ETH", anchor - (HARVEST_DAYS + 1) * MS_PER_DAY, anchor, strikes_per_expiry=3)
        build_harvest(root, {"ETH": market}, anchor)
        return {p.name for p in root.harvest_dir("ETH").iterdir()}

    def week(anchor: int) -> set[str]:  # the anchor's day and the HARVEST_DAYS days before it
        last = datetime.fromtimestamp(anchor / 1000, tz=UTC).date()
        return {f"{last - timedelta(days=i)}.jsonl" for i in range(HARVEST_DAYS + 1)}

    assert days(T0) == week(T0) | {keep.name}
    assert days(T0 + 3 * MS_PER_DAY) == week(T0 + 3 * MS_PER_DAY) | {keep.name}


def test_write_harvest_writes_what_encode_rows_writes_of_book_summary(tmp_path: Path) -> None:
    # the columnar writer against the rows API, snapshot by snapshot, across every shape the demo writes
    from calreport.market.harvest import encode_rows
    from calreport.market.sample import write_harvest

    m = SampleMarket("BTC", T0 - 2 * MS_PER_DAY, T0, seed=11, strikes_per_expiry=5)
    times = m.harvest_times(T0 - 30 * 3_600_000, T0 - 20 * 3_600_000, 30)
    early_until, usd, per_fwd = int(times[3]), (int(times[6]), int(times[8])), (int(times[9]), int(times[11]))
    files = write_harvest(Root(tmp_path), m, times, early_until=early_until, unit_error_window=usd,
                          unit_errors=[(*per_fwd, "per_forward")])
    expected: dict[str, bytes] = {}
    for t in (int(x) for x in times):
        kind = "usd" if usd[0] <= t < usd[1] else "per_forward" if per_fwd[0] <= t < per_fwd[1] else None
        day = datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d")
        expected[day] = expected.get(day, b"") + encode_rows(m.book_summary(t, unit_error=kind, early=t < early_until), t)
    assert {f.stem: f.read_bytes() for f in files} == expected
