"""`calreport price`: what the synthetic engine quotes under the applied YAML, one row per option.

    calreport price --underlying BTC --snapshot FILE [--rv X | --prices FILE] [--grid] [--format json|csv] [--out FILE]

The engine's own path prices: EngineView.sigma (band multiplier x smile, calibration/smile.py) at the
given base (RV_7d: --rv, --prices FILE, else the harvest, exactly as `calibrate` resolves it), then
Black-76 in coin. Without --snapshot the chain is fetched from Deribit (as `harvest` does). Every option
of the snapshot with a parseable name and T > 0 gets a row; bad input is one line on stderr, and
nothing is written to --out unless the whole table was built.

Columns (units): instrument_name, expiry (ISO 8601, 08:00 UTC), strike (USD), forward (USD, Deribit's
underlying_price), T (years, ACT/365 from the snapshot's newest creation_timestamp), band (label or
null), sigma (fraction), price (coin), delta (Black-76 forward delta), vega (coin per 1.00 vol),
mark_price (coin), mark_iv (Deribit's mark_iv as a fraction, like sigma).

`--grid` prices the dense strike x maturity grid instead (K/F 0.3-3, 301 strikes geometric, x 80
maturities geometric from 1 day to 1 year, at the snapshot's median forward; instrument_name "GRID",
band as the band rule says, mark columns null). Both print an arbitrage summary (stderr, one line,
`arbitrage_summary`): butterflies, call spreads and calendar spreads of the engine's quotes on the
listed strikes and expiries and on that grid, and the first violation named; checked on the quotes
themselves (realism.quoted_arbitrage), whatever model the applied entry uses.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from calreport.calibration.bands import BandLookup
from calreport.calibration.desk import forward_delta
from calreport.calibration.live import mark_checks
from calreport.calibration.pricing import black76_price, black76_vega, year_fraction
from calreport.calibration.sigma import quote_base
from calreport.calibration.surface import grid_points
from calreport.commands.usecases import make_client
from calreport.commands.workspace import Workspace
from calreport.engine import EngineView
from calreport.errors import CalreportError
from calreport.jsonio import dumps
from calreport.market.deribit import load_snapshot
from calreport.market.quotes import QuoteArrays
from calreport.market.rvsource import resolve_rv
from calreport.model import ArbitrageCheck
from calreport.realism import quoted_arbitrage
from calreport.store.applied import read_applied
from calreport.timeutil import DAYS_PER_YEAR, iso_ms

COLUMNS: tuple[str, ...] = (
    "instrument_name", "expiry", "strike", "forward", "T", "band", "sigma", "price", "delta", "vega", "mark_price", "mark_iv",
)


def _num(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def price_table(
    ws: Workspace,
    underlying: str,
    snapshot: Path | None,
    *,
    prices: Path | None = None,
    rv: float | None = None,
    client: Any = None,
    grid: bool = False,
    warn: Callable[[str], None] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, ArbitrageCheck]]:
    """(rows, arbitrage checks "listed" and "grid" of the engine's quotes): the snapshot's options, or with
    `grid` the dense strike x maturity grid (surface.grid_points) at the snapshot's median forward.

    `warn` hears the snapshot's unit errors (marks in USD, mark_iv as a fraction: the live run's
    data-quality rule, calibration/live.py mark_checks): the engine's prices stand, the snapshot's
    mark columns beside them do not compare."""
    cfg = ws.config
    name = cfg.check_underlying(underlying)
    if rv is not None:
        resolve_rv(ws.root, name, 0, None, rv)  # refuse a bad --rv before reading or fetching anything
    if snapshot is not None:
        rows, meta = load_snapshot(snapshot, name)
    else:
        rows, meta = (client or make_client()).book_summary(name)
    mode = cfg.sigma_mode_for(name)  # what sigma multiplies (calibration/sigma.py)
    base = resolve_rv(ws.root, name, meta.now_ms, prices, rv)
    if base.rv is None and mode == "rv":
        raise CalreportError(
            f"no RV_7d for {name}: {base.n_returns} hourly returns before the snapshot from {base.source}; pass --rv X or --prices FILE"
        )
    doc = read_applied(ws.root, cfg)
    view = EngineView.from_document(doc, cfg)
    q = QuoteArrays.from_rows(rows)
    T = year_fraction(q.expiry_ms, meta.now_ms)
    keep = q.valid_name & (T > 0) & np.isfinite(q.strike) & np.isfinite(q.underlying_price) & (q.underlying_price > 0)
    q, T = q.take(keep), T[keep]
    unit_errors = mark_checks(q)[0] if warn is not None else []
    if unit_errors and warn is not None:  # one line: the prices stand, the snapshot's marks beside them do not compare
        warn(f"{snapshot or 'the live chain'}: {'; '.join(unit_errors)}; its mark_price / mark_iv columns are not in the engine's units")
    F, K, c = q.underlying_price, q.strike, q.is_call
    qb = quote_base(mode, base.rv, q, T, q, T)
    now = meta.now_ms
    one_base = float(np.nanmedian(qb)) if np.ndim(qb) and np.size(qb) else float(base.rv or 1.0)  # type: ignore[arg-type]
    checks = quoted_arbitrage(
        lambda K_, F_, T_: view.sigma_in_mode(name, K_, F_, T_, one_base if np.ndim(qb) else qb, now), F, K, T, q.expiry_ms, q.instrument,
    )
    if grid:
        kf, t = grid_points()
        fwd = float(np.median(F)) if F.size else 1.0
        KK, TT = np.meshgrid(kf * fwd, t)
        K, T = KK.reshape(-1), TT.reshape(-1)
        F = np.full(K.size, fwd)
        c = np.ones(K.size, dtype=bool)
        exp = (now + np.round(T * DAYS_PER_YEAR * 86_400_000)).astype(np.int64)
        sigma = view.sigma_in_mode(name, K, F, T, one_base if np.ndim(qb) else qb, now)
        names, mark, miv = ["GRID"] * K.size, np.full(K.size, np.nan), np.full(K.size, np.nan)
    else:
        sigma = view.sigma_in_mode(name, K, F, T, qb, now)
        exp, names, mark, miv = q.expiry_ms, q.instrument.tolist(), q.mark_price, q.mark_iv
    price = black76_price(F, K, T, sigma, c)
    delta = forward_delta(F, K, T, sigma, c)
    vega = black76_vega(F, K, T, sigma)
    band = BandLookup(cfg.bands).index(T * DAYS_PER_YEAR)
    labels = cfg.band_names()
    cols = zip(
        names, exp.tolist(), K.tolist(), F.tolist(), T.tolist(), band.tolist(), sigma.tolist(),
        price.tolist(), delta.tolist(), vega.tolist(), mark.tolist(), miv.tolist(),
    )
    rows = [  # one dict per option: the output is option-level by design
        {
            "instrument_name": n, "expiry": iso_ms(int(e)), "strike": k, "forward": f, "T": t,
            "band": labels[b] if b >= 0 else None, "sigma": _num(s), "price": _num(p), "delta": _num(d),
            "vega": _num(v), "mark_price": _num(mp), "mark_iv": _num(mi),
        }
        for n, e, k, f, t, b, s, p, d, v, mp, mi in cols
    ]
    return rows, checks


def arbitrage_summary(checks: dict[str, ArbitrageCheck]) -> str:
    """One line: 'arbitrage: listed 0 butterflies, 0 call spreads, 0 calendars; grid ...; first grid: ...' (clean: '; no violation')."""
    parts = [f"{k} {c.butterflies} butterflies, {c.call_spreads} call spreads, {c.calendars} calendars" for k, c in checks.items()]
    first = next((f"{k}: {c.first}" for k, c in checks.items() if c.first), None)
    return "arbitrage: " + "; ".join(parts) + (f"; first {first}" if first else "; no violation")


def format_rows(rows: Sequence[dict[str, Any]], fmt_: str) -> bytes:
    """JSON ("json"): a list of objects with exactly COLUMNS; CSV ("csv"): a header and one line per option (empty = null)."""
    if fmt_ == "json":
        return dumps(list(rows)) + b"\n"
    if fmt_ != "csv":
        raise ValueError(f"unknown price table format {fmt_!r} (json, csv)")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(COLUMNS)
    for r in rows:
        writer.writerow(["" if r[c] is None else (repr(r[c]) if isinstance(r[c], float) else r[c]) for c in COLUMNS])
    return buf.getvalue().encode("utf-8")
