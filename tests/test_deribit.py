"""Deribit payloads: instrument names, snapshots, chart data and the client (recorded payloads only)."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
from calendar import timegm
from pathlib import Path

import numpy as np
import pytest

from calreport.errors import CalreportError
from calreport.market.deribit import DeribitClient, load_chart_data, load_snapshot, parse_chart_data
from calreport.market.quotes import QuoteArrays, parse_instrument_names

FIXTURES = Path(__file__).parent / "fixtures" / "deribit"


def utc_ms(y: int, mo: int, d: int, h: int = 8) -> int:
    return timegm((y, mo, d, h, 0, 0)) * 1000


# --------------------------------------------------------------------------- instrument names


def test_names_parse_expiry_at_0800_utc_strike_and_type() -> None:
    inst = parse_instrument_names(
        ["BTC-27DEC24-60000-C", "BTC-8MAY20-11000-P", "BTC_USDC-27DEC24-60000-C", "XRP_USDC-27DEC24-0d625-C"]
    )
    assert inst.valid.all() and inst.n_invalid == 0
    assert inst.expiry_ms.tolist() == [utc_ms(2024, 12, 27), utc_ms(2020, 5, 8), utc_ms(2024, 12, 27), utc_ms(2024, 12, 27)]
    assert inst.strike.tolist() == [60000.0, 11000.0, 60000.0, 0.625]
    assert inst.is_call.tolist() == [True, False, True, True]
    assert inst.base.tolist() == ["BTC", "BTC", "BTC", "XRP"]


@pytest.mark.parametrize(
    "bad",
    ["BTC-PERPETUAL", "BTC-27DEC24", "BTC-31FEB25-60000-C", "BTC-27DEX24-60000-C", "btc-27DEC24-60000-C",
     "BTC-27DEC24-60000-X", "BTC-27DEC24-0-C", "BTC-27DEC24-6e4-C", "", "BTC-127DEC24-1-C"],
)
def test_unparseable_names_are_flagged_and_counted(bad: str) -> None:
    inst = parse_instrument_names(["BTC-27DEC24-60000-C", bad])
    assert inst.valid.tolist() == [True, False]
    assert inst.n_invalid == 1
    assert np.isnan(inst.strike[1])


def test_non_string_names_do_not_crash() -> None:
    inst = parse_instrument_names(["BTC-27DEC24-60000-C", None, 17, ["x"]])  # type: ignore[list-item]
    assert inst.valid.tolist() == [True, False, False, False]


def test_repeated_names_stay_aligned_with_their_rows() -> None:
    names = ["BTC-27DEC24-60000-C", "BTC-8MAY20-11000-P"] * 5000 + ["junk"]
    inst = parse_instrument_names(np.array(names, dtype=object))
    assert inst.strike[:10000].tolist() == [60000.0, 11000.0] * 5000
    assert inst.is_call[:4].tolist() == [True, False, True, False]
    assert inst.n_invalid == 1 and not inst.valid[-1]


# --------------------------------------------------------------------------- snapshots


def test_envelope_snapshot_loads_with_now_the_newest_creation_timestamp() -> None:
    rows, meta = load_snapshot(FIXTURES / "book_summary_btc.json", "BTC")
    assert meta.underlying == "BTC" and meta.n_rows == len(rows) == 20
    assert meta.now_ms == max(r["creation_timestamp"] for r in rows)


def test_bare_list_snapshot_loads(tmp_path: Path) -> None:
    rows = json.loads((FIXTURES / "book_summary_btc.json").read_text())["result"]
    p = tmp_path / "bare.json"
    p.write_text(json.dumps(rows))
    got, meta = load_snapshot(p)
    assert got == rows and meta.underlying == "BTC"


def test_quote_arrays_convert_percent_iv_and_null_sides() -> None:
    rows, _ = load_snapshot(FIXTURES / "book_summary_btc.json")
    q = QuoteArrays.from_rows(rows)
    assert q.mark_iv[0] == pytest.approx(rows[0]["mark_iv"] / 100.0)
    null_bid = [i for i, r in enumerate(rows) if r["bid_price"] is None]
    assert null_bid and np.isnan(q.bid[null_bid]).all()
    assert q.expiry_ms[0] == utc_ms(2025, 12, 19)
    assert q.mark_price.dtype == np.float64 and q.creation_ms.dtype == np.int64


def _write(tmp_path: Path, payload: object | str) -> Path:
    p = tmp_path / "snap.json"
    p.write_text(payload if isinstance(payload, str) else json.dumps(payload))
    return p


GOOD_ROW = {
    "instrument_name": "BTC-27DEC24-60000-C", "base_currency": "BTC", "mark_price": 0.01, "mark_iv": 50.0,
    "underlying_price": 60000.0, "creation_timestamp": 1735000000000,
}


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ('{"jsonrpc": "2.0", "result": [', "not valid JSON"),
        ({"jsonrpc": "2.0", "error": {"message": "Invalid params", "code": -32602}}, "Invalid params (code -32602)"),
        ({"jsonrpc": "2.0", "result": {"rows": []}}, "expected a list"),
        ({"jsonrpc": "2.0", "result": []}, "no quotes"),
        ([{k: v for k, v in GOOD_ROW.items() if k != "mark_price"}], "lacks required field(s) mark_price"),
        ([GOOD_ROW, "oops"], "row 1 is not an object"),
        ([GOOD_ROW, {**GOOD_ROW, "instrument_name": "ETH-27DEC24-3000-C", "base_currency": "ETH"}], "several underlyings"),
        ([{**GOOD_ROW, "creation_timestamp": "soon"}], "creation_timestamp is not a number"),
        ([{**GOOD_ROW, "instrument_name": "???", "base_currency": None}], "cannot tell the underlying"),
    ],
)
def test_malformed_snapshots_are_one_line_errors_naming_the_file(tmp_path: Path, payload: object, needle: str) -> None:
    p = _write(tmp_path, payload)
    with pytest.raises(CalreportError) as exc:
        load_snapshot(p, "BTC")
    msg = str(exc.value)
    assert "\n" not in msg and str(p) in msg and needle in msg


def test_snapshot_of_another_underlying_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, [GOOD_ROW])
    with pytest.raises(CalreportError, match="snapshot is for BTC, not ETH"):
        load_snapshot(p, "ETH")


def test_recorded_error_envelope_is_refused() -> None:
    with pytest.raises(CalreportError, match="Deribit returned an error"):
        load_snapshot(FIXTURES / "error_envelope.json")


def test_missing_snapshot_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CalreportError, match="file not found"):
        load_snapshot(tmp_path / "nope.json")


# --------------------------------------------------------------------------- chart data


def test_chart_data_parses_ticks_and_closes_sorted() -> None:
    ticks, close = load_chart_data(FIXTURES / "chart_btc_perpetual_1h.json")
    assert ticks.dtype == np.int64 and ticks.size == close.size == 8 * 24 + 1
    assert np.all(np.diff(ticks) == 3_600_000)


def test_chart_no_data_is_empty_not_an_error() -> None:
    ticks, close = load_chart_data(FIXTURES / "chart_no_data.json")
    assert ticks.size == 0 and close.size == 0


def test_chart_nulls_dropped_and_length_mismatch_refused() -> None:
    t, c = parse_chart_data({"result": {"status": "ok", "ticks": [3, 1, 2], "close": [30.0, None, 20.0]}})
    assert t.tolist() == [2, 3] and c.tolist() == [20.0, 30.0]
    with pytest.raises(CalreportError, match="2 ticks but 1 closes"):
        parse_chart_data({"result": {"status": "ok", "ticks": [1, 2], "close": [1.0]}})
    with pytest.raises(CalreportError, match="Deribit returned an error"):
        parse_chart_data({"jsonrpc": "2.0", "error": {"message": "bad instrument", "code": 10001}})


# --------------------------------------------------------------------------- client


class Recorder:
    """An opener that replays a script of responses/exceptions and records the URLs asked for."""

    def __init__(self, script: list[object]) -> None:
        self.script = list(script)
        self.urls: list[str] = []
        self.timeouts: list[float] = []

    def __call__(self, url: str, timeout: float) -> bytes:
        self.urls.append(url)
        self.timeouts.append(timeout)
        item = self.script.pop(0)
        if isinstance(item, BaseException):
            raise item
        return item  # type: ignore[return-value]


def http_error(code: int, body: bytes = b"{}") -> urllib.error.HTTPError:
    return urllib.error.HTTPError("https://x", code, "err", {}, io.BytesIO(body))  # type: ignore[arg-type]


def test_client_fetches_book_summary_with_the_public_endpoint() -> None:
    rec = Recorder([(FIXTURES / "book_summary_btc.json").read_bytes()])
    client = DeribitClient(opener=rec, timeout=3.0, sleep=lambda s: None)
    rows, meta = client.book_summary("btc")
    assert len(rows) == 20 and meta.underlying == "BTC"
    assert rec.urls == ["https://www.deribit.com/api/v2/public/get_book_summary_by_currency?currency=BTC&kind=option"]
    assert rec.timeouts == [3.0]


def test_client_retries_transient_failures_with_backoff() -> None:
    sleeps: list[float] = []
    rec = Recorder([
        urllib.error.URLError("connection reset"),
        socket.timeout("timed out"),
        http_error(503),
        (FIXTURES / "chart_btc_perpetual_1h.json").read_bytes(),
    ])
    client = DeribitClient(opener=rec, retries=3, backoff=0.5, sleep=sleeps.append)
    ticks, close = client.chart_data("BTC-PERPETUAL", 0, 10**13)
    assert ticks.size == 193
    assert sleeps == [0.5, 1.0, 2.0]
    assert "resolution=60" in rec.urls[0] and "instrument_name=BTC-PERPETUAL" in rec.urls[0]


def test_client_gives_up_with_one_line_after_retries() -> None:
    rec = Recorder([urllib.error.URLError("down")] * 3)
    client = DeribitClient(opener=rec, retries=2, sleep=lambda s: None)
    with pytest.raises(CalreportError, match="failed after 3 attempts: down"):
        client.book_summary("BTC")


def test_client_does_not_retry_client_errors() -> None:
    body = json.dumps({"jsonrpc": "2.0", "error": {"message": "currency not found", "code": 10020}}).encode()
    rec = Recorder([http_error(400, body)])
    client = DeribitClient(opener=rec, retries=3, sleep=lambda s: None)
    with pytest.raises(CalreportError, match="currency not found"):
        client.book_summary("XYZ")
    assert len(rec.urls) == 1


def test_client_refuses_json_rpc_error_payload() -> None:
    rec = Recorder([(FIXTURES / "error_envelope.json").read_bytes()])
    with pytest.raises(CalreportError, match="Invalid params"):
        DeribitClient(opener=rec, sleep=lambda s: None).book_summary("BTC")
