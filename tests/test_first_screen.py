"""The dashboard's first screen, its charts' one clock, its history tables' order and the compare view,
pinned without a browser (tests/test_browser_screens.py checks them in Chromium)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from foundation_helpers import force_apply

from calreport import fmt
from calreport.commands.cli import main
from calreport.model import AppliedEntry, ApplyEvent, LiveRun, Multipliers, RunFlag, Smile
from calreport.report import charts, compare
from calreport.report.render import read_inputs, render_site
from calreport.report.views import build_dashboard
from calreport.store.paths import Root
from calreport.store import applied as apply

NOW = datetime(2025, 12, 11, 12, 0, tzinfo=UTC)
REPO = Path(__file__).resolve().parents[1]


def m(x: float, **bands: float) -> Multipliers:
    return Multipliers.model_validate({"global": x, "bands": bands})


def dashboard(root, now=NOW):
    inp, _q = read_inputs(root, now=now)
    return build_dashboard(inp)


# --------------------------------------------------------------------------- first screen


def test_flags_are_one_summary_per_underlying_worst_first_not_a_banner_each(root, rows) -> None:
    rows.live("ETH", flags=[RunFlag(code="WING_GAP", message="7-30d <10D put: model -36.4 vp from market (> 5)"),
                            RunFlag(code="IV_DRIFT", message="ATM IV 7d moved")])
    rows.auto("ETH", flags=[RunFlag(code="WING_GAP", message="all <10D put")])
    rows.live("BTC", status="failed", reason="Unrealistic", mae_pct=55.0,
              flags=[RunFlag(code="WING_GAP", message="0-7d <10D put")])
    d = dashboard(root)
    assert [f.underlying for f in d.flags] == ["BTC", "ETH"]  # BTC has an error: first
    btc, eth = d.flags
    assert btc.level == "error" and btc.worst == "latest live run failed" and btc.counts == "1 error, 2 warnings"
    assert [i.level for i in btc.items] == ["error", "warn", "warn"]
    assert eth.counts == "1 warning, 1 note" and eth.items[-1].title == "ETH: auto run flags WING_GAP"
    assert eth.items[0].lines == ["WING_GAP: 7-30d <10D put: model -36.4 vp from market (> 5)", "IV_DRIFT: ATM IV 7d moved"]
    assert d.banners == []  # none of that is a page-wide banner


def test_the_first_screen_says_what_the_engine_uses_its_health_and_one_headline_error(root, rows) -> None:
    run = rows.live(smoothed=1.0833, bands={"0-7d": 1.05}, iv_error_vp=5.71, otm_vega_weighted_mae_pct=24.68,
                    ts="2025-12-11T11:30:00Z")
    force_apply(root, "BTC")
    card = next(c for c in dashboard(root).overview if c.underlying == "BTC")
    assert card.global_quoted  # the step model: bands without a level of their own use the global
    assert (card.applied, card.applied_bands, card.applied_source) == ("1.0833", "0-7d 1.0500", "force")
    assert card.health == "ok" and card.run_id == run.run_id and card.status == "applied"
    # 5.71 vp was measured at the values the run tested (the defaults); the force-apply replaced them and this
    # run has no quote detail to price the applied values on: no headline rather than the tested values' error
    assert card.headline == "-"
    others = {e.field: e.value for e in card.others}
    assert others["tested-iv-error"] == "5.71 vp"
    assert others["otm-vmae"] == "24.68%" and others["mae"] == "15.74%" and others["vmae"] == "12.82%"
    html = root.index_html.read_text()
    assert html.index('id="overview"') < html.index('id="current-applied"') < html.index('id="latest-run"')
    assert "OTM IV error of the applied calibration on the latest live run&#39;s marks" in html or \
        "OTM IV error of the applied calibration on the latest live run's marks" in html


SNAPSHOTS = REPO / ".." / "shared" / "data" / "deribit-snapshots"


@pytest.mark.realdata
@pytest.mark.skipif(not SNAPSHOTS.is_dir(), reason="shared data absent")
def test_the_headline_error_is_what_the_applied_calibration_quotes_against_the_latest_marks(tmp_path: Path) -> None:
    """It read the run's iv_error_vp, measured at the values the run tested (here the untouched defaults),
    after the run's own apply had replaced them: 2.58 vp on the first screen for a fit of 0.34 vp."""
    root = tmp_path / "root"
    snap = str(SNAPSHOTS / "BTC-2025-12-11T1936Z.json")
    assert main(["--root", str(root), "init"]) == 0
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", snap, "--rv", "0.43"]) == 0
    run = next(r for r in map(json.loads, (root / "history" / "live_calibration.jsonl").read_text().splitlines()) if r["type"] == "live_run")
    assert run["decision"] == "apply" and run["iv_error_vp"] > 1.0  # the defaults were far off; the fit applied whole
    d = dashboard(Root(root))
    card, section = d.overview[0], d.expiry_errors[0]
    assert card.underlying == section.underlying == "BTC"
    # the IV error per expiry's "all" row: the applied YAML priced on the run's quotes (its own independent
    # check is in test_surface_dashboard); under the fit applied whole it is the fit's error (the YAML rounds to 4 decimals)
    assert card.headline == fmt.vp(section.iv_error_vp) and abs(section.iv_error_vp - run["fit_iv_error_vp"]) < 0.002
    # the surface quotes every pillar at its band's level: the card does not say the engine uses the global
    assert not card.global_quoted
    html = (root / "site" / "index.html").read_text()
    overview = html[html.index('id="overview"'):html.index('id="current-applied"')]
    btc_card = overview[overview.index('data-underlying="BTC"'):overview.index('data-underlying="ETH"')]
    assert "Global (fallback)" in btc_card and "Engine uses (global)" not in btc_card
    assert "Engine uses (global)" in overview[overview.index('data-underlying="ETH"'):]  # ETH: never applied, the defaults
    assert {e.field: e.value for e in card.others}["tested-iv-error"] == fmt.vp(run["iv_error_vp"])
    # the same snapshot again: held (nothing to change), so the values it tested are the applied ones
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", snap, "--rv", "0.43"]) == 0
    again = [r for r in map(json.loads, (root / "history" / "live_calibration.jsonl").read_text().splitlines()) if r["type"] == "live_run"][-1]
    assert again["decision"] == "hold"
    d = dashboard(Root(root))
    assert d.overview[0].headline == fmt.vp(d.expiry_errors[0].iv_error_vp)
    assert abs(d.expiry_errors[0].iv_error_vp - again["iv_error_vp"]) < 0.01


