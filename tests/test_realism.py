"""The realism table: insane auto runs are failed, realistic ones stay ok (default thresholds from RealismConfig)."""

from __future__ import annotations

import math

import pytest

from calreport.realism import (
    REASON_DATA_FAILED,
    REASON_DEGRADED,
    REASON_OK,
    REASON_UNREALISTIC,
    REASON_UNREALISTIC_LIVE,
    MAX_MAE,
    MAX_MULT,
    MAX_VEGA_MAE,
    MIN_MULT,
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


def test_the_named_constants_are_the_config_models_defaults():
    """One home of the defaults: the constants the request names are read from RealismConfig."""
    assert (MIN_MULT, MAX_MULT, MAX_MAE, MAX_VEGA_MAE) == (
        DEFAULTS.min_mult, DEFAULTS.max_mult, DEFAULTS.max_mae, DEFAULTS.max_vega_mae
    )
    assert (MIN_MULT, MAX_MULT, MAX_MAE, MAX_VEGA_MAE) == (0.7, 1.6, 400.0, 200.0)


@pytest.mark.parametrize(
    ("multiplier", "mae", "vmae", "dq", "status", "reason"),
    [
        # the request's history table, called exactly as the request writes the call
        (4.8579, 55.67, None, "failed", "failed", REASON_DATA_FAILED),
        (4.9737, 54.45, None, "failed", "failed", REASON_DATA_FAILED),
        (0.5000, 4668684.92, None, "ok", "failed", REASON_UNREALISTIC),
        # modest multipliers and errors stay ok; degraded data stays degraded
        (1.0, 30.0, 20.0, "ok", "ok", REASON_OK),
        (1.3, 55.0, None, "ok", "ok", REASON_OK),
        (1.15, 40.0, 25.0, "degraded", "degraded", REASON_DEGRADED),
    ],
)
def test_the_requests_table_holds_when_called_as_the_request_wrote_it(multiplier, mae, vmae, dq, status, reason):
    assert assess_calibration_realism(multiplier, mae, vmae, dq) == (status, reason)


def test_the_requests_call_prints_a_failed_unrealistic_status_in_a_fresh_interpreter():
    import subprocess
    import sys

    probe = "from calreport.realism import assess_calibration_realism as a; print(a(0.5, 4668684.92, None, 'ok'))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == repr(("failed", REASON_UNREALISTIC)) and "Unrealistic" in out


@pytest.mark.parametrize("bad", ["weird", "OK", "", "passed"])
def test_an_unknown_data_quality_status_is_refused_naming_the_allowed_values(bad):
    with pytest.raises(ValueError, match="ok, degraded, failed"):
        assess_calibration_realism(1.0, 10.0, 10.0, bad)


def test_an_unrecorded_data_quality_status_is_judged_on_the_numbers_alone():
    """None: a legacy record that never recorded data quality (import-legacy passes None)."""
    assert assess_calibration_realism(1.0, 10.0, 10.0, None) == ("ok", REASON_OK)
    assert assess_calibration_realism(0.5, 10.0, 10.0, None)[0] == "failed"
