"""Deterministic, Deribit-shaped sample data for the demo, the tests and the benchmarks.

A `SampleMarket` is one underlying over a time range: a seeded 5-minute index path whose
volatility changes from day to day, and an option chain priced off it with Black-76 at a market IV
that is NOT a single multiple of RV, so a single multiplier fits imperfectly, as in reality:

    mark_iv(t, T, K) = vol_regime(t) x premium(t) x term(T) x smile(z) x (1 + noise),
    z = ln(K / F) / (atm_iv sqrt(T))        (skew: puts richer; curvature: wings richer)

Everything is a pure function of (underlying, seed, time): the snapshot at time t is the same
whether it comes from a live snapshot file or from a harvest day, so live and auto runs agree.
Deribit's field names, units and warts are kept: coin prices, IV in percent, 8-decimal marks,
tick-rounded bids/asks, null bids on options worth less than a tick, marks floored at 1e-6 (the
"tiny marks"), and early snapshots that lack bid/ask and carry `underlying_index`.

Public API:
    SampleMarket(underlying, start_ms, end_ms, seed=7, strikes_per_expiry=None)
        .spot(t_ms) / .book_summary(t_ms, unit_error=None) -> rows
        .snapshot_payload(t_ms) -> JSON-RPC envelope      (a live `calibrate --snapshot` file)
        .chart_payload(end_ms, days=8) -> JSON-RPC envelope (get_tradingview_chart_data, hourly)
        .harvest_times(start_ms, end_ms, interval_minutes=5) -> ms array
    write_harvest(root, market, times, unit_error_window=None, early_until=None, unit_errors=()) -> day files
    write_json(path, payload)
"""

from __future__ import annotations

import json
import math
from calendar import timegm
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np

from calreport.calibration.pricing import black76_price, year_fraction
from calreport.jsonio import dumps as _dumps
from calreport.market.quotes import QuoteArrays
from calreport.store.files import atomic_write
from calreport.store.paths import Root
from calreport.timeutil import DAYS_PER_YEAR, MS_PER_DAY, MS_PER_HOUR, MS_PER_MIN

STEP_MS = 5 * MS_PER_MIN  # the index path's resolution
_SCALARS = {"n_bad_names"}
_DERIVED = {"name_code", "name_table"}  # per-part name tables: rebuilt by whoever needs them
TICK = 0.0001  # Deribit's option tick in the base coin
MIN_MARK = 1e-6
_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]

# a book summary row's fields in Deribit's order (harvested_at follows, as the harvester adds it)
_BOOK_KEYS = (
    "instrument_name", "base_currency", "quote_currency", "mark_price", "mark_iv", "underlying_price",
    "bid_price", "ask_price", "mid_price", "open_interest", "volume", "interest_rate", "creation_timestamp",
)
_ROW_FLOATS = ("mark_price", "mark_iv", "underlying_price", "bid_price", "ask_price", "mid_price", "open_interest", "volume")

UnitError = Literal["usd", "per_forward"] | None  # marks x forward (USD), or / forward (the old system's)


@dataclass(frozen=True)
class MarketSpec:
    """The character of one underlying's sample market."""

    spot0: float
    vol: float  # typical realised vol (fraction)
    premium: float  # typical ATM IV / realised vol
    premium_swing: float  # how far the premium drifts (so live runs disagree)
    skew: float  # d(iv)/d(z) relative: negative = puts richer
    curvature: float
    term_slope: float  # atm(T) = atm x (1 + term_slope x ln(T / 30d))
    basis: float  # annualised futures basis: F = S exp(basis T)
    strikes_per_expiry: int = 13
    code: int = 0


SPECS: dict[str, MarketSpec] = {
    "BTC": MarketSpec(90_000.0, 0.42, 1.10, 0.07, -0.10, 0.035, 0.06, 0.04, code=1),
    "ETH": MarketSpec(3_100.0, 0.60, 1.16, 0.06, -0.07, 0.045, 0.05, 0.05, code=2),
}


