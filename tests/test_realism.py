"""The realism table: insane auto runs are failed, realistic ones stay ok (default thresholds from RealismConfig)."""

from __future__ import annotations

import math

import pytest

from calreport.calibration.realism import (
    REASON_DATA_FAILED,
    REASON_DEGRADED,
    REASON_OK,
    REASON_UNREALISTIC,
    REASON_UNREALISTIC_LIVE,
    assess_calibration_realism,
)
from calreport.model import RealismConfig

DEFAULTS = RealismConfig()  # the config model is the one home of the default thresholds


@pytest.mark.parametrize(
    ("multiplier", "mae", "vmae", "dq", "expected"),
    [
        # the request's history table
        (4.8579, 55.67, None, "failed", ("failed", REASON_DATA_FAILED)),
        (4.9737, 54.45, None, "failed", ("failed", REASON_DATA_FAILED)),
        (0.5000, 4668684.92, None, "ok", ("failed", REASON_UNREALISTIC)),
        # realistic runs stay ok
        (1.10, 15.74, 12.82, "ok", ("ok", REASON_OK)),
        (1.0, 30.0, None, "ok", ("ok", REASON_OK)),
        (1.10, 15.74, 12.82, "degraded", ("degraded", REASON_DEGRADED)),
        # each threshold on its own
        (0.69, 10.0, 10.0, "ok", ("failed", REASON_UNREALISTIC)),
        (1.61, 10.0, 10.0, "ok", ("failed", REASON_UNREALISTIC)),
        (1.0, 400.01, 10.0, "ok", ("failed", REASON_UNREALISTIC)),
        (1.0, 10.0, 200.01, "ok", ("failed", REASON_UNREALISTIC)),
        # thresholds are inclusive bounds of the sane range
        (0.7, 400.0, 200.0, "ok", ("ok", REASON_OK)),
        (1.6, 400.0, 200.0, "ok", ("ok", REASON_OK)),
        # unrealistic beats degraded; data-quality failure beats everything
        (0.5, 4668684.92, None, "degraded", ("failed", REASON_UNREALISTIC)),
        (1.0, 10.0, 10.0, "failed", ("failed", REASON_DATA_FAILED)),
    ],
)
def test_request_realism_table(multiplier, mae, vmae, dq, expected):
    assert assess_calibration_realism(multiplier, mae, vmae, dq, thresholds=DEFAULTS) == expected


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_missing_or_non_finite_multiplier_is_unrealistic(bad):
    assert assess_calibration_realism(bad, 10.0, 10.0, "ok", thresholds=DEFAULTS)[0] == "failed"


def test_non_finite_errors_are_unrealistic():
    assert assess_calibration_realism(1.0, math.nan, 10.0, "ok", thresholds=DEFAULTS)[0] == "failed"
    assert assess_calibration_realism(1.0, 10.0, math.inf, "ok", thresholds=DEFAULTS)[0] == "failed"


def test_thresholds_are_overridable():
    loose = RealismConfig(min_mult=0.4, max_mult=2.0, max_mae=1e9, max_vega_mae=1e9)
    assert assess_calibration_realism(0.5, 4668684.92, None, "ok", thresholds=loose) == ("ok", REASON_OK)
    tight = RealismConfig(min_mult=0.95, max_mult=1.05, max_mae=20, max_vega_mae=10)
    assert assess_calibration_realism(1.10, 15.74, 12.82, "ok", thresholds=tight)[0] == "failed"


def test_live_runs_get_the_live_wording_of_the_unrealistic_reason():
    assert assess_calibration_realism(0.5, 4668684.92, None, "ok", thresholds=DEFAULTS, kind="live") == ("failed", REASON_UNREALISTIC_LIVE)
    assert "auto" not in REASON_UNREALISTIC_LIVE


def test_thresholds_are_required_so_no_second_set_of_defaults_can_drift():
    with pytest.raises(TypeError):
        assess_calibration_realism(1.0, 10.0, 10.0, "ok")  # type: ignore[call-arg]
