"""Deribit payloads: book-summary snapshots, chart data, historical vol, and a small client (file
and network I/O; the pure quote arrays and name parsing are market/quotes.py).

Conventions (Deribit's, kept exactly):
- `mark_price`, `bid_price`, `ask_price` are in the *base coin* (BTC for BTC options).
- `mark_iv` is in *percent*; `QuoteArrays` converts it to a fraction once, here.
- An option expires at 08:00 UTC on the date in its name (`BTC-27DEC24-60000-C`).
- `underlying_price` is the forward for that expiry (Black-76's F); `interest_rate` is 0.

Public API (used by calibration/live.py, market/harvest.py, calibration/auto.py):
    load_snapshot(path, underlying=None) -> (rows, SnapshotMeta)
    parse_chart_data(payload) -> (ticks_ms, close)        get_tradingview_chart_data
    load_chart_data(path) -> (ticks_ms, close)
    DeribitClient(opener=..., sleep=...)                  public endpoints, timeouts, retries
"""

from __future__ import annotations

import json
import math
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from calreport import jsonio
from calreport.errors import CalreportError, excerpt
from calreport.market.quotes import (
    OPTIONAL_NUMBERS,
    REQUIRED_FIELDS,
    REQUIRED_NUMBERS,
    parse_instrument_name,
)
from calreport.numbers import float_array, float_column
from calreport.store.files import decompress_gzip, read_input

# --------------------------------------------------------------------------- snapshots


@dataclass(frozen=True)
class SnapshotMeta:
    path: str
    underlying: str  # base currency of every row
    now_ms: int  # max creation_timestamp: the snapshot's "now"
    n_rows: int


def _read_json(path: Path) -> Any:
    raw = read_input(path)
    if raw[:2] == b"\x1f\x8b":  # a gzip file (snapshots the live path keeps: data/snapshots/<U>/*.json.gz)
        raw = decompress_gzip(raw, path)
    try:
        return jsonio.loads(raw)
    except jsonio.JSONLimitError as exc:
        raise CalreportError(f"not readable JSON: {exc}", path) from None
    except (ValueError, UnicodeDecodeError) as exc:  # JSONDecodeError (both parsers) is a ValueError
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise CalreportError(f"not valid JSON{where}", path) from None


def unwrap_result(payload: Any, path: Path | str | None, what: str) -> Any:
    """JSON-RPC envelope -> its `result`; an `error` envelope is a one-line CalreportError."""
    if isinstance(payload, dict) and ("result" in payload or "error" in payload or "jsonrpc" in payload):
        if payload.get("error") is not None:
            err = payload["error"]
            if isinstance(err, dict):
                msg = f"{excerpt(err.get('message', 'error'), 100, plain=True)} (code {excerpt(err.get('code', '?'), 20, plain=True)})"
            else:
                msg = excerpt(err, 100, plain=True)
            raise CalreportError(f"Deribit returned an error instead of {what}: {msg}", path)
        if "result" not in payload:
            raise CalreportError(f"JSON-RPC envelope without a result ({what})", path)
        return payload["result"]
    return payload


def check_snapshot_rows(rows: Any, path: Path | str | None, underlying: str | None = None) -> SnapshotMeta:
    """Validate book-summary rows; return the snapshot's underlying and "now" (max creation_timestamp)."""
    if not isinstance(rows, list):
        raise CalreportError(
            f"expected a list of book-summary rows (or a JSON-RPC envelope with one), got {type(rows).__name__}", path
        )
    if not rows:
        raise CalreportError("snapshot has no quotes (empty result)", path)
    bases: set[str] = set()
    now = None
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise CalreportError(f"row {i} is not an object", path)
        missing = [f for f in REQUIRED_FIELDS if f not in row]
        if missing:
            name = excerpt(row.get("instrument_name", "?"), 40)
            raise CalreportError(f"row {i} ({name}) lacks required field(s) {', '.join(missing)}", path)
        ts = row["creation_timestamp"]
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise CalreportError(f"row {i}: creation_timestamp is not a number ({excerpt(ts, 40)})", path)
        if not math.isfinite(ts) or not 0 <= ts < 10**14:
            raise CalreportError(f"row {i}: creation_timestamp is not a time in ms ({excerpt(ts, 40)})", path)
        now = ts if now is None or ts > now else now
        base = row.get("base_currency")
        if not isinstance(base, str) or not base:
            p = parse_instrument_name(row["instrument_name"])
            base = p.base if p else None
        if base:
            bases.add(base.upper())
    _check_numbers(rows, path)
    if not bases:
        raise CalreportError("cannot tell the underlying (no base_currency and no parseable instrument name)", path)
    if len(bases) > 1:
        raise CalreportError(f"rows of several underlyings ({', '.join(sorted(bases))}) in one snapshot", path)
    found = bases.pop()
    if underlying is not None and found != underlying.upper():
        raise CalreportError(f"snapshot is for {found}, not {underlying.upper()}", path)
    return SnapshotMeta(path=str(path), underlying=found, now_ms=int(now), n_rows=len(rows))


