"""Honest auto runs: what a lookback really used (snapshots, their span, why the others were dropped).

The real-data test recounts the shared BTC harvest with its own reader (gzip JSON lines, own
instrument parser, own nearest-expiry index proxy and hourly-return count) and requires the run's
snapshots_used, first/last snapshot and dropped counts to match exactly.
"""

from __future__ import annotations

import gzip
import json
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from calreport.calibration.auto import window_honesty
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.store.paths import Root
from tests.independent import copy_compacted_harvest

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
HARVEST = SHARED / "deribit-harvest-2025-12" / "BTC"
HOUR = 3_600_000
_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}


def test_window_honesty_counts_used_snapshots_their_span_and_drop_reasons() -> None:
    times = np.array([0, 10, 20, 30, 40]) * 60_000
    rv_ok = np.array([False, False, True, True, True])
    got = window_honesty(times, rv_ok, np.array([20, 40]) * 60_000, np.array([5, 10, 30, 31, 32]))
    assert got["snapshots_used"] == 2 and got["snapshots_in_window"] == 5
    assert got["snapshots_dropped"] == {"rv_history": 2, "no_usable_quotes": 1}
    assert got["span_hours"] == pytest.approx(20 / 60, abs=1e-3)
    assert got["first_snapshot"] == "1970-01-01T00:20:00Z" and got["rv_returns_median"] == 31


def test_the_auto_table_shows_snapshots_used_and_the_real_span_beside_the_lookback(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    from calreport.report.render import render_site

    rows.auto(snapshots_used=24, snapshots_in_window=276, span_hours=1.917)
    rows.auto()  # an older row: nothing invented
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    assert html.count("rests on 24 of 276 snapshots over 1.9 h") == 1


def _expiry_ms(code: str) -> int:
    return int(datetime(2000 + int(code[-2:]), _MONTHS[code[-5:-2]], int(code[:-5]), 8, tzinfo=UTC).timestamp() * 1000)


@pytest.mark.realdata
def test_a_14d_lookback_on_the_shared_harvest_reports_the_24_snapshots_it_really_used(tmp_path: Path, compacted_btc_harvest: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    copy_compacted_harvest(compacted_btc_harvest, root)  # the run's compacted copy (the format is not the point)
    as_of = datetime(2025, 12, 13, 16, tzinfo=UTC)
    run = actions.run_auto_calibration(Workspace.open(root), "BTC", lookback="14d", as_of=as_of, compact=False)

    # own reader: snapshot time -> forward of its nearest unexpired expiry (the index proxy)
    nearest: dict[int, tuple[int, float]] = {}
    for f in sorted(HARVEST.glob("*.jsonl.gz")):
        with gzip.open(f, "rt") as fh:
            for line in fh:
                r = json.loads(line)
                t = int(r.get("harvested_at") or r["creation_timestamp"])
                e = _expiry_ms(r["instrument_name"].split("-")[1])
                if e > t and (t not in nearest or e < nearest[t][0]):
                    nearest[t] = (e, float(r["underlying_price"]))
    snaps = sorted(nearest)
    closes: dict[int, float] = {}
    for t in snaps:  # last price in each clock hour
        closes[t // HOUR] = nearest[t][1]
    hours = sorted(closes)

    def returns_before(t: int) -> int:
        end = (t // HOUR) * HOUR - 1
        hs = [h for h in hours if end - 7 * 24 * HOUR <= h * HOUR <= end]
        return sum(1 for a, b in zip(hs, hs[1:], strict=False) if b == a + 1)

    end_ms = int(as_of.timestamp() * 1000)
    window = [t for t in snaps if end_ms - 14 * 24 * HOUR < t <= end_ms]
    counts = defaultdict(int)
    used = [t for t in window if returns_before(t) >= 24]
    counts["rv_history"] = len(window) - len(used)
    assert run.snapshots_in_window == len(window) == 276
    assert run.snapshots_used == len(used) == 24
    assert run.snapshots_dropped == {"rv_history": counts["rv_history"], "no_usable_quotes": 0}
    assert run.first_snapshot == datetime.fromtimestamp(used[0] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert run.span_hours == pytest.approx((used[-1] - used[0]) / HOUR, abs=1e-3)
    assert run.rv_source and run.rv_source.startswith("harvest")
