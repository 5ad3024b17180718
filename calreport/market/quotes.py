"""Deribit option quotes as numpy arrays, and instrument-name parsing (pure: no file or network).

The calibration core imports this module; reading snapshots and talking to Deribit live in
market/deribit.py, which builds on it.
"""

from __future__ import annotations

import re
from calendar import timegm
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import numpy as np

from calreport.numbers import float_column

EXPIRY_HOUR_UTC = 8

_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
# BTC-27DEC24-60000-C, BTC-8MAY20-11000-P, BTC_USDC-27DEC24-60000-C, XRP_USDC-27DEC24-0d625-C
_NAME_RE = re.compile(
    r"^(?P<base>[A-Z0-9]+)(?:_(?P<quote>[A-Z0-9]+))?-(?P<day>\d{1,2})(?P<mon>[A-Z]{3})(?P<yy>\d{2})"
    r"-(?P<strike>\d+(?:d\d+)?)-(?P<kind>[CP])$"
)

REQUIRED_FIELDS = ("instrument_name", "mark_price", "mark_iv", "underlying_price", "creation_timestamp")
# Required numbers: a row holding a string or a boolean here is refused (JSON null reads as missing
# and the calibration's filters drop the quote). The harvest reader counts such rows as schema errors.
REQUIRED_NUMBERS = ("mark_price", "mark_iv", "underlying_price")
# Optional numbers: null or absent is fine (no bid, no ask), a string or a boolean is refused too.
OPTIONAL_NUMBERS = ("bid_price", "ask_price", "open_interest")


# --------------------------------------------------------------------------- instrument names


@dataclass(frozen=True)
class ParsedName:
    base: str  # BTC (also for BTC_USDC linear options)
    quote: str | None  # USDC for linear options, None for inverse
    expiry_ms: int  # 08:00 UTC on the expiry date
    strike: float
    is_call: bool


_name_cache: dict[str, ParsedName | None] = {}
_NAME_CACHE_MAX = 200_000


def parse_instrument_name(name: str) -> ParsedName | None:
    """One name -> ParsedName, or None when it is not an option name we understand."""
    try:
        return _name_cache[name]
    except (KeyError, TypeError):
        pass
    parsed: ParsedName | None = None
    m = _NAME_RE.match(name) if isinstance(name, str) else None
    if m:
        month = _MONTHS.get(m["mon"])
        day = int(m["day"])
        if month is not None and 1 <= day <= 31:
            try:
                date(2000 + int(m["yy"]), month, day)  # rejects 31FEB25
                expiry = timegm((2000 + int(m["yy"]), month, day, EXPIRY_HOUR_UTC, 0, 0)) * 1000
                strike = float(m["strike"].replace("d", "."))
                if strike > 0:
                    parsed = ParsedName(m["base"], m["quote"], expiry, strike, m["kind"] == "C")
            except ValueError:
                parsed = None
    if isinstance(name, str):
        if len(_name_cache) >= _NAME_CACHE_MAX:
            _name_cache.clear()
        _name_cache[name] = parsed
    return parsed


@dataclass
class Instruments:
    """Parsed instrument names, aligned with the input. Invalid entries have valid=False and NaN/0."""

    base: np.ndarray  # object: base currency ("" when invalid)
    expiry_ms: np.ndarray  # int64 (0 when invalid)
    strike: np.ndarray  # float64 (NaN when invalid)
    is_call: np.ndarray  # bool
    valid: np.ndarray  # bool
    n_invalid: int


def factorize(values: Sequence[Any] | np.ndarray) -> tuple[list[Any], np.ndarray]:
    """(uniques in first-seen order, codes) such that uniques[codes[i]] == values[i].

    A dict pass: ~7x faster than np.unique on object strings (no sort), which matters when a
    harvest repeats the same ~700 instrument names millions of times.
    """
    seen: dict[Any, int] = {}
    setdefault = seen.setdefault
    try:
        codes = np.fromiter((setdefault(v, len(seen)) for v in values), dtype=np.int64, count=len(values))
    except TypeError:  # unhashable entries (lists in a broken file): key them by repr
        seen.clear()
        codes = np.fromiter(
            (setdefault(v if isinstance(v, str) else repr(v), len(seen)) for v in values),
            dtype=np.int64,
            count=len(values),
        )
    return list(seen), codes


def first_per_key(time: np.ndarray, code: np.ndarray) -> np.ndarray | None:
    """Indices (ascending) of the first row of each (time, code) pair; None when no pair repeats.

    A quote is one instrument in one snapshot: a second row for the same pair (a snapshot file
    present twice, a row written twice) must not count as a second sample. Rows already sorted by
    (time, code), as every harvest day is, are checked in one pass; others take a stable sort.
    """
    n = int(time.shape[0])
    if n < 2:
        return None
    dt, dc = np.diff(time), np.diff(code)
    if np.all((dt > 0) | ((dt == 0) & (dc > 0))):
        return None
    if np.all((dt > 0) | ((dt == 0) & (dc >= 0))):  # sorted, with repeats
        first = np.ones(n, dtype=bool)
        first[1:] = (dt != 0) | (dc != 0)
        return np.flatnonzero(first)
    order = np.lexsort((code, time))
    t, c = time[order], code[order]
    first = np.ones(n, dtype=bool)
    first[1:] = (t[1:] != t[:-1]) | (c[1:] != c[:-1])
    return np.sort(order[first])


