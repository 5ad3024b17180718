"""Run flags (calibration/flags.py) and alerts (commands/adapters/alerts.py).

Alerts are delivered to a real program (stdin) and to a real http.server on 127.0.0.1; a slow
command is killed with its process group; a failed delivery is recorded and never fails the run.
"""

from __future__ import annotations

import json
import math
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from calreport.calibration.flags import auto_flags, live_flags, new_flags
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import (
    AlertEvent,
    AutoRun,
    CalibrationConfig,
    DataQuality,
    DeltaBucket,
    ExpirySummary,
    GroupMetrics,
    LiveRun,
    RunFlag,
)
from calreport.store.history import read_history
from calreport.store.paths import Root
from tests.independent import copy_compacted_harvest
from tests.test_calibrate import synth_rows, write_snapshot

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CFG = CalibrationConfig()


def _codes(flags: list[RunFlag]) -> list[str]:
    return [f.code for f in flags]


def _live(**kw: Any) -> LiveRun:
    base: dict[str, Any] = dict(run_id="r", ts="2025-12-11T10:00:00Z", underlying="BTC", status="ok", decision="hold",
                                rv_source="harvest", rv_returns=168, atm_iv=0.42, atm_ratio=1.0)
    return LiveRun(**{**base, **kw})


def test_each_flag_fires_on_its_condition_with_its_numbers() -> None:
    assert _codes(live_flags(_live(), [], CFG)) == []
    assert live_flags(_live(rv_returns=11), [], CFG)[0].message == "RV_7d from 11 hourly returns (< 120)"
    assert _codes(live_flags(_live(rv_returns=11, rv_source="manual"), [], CFG)) == []
    assert _codes(live_flags(_live(rv_returns=11, sigma_mode="atm_iv"), [], CFG)) == []
    drift = live_flags(_live(atm_iv=0.50), [], CFG, applied_atm_iv=0.42)
    assert _codes(drift) == ["IV_DRIFT"] and "+8.0 vp" in drift[0].message
    assert _codes(live_flags(_live(atm_iv=0.44), [], CFG, applied_atm_iv=0.42)) == []
    assert _codes(live_flags(_live(atm_ratio=0.65), [], CFG)) == ["ATM_RV_RANGE"]
    assert _codes(live_flags(_live(recommended_on_bound=True), [], CFG)) == ["ON_FIT_BOUND"]
    assert _codes(live_flags(_live(decision="apply", status="degraded"), [], CFG)) == ["DEGRADED_APPLIED"]
    wing = {"all": {"put_lt10": DeltaBucket(samples=3, gap_vp=-11.0)},
            "0-7d": {"put_lt10": DeltaBucket(samples=3, gap_vp=-11.0), "call_lt10": DeltaBucket(samples=2, gap_vp=4.0)}}
    flags = live_flags(_live(by_delta_bucket=wing), [], CFG)
    assert _codes(flags) == ["WING_GAP"] and flags[0].message.startswith("0-7d <10D put: model -11.0 vp")
    exp = [ExpirySummary(expiry="2025-12-15T08:00:00Z", dte=1.7, samples=40, vega_weighted_mae_pct=43.0),
           ExpirySummary(expiry="2025-12-19T08:00:00Z", dte=5.7, samples=40, vega_weighted_mae_pct=12.0)]
    flags = live_flags(_live(by_band={"0-7d": GroupMetrics(vega_weighted_mae_pct=20.0)}), exp, CFG)
    assert _codes(flags) == ["SHORT_EXPIRY_OUTLIER"] and "2025-12-15 (1.7d)" in flags[0].message


