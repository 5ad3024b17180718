"""Run ids: ULIDs from the maintained `python-ulid` package (48-bit ms time + 80 random bits,
Crockford base32, 26 characters), so ids sort by the time they were made."""

from __future__ import annotations

from ulid import ULID

from calreport.timeutil import MS_PER_SECOND


def new_run_id(ts_ms: int | None = None) -> str:
    """A new ULID as text; for a given time (epoch ms) when `ts_ms` is given."""
    if ts_ms is None:
        return str(ULID())
    return str(ULID.from_timestamp(int(ts_ms) / MS_PER_SECOND))