def _check_numbers(rows: list[dict[str, Any]], path: Path | str | None) -> None:
    """Refuse a snapshot whose required numbers are strings or booleans ("0.05", true): the one
    strict reader never takes them for numbers, and a silently dropped quote would hide the fault."""
    for key in REQUIRED_NUMBERS + OPTIONAL_NUMBERS:
        _, bad = float_column(rows, key)
        if bad:
            i = next(i for i, r in enumerate(rows) if float_column([r], key)[1])  # the error path only
            example = f"{excerpt(rows[i].get('instrument_name', '?'), 40)}: {excerpt(rows[i][key], 40)}"
            raise CalreportError(
                f"{key} is not a number in {bad} row{'s' if bad != 1 else ''} (first: row {i}, {example})", path
            )


def load_snapshot(path: Path | str, underlying: str | None = None) -> tuple[list[dict[str, Any]], SnapshotMeta]:
    """A get_book_summary_by_currency response (envelope or bare list) -> (rows, meta)."""
    path = Path(path)
    payload = _read_json(path)
    rows = unwrap_result(payload, path, "book summaries")
    meta = check_snapshot_rows(rows, path, underlying)
    return rows, meta


# --------------------------------------------------------------------------- chart data


def parse_chart_data(payload: Any, path: Path | str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """get_tradingview_chart_data (envelope or its result) -> (ticks_ms int64, close float64), sorted.

    status "no_data" gives empty arrays; null closes are dropped; mismatched lengths are an error.
    """
    result = unwrap_result(payload, path, "chart data")
    if not isinstance(result, dict):
        raise CalreportError(f"chart data: expected an object with ticks and close, got {type(result).__name__}", path)
    status = result.get("status", "ok")
    if status == "no_data":
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    if status != "ok":
        raise CalreportError(f"chart data status is {excerpt(status, 40)}", path)
    ticks, close = result.get("ticks"), result.get("close")
    if not isinstance(ticks, list) or not isinstance(close, list):
        raise CalreportError("chart data lacks the ticks/close lists", path)
    if len(ticks) != len(close):
        raise CalreportError(f"chart data has {len(ticks)} ticks but {len(close)} closes", path)
    t, _ = float_array(ticks)  # non-numbers read as missing, like nulls: the tick is dropped
    c, _ = float_array(close)
    ok = np.isfinite(t) & np.isfinite(c) & (c > 0)
    t, c = t[ok].astype(np.int64), c[ok]
    order = np.argsort(t, kind="stable")
    return t[order], c[order]


def load_chart_data(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    return parse_chart_data(_read_json(path), path)


# --------------------------------------------------------------------------- client

Opener = Callable[[str, float], bytes]


def _urllib_opener(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, headers={"User-Agent": "calreport", "Accept": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - fixed https base URL
        return resp.read()


class DeribitClient:
    """Deribit's public JSON-RPC over HTTP GET: timeouts, retries with exponential backoff.

    `opener(url, timeout) -> bytes` and `sleep` are injectable so tests replay recorded payloads.
    Retries on network errors, timeouts, HTTP 429 and 5xx; a 4xx or a JSON-RPC error is final.
    """

    def __init__(
        self,
        base_url: str = "https://www.deribit.com/api/v2",
        *,
        timeout: float = 10.0,
        retries: int = 3,
        backoff: float = 0.5,
        opener: Opener | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.opener = opener or _urllib_opener
        self.sleep = sleep

    def url(self, method: str, params: Mapping[str, Any]) -> str:
        return f"{self.base_url}/{method}?{urllib.parse.urlencode(params)}"

    def call(self, method: str, params: Mapping[str, Any]) -> Any:
        """GET one public method; return the decoded payload (the whole envelope)."""
        url = self.url(method, params)
        last = "no attempt"
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * (2 ** (attempt - 1)))
            try:
                raw = self.opener(url, self.timeout)
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
                if exc.code != 429 and exc.code < 500:
                    try:
                        body = jsonio.loads(exc.read())
                        unwrap_result(body, url, method)
                    except (ValueError, OSError, AttributeError):
                        pass
                    raise CalreportError(f"{method} failed: {last}") from None
                continue
            except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
                last = str(getattr(exc, "reason", None) or exc) or type(exc).__name__
                continue
            try:
                return jsonio.loads(raw)
            except (ValueError, UnicodeDecodeError):  # JSONDecodeError, or JSON nested / sized beyond the limits
                last = "response is not JSON"
                continue
        raise CalreportError(f"{method} failed after {self.retries + 1} attempts: {last}")

    def book_summary(self, currency: str, kind: str = "option") -> tuple[list[dict[str, Any]], SnapshotMeta]:
        """public/get_book_summary_by_currency -> validated (rows, meta)."""
        method = "public/get_book_summary_by_currency"
        payload = self.call(method, {"currency": currency.upper(), "kind": kind})
        rows = unwrap_result(payload, method, "book summaries")
        return rows, check_snapshot_rows(rows, method, currency)

    def chart_data(
        self, instrument_name: str, start_ms: int, end_ms: int, resolution: str = "60"
    ) -> tuple[np.ndarray, np.ndarray]:
        """public/get_tradingview_chart_data (resolution in minutes, "60" = hourly) -> (ticks_ms, close)."""
        method = "public/get_tradingview_chart_data"
        payload = self.call(
            method,
            {
                "instrument_name": instrument_name,
                "start_timestamp": int(start_ms),
                "end_timestamp": int(end_ms),
                "resolution": resolution,
            },
        )
        return parse_chart_data(payload, method)

    # ----------------------------------------------------------------------- index price

    def index_price(self, currency: str) -> float:
        """public/get_index_price for `<currency>_usd` (btc_usd, eth_usd) -> the index level (USD).

        The harvester records it with each snapshot so RV can use Deribit's index rather than the
        nearest forward (which carries basis). A missing or non-positive value is a one-line error.
        """
        method = "public/get_index_price"
        payload = self.call(method, {"index_name": f"{currency.lower()}_usd"})
        result = unwrap_result(payload, method, "index price")
        value = result.get("index_price") if isinstance(result, dict) else None
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0):
            raise CalreportError(f"{method}: no usable index_price in the response (got {str(value)[:40]})")
        return float(value)


# --------------------------------------------------------------------------- historical volatility


def parse_historical_volatility(payload: Any, where: Path | str | None = None) -> list[tuple[int, float]]:
    """public/get_historical_volatility (envelope or result) -> [(t_ms, vol_pct)], sorted; bad pairs dropped.

    Deribit answers a list of [timestamp_ms, volatility_percent] pairs (hourly, about 15 days)."""
    result = unwrap_result(payload, where, "historical volatility")
    if not isinstance(result, list):
        raise CalreportError(f"historical volatility: expected a list of [time, vol] pairs, got {type(result).__name__}", where)
    out: list[tuple[int, float]] = []
    for pair in result:  # ~360 pairs
        if isinstance(pair, list) and len(pair) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pair):
            t, v = int(pair[0]), float(pair[1])
            if math.isfinite(v) and v > 0:
                out.append((t, v))
    return sorted(out)


def fetch_historical_volatility(client: DeribitClient, currency: str) -> list[tuple[int, float]]:
    """Deribit's own realised-vol series for `currency` (a cross-check of RV_7d, never its input)."""
    method = "public/get_historical_volatility"
    return parse_historical_volatility(client.call(method, {"currency": currency.upper()}), method)
