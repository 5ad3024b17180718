"""Dashboard truth: one clock per chart, failed runs off the smoothed line, legacy
rows with their own decision, the predecessor's placeholder vega labelled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from calreport.model import ApplyEvent, LiveRun, Multipliers
from calreport.report import charts, views
from calreport.report.render import render_site
from calreport.store.paths import Root

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def m(x: float) -> Multipliers:
    return Multipliers.model_validate({"global": x})


def _run(rid: str, hour: int, smoothed: float, status: str = "ok", feeds: bool | None = None) -> LiveRun:
    return LiveRun(run_id=rid, ts=f"2025-12-11T{hour:02d}:00:00Z", underlying="BTC", recommended=m(smoothed),
                   smoothed=m(smoothed), status=status, feeds_smoothing=feeds)


def test_a_policy_apply_steps_at_the_time_of_the_run_it_applied_and_a_force_apply_at_its_own() -> None:
    runs = [_run("a", 8, 1.04), _run("b", 10, 1.10)]
    # a replayed snapshot: run "a" (08:00) applied by the policy at 12:00 wall-clock; forced at 11:00
    events = [
        ApplyEvent(ts="2025-12-11T12:00:00Z", underlying="BTC", run_id="a", source="policy", previous=m(1.0), applied=m(1.04)),
        ApplyEvent(ts="2025-12-11T11:00:00Z", underlying="BTC", run_id="b", source="force", previous=m(1.04), applied=m(1.10)),
    ]
    chart = charts.multiplier_chart("BTC", runs, events)
    assert [row[-1] for row in chart.rows] == ["1.0400", "1.0400"]  # newest first: at 10:00 the policy's 08:00 step holds
    # one clock: the window is the runs' (the force-apply written at 11:00 is marked at the newest run, not
    # past it), and the applied line ends at what the YAML holds after the last write (the policy's 1.04)
    assert chart.x_ticks[-1].label == "12-11 10:00"
    marked = next(s for s in chart.series if s.name == "force-apply / rollback")
    assert [d.cls for d in marked.dots] == ["force"]


def test_failed_and_non_feeding_runs_are_not_drawn_on_the_smoothed_line() -> None:
    runs = [_run("a", 8, 1.04), _run("x", 9, 3.0, status="failed"), _run("t", 10, 2.0, feeds=False), _run("b", 11, 1.06)]
    smoothed = next(s for s in charts.multiplier_chart("BTC", runs, []).series if s.name == "smoothed")
    assert smoothed.path.count("L") == 1  # two points: a and b
    assert charts.multiplier_chart("BTC", runs, []).rows[1][2] == "2.0000"  # the table still lists every run


def test_legacy_rows_show_their_own_decision_and_the_placeholder_vega_is_labelled(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    rows.live(source="legacy", decision="apply", legacy_applied=True, samples=88, vega_sum=880.0,
              decision_reason="Legacy system applied: global d=0.1221; sample=88; vega=880 (imported; not applied by calreport)")
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    assert "legacy: applied" in html and "pill st-held" not in html and "pill st-legacy" in html
    assert "legacy vega 880 is the old system&#39;s placeholder (10 per quote), not a Black-76 vega" in html
    run = LiveRun(run_id="l", underlying="BTC", source="legacy", decision="hold", samples=47, vega_sum=470.0)
    row = views.live_row(run, views.derive_status(None, run))
    assert (row.status, row.decision) == ("legacy", "legacy: held")


@pytest.mark.realdata
def test_every_real_legacy_record_has_vega_exactly_ten_per_quote() -> None:
    """The label's claim, checked on the shared legacy records themselves."""
    d = SHARED / "legacy-calibration-runs"
    if not d.is_dir():
        pytest.skip("../shared/data is absent")
    recs = [json.loads(p.read_text()) for p in sorted(d.glob("*.json"))]
    assert recs and all(r["vega_sum"] == 10 * r["sample_size"] for r in recs)
