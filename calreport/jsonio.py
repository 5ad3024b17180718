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


def loads(data: bytes | str) -> Any:
    """Parse one JSON document; raises ValueError (orjson's JSONDecodeError is one) on bad input."""
    if _orjson is not None:
        return _orjson.loads(data)
    return json.loads(data)


def dumps(obj: Any) -> bytes:
    """Compact JSON bytes (no spaces), UTF-8."""
    if _orjson is not None:
        return _orjson.dumps(obj)
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
