"""What a history page shows of each row is made once per row (100,000 on a cold render), so its
formatters take short cuts: fmt.time slices the files' own timestamp form once it parses, and the
auto row's evidence headline is built as one string. Both print exactly what the general rule does."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from calreport import fmt
from calreport.model import AutoRun, DataQuality
from calreport.report.views import auto_row
from calreport.timeutil import parse_time


def general_time(ts: str | None) -> str:
    """fmt.time's rule without its short cut: parse, then print the fields."""
    if not ts:
        return fmt.MISSING
    try:
        dt = parse_time(ts)
    except ValueError:
        return str(ts)[:40]
    if dt.year < 1000:
        return dt.strftime("%Y-%m-%d %H:%M UTC")
    return f"{dt.year}-{dt.month:02d}-{dt.day:02d} {dt.hour:02d}:{dt.minute:02d} UTC"


@pytest.mark.parametrize(
    "ts",
    [
        "2025-12-11T10:16:00Z", "2025-12-11T10:16:00.123Z", "2025-12-11T10:16Z", "2025-12-11T23:59:59.999Z",
        "2025-12-11T24:00:00Z", "0999-12-11T10:16:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z",
        "2025-02-30T10:16:00Z", "2025-13-01T10:16:00Z", "2025-12-11T10:61:00Z", "2025-12-11T10:16:00,5Z",
        "2025-12-11 10:16:00Z", "2025-12-11T10:16:00+01:00", "2025-12-11T10:16:00", "2025-12-11T1016Z",
        "\uff12025-12-11T10:16:00Z", "2025-12-11T10:16:00ZZ", "Z", "", None, "1765000000000", "not a time",
        "2025-12-11T10:16:00.123456Z", "2025-12-11T10:16:00.1234567Z",
    ],
)
def test_fmt_time_prints_what_the_general_rule_prints(ts: str | None) -> None:
    assert fmt.time(ts) == general_time(ts)


def test_fmt_time_matches_the_general_rule_on_many_stored_times() -> None:
    rnd = random.Random(7)
    t0 = datetime(1990, 1, 1, tzinfo=UTC)
    for _ in range(2000):
        dt = t0 + timedelta(milliseconds=rnd.randrange(0, 60 * 365 * 86_400_000))
        text = dt.strftime("%Y-%m-%dT%H:%M:%S") + (f".{dt.microsecond // 1000:03d}" if rnd.random() < 0.5 else "") + "Z"
        assert fmt.time(text) == general_time(text), text


def _run(**fields: object) -> AutoRun:
    return AutoRun.model_construct(run_id="a", ts="2025-12-13T16:00:00Z", underlying="BTC", status="ok", **fields)


@pytest.mark.parametrize(
    ("fields", "want"),
    [
        ({}, ""),
        ({"snapshots_used": 24}, ""),
        ({"snapshots_used": 24, "snapshots_in_window": 276}, "rests on 24 of 276 snapshots"),
        ({"snapshots_used": 0, "snapshots_in_window": 276, "span_hours": 1.0, "rv_returns_min": 3, "rv_returns_max": 4,
          "data_quality": DataQuality(status="ok", expiries=2)}, "rests on 0 of 276 snapshots"),
        ({"snapshots_used": 24, "span_hours": 2.0, "sigma_mode": "atm_iv", "rv_returns_min": 24, "rv_returns_max": 26},
         "rests on 24 snapshots over 2.0 h"),
        ({"snapshots_used": 1234, "snapshots_in_window": 5678, "span_hours": 0.5, "rv_returns_median": 24},
         "rests on 1,234 of 5,678 snapshots over 30 min, RV from a median 24 returns"),
        ({"snapshots_used": 24, "span_hours": 100.0, "rv_returns_min": 24, "rv_returns_max": 24, "sigma_mode": "rv",
          "data_quality": DataQuality(status="ok", expiries=None)}, "rests on 24 snapshots over 4.2 d, RV from 24 returns"),
        ({"snapshots_used": 24, "snapshots_in_window": 276, "span_hours": 1.917, "rv_returns_min": 24, "rv_returns_max": 26,
          "data_quality": DataQuality(status="degraded", expiries=2)},
         "rests on 24 of 276 snapshots over 1.9 h, 2 expiries, RV from 24-26 returns"),
        ({"snapshots_used": 24, "snapshots_in_window": 276, "rv_returns_min": 24, "sigma_mode": "mark_iv",
          "data_quality": DataQuality(status="ok", expiries=3)}, "rests on 24 of 276 snapshots, 3 expiries"),
    ],
)
def test_the_evidence_headline_says_what_each_row_carries(fields: dict, want: str) -> None:
    assert auto_row(_run(**fields)).used == want
