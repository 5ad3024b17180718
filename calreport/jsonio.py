"""JSON in and out: orjson when the `fast` extra is installed, the standard library otherwise.

The one place that knows about the optional dependency; both paths give the same values.
"""

from __future__ import annotations

import json
from typing import Any

try:
    import orjson as _orjson
except ImportError:  # pragma: no cover - exercised without the `fast` extra
    _orjson = None


class JSONLimitError(ValueError):
    """A document the parser will not take: nested too deeply, or an integer too long to convert.

    A ValueError like any other bad-JSON error, so every reader that skips or refuses bad JSON
    handles it; its message is one short line, never the input.
    """


def loads(data: bytes | str) -> Any:
    """Parse one JSON document; raises ValueError (orjson's JSONDecodeError is one) on bad input.

    Limits (history and snapshot files are outside input): JSON nested deeper than the parser goes (orjson: 1024 levels; the standard
    library: Python's recursion limit) and integers of more than 4300 digits are a JSONLimitError,
    never a RecursionError or an unexplained conversion error.
    """
    try:
        if _orjson is not None:
            return _orjson.loads(data)
        return json.loads(data)
    except RecursionError:
        raise JSONLimitError("JSON nested too deeply") from None
    except ValueError as exc:
        text = str(exc)
        if "depth limit" in text or "recursion" in text:
            raise JSONLimitError("JSON nested too deeply (more than 1024 levels)") from None
        if "digits" in text and "integer" in text:
            raise JSONLimitError("integer of more than 4300 digits") from None
        if "infinity when parsed as double" in text:
            raise JSONLimitError("number too large (beyond the float range)") from None
        raise


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (no spaces), UTF-8."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        raise ValueError("duplicate key in a JSON object")
    return dict(pairs)


def loads_unique(data: bytes | str) -> Any:
    """`loads`, refusing an object that names a key twice ({"preview": true, "preview": false}):
    for requests that act, where which of the two wins must never be a parser's choice."""
    doc = loads(data)  # the limits first: the second parse below then stays within them
    json.loads(data, object_pairs_hook=_unique_keys)
    return doc

