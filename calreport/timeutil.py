"""Time: the one home of the millisecond constants and the timestamp format of every file."""

from __future__ import annotations

from datetime import datetime, timezone

MS_PER_SECOND = 1_000
MS_PER_MIN = 60_000
MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
DAYS_PER_YEAR = 365.0  # ACT/365: the year fraction of pricing and the RV annualisation
MS_PER_YEAR = DAYS_PER_YEAR * MS_PER_DAY
HOURS_PER_YEAR = 24 * 365


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(dt: datetime) -> str:
    """The one timestamp format of every file: '2025-12-11T10:16:00Z' (ms kept when present)."""
    dt = dt.astimezone(timezone.utc)
    if dt.microsecond:
        return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"
    return dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_ms(ms: int | float) -> str:
    """Epoch milliseconds -> the file timestamp format."""
    return iso_utc(datetime.fromtimestamp(float(ms) / 1000.0, tz=timezone.utc))


def parse_time(value: str | int | float | datetime) -> datetime:
    """ISO 8601 (with Z or offset) or epoch milliseconds -> aware UTC datetime."""
    if type(value) is str and value[-1:] == "Z":  # the files' own format, parsed in C (100,000 a history page)
        try:
            return datetime.fromisoformat(value)  # Python >= 3.11 reads "Z" as UTC, as the path below does
        except ValueError:
            pass  # whatever it is, the general path decides
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, (int, float)):
        return datetime.fromtimestamp(float(value) / 1000.0, tz=timezone.utc)
    text = str(value).strip()
    if 11 <= len(text) <= 14 and text.isdecimal():  # what \d{11,14} matches, without a regex per call
        return datetime.fromtimestamp(int(text) / 1000.0, tz=timezone.utc)
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time or epoch ms: {text[:40]!r}") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=timezone.utc)


def time_ms(value: str | int | float | datetime | None) -> int | None:
    """Any stored time -> epoch ms for ordering (None when absent or unparseable)."""
    if value is None:
        return None
    try:
        return int(parse_time(value).timestamp() * 1000)
    except (ValueError, OverflowError, OSError):
        return None