def test_wing_and_outlier_flags_say_which_values_they_measured() -> None:
    """A live run's buckets and expiries are priced at the values it tested (those applied before it): once
    the run is applied the engine no longer quotes them, so 'model -11.0 vp from market' alone read as the
    engine's wing now. An auto run's buckets are at its fitted multiplier."""
    wing = {"all": {"put_lt10": DeltaBucket(samples=3, gap_vp=-11.0)}, "0-7d": {"put_lt10": DeltaBucket(samples=3, gap_vp=-11.0)}}
    (flag,) = live_flags(_live(by_delta_bucket=wing, multiplier_tested=1.0), [], CFG)
    assert flag.message == "0-7d <10D put: model -11.0 vp from market at the values the run tested (> 5)"
    exp = [ExpirySummary(expiry="2025-12-15T08:00:00Z", dte=1.7, samples=40, vega_weighted_mae_pct=43.0)]
    (flag,) = live_flags(_live(by_band={"0-7d": GroupMetrics(vega_weighted_mae_pct=20.0)}), exp, CFG)
    assert flag.message == "expiry 2025-12-15 (1.7d): vMAE 43.0 % vs 0-7d band 20.0 % (> 2x) at the values the run tested"
    run = AutoRun(run_id="a", underlying="BTC", samples=500, multiplier=1.0, data_quality=DataQuality(rv_returns=168),
                  by_delta_bucket={"all": {"put_lt10": DeltaBucket(samples=3, gap_vp=-11.0)}})
    (flag,) = auto_flags(run, CFG)
    assert flag.message == "all <10D put: model -11.0 vp from market at the fitted multiplier (> 5)"


def test_auto_flags_and_new_flags_compare_codes_with_the_previous_run() -> None:
    run = AutoRun(run_id="a", underlying="BTC", samples=500, multiplier=3.0, multiplier_on_bound=True,
                  data_quality=DataQuality(rv_returns=40))
    assert _codes(auto_flags(run, CFG)) == ["THIN_RV", "ON_FIT_BOUND"]
    now = [RunFlag(code="THIN_RV", message="x"), RunFlag(code="WING_GAP", message="y"), RunFlag(code="WING_GAP", message="z")]
    assert new_flags(now, [RunFlag(code="THIN_RV", message="older")]) == ["WING_GAP"]
    assert new_flags(now, None) == ["THIN_RV", "WING_GAP"]


@pytest.mark.realdata
def test_the_shared_btc_snapshot_flags_the_weekend_expiry_and_the_thin_rv(tmp_path: Path, compacted_btc_harvest: Path) -> None:
    snap = SHARED / "deribit-snapshots" / "BTC-2025-12-13T1543Z.json"
    if not snap.is_file():
        pytest.skip("../shared/data is absent")
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    copy_compacted_harvest(compacted_btc_harvest, root)  # the run's compacted copy (the format is not the point)
    run = actions.run_live_calibration(Workspace.open(root), "BTC", snap)
    codes = _codes(run.flags or [])
    assert "THIN_RV" in codes and "SHORT_EXPIRY_OUTLIER" in codes and "WING_GAP" in codes
    outlier = next(f for f in run.flags or [] if f.code == "SHORT_EXPIRY_OUTLIER")
    assert "2025-12-15 (1.7d)" in outlier.message  # the 1.7-day weekend expiry the issue measured


# ------------------------------------------------------------------ alerts

RECORDER = "import sys; open(sys.argv[1], 'ab').write(sys.stdin.buffer.read() + b'\\n')"


def _alerts(root: Root, text: str) -> None:
    cfg = root.calibration_config.read_text()
    root.calibration_config.write_text(cfg.replace("alerts: {command: null, webhook: null, timeout_s: 5.0}", text))


def _failed_snapshot(tmp_path: Path) -> Path:
    """Six quotes: fewer than fit.min_samples, so the run is failed."""
    return write_snapshot(tmp_path / "thin.json", synth_rows(expiries_days=(10,), strikes_per_side=1))


def _alert_rows(root: Root) -> list[AlertEvent]:
    return [r for r in read_history(root.alert_history).rows if isinstance(r, AlertEvent)] if root.alert_history.exists() else []


