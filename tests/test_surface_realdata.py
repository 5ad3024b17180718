"""The issue-20 done-when figures of the prototype surface (fitted and applied whole) on the shared snapshots.

Errors come from proto/measure.py's independent measure (scipy.stats.norm on the priced rows, the universe of
tests/test_smile.py). Skipped when /work/shared/data is absent. Slow-ish: one surface fit (2-6 s) per snapshot.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SNAP = Path("/work/shared/data/deribit-snapshots")
pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")]
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "proto"))


@pytest.fixture(scope="module")
def measured() -> dict:
    import measure  # proto/measure.py

    return measure.measure(0.35, verbose=False)


@pytest.mark.parametrize("name", ["BTC-2025-12-11T1936Z.json", "ETH-2025-12-11T1936Z.json", "BTC-2025-12-13T1543Z.json"])
def test_fitted_surface_quotes_within_1vp_put_wing_within_3vp_and_free_of_arbitrage(measured: dict, name: str) -> None:
    row = measured["snapshots"][name]
    assert row["otm_iv_err_vp"] <= 1.0
    assert -3.0 <= row["put_lt10_gap_vp"] <= 3.0
    assert row["listed"]["first"] is None and row["grid"]["first"] is None, (row["listed"], row["grid"])
    assert row["edge_jump_vp"] <= 0.05
    assert row["err_lt7d_vp"] <= 2.0


def test_out_of_sample_and_second_run(measured: dict) -> None:
    assert measured["oos_err_vp"] <= 0.6 * measured["oos_flat_err_vp"]
    assert measured["second_run"]["action"] == "apply" and measured["second_run"]["err_vp"] <= 1.0