def parse_instrument_names(names: Sequence[str] | np.ndarray) -> Instruments:
    """Vectorised over names: each *unique* name is parsed once (a harvest repeats ~700 names)."""
    n = len(names)
    if n == 0:
        e = np.zeros(0)
        return Instruments(np.zeros(0, dtype=object), e.astype(np.int64), e, e.astype(bool), e.astype(bool), 0)
    uniq, inverse = factorize(names)
    m = len(uniq)
    u_base = np.empty(m, dtype=object)
    u_exp = np.zeros(m, dtype=np.int64)
    u_strike = np.full(m, np.nan)
    u_call = np.zeros(m, dtype=bool)
    u_valid = np.zeros(m, dtype=bool)
    for i, name in enumerate(uniq):  # loop over unique names only
        p = parse_instrument_name(name) if isinstance(name, str) else None
        if p is None:
            u_base[i] = ""
            continue
        u_base[i], u_exp[i], u_strike[i], u_call[i], u_valid[i] = p.base, p.expiry_ms, p.strike, p.is_call, True
    valid = u_valid[inverse]
    return Instruments(
        base=u_base[inverse],
        expiry_ms=u_exp[inverse],
        strike=u_strike[inverse],
        is_call=u_call[inverse],
        valid=valid,
        n_invalid=int(n - np.count_nonzero(valid)),
    )


# --------------------------------------------------------------------------- quotes


def _floats(rows: Sequence[Mapping[str, Any]], key: str) -> np.ndarray:
    """A float column by the one strict reader: missing / null -> NaN, and so is a non-number
    (check_snapshot_rows has already refused snapshots whose required numbers are not numbers)."""
    return float_column(rows, key)[0]


@dataclass
class QuoteArrays:
    """One set of option quotes as aligned numpy arrays (units: coin prices, fractional vols)."""

    instrument: np.ndarray  # object (str)
    expiry_ms: np.ndarray  # int64, 08:00 UTC of the expiry date
    strike: np.ndarray  # float64
    is_call: np.ndarray  # bool
    mark_price: np.ndarray  # float64, base coin
    mark_iv: np.ndarray  # float64, FRACTION (Deribit's percent / 100)
    underlying_price: np.ndarray  # float64, the expiry's forward
    bid: np.ndarray  # float64, coin, NaN when null
    ask: np.ndarray  # float64, coin, NaN when null
    open_interest: np.ndarray  # float64
    creation_ms: np.ndarray  # int64 (0 when missing)
    valid_name: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    n_bad_names: int = 0
    # Optional categorical form of `instrument` (a harvest repeats ~700 names millions of times):
    # instrument == name_table[name_code]. Per-name work (parsing, the linear check) then runs once
    # per unique name instead of once per quote.
    name_code: np.ndarray | None = None  # int32 per quote
    name_table: np.ndarray | None = None  # unique names

    def __len__(self) -> int:
        return int(self.instrument.shape[0])

    @classmethod
    def from_rows(cls, rows: Sequence[Mapping[str, Any]]) -> QuoteArrays:
        """Book-summary dicts (Deribit field names) -> arrays. Unparseable names are kept, flagged invalid;
        an instrument listed twice at the same creation_timestamp (a snapshot's duplicate row) is one
        quote (its first row); the same instrument at other times (several snapshots) is kept."""
        names = np.array([r.get("instrument_name") for r in rows], dtype=object)
        _, codes = factorize(names)
        created = _floats(rows, "creation_timestamp")  # several snapshots in one array keep their own rows
        keep = first_per_key(np.where(np.isfinite(created), created, 0).astype(np.int64), codes)
        if keep is not None:
            is_name = np.fromiter((isinstance(x, str) for x in names), dtype=bool, count=names.shape[0])
            mask = np.zeros(names.shape[0], dtype=bool)
            mask[keep] = True
            mask |= ~is_name  # rows without a name are not one instrument: each is counted as a bad name
            rows = [rows[i] for i in np.flatnonzero(mask)]
            names = names[mask]
        inst = parse_instrument_names(names)
        created = _floats(rows, "creation_timestamp")
        created = np.where(np.isfinite(created), created, 0).astype(np.int64)
        return cls(
            instrument=names,
            expiry_ms=inst.expiry_ms,
            strike=inst.strike,
            is_call=inst.is_call,
            mark_price=_floats(rows, "mark_price"),
            mark_iv=_floats(rows, "mark_iv") / 100.0,
            underlying_price=_floats(rows, "underlying_price"),
            bid=_floats(rows, "bid_price"),
            ask=_floats(rows, "ask_price"),
            open_interest=_floats(rows, "open_interest"),
            creation_ms=created,
            valid_name=inst.valid,
            n_bad_names=inst.n_invalid,
        )

    def take(self, mask: np.ndarray) -> QuoteArrays:
        """The subset selected by a boolean mask (or index array)."""
        return QuoteArrays(
            **{
                k: getattr(self, k)[mask]
                for k in (
                    "instrument", "expiry_ms", "strike", "is_call", "mark_price", "mark_iv",
                    "underlying_price", "bid", "ask", "open_interest", "creation_ms", "valid_name",
                )
            },
            n_bad_names=int(np.count_nonzero(~self.valid_name[mask])),
            name_code=None if self.name_code is None else self.name_code[mask],
            name_table=self.name_table,
        )