def test_an_alert_command_receives_exactly_one_json_event_for_a_failed_run(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    got = tmp_path / "events.jsonl"
    _alerts(root, "alerts: {command: " + json.dumps([sys.executable, "-c", RECORDER, str(got)]) + "}")
    run = actions.run_live_calibration(Workspace.open(root), "BTC", _failed_snapshot(tmp_path), rv=0.45)
    assert run.status == "failed"
    lines = got.read_bytes().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["run_id"] == run.run_id and event["triggers"][0] == "failed" and event["status"] == "failed"
    assert event["reason"].startswith("Too few usable quotes")
    (row,) = _alert_rows(root)
    assert row.deliveries[0].ok and row.deliveries[0].channel == "command"


def test_a_routine_hold_raises_no_alert_and_repeated_flags_are_not_new(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    got = tmp_path / "events.jsonl"
    _alerts(root, "alerts: {command: " + json.dumps([sys.executable, "-c", RECORDER, str(got)]) + "}")
    cfg = root.calibration_config  # the step model: a flat synthetic chain at 1.01 is then a routine hold
    cfg.write_text(cfg.read_text().replace("surface: {enabled: true", "surface: {enabled: false"))
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.01))
    first = actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert (first.decision_reason or "").startswith("Change too small") and not first.flags
    assert not got.exists()


class _Hook(BaseHTTPRequestHandler):
    received: list[bytes] = []
    status = 204

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        n = int(self.headers.get("Content-Length", "0"))
        type(self).received.append(self.rfile.read(n))
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook():  # type: ignore[no-untyped-def]
    class Handler(_Hook):
        received: list[bytes] = []
        status = 204

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, Handler
    server.shutdown()
    server.server_close()


def test_webhook_receives_the_event_and_an_http_error_is_recorded_not_raised(tmp_path: Path, hook) -> None:  # type: ignore[no-untyped-def]
    server, handler = hook
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    _alerts(root, f"alerts: {{webhook: 'http://127.0.0.1:{server.server_address[1]}/hook', timeout_s: 5}}")
    run = actions.run_live_calibration(Workspace.open(root), "BTC", _failed_snapshot(tmp_path), rv=0.45)
    (body,) = handler.received
    assert json.loads(body)["run_id"] == run.run_id
    handler.status = 500
    again = actions.run_live_calibration(Workspace.open(root), "BTC", _failed_snapshot(tmp_path), rv=0.45)
    rows = _alert_rows(root)
    assert [d.ok for r in rows for d in r.deliveries] == [True, False]
    assert rows[-1].deliveries[0].error == "HTTP 500" and rows[-1].run_id == again.run_id
    assert again.run_id in root.live_history.read_text()  # the run stands


def test_a_command_that_fails_or_cannot_start_is_recorded_and_the_run_stands(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    _alerts(root, "alerts: {command: " + json.dumps([sys.executable, "-c", "import sys; sys.stderr.write('boom'); sys.exit(3)"]) + "}")
    run = actions.run_live_calibration(Workspace.open(root), "BTC", _failed_snapshot(tmp_path), rv=0.45)
    assert _alert_rows(root)[-1].deliveries[0].error == "exit status 3: boom"
    _alerts_replace(root, tmp_path / "no-such-program")
    actions.run_live_calibration(Workspace.open(root), "BTC", _failed_snapshot(tmp_path), rv=0.45)
    assert _alert_rows(root)[-1].deliveries[0].error.startswith("cannot start")  # type: ignore[union-attr]
    assert run.run_id in root.live_history.read_text()


def _alerts_replace(root: Root, program: Path) -> None:
    text = root.calibration_config.read_text()
    start = text.index("alerts: {command: ")
    end = text.index("\n", start)
    root.calibration_config.write_text(text[:start] + f"alerts: {{command: {json.dumps([str(program)])}}}" + text[end:])


SLOW = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    "open(sys.argv[1], 'w').write(str(child.pid))\n"
    "time.sleep(60)\n"
)


