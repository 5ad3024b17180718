"""The price store (`calreport prices fetch`, market/prices.py) and the RV source order
--rv > --prices FILE > price store > harvest (with a recorded warning).

Replays recorded Deribit payloads: get_tradingview_chart_data of BTC-PERPETUAL (resolution 60)
and get_historical_volatility in Deribit's documented shape ([[ms, vol_pct], ...]); never the network.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from pathlib import Path

import numpy as np
import pytest

from calreport.commands import cli
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.market.deribit import DeribitClient, parse_historical_volatility
from calreport.market.prices import (
    CLOSES,
    HV,
    prices_dir,
    read_closes,
    rv_from_price_store,
)
from calreport.store.paths import Root

FIXTURES = Path(__file__).parent / "fixtures" / "deribit"
CHART = FIXTURES / "chart_btc_perpetual_1h.json"
HVOL = FIXTURES / "historical_volatility_btc.json"
BOOK = FIXTURES / "book_summary_btc.json"
NOW_MS = 1765454400000 + 30 * 60_000  # 2025-12-11 12:30 UTC: the 12:00 bar is still forming


def _client(seen: list[str] | None = None) -> DeribitClient:
    def opener(url: str, timeout: float) -> bytes:
        if seen is not None:
            seen.append(url)
        if "get_tradingview_chart_data" in url:
            return CHART.read_bytes()
        if "get_historical_volatility" in url:
            return HVOL.read_bytes()
        raise AssertionError(url)

    return DeribitClient(opener=opener, sleep=lambda s: None)


def _fetch(root: Root, seen: list[str] | None = None):  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return actions.prices_fetch(Workspace.open(root), "BTC", days=8, client=_client(seen), now=lambda: datetime.fromtimestamp(NOW_MS / 1000, UTC))


def test_fetch_stores_finished_hourly_closes_of_the_perpetual_and_deribits_hv(root: Root) -> None:
    seen: list[str] = []
    res = _fetch(root, seen)
    chart = json.loads(CHART.read_text())["result"]
    q = urllib.parse.parse_qs(urllib.parse.urlparse(seen[0]).query)
    assert q["instrument_name"] == ["BTC-PERPETUAL"] and q["resolution"] == ["60"]
    assert int(q["end_timestamp"][0]) - int(q["start_timestamp"][0]) == 8 * 86_400_000
    assert res.closes_added == len(chart["ticks"]) - 1  # the 12:00 bar has no final close at 12:30
    t, c = read_closes(root, "BTC")
    assert t.tolist() == chart["ticks"][:-1] and c.tolist() == chart["close"][:-1]
    hv_lines = (prices_dir(root, "BTC") / HV).read_text().splitlines()
    assert res.hv_added == len(hv_lines) == 8  # Deribit repeats a timestamp: stored once


def test_a_second_fetch_appends_nothing_and_a_torn_line_is_skipped(root: Root) -> None:
    _fetch(root)
    path = prices_dir(root, "BTC") / CLOSES
    before = path.read_bytes()
    assert _fetch(root).closes_added == 0 and path.read_bytes() == before
    path.write_bytes(before + b'{"t": 17654')  # a crash mid-append
    assert read_closes(root, "BTC")[0].size == len(before.splitlines())
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:-3]) + b"\n" + lines[-1])  # drop 2 whole lines, keep the torn tail
    assert _fetch(root).closes_added == 2
    assert all(json.loads(x) for x in path.read_bytes().splitlines() if not x.startswith(b'{"t": 17654'))


def test_store_rv_matches_an_independent_computation_from_the_recorded_closes(root: Root) -> None:
    _fetch(root)
    rv = rv_from_price_store(root, "BTC", NOW_MS)
    chart = json.loads(CHART.read_text())["result"]
    pts = [(t, c) for t, c in zip(chart["ticks"], chart["close"], strict=True) if t + 3_600_000 <= NOW_MS and t >= NOW_MS - 7 * 86_400_000]
    r = [math.log(b[1] / a[1]) for a, b in zip(pts, pts[1:], strict=False) if b[0] - a[0] == 3_600_000]
    mean = sum(r) / len(r)
    sd = math.sqrt(sum((x - mean) ** 2 for x in r) / (len(r) - 1))
    assert rv is not None and rv.n_returns == len(r) >= 120
    assert rv.rv == pytest.approx(sd * math.sqrt(24 * 365), rel=1e-12)
    assert rv.source == "prices:BTC-PERPETUAL"


def test_rv_source_order_rv_then_prices_file_then_store_then_harvest_with_a_warning(root: Root) -> None:
    no_store = actions.run_live_calibration(Workspace.open(root), "BTC", BOOK)
    assert no_store.rv_source and no_store.rv_source.startswith("harvest") and no_store.rv_warning
    _fetch(root)
    stored = actions.run_live_calibration(Workspace.open(root), "BTC", BOOK)
    assert stored.rv_source == "prices:BTC-PERPETUAL" and stored.rv_returns >= 120 and stored.rv_warning is None  # type: ignore[operator]
    assert stored.deribit_hv == pytest.approx(0.455, abs=1e-9) and stored.deribit_hv_ts == "2025-12-11T12:00:00Z"
    from_file = actions.run_live_calibration(Workspace.open(root), "BTC", BOOK, prices=CHART)
    assert from_file.rv_source == f"chart:{CHART.name}"
    assert actions.run_live_calibration(Workspace.open(root), "BTC", BOOK, rv=0.43).rv_source == "manual"


def test_the_live_card_shows_deribits_hv_beside_rv_and_the_harvest_warning(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    from calreport.report.render import render_site

    rows.live(deribit_hv=0.447, deribit_hv_ts="2025-12-11T11:00:00Z", rv_warning="RV_7d from the harvest's forwards")
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    assert "44.7% at 2025-12-11 11:00 UTC (RV_7d 43.2%)" in html and "RV_7d from the harvest&#39;s forwards" in html


def test_historical_volatility_parser_keeps_deribits_pairs_and_drops_junk() -> None:
    got = parse_historical_volatility({"result": [[2, 45.0], [1, 44.0], [3, "x"], [4], [5, -1.0], True]})
    assert got == [(1, 44.0), (2, 45.0)]


def test_cli_prices_fetch_prints_one_line_and_a_network_failure_is_one_line(root: Root, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(actions, "make_client", _client)
    assert cli.main(["--root", str(root.path), "prices", "fetch", "--underlying", "BTC", "--days", "8"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("BTC: ") and "new hourly closes" in out and "data/prices/BTC" in out

    def down(url: str, timeout: float) -> bytes:
        raise OSError("Network is unreachable")

    monkeypatch.setattr(actions, "make_client", lambda: DeribitClient(opener=down, sleep=lambda s: None))
    assert cli.main(["--root", str(root.path), "prices", "fetch", "--underlying", "BTC"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "get_tradingview_chart_data failed" in err[0]
    assert np.all(np.diff(read_closes(root, "BTC")[0]) > 0)
