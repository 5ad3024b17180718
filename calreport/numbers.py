"""The one strict numeric reader for every input format (snapshot, harvest line, YAML, history).

A number is an int or a float written as a number: a string ("0.05"), a boolean (true) or a
container is never a number, whatever Python's float() would accept.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np


def is_number(value: Any) -> bool:
    """True for int/float values, numpy's included (not bool, not str); NaN and inf count here.

    numpy is not imported for this (the file readers that `calreport status` loads need no numpy): a numpy
    scalar can only exist once numpy is loaded, so it is looked up in sys.modules."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):  # np.float64 is a float
        return True
    np_ = sys.modules.get("numpy")
    return np_ is not None and isinstance(value, (np_.integer, np_.floating))


def as_float(value: Any) -> float | None:
    """A finite float, or None when the value is missing, not a number, non-finite or too large."""
    if not is_number(value):
        return None
    try:
        v = float(value)
    except OverflowError:
        return None
    return v if math.isfinite(v) else None


def float_array(values: Sequence[Any]) -> tuple[np.ndarray, int]:
    """A float array and how many present values were not numbers.

    Missing / null -> NaN (not counted); strings, bools, lists, integers beyond float range -> NaN
    and counted, so callers can report them as schema errors instead of reading "1.5" as 1.5.
    """
    import numpy as np

    if set(map(type, values)) <= {float, int, type(None), np.float64, np.int64}:  # np.array would also accept "1.5" and True
        try:
            return np.array(values, dtype=np.float64), 0
        except OverflowError:
            pass
    out = np.full(len(values), np.nan)
    bad = 0
    for i, v in enumerate(values):  # only on columns that hold a non-number
        if v is None:
            continue
        if not is_number(v):
            bad += 1
            continue
        try:
            out[i] = float(v)
        except OverflowError:
            bad += 1
    return out, bad


def float_column(rows: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, int]:
    """The `key` column of JSON rows by float_array's rules (a missing key is null)."""
    return float_array([r.get(key) for r in rows])