def test_a_command_that_overruns_its_timeout_is_killed_with_its_children(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    pid_file = tmp_path / "child.pid"
    _alerts(root, "alerts: {command: " + json.dumps([sys.executable, "-c", SLOW, str(pid_file)]) + ", timeout_s: 1.5}")
    run = actions.run_live_calibration(Workspace.open(root), "BTC", _failed_snapshot(tmp_path), rv=0.45)
    d = _alert_rows(root)[-1].deliveries[0]
    assert not d.ok and d.error == "timed out after 1.5 s (killed)"
    child = int(pid_file.read_text())
    try:  # reaped by init or a zombie at most: never still sleeping
        state = Path(f"/proc/{child}/stat").read_text().split()[2]
    except FileNotFoundError:
        state = "gone"
    assert state in ("gone", "Z", "X")
    assert run.run_id in root.live_history.read_text()


def test_the_dashboard_banner_shows_the_latest_runs_active_flags(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    from calreport.report.render import render_site

    rows.live(flags=[RunFlag(code="WING_GAP", message="0-7d <10D put: model -11.0 vp from market (> 5)")])
    rows.auto(flags=[RunFlag(code="ON_FIT_BOUND", message="fit on a search bound: 3.0")])
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    assert "BTC: flags WING_GAP" in html and "0-7d &lt;10D put: model -11.0 vp" in html
    assert "BTC: auto run flags ON_FIT_BOUND" in html


@pytest.mark.realdata
def test_the_weekend_expiry_outlier_numbers_agree_with_an_independent_computation(tmp_path: Path) -> None:
    """SHORT_EXPIRY_OUTLIER's two vMAEs, recomputed from the raw snapshot with the plain implementation
    (own parser, scipy Black-76, brentq IVs for the vega weights) over the run's own quotes."""
    import re

    from scipy.optimize import brentq
    from scipy.stats import norm

    from calreport.model import RunDetail
    from tests.independent import b76, expiry_seconds

    snap = SHARED / "deribit-snapshots" / "BTC-2025-12-13T1543Z.json"
    if not snap.is_file():
        pytest.skip("../shared/data is absent")
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    run = actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)  # tested at the initial flat 1.0: sigma 0.45
    flag = next(f for f in run.flags or [] if f.code == "SHORT_EXPIRY_OUTLIER")
    m = re.search(r"expiry (\S+) \(([\d.]+)d\): vMAE ([\d.]+) % vs (\S+) band ([\d.]+) %", flag.message)
    assert m is not None
    detail = RunDetail.model_validate_json((root.path / run.detail_file).read_text())  # type: ignore[operator]
    rows = {r["instrument_name"]: r for r in json.loads(snap.read_text())["result"]}
    now = max(r["creation_timestamp"] for r in rows.values()) / 1000.0

    def vmae(names: list[str]) -> float:
        num = den = 0.0
        for name in names:  # a plain loop: the reference, not the product
            _, d, k, cp = name.split("-")
            t = (expiry_seconds(d) - now) / (365 * 86400)
            F, K, mark, call = rows[name]["underlying_price"], float(k), rows[name]["mark_price"], cp == "C"
            iv = brentq(lambda s: float(b76(F, K, t, s, call)) - mark, 1e-4, 10.0)
            vega = float(norm.pdf(math.log(F / K) / (iv * math.sqrt(t)) + 0.5 * iv * math.sqrt(t)) * math.sqrt(t))
            num += vega * abs(float(b76(F, K, t, 0.45, call)) - mark) / mark
            den += vega
        return num / den * 100.0

    expiry = [q.instrument for q in detail.quotes if q.instrument.split("-")[1] == "15DEC25"]
    band = [q.instrument for q in detail.quotes if q.band == m[4]]
    assert m[1] == "2025-12-15" and float(m[2]) == pytest.approx(1.7, abs=0.05)
    assert float(m[3]) == pytest.approx(vmae(expiry), rel=0.01)
    assert float(m[5]) == pytest.approx(vmae(band), rel=0.01)


def test_routine_holds_come_from_the_rule_table_and_raise_no_review_alert() -> None:
    """'Change too small' and 'No weight' (a snapshot not newer than the previous smoothed run) are the
    policy's everyday holds; any other hold is for a human to review."""
    from calreport.apply import MIN_CHANGE, NO_WEIGHT
    from calreport.commands.adapters.alerts import alert_triggers

    def held(reason: str) -> LiveRun:
        return LiveRun(run_id="R", underlying="BTC", status="ok", decision="hold", decision_reason=reason)

    small = MIN_CHANGE.hold.format(d=0.001, limit="0.03", bands="none", smile="")
    replay = NO_WEIGHT.hold.format(source="run R0")
    assert alert_triggers("live", held(small), None) == []
    assert alert_triggers("live", held(replay), None) == []
    assert alert_triggers("live", held("Thin RV: RV_7d from 11 hourly returns (< 120)"), None) == ["held_for_review"]