def test_a_live_run_older_than_stale_after_hours_shows_a_staleness_banner(root, rows) -> None:
    rows.live(ts="2025-12-11T11:00:00Z")
    assert dashboard(root, now=datetime(2025, 12, 11, 12, 59, tzinfo=UTC)).banners == []  # 1.98 h: fresh (default 2 h)
    d = dashboard(root, now=datetime(2025, 12, 11, 13, 30, tzinfo=UTC))
    assert [b.title for b in d.banners] == ["Stale: no recent live run"]
    assert "BTC latest live run 2.5 h old" in d.banners[0].text and "stale_after_hours = 2.0 h" in d.banners[0].text
    assert d.overview[0].stale and d.overview[0].health == "warn"
    text = root.calibration_config.read_text()
    root.calibration_config.write_text(text.replace("stale_after_hours: 2.0,", "stale_after_hours: 3,"))
    assert dashboard(root, now=datetime(2025, 12, 11, 13, 30, tzinfo=UTC)).banners == []


def test_auto_history_is_dated_by_the_window_end_it_is_ordered_by_and_data_health_agrees(root, rows) -> None:
    # a replayed run (window ending 12:00 yesterday) after one without --as-of (window ending at its run time)
    rows.auto(ts="2025-12-11T12:34:00Z", as_of="2025-12-11T12:34:00Z", status="failed", reason="no snapshots")
    rows.auto(ts="2025-12-11T12:35:00Z", as_of="2025-12-10T12:00:00Z", status="degraded")
    d = dashboard(root)
    dates = [r.time for r in d.auto_table.rows]
    assert dates == sorted(dates, reverse=True) == ["2025-12-11 12:34 UTC", "2025-12-10 12:00 UTC"]
    assert d.auto_table.rows[1].ran_at == "2025-12-11 12:35 UTC"
    assert d.health[0].status == d.auto_table.rows[0].status  # the card shows the newest row's status
    render_site(root, now=NOW)
    assert "Window end</th>" in root.index_html.read_text()


# --------------------------------------------------------------------------- charts on one clock


def _run(rid: str, ts: str, smoothed: float) -> LiveRun:
    return LiveRun(run_id=rid, ts=ts, underlying="BTC", recommended=m(smoothed), smoothed=m(smoothed), status="ok")


