"""An auto run says what it rests on, and a run resting on less than the configured minimums is
degraded with that reason, never ok."""

from __future__ import annotations

from dataclasses import replace

from calreport.calibration.auto import Evidence, FULL_WEEK_RETURNS, _verdict, assess_data_quality, required_span_hours
from calreport.model import AutoRun, CalibrationConfig, DataQuality
from calreport.report.views import auto_row

GOOD = Evidence(
    lines=1000, schema_errors=0, bad_names=0, snapshots=300, snapshots_expected=300, expiries=3, strikes=40, samples=500,
    rv_returns=FULL_WEEK_RETURNS, snapshots_without_rv=0, above_bound=0, in_range=600, dte_label="3-10", window="w",
    window_label="14d", snapshots_used=300, span_hours=330.0, lookback_hours=336.0,
)


def test_enough_evidence_is_ok() -> None:
    assert assess_data_quality(GOOD, CalibrationConfig()).status == "ok"


def test_a_14d_run_over_two_hours_of_snapshots_is_degraded_naming_the_span() -> None:
    """The shared harvest's case: 24 snapshots across 1.9 h."""
    cfg = CalibrationConfig()
    dq = assess_data_quality(replace(GOOD, snapshots_used=24, span_hours=1.9), cfg)
    assert dq.status == "degraded"
    assert dq.issues[0] == "snapshots used span 1.9 h of the 14d lookback (< 12 h, auto.min_span_hours)"


def test_too_few_snapshots_used_degrade_and_the_verdict_says_so_through_realism() -> None:
    from calreport.calibration.auto import AutoFit  # noqa: PLC0415

    cfg = CalibrationConfig()
    dq = assess_data_quality(replace(GOOD, snapshots_used=5), cfg)
    fit = AutoFit.__new__(AutoFit)
    object.__setattr__(fit, "multiplier", 1.0)
    object.__setattr__(fit, "mae_pct", 2.0)
    object.__setattr__(fit, "vega_weighted_mae_pct", 2.0)
    object.__setattr__(fit, "on_bound", False)
    status, reason = _verdict(fit, dq, cfg)
    assert status == "degraded" and "rests on 5 snapshots (< auto.min_snapshots_used 12)" in reason


def test_the_minimums_are_settings_and_a_short_lookback_needs_half_its_length() -> None:
    cfg = CalibrationConfig.model_validate({"auto": {"min_span_hours": 1, "min_snapshots_used": 3}})
    assert assess_data_quality(replace(GOOD, snapshots_used=24, span_hours=1.9), cfg).status == "ok"
    assert required_span_hours(12, 1.5) == 0.75 and required_span_hours(12, 336) == 12


def test_the_auto_row_headline_names_snapshots_span_expiries_and_rv_returns() -> None:
    run = AutoRun.model_construct(
        run_id="a", ts="2025-12-13T16:00:00Z", underlying="BTC", status="degraded", snapshots_used=24, snapshots_in_window=276,
        span_hours=1.917, rv_returns_min=24, rv_returns_max=26, sigma_mode="rv",
        data_quality=DataQuality(status="degraded", expiries=2),
    )
    assert auto_row(run).used == "rests on 24 of 276 snapshots over 1.9 h, 2 expiries, RV from 24-26 returns"
