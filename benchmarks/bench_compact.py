"""Harvest JSONL days to columns and to the Parquet table, and the sample harvest writer: columnar vs per-row.

Times, side by side in one run, on the same bytes:
- a JSONL day -> the typed Parquet table compaction writes (daycols.parse_lines + parquet.day_table);
- a JSONL day -> DayColumns (daycols.parse_day_bytes, what every JSONL read does);
- write_harvest of one day of 5-minute snapshots (sample.py: the demo's and the tests' generated harvest).

Baselines are the previous per-row code, kept below as BENCHMARK-ONLY copies (`old_*`): rows parsed
into one list of dicts and every column taken with a per-row comprehension, the extra columns built
value by value, and the sample rows built as dicts (with the per-expiry strike loop) then encoded one
by one. Each figure first checks that both paths give the same result (the same table, the same
arrays, the same file bytes), so the ratio compares equal work. Days: the shared real harvest
(BTC 2025-12-12, when /work/shared/data is present) and a generated Deribit-sized day.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import Figure, best_time
from calreport.market import daycols, sample
from calreport.market import parquet as pqday
from calreport.market.harvest import encode_rows
from calreport.numbers import as_float, float_array, is_number
from calreport.store.paths import Root
from calreport.timeutil import MS_PER_DAY

NAME = "compact"
REAL_DAY = Path("/work/shared/data/deribit-harvest-2025-12/BTC/2025-12-12.jsonl.gz")
DAY_MS = 1_765_497_600_000  # 2025-12-12T00:00Z


# --------------------------------------------------------------------------- BENCHMARK-ONLY copies of the per-row code


def old_parse_lines(data: bytes, underlying: str) -> tuple[daycols.ParsedLines, list[dict[str, Any]]]:
    """daycols.parse_lines before the columnar path: rows as dicts, each column a per-row comprehension."""
    lines = [ln for ln in data.split(b"\n") if ln and not ln.isspace()]
    values = daycols._parse_objects(lines)
    is_row = [type(v) is dict for v in values]
    rows = [v for v, r in zip(values, is_row) if r]
    row_line = np.flatnonzero(np.array(is_row, dtype=bool)) if lines else np.zeros(0, dtype=np.int64)
    cols = {k: float_array([r.get(src) for r in rows])[0] for k, src in daycols.SOURCE_KEYS.items()}
    ts = float_array([r.get("harvested_at") for r in rows])[0]
    missing_ts = ~np.isfinite(ts)
    if missing_ts.any():
        ts = np.where(missing_ts, float_array([r.get("creation_timestamp") for r in rows])[0], ts)
    names_raw = [r.get("instrument_name") for r in rows]
    name_ok = np.fromiter((type(x) is str for x in names_raw), dtype=bool, count=len(names_raw))
    ok = daycols.valid_rows(name_ok, ts, cols)
    index: dict[str, int] = {}
    codes = np.fromiter(
        (index.setdefault(n, len(index)) if good else -1 for n, good in zip(names_raw, ok)),
        dtype=np.int64, count=len(names_raw),
    )
    table = daycols.name_table(list(index), underlying)
    row_code, rstatus = daycols.row_status(ok, codes, table)
    status = np.full(len(lines), daycols.SCHEMA_ERROR, dtype=np.int8)
    status[row_line] = rstatus
    parsed = daycols.ParsedLines(
        lines=lines, rows=rows, row_line=row_line, status=status, ts=ts, cols=cols, table=table,
        row_code=row_code, row_status=rstatus,
    )
    return parsed, rows


def _old_column(rows: Sequence[Mapping[str, Any]], key: str) -> list[Any]:
    return [r.get(key) for r in rows]


def old_extras(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[Any]], list[str | None]]:
    """parquet._extras before the columnar path (row by row; the rare odd-value branches left out:
    the benchmark's days have none)."""
    n = len(rows)
    present: set[str] = set()
    for r in rows:
        present.update(r.keys())
    out: dict[str, list[Any]] = {}
    for k in pqday.CORE_FLOATS:
        if k in present:
            vals = _old_column(rows, k)
            assert set(map(type, vals)) <= {int, float, type(None)}
    for k in pqday.EXTRA_FLOATS:
        if k in present:
            vals = _old_column(rows, k)
            assert all(v is None or as_float(v) is not None for v in vals)
            out[k] = vals
    for k in pqday.EXTRA_STRINGS:
        if k in present:
            vals = _old_column(rows, k)
            assert all(v is None or isinstance(v, str) for v in vals)
            out[k] = vals
    if "creation_timestamp" in present:
        vals = _old_column(rows, "creation_timestamp")
        assert all(v is None or (is_number(v) and 0 <= v < 10**16) for v in vals)
        out["creation_timestamp"] = vals
    assert not present - pqday.KNOWN_FIELDS
    return out, [None] * n


def old_day_table(parsed: daycols.ParsedLines, rows: list[dict[str, Any]]) -> Any:
    keep = parsed.row_status == 0
    idx = np.flatnonzero(keep)
    names = parsed.table.names
    code = parsed.row_code[idx]
    ts = parsed.ts[idx].astype(np.int64)
    rank = np.empty(len(names), dtype=np.int64)
    rank[np.argsort(names, kind="stable")] = np.arange(len(names))
    order = np.lexsort((rank[code] if code.size else code, ts))
    idx, code, ts = idx[order], code[order], ts[order]
    extras, other = old_extras([rows[i] for i in idx])
    return pqday.build_table(
        ts=ts, names=names, code=code, expiry_ms=parsed.table.expiry_ms, strike=parsed.table.strike,
        is_call=parsed.table.is_call, floats={src: parsed.cols[k][idx] for k, src in daycols.SOURCE_KEYS.items()},
        extras=extras, other=other,
    )


def old_chain(m: sample.SampleMarket, t_ms: int) -> dict[str, np.ndarray]:
    """SampleMarket.chain before the strike grids were built at once (a loop per expiry)."""
    s = m.spot(t_ms)
    spec = m.spec
    exps = sample.listed_expiries(int(t_ms))
    T = sample.year_fraction(exps, t_ms)
    F = s * np.exp(spec.basis * T)
    atm = m.atm_iv(t_ms, T)
    width = np.maximum(2.2 * atm * np.sqrt(T), 0.03)
    n = spec.strikes_per_expiry
    rows_e, rows_k = [], []
    for i, (e, f, w) in enumerate(zip(exps, F, width)):
        step = sample._nice_step(2 * f * w / (n - 1))
        centre = round(f / step) * step
        ks = centre + step * np.arange(-(n // 2), n // 2 + 1)
        if i == 0:
            ks = np.concatenate([ks, np.round(f * np.exp(np.array([-0.3, 0.3])) / step) * step])
        ks = np.unique(ks[ks > 0])
        rows_e.append(np.full(ks.size, e))
        rows_k.append(ks)
    e = np.concatenate(rows_e)
    k = np.concatenate(rows_k)
    e = np.concatenate([e, e])
    k = np.concatenate([k, k])
    call = np.repeat([True, False], e.size // 2)
    j = np.searchsorted(exps, e)
    Te, Fe, atm_e = T[j], F[j], atm[j]
    z = np.log(k / Fe) / (atm_e * np.sqrt(Te))
    rng = np.random.default_rng([m.seed, spec.code, int(t_ms) // sample.STEP_MS])
    iv = atm_e * m._smile(z)
    iv = iv * (1 + 0.012 * rng.standard_normal(iv.size))
    price = sample.black76_price(Fe, k, Te, iv, call)
    return {"expiry_ms": e, "strike": k, "is_call": call, "forward": Fe, "iv": iv, "price": price,
            "noise": rng.random(iv.size), "oi": np.round(rng.gamma(1.2, 150.0, iv.size), 1)}


def old_book_summary(m: sample.SampleMarket, t_ms: int) -> list[dict[str, Any]]:
    """SampleMarket.book_summary before the columnar writer: one dict per quote."""
    c = old_chain(m, t_ms)
    u = m.underlying
    mark = np.maximum(np.round(c["price"], 8), sample.MIN_MARK)
    half = np.maximum(0.015 * mark, sample.TICK)
    bid = np.floor((mark - half) / sample.TICK) * sample.TICK
    ask = np.ceil((mark + half) / sample.TICK) * sample.TICK
    no_bid = (bid < sample.TICK) | (c["noise"] < 0.04)
    no_ask = c["noise"] > 0.985
    scale = np.ones_like(mark)
    marks = np.round(mark * scale, 8).tolist()
    bids = np.where(no_bid, np.nan, np.round(bid * scale, 8)).tolist()
    asks = np.where(no_ask, np.nan, np.round(ask * scale, 8)).tolist()
    mids = np.round((bid + ask) * scale / 2, 8).tolist()
    ivs = np.round(c["iv"] * 100, 2).tolist()
    fwds = np.round(c["forward"], 2).tolist()
    ois = c["oi"].tolist()
    vols = np.round(c["oi"] * 0.1, 1).tolist()
    exps, strikes, calls = c["expiry_ms"].tolist(), c["strike"].tolist(), c["is_call"].tolist()
    rows: list[dict[str, Any]] = []
    for i in range(mark.size):
        name = sample.instrument_name(u, exps[i], strikes[i], calls[i])
        b = None if no_bid[i] else bids[i]
        a = None if no_ask[i] else asks[i]
        rows.append({
            "instrument_name": name, "base_currency": u, "quote_currency": u, "mark_price": marks[i],
            "mark_iv": ivs[i], "underlying_price": fwds[i], "bid_price": b, "ask_price": a,
            "mid_price": None if b is None or a is None else mids[i], "open_interest": ois[i], "volume": vols[i],
            "interest_rate": 0.0, "creation_timestamp": int(t_ms),
        })
    return rows


def new_write_day(m: sample.SampleMarket, times: np.ndarray) -> bytes:
    """What write_harvest writes of one day, without the write: book columns per snapshot, encoded at once."""
    return sample.encode_books(m, [(int(t), m.book_columns(int(t)), False) for t in times])


def old_write_day(m: sample.SampleMarket, times: np.ndarray) -> bytes:
    return b"".join(encode_rows(old_book_summary(m, int(t)), int(t)) for t in times)


# --------------------------------------------------------------------------- figures


def _same_day(a: daycols.DayColumns, b: daycols.DayColumns) -> bool:
    return (a.names.tolist() == b.names.tolist() and np.array_equal(a.code, b.code)
            and np.array_equal(a.harvested_at, b.harvested_at)
            and all(np.array_equal(a.cols[k], b.cols[k], equal_nan=True) for k in daycols.FLOAT_COLUMNS)
            and (a.schema_errors, a.bad_names, a.lines) == (b.schema_errors, b.bad_names, b.lines))


def _day_figures(label: str, data: bytes, repeat: int) -> list[Figure]:
    new_table = pqday.day_table(daycols.parse_lines(data, "BTC"))
    old_table = old_day_table(*old_parse_lines(data, "BTC"))
    assert new_table.equals(old_table), "the columnar table differs from the per-row one"
    old_dc = daycols.day_from_lines(old_parse_lines(data, "BTC")[0])
    assert _same_day(daycols.parse_day_bytes(data, "BTC"), old_dc), "the columnar DayColumns differ"
    rows = new_table.num_rows
    t_new = best_time(lambda: pqday.day_table(daycols.parse_lines(data, "BTC")), repeat=repeat)
    t_old = best_time(lambda: old_day_table(*old_parse_lines(data, "BTC")), repeat=repeat)
    r_new = best_time(lambda: daycols.parse_day_bytes(data, "BTC"), repeat=repeat)
    r_old = best_time(lambda: daycols.day_from_lines(old_parse_lines(data, "BTC")[0]), repeat=repeat)
    orjson_only = best_time(lambda: daycols._parse_objects(daycols._split_lines(data)), repeat=repeat)
    return [
        Figure(
            name=f"JSONL day -> compaction's Parquet table, {label}, {rows:,} rows", value=t_new, unit="s",
            baseline=t_old, baseline_label="per-row parse and extra columns", ratio=t_old / t_new,
            target=">= 2x faster", met=t_old >= 2 * t_new,
            notes=[(f"{rows / t_new / 1e6:.2f}M rows/s; the JSON parse alone (one orjson call over the day, dicts "
                    f"built) takes {orjson_only * 1e3:.0f} ms; tables equal")],
        ),
        Figure(
            name=f"JSONL day -> DayColumns (every JSONL read), {label}", value=r_new, unit="s",
            baseline=r_old, baseline_label="per-row columns", ratio=r_old / r_new,
            notes=["arrays, counts and names equal"],
        ),
    ]


def run(quick: bool = False) -> list[Figure]:
    repeat = 2 if quick else 5
    figures: list[Figure] = []
    per = 13 if quick else 35  # 35: a Deribit-sized chain (~700 options)
    market = sample.SampleMarket("BTC", DAY_MS - MS_PER_DAY, DAY_MS + MS_PER_DAY, seed=7, strikes_per_expiry=per)
    times = market.harvest_times(DAY_MS, DAY_MS + (2 if quick else 24) * 3_600_000 - 1, 5)
    with tempfile.TemporaryDirectory(prefix="calreport-bench-compact-") as tmp:
        root = Root(Path(tmp))
        (path,) = sample.write_harvest(root, market, times)
        generated = path.read_bytes()
    assert generated == new_write_day(market, times) == old_write_day(market, times), "the writers' bytes differ"
    w_new = best_time(lambda: new_write_day(market, times), repeat=repeat)
    w_old = best_time(lambda: old_write_day(market, times), repeat=repeat)
    day = datetime.fromtimestamp(DAY_MS / 1000, tz=UTC).strftime("%Y-%m-%d")
    n_rows = generated.count(b"\n")
    figures.append(Figure(
        name=f"sample write_harvest, one day of 5-min snapshots ({len(times)} x ~{per * 20} options)", value=w_new,
        unit="s", baseline=w_old, baseline_label="dict per quote + encode_rows", ratio=w_old / w_new,
        target=">= 1.5x faster", met=w_old >= 1.5 * w_new,
        notes=[(f"{n_rows:,} rows of {day}, {len(generated) / 1e6:.0f} MB, byte-identical to the per-row "
                "writer; both timed without the file write (write_harvest adds an atomic write and fsync)")],
    ))
    figures += _day_figures("generated", generated, repeat)
    if REAL_DAY.exists():
        data, _ = daycols.read_day_bytes(REAL_DAY)
        figures += _day_figures("real BTC 2025-12-12", data, repeat)
    return figures
