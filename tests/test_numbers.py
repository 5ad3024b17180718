"""One strict numeric reader: a string or a boolean is never a number, in a snapshot, a harvest
line, a chart payload or the applied YAML."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calreport.errors import CalreportError
from calreport.market.deribit import load_snapshot, parse_chart_data
from calreport.market.quotes import QuoteArrays
from calreport.market.harvest import parse_day_bytes
from calreport.numbers import as_float, float_array, float_column, is_number
from calreport.store.applied import read_applied
from calreport.store.paths import Root

NOT_NUMBERS = ["0.05", True, False, [0.05], {"v": 0.05}]
GOOD = {
    "instrument_name": "BTC-27DEC24-60000-C", "base_currency": "BTC", "mark_price": 0.05, "mark_iv": 50.0,
    "underlying_price": 60000.0, "bid_price": 0.049, "ask_price": 0.051, "open_interest": 10.0,
    "creation_timestamp": 1733900000000,
}


# --------------------------------------------------------------------------- the reader itself


@pytest.mark.parametrize("value", NOT_NUMBERS + [None, "nan", b"1"])
def test_strings_booleans_and_containers_are_not_numbers(value: Any) -> None:
    assert not is_number(value) and as_float(value) is None


@pytest.mark.parametrize("value", [0, 1, -2.5, 1e300, np.float64(0.5), np.int64(3)])
def test_ints_floats_and_numpy_scalars_are_numbers(value: Any) -> None:
    assert is_number(value) and as_float(value) == float(value)


def test_as_float_refuses_non_finite_and_huge_integers() -> None:
    assert as_float(math.nan) is None and as_float(math.inf) is None and as_float(10**400) is None


def test_float_column_counts_present_non_numbers_but_not_missing_values() -> None:
    rows = [{"x": 1}, {"x": None}, {}, {"x": "2"}, {"x": True}, {"x": 10**400}, {"x": 2.5}]
    col, bad = float_column(rows, "x")
    assert bad == 3
    assert col[0] == 1.0 and col[6] == 2.5 and np.isnan(col[1:6]).all()
    clean, none_bad = float_array([1, 2.5, None])
    assert none_bad == 0 and clean[:2].tolist() == [1.0, 2.5] and np.isnan(clean[2])


# --------------------------------------------------------------------------- snapshot


def _snapshot(tmp_path: Path, rows: list[dict[str, Any]]) -> Path:
    p = tmp_path / "snap.json"
    p.write_text(json.dumps({"jsonrpc": "2.0", "result": rows}))
    return p


@pytest.mark.parametrize("field", ["mark_price", "mark_iv", "underlying_price"])
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_snapshot_with_a_non_number_in_a_required_field_is_refused_naming_file_field_and_rows(
    tmp_path: Path, field: str, value: Any
) -> None:
    rows = [dict(GOOD) for _ in range(5)]
    for i in (1, 3, 4):
        rows[i][field] = value
    path = _snapshot(tmp_path, rows)
    with pytest.raises(CalreportError) as exc:
        load_snapshot(path, "BTC")
    line = exc.value.one_line()
    assert line.startswith(str(path)) and f"{field} is not a number in 3 rows" in line and "row 1" in line
    assert "\n" not in line and len(line) < 300


def test_a_snapshot_with_null_or_numeric_fields_loads_and_nulls_read_as_missing(tmp_path: Path) -> None:
    rows = [dict(GOOD), {**GOOD, "instrument_name": "BTC-27DEC24-61000-C", "mark_price": None, "bid_price": None},
            {**GOOD, "instrument_name": "BTC-27DEC24-62000-C", "mark_iv": 50}]  # three instruments: one quote each
    loaded, meta = load_snapshot(_snapshot(tmp_path, rows), "BTC")
    q = QuoteArrays.from_rows(loaded)
    assert meta.n_rows == 3 and np.isnan(q.mark_price[1]) and np.isnan(q.bid[1]) and q.mark_iv[2] == 0.5


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_quote_arrays_never_read_a_non_number_as_a_number(value: Any) -> None:
    q = QuoteArrays.from_rows([{**GOOD, "bid_price": value, "open_interest": value}])
    assert np.isnan(q.bid[0]) and np.isnan(q.open_interest[0])


def test_chart_data_drops_closes_that_are_not_numbers() -> None:
    payload = {"result": {"status": "ok", "ticks": [0, 3_600_000, 7_200_000, 10_800_000],
                          "close": [100.0, "101", True, 102.5]}}
    ticks, close = parse_chart_data(payload)
    assert ticks.tolist() == [0, 10_800_000] and close.tolist() == [100.0, 102.5]


# --------------------------------------------------------------------------- harvest line


@pytest.mark.parametrize("field", ["mark_price", "mark_iv", "underlying_price", "harvested_at"])
@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_harvest_line_with_a_non_number_in_a_required_field_is_a_schema_error(field: str, value: Any) -> None:
    good = {**GOOD, "harvested_at": 1733900000000}
    bad = {**good, field: value}
    if field == "harvested_at":
        del bad["creation_timestamp"]  # otherwise the older writers' creation_timestamp stands in
    day = parse_day_bytes(b"\n".join(json.dumps(r).encode() for r in (good, bad)), "BTC")
    assert (day.lines, day.schema_errors, day.n) == (2, 1, 1)


# --------------------------------------------------------------------------- applied YAML


@pytest.mark.parametrize("written", ["'1.05'", '"1.05"', "true", "yes", "[1.05]"])
def test_a_yaml_multiplier_that_is_not_a_number_is_refused_naming_the_file(root: Root, written: str) -> None:
    text = root.applied.read_text()
    assert "global: 1.0000" in text
    root.applied.write_text(text.replace("global: 1.0000", f"global: {written}", 1))
    with pytest.raises(CalreportError) as exc:
        read_applied(root)
    line = exc.value.one_line()
    assert line.startswith(str(root.applied)) and "multiplier must be a number" in line


def test_a_yaml_multiplier_written_as_a_number_loads(root: Root) -> None:
    root.applied.write_text(root.applied.read_text().replace("global: 1.0000", "global: 1.05", 1))
    assert read_applied(root).underlyings["BTC"].global_ == 1.05