@lru_cache(maxsize=65536)
def instrument_name(underlying: str, expiry_ms: int, strike: float, is_call: bool) -> str:
    """Deribit's naming: BTC-8MAY20-11000-P (single-digit days unpadded), decimal strikes with d."""
    d = datetime.fromtimestamp(expiry_ms / 1000, tz=UTC)
    k = f"{strike:.0f}" if float(strike).is_integer() else f"{strike:g}".replace(".", "d")
    return f"{underlying}-{d.day}{_MONTHS[d.month - 1]}{d:%y}-{k}-{'C' if is_call else 'P'}"


def _expiry_ms(d: date) -> int:
    return timegm((d.year, d.month, d.day, 8, 0, 0)) * 1000


def listed_expiries(now_ms: int) -> np.ndarray:
    """Deribit's listing pattern: the next dailies, the next four Fridays, three month-ends."""
    ms = _listed_on(datetime.fromtimestamp(now_ms / 1000, tz=UTC).date())
    return ms[(ms > now_ms) & (ms - now_ms <= 100 * MS_PER_DAY)]


@lru_cache(maxsize=1024)
def _listed_on(today: date) -> np.ndarray:
    """The expiries (ms, ascending) listed on a UTC date: a day's snapshots share them."""
    days = {today + timedelta(days=i) for i in range(4)}
    friday = today + timedelta(days=(4 - today.weekday()) % 7)
    days |= {friday + timedelta(weeks=i) for i in range(5)}
    for m in range(1, 4):
        y, mo = today.year + (today.month - 1 + m) // 12, (today.month - 1 + m) % 12 + 1
        last = date(y + (mo == 12), mo % 12 + 1, 1) - timedelta(days=1)
        days.add(last - timedelta(days=(last.weekday() - 4) % 7))
    ms = np.array(sorted(_expiry_ms(d) for d in days), dtype=np.int64)
    ms.flags.writeable = False  # shared by every caller of the day
    return ms


def _nice_step(x: float) -> float:
    mag = 10 ** math.floor(math.log10(x))
    for m in (1, 2, 2.5, 5, 10):
        if m * mag >= x:
            return m * mag
    return 10 * mag