def test_replayed_runs_and_later_applies_share_the_runs_clock_and_every_series_is_drawn() -> None:
    runs = [_run("a", "2024-12-29T08:00:00Z", 1.04), _run("b", "2025-01-02T08:00:00Z", 1.06)]
    events = [  # written a year later, as on a replayed harvest
        ApplyEvent(ts="2026-01-05T10:00:00Z", underlying="BTC", run_id="a", source="policy", previous=m(1.0), applied=m(1.04)),
        ApplyEvent(ts="2026-01-05T11:00:00Z", underlying="BTC", run_id="b", source="force", previous=m(1.04), applied=m(1.06)),
        ApplyEvent(ts="2026-01-05T12:00:00Z", underlying="BTC", run_id="a", source="rollback", previous=m(1.06), applied=m(1.04)),
    ]
    chart = charts.multiplier_chart("BTC", runs, events)
    assert [t.label for t in chart.x_ticks][0] == "2024-12-29" and chart.x_ticks[-1].label == "2025-01-02"  # years shown
    assert chart.x_ticks[-1].anchor == "end" and chart.x_ticks[0].anchor == "start"  # no label clipped at an edge
    by_name = {s.name: s for s in chart.series}
    assert by_name["applied"].path.startswith(f"M{charts.LEFT:.1f},")  # the policy apply steps at run a's time
    assert [d.cls for d in by_name["force-apply / rollback"].dots] == ["force", "rollback"]
    assert all(float(d.x) <= charts.WIDTH - charts.RIGHT for s in chart.series for d in s.dots)
    assert len(by_name["smoothed"].dots) == 2 and all(d.label for s in chart.series for d in s.dots)  # hover values
    assert chart.rows[-1][-1] == "1.0400"  # at run a: the policy apply of a
    assert chart.rows[0][-1] == "1.0400"  # at run b: the force-apply and the rollback were written after it


def test_a_single_smoothed_point_is_drawn_and_the_table_says_1_point() -> None:
    chart = charts.multiplier_chart("BTC", [_run("a", "2025-12-11T08:00:00Z", 1.04)], [])
    smoothed = next(s for s in chart.series if s.name == "smoothed")
    assert len(smoothed.dots) == 1  # a one-point path draws nothing; the dot does
    assert chart.table_label == "Table (1 point)"


# --------------------------------------------------------------------------- compare


def _smile(*values: float) -> Smile:
    return Smile.model_validate({"nodes": [-1.5, 0.0, 1.5], "global": list(values)})


def test_compare_gives_levels_bands_smile_nodes_and_errors_with_the_difference() -> None:
    va = Multipliers.model_validate({"global": 1.04, "bands": {"0-7d": 1.02}, "smile": _smile(1.2, 1.0, 1.1).model_dump(by_alias=True)})
    vb = Multipliers.model_validate({"global": 1.0833, "bands": {"7-30d": 1.09}, "smile": _smile(1.25, 1.0, 1.1).model_dump(by_alias=True)})
    a = LiveRun(run_id="A", ts="2025-12-11T08:00:00Z", underlying="BTC", fit_iv_error_vp=5.0, fit_vega_weighted_mae_pct=15.0,
                recommended=va, smoothed=va)
    b = LiveRun(run_id="B", ts="2025-12-11T10:00:00Z", underlying="BTC", fit_iv_error_vp=4.25, fit_vega_weighted_mae_pct=15.0,
                recommended=vb, smoothed=vb)
    c = compare.compare(compare.side_of_run(a), compare.side_of_run(b))
    rows = {(r.section, r.name): r for r in c.rows}
    assert (rows["level", "global"].a, rows["level", "global"].b, rows["level", "global"].diff) == ("1.0400", "1.0833", "+0.0433")
    assert rows["band", "0-7d"].b == "none (global)" and rows["band", "7-30d"].a == "none (global)"
    assert rows["smile", "global x=-1.50"].diff == "+0.0500" and rows["smile", "global x=-1.50"].changed
    assert not rows["smile", "global x=1.50"].changed
    assert rows["error", "OTM IV error (vega-weighted)"].diff == "-0.75 vp"
    assert not rows["error", "Price vMAE, all quotes"].changed
    assert compare.changed_smile_nodes(a.smoothed.smile, b.smoothed.smile) == [{"node": "global x=-1.50", "old": "1.2000", "new": "1.2500"}]