class SampleMarket:
    """One underlying's seeded market over [start_ms, end_ms] (plus 8 days of history for RV)."""

    def __init__(
        self, underlying: str, start_ms: int, end_ms: int, seed: int = 7, *, strikes_per_expiry: int | None = None
    ) -> None:
        """`strikes_per_expiry` scales the chain: 13 gives ~260 options, 35 a full Deribit-size ~700."""
        self.underlying = underlying.upper()
        self.spec = SPECS[self.underlying]
        if strikes_per_expiry is not None:
            self.spec = replace(self.spec, strikes_per_expiry=int(strikes_per_expiry))
        self.seed = seed
        self.t0 = (int(start_ms) - 8 * MS_PER_DAY) // MS_PER_DAY * MS_PER_DAY
        self.t1 = int(end_ms) + MS_PER_DAY
        n = (self.t1 - self.t0) // STEP_MS + 1
        rng = np.random.default_rng([seed, self.spec.code, 0])
        n_days = n * STEP_MS // MS_PER_DAY + 2
        # day-to-day vol regimes (lognormal around the typical vol), then the 5-minute path
        self._regime = self.spec.vol * np.exp(0.18 * rng.standard_normal(n_days))
        day_idx = (np.arange(n) * STEP_MS) // MS_PER_DAY
        sig = self._regime[day_idx]
        dt = STEP_MS / (DAYS_PER_YEAR * MS_PER_DAY)
        steps = sig * math.sqrt(dt) * rng.standard_normal(n) - 0.5 * sig * sig * dt
        steps[0] = 0.0
        self._ticks = self.t0 + np.arange(n, dtype=np.int64) * STEP_MS
        self._path = self.spec.spot0 * np.exp(np.cumsum(steps))

    # ------------------------------------------------------------------ the index

    def _check(self, t_ms: int) -> int:
        if not self.t0 <= t_ms <= self.t1:
            raise ValueError(f"time {t_ms} outside the sample market's range")
        return (int(t_ms) - self.t0) // STEP_MS

    def spot(self, t_ms: int) -> float:
        return float(self._path[self._check(t_ms)])

    def vol_regime(self, t_ms: int) -> float:
        """The 7-day average of the daily vol regimes: what RV_7d measures, give or take noise."""
        d = (int(t_ms) - self.t0) // MS_PER_DAY
        return float(np.sqrt(np.mean(self._regime[max(0, d - 6) : d + 1] ** 2)))

    def premium(self, t_ms: int) -> float:
        """ATM IV over RV drifts slowly (a 5-day cycle), so live runs recommend different values."""
        phase = 2 * math.pi * (int(t_ms) - self.t0) / (5 * MS_PER_DAY)
        return self.spec.premium + self.spec.premium_swing * math.sin(phase)

    # ------------------------------------------------------------------ the true surface (what the marks scatter around)

    def atm_iv(self, t_ms: int, T: np.ndarray) -> np.ndarray:
        """True ATM IV at maturities T (years): vol_regime(t) x premium(t) x (1 + term_slope ln(max(365 T, 0.5) / 30))."""
        T = np.asarray(T, dtype=np.float64)
        return self.vol_regime(t_ms) * self.premium(t_ms) * (1 + self.spec.term_slope * np.log(np.maximum(T * 365, 0.5) / 30))

    def _smile(self, z: np.ndarray) -> np.ndarray:
        return np.clip(1 + self.spec.skew * z + self.spec.curvature * z * z, 0.6, 2.5)

    def true_iv(self, t_ms: int, log_k: np.ndarray, T: np.ndarray) -> np.ndarray:
        """The true surface at t: atm_iv(t, T) x clip(1 + skew z + curvature z^2, 0.6, 2.5) with
        z = ln(K/F) / (atm sqrt T). Marks are this x (1 + 0.012 noise), rounded as Deribit rounds them."""
        atm = self.atm_iv(t_ms, T)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.asarray(log_k, dtype=np.float64) / (atm * np.sqrt(np.asarray(T, dtype=np.float64)))
        return atm * self._smile(z)

    def quotes(self, times: Sequence[int] | np.ndarray) -> QuoteArrays:
        """Every snapshot at `times` as one QuoteArrays, sorted by time (a harvest held in memory:
        the backtest over generated days reads no file). Built a day of snapshots at a time."""
        ts = [int(t) for t in np.unique(np.asarray(times, dtype=np.int64))]
        parts = [QuoteArrays.from_rows([r for t in ts[i : i + 24] for r in self.book_summary(t)]) for i in range(0, len(ts), 24)]
        return QuoteArrays(**{f.name: (np.concatenate([getattr(p, f.name) for p in parts]) if f.name not in _SCALARS else
                                       sum(getattr(p, f.name) for p in parts)) for f in fields(QuoteArrays) if f.name not in _DERIVED})

    def chart_payload(self, end_ms: int, days: float = 8) -> dict[str, Any]:
        """public/get_tradingview_chart_data at resolution 60, as Deribit returns it."""
        start = int(end_ms - days * MS_PER_DAY) // MS_PER_HOUR * MS_PER_HOUR
        hours = np.arange(max(start, self.t0), int(end_ms) + 1, MS_PER_HOUR, dtype=np.int64)
        hours = hours[hours + MS_PER_HOUR - STEP_MS <= end_ms]  # completed hours only
        idx = (hours + MS_PER_HOUR - STEP_MS - self.t0) // STEP_MS  # last 5-minute tick of each hour
        close = np.round(self._path[idx], 2)
        opens = np.round(self._path[(hours - self.t0) // STEP_MS], 2)
        return {
            "jsonrpc": "2.0",
            "result": {
                "status": "ok",
                "ticks": hours.tolist(),
                "open": opens.tolist(),
                "high": np.maximum(opens, close).tolist(),
                "low": np.minimum(opens, close).tolist(),
                "close": close.tolist(),
                "volume": [0.0] * len(hours),
                "cost": [0.0] * len(hours),
            },
        }

    # ------------------------------------------------------------------ the chain

    def chain(self, t_ms: int) -> dict[str, np.ndarray]:
        """Listed instruments at t with their forward, fair IV and fair coin price (vectorised)."""
        s = self.spot(t_ms)
        spec = self.spec
        exps = listed_expiries(int(t_ms))
        T = year_fraction(exps, t_ms)
        F = s * np.exp(spec.basis * T)
        atm = self.atm_iv(t_ms, T)
        width = np.maximum(2.2 * atm * np.sqrt(T), 0.03)  # +-2.2 standard deviations of ln(K/F)
        n = spec.strikes_per_expiry
        # strikes per expiry: a grid of n around the forward at a nice step (one step per expiry, about
        # ten), then all expiries' grids at once; the nearest expiry adds two far wings, worth < 1e-6,
        # so Deribit shows the floor
        step = np.array([_nice_step(x) for x in (2 * F * width / (n - 1)).tolist()], dtype=np.float64)
        centre = np.round(F / step) * step
        grid = centre[:, None] + step[:, None] * np.arange(-(n // 2), n // 2 + 1)
        wings = np.round(F[0] * np.exp(np.array([-0.3, 0.3])) / step[0]) * step[0] if exps.size else np.zeros(0)
        k = np.concatenate([grid.ravel(), wings])
        ei = np.concatenate([np.repeat(np.arange(exps.size), grid.shape[1]), np.zeros(wings.size, dtype=np.int64)])
        pos = k > 0
        k, ei = k[pos], ei[pos]
        order = np.lexsort((k, ei))  # by expiry, then strike: each expiry's strikes ascending, once
        k, ei = k[order], ei[order]
        first = np.ones(k.size, dtype=bool)
        first[1:] = (ei[1:] != ei[:-1]) | (k[1:] != k[:-1])
        k, e = k[first], exps[ei[first]]
        e = np.concatenate([e, e])
        k = np.concatenate([k, k])
        call = np.repeat([True, False], e.size // 2)
        j = np.searchsorted(exps, e)
        Te, Fe, atm_e = T[j], F[j], atm[j]
        z = np.log(k / Fe) / (atm_e * np.sqrt(Te))
        rng = np.random.default_rng([self.seed, spec.code, int(t_ms) // STEP_MS])
        iv = atm_e * self._smile(z)
        iv = iv * (1 + 0.012 * rng.standard_normal(iv.size))
        price = black76_price(Fe, k, Te, iv, call)
        return {"expiry_ms": e, "strike": k, "is_call": call, "forward": Fe, "iv": iv, "price": price,
                "noise": rng.random(iv.size), "oi": np.round(rng.gamma(1.2, 150.0, iv.size), 1)}

    def book_columns(self, t_ms: int, *, unit_error: UnitError = None) -> dict[str, np.ndarray]:
        """The book summary at t as columns, with Deribit's rounding applied (NaN where a side is null):
        what book_summary's rows and the harvest writer's JSONL are both made of."""
        c = self.chain(t_ms)
        mark = np.maximum(np.round(c["price"], 8), MIN_MARK)  # the tiny marks: floored, not fair
        half = np.maximum(0.015 * mark, TICK)
        bid = np.floor((mark - half) / TICK) * TICK
        ask = np.ceil((mark + half) / TICK) * TICK
        no_bid = (bid < TICK) | (c["noise"] < 0.04)  # worthless wings, and the odd empty side
        no_ask = c["noise"] > 0.985
        scale = {"usd": c["forward"], "per_forward": 1.0 / c["forward"]}.get(unit_error or "", np.ones_like(mark))
        return {
            "expiry_ms": c["expiry_ms"], "strike": c["strike"], "is_call": c["is_call"],
            "mark_price": np.round(mark * scale, 8),
            "mark_iv": np.round(c["iv"] * 100, 2),
            "underlying_price": np.round(c["forward"], 2),
            "bid_price": np.where(no_bid, np.nan, np.round(bid * scale, 8)),
            "ask_price": np.where(no_ask, np.nan, np.round(ask * scale, 8)),
            "mid_price": np.where(no_bid | no_ask, np.nan, np.round((bid + ask) * scale / 2, 8)),
            "open_interest": c["oi"],
            "volume": np.round(c["oi"] * 0.1, 1),
        }

    def names(self, book: dict[str, np.ndarray]) -> list[str]:
        """The instrument names of a book's rows (instrument_name is cached: one dict hit per row, in C)."""
        return list(map(instrument_name, repeat(self.underlying), book["expiry_ms"].tolist(),
                        book["strike"].tolist(), book["is_call"].tolist()))

    def book_summary(self, t_ms: int, *, unit_error: UnitError = None, early: bool = False) -> list[dict[str, Any]]:
        """get_book_summary_by_currency rows at t (coin prices; `unit_error="usd"` prices them in USD,
        `"per_forward"` divides the coin marks by the forward once more, the old system's unit error).

        `early=True` reproduces the first harvests' shape: no bid/ask/mid, `underlying_index` set.
        """
        book = self.book_columns(t_ms, unit_error=unit_error)
        u = self.underlying
        names = self.names(book)
        cols = {k: book[k].tolist() for k in _ROW_FLOATS}
        rows: list[dict[str, Any]] = []
        for i, name in enumerate(names):  # dict rows for a snapshot file (the harvest writer needs none)
            b, a, m = cols["bid_price"][i], cols["ask_price"][i], cols["mid_price"][i]
            r: dict[str, Any] = {
                "instrument_name": name,
                "base_currency": u,
                "quote_currency": u,
                "mark_price": cols["mark_price"][i],
                "mark_iv": cols["mark_iv"][i],
                "underlying_price": cols["underlying_price"][i],
                "bid_price": None if math.isnan(b) else b,
                "ask_price": None if math.isnan(a) else a,
                "mid_price": None if math.isnan(m) else m,
                "open_interest": cols["open_interest"][i],
                "volume": cols["volume"][i],
                "interest_rate": 0.0,
                "creation_timestamp": int(t_ms),
            }
            if early:
                for key in ("bid_price", "ask_price", "mid_price"):
                    del r[key]
                r["underlying_index"] = f"SYN.{u}-{name.split('-')[1]}"
            rows.append(r)
        return rows

    def snapshot_payload(self, t_ms: int, *, unit_error: UnitError = None, limit: int | None = None) -> dict[str, Any]:
        """A live snapshot file: the JSON-RPC envelope Deribit returns (optionally only `limit` quotes)."""
        rows = self.book_summary(t_ms, unit_error=unit_error)
        if limit is not None:  # a thin book: keep the quotes nearest the money of the nearest expiries
            rows = rows[:: max(1, len(rows) // limit)][:limit]
        us = int(t_ms) * 1000
        return {"jsonrpc": "2.0", "result": rows, "usIn": us, "usOut": us + 1500, "usDiff": 1500, "testnet": False}

    def harvest_times(self, start_ms: int, end_ms: int, interval_minutes: float = 5) -> np.ndarray:
        step = int(interval_minutes * MS_PER_MIN)
        first = -(-int(start_ms) // step) * step
        return np.arange(first, int(end_ms) + 1, step, dtype=np.int64)


def write_json(path: Path, payload: Any) -> Path:
    atomic_write(Path(path), json.dumps(payload, separators=(",", ":")).encode("utf-8"))
    return Path(path)


def _tokens(values: list[Any]) -> list[bytes]:
    """Each value as JSON, exactly as _dumps writes it inside a row: one _dumps of the whole column, split
    at its commas (each value on its own, in C, should a value hold a comma)."""
    if not values:
        return []
    toks = _dumps(values)[1:-1].split(b",")
    return toks if len(toks) == len(values) else list(map(_dumps, values))


def _nullable(v: np.ndarray) -> list[Any]:
    """A float column with NaN for null -> values with None (JSON null in either JSON library)."""
    out = v.astype(object)
    out[np.isnan(v)] = None
    return out.tolist()


def _row_template(keys: Sequence[str], fixed: dict[str, Any]) -> bytes:
    """`{"key":%b,...}` in `keys` order, the `fixed` values written in (what _dumps of the dict writes)."""
    parts = [_dumps(k) + b":" + (_dumps(fixed[k]).replace(b"%", b"%%") if k in fixed else b"%b") for k in keys]
    return b"{" + b",".join(parts) + b"}"


def encode_books(market: SampleMarket, snapshots: Sequence[tuple[int, dict[str, np.ndarray], bool]]) -> bytes:
    """Snapshots (time, book_columns, early) as harvest JSONL: byte for byte what encode_rows(book_summary(t), t)
    writes for each, made column by column (one _dumps per column, one C-level format per row)."""
    out: list[bytes] = []
    i = 0
    while i < len(snapshots):  # runs of snapshots of one shape (early or not)
        j = i
        while j < len(snapshots) and snapshots[j][2] == snapshots[i][2]:
            j += 1
        out.append(_encode_run(market, snapshots[i:j], snapshots[i][2]))
        i = j
    return b"".join(out)


def _encode_run(market: SampleMarket, snaps: Sequence[tuple[int, dict[str, np.ndarray], bool]], early: bool) -> bytes:
    u = market.underlying
    sizes = [b["mark_price"].size for _, b, _ in snaps]
    if not sum(sizes):
        return b""
    book = {k: np.concatenate([b[k] for _, b, _ in snaps]) for k in snaps[0][1]}
    names = market.names(book)
    times = _tokens(np.repeat(np.array([t for t, _, _ in snaps], dtype=np.int64), sizes).tolist())
    fixed = {"base_currency": u, "quote_currency": u, "interest_rate": 0.0}
    cols: dict[str, list[bytes]] = {"instrument_name": _tokens(names), "creation_timestamp": times, "harvested_at": times}
    for k in ("mark_price", "mark_iv", "underlying_price", "open_interest", "volume"):
        cols[k] = _tokens(book[k].tolist())
    if early:  # no bid/ask/mid; underlying_index (SYN.<U>-<expiry label>) after creation_timestamp
        keys = [*_BOOK_KEYS[:6], *_BOOK_KEYS[9:], "underlying_index", "harvested_at"]
        _, first, inv = np.unique(book["expiry_ms"], return_index=True, return_inverse=True)
        labels = _tokens([f"SYN.{u}-{names[i].split('-')[1]}" for i in first.tolist()])  # per expiry
        cols["underlying_index"] = np.array(labels, dtype=object)[inv.ravel()].tolist()
    else:
        keys = [*_BOOK_KEYS, "harvested_at"]
        for k in ("bid_price", "ask_price", "mid_price"):
            cols[k] = _tokens(_nullable(book[k]))
    template = _row_template(keys, fixed)
    return b"\n".join(map(template.__mod__, zip(*(cols[k] for k in keys if k not in fixed)))) + b"\n"


def write_harvest(
    root: Root,
    market: SampleMarket,
    times: np.ndarray,
    *,
    unit_error_window: tuple[int, int] | None = None,
    early_until: int | None = None,
    unit_errors: Sequence[tuple[int, int, UnitError]] = (),
) -> list[Path]:
    """Write whole harvest day files holding the snapshots at `times` (atomic replace, so re-running
    is idempotent; every day touched is rewritten with exactly these snapshots).

    Snapshots inside `unit_error_window` [start, end) carry marks in USD (a broken harvester, for
    the demo's failed auto run); inside each `unit_errors` (start, end, kind) window they carry
    that kind of unit error; before `early_until` they have the early no-bid/ask shape. A day's
    rows are written as columns (encode_books), the same bytes encode_rows writes of book_summary.
    """
    windows = list(unit_errors) + ([(*unit_error_window, "usd")] if unit_error_window is not None else [])
    by_day: dict[str, list[tuple[int, dict[str, np.ndarray], bool]]] = {}
    for t in np.unique(np.asarray(times, dtype=np.int64)):
        t = int(t)
        bad = next((kind for lo, hi, kind in windows if lo <= t < hi), None)
        book = market.book_columns(t, unit_error=bad)
        day = datetime.fromtimestamp(t / 1000, tz=UTC).strftime("%Y-%m-%d")
        by_day.setdefault(day, []).append((t, book, early_until is not None and t < early_until))
    out = []
    directory = root.harvest_dir(market.underlying)
    for day, snaps in sorted(by_day.items()):
        path = directory / f"{day}.jsonl"
        atomic_write(path, encode_books(market, snaps))
        out.append(path)
    return out