def test_each_side_s_errors_are_measured_at_the_values_it_shows() -> None:
    """A run's errors at the engine's values *before* it (iv_error_vp: measured at `tested`) are not the
    errors of the run's values: the comparison shows the errors of the values on each side (the run's fit,
    when those are the values shown; the applied side's, when the YAML holds the fit of the run it came
    from), else "-"."""
    fit = Multipliers.model_validate({"global": 0.9882, "bands": {"0-7d": 0.9185}})
    run = LiveRun(run_id="R", ts="2025-12-11T19:36:00Z", underlying="BTC", recommended=fit, smoothed=fit,
                  tested=Multipliers(global_=1.0), iv_error_vp=2.58, fit_iv_error_vp=0.34,
                  otm_vega_weighted_mae_pct=13.27, fit_otm_vega_weighted_mae_pct=1.70, vega_weighted_mae_pct=7.61,
                  fit_vega_weighted_mae_pct=1.05, mae_pct=11.45)
    side = compare.side_of_run(run)
    assert side.errors == {"iv_error_vp": 0.34, "otm_vmae": 1.70, "vmae": 1.05}
    entry = AppliedEntry(global_=0.9882, bands={"0-7d": 0.9185}, updated_at="2026-12-07T20:15:35Z", source="policy", run_id="R", reason="r")
    assert compare.side_of_applied(entry, run).errors == side.errors
    c = compare.compare(compare.side_of_applied(entry, run), side)
    assert [r.changed for r in c.section("error")] == [False, False, False]
    smoothed_only = run.model_copy(update={"smoothed": Multipliers(global_=0.99, bands={"0-7d": 0.93})})
    assert set(compare.side_of_run(smoothed_only).errors.values()) == {None}  # nobody measured the smoothed values
    capped = entry.model_copy(update={"global_": 1.0})
    assert set(compare.side_of_applied(capped, run).errors.values()) == {None}


def test_each_live_row_links_a_compare_page_and_calreport_diff_prints_the_same(root, rows, capsys) -> None:
    first = rows.live(smoothed=1.04, bands={"0-7d": 1.02})
    apply.apply_values(root, "BTC", first.smoothed, source="policy", run_id=first.run_id, reason="Policy")
    second = rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    render_site(root, now=NOW)
    html = root.index_html.read_text()
    for run in (first, second):
        assert f'href="compare/{run.run_id}.html" data-compare="{run.run_id}"' in html
    page = (root.site_dir / "compare" / f"{second.run_id}.html").read_text()
    assert re.search(r'data-name="global"[^>]*><td>global</td><td class="num">1.0400</td><td class="num">1.0833</td><td class="num changed">\+0.0433</td>', page)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "calreport", "--root", str(root.path), *args],
                              capture_output=True, text=True, cwd=REPO, timeout=60)

    def in_process(*args: str) -> tuple[int, str, str]:  # main(argv) prints what the process would
        capsys.readouterr()
        code = main(["--root", str(root.path), *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = in_process("diff", second.run_id, "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["a"]["label"] == "applied" and doc["b"]["run_id"] == second.run_id
    assert {"section": "level", "name": "global", "a": "1.0400", "b": "1.0833", "diff": "+0.0433", "changed": True, "unit": ""} in doc["rows"]
    code, out, _ = in_process("diff", first.run_id, second.run_id)
    assert code == 0 and "* level global" in out and "+0.0433" in out
    bad = cli("diff", "NOPE")  # a real process: the refusal is one line on stderr, no traceback
    assert bad.returncode == 1 and bad.stderr.strip().count("\n") == 0 and "no live run 'NOPE'" in bad.stderr


def test_a_run_on_a_manual_rv_does_not_claim_zero_returns_behind_it(tmp_path: Path) -> None:
    """`--rv 0.45` is a number the user gave: no hourly returns stand behind it, so the card reads
    'RV_7d from manual', not 'manual (0 returns)' (which reads as an empty price history)."""
    from calreport.commands import usecases as actions
    from calreport.commands.workspace import Workspace
    from calreport.store.paths import Root
    from tests.test_calibrate import synth_rows, write_snapshot

    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1))
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    actions.calibrate(Workspace.open(root), "BTC", snap, rv=0.45)
    page = (root.path / "site" / "index.html").read_text()
    shown = page.split("<dt>RV_7d from</dt><dd>", 1)[1].split("</dd>", 1)[0]
    assert shown.startswith("manual") and "returns" not in shown
