"""calreport/apply.py is the one home of what changes the applied multipliers: one decision per live
run, one sigma-mode rule, one thin-RV rule, one rule table behind both the reasons and the panel."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from foundation_helpers import add_live_run, force_apply, rollback

from calreport import apply
from calreport.commands import usecases
from calreport.commands.workspace import Workspace
from calreport.errors import RefusedError
from calreport.model import (
    AppliedEntry,
    CalibrationConfig,
    LiveRun,
    Multipliers,
    PolicyConfig,
)
from calreport.report import render_site
from calreport.store import applied as applied_store
from calreport.store import query
from calreport.store.applied import apply_values
from calreport.store.paths import Root
from tests.test_calibrate import synth_rows, write_snapshot


@pytest.fixture
def root(tmp_path: Path) -> Root:
    r = Root(tmp_path / "root")
    usecases.init(Workspace.open(r, renderer=None))
    return r


def _ws(root: Root) -> Workspace:
    return Workspace.open(root, renderer=None)


# --------------------------------------------------------------------------- one decision per live run


def test_a_live_run_reads_the_history_and_the_applied_file_once_and_decides_once(root, tmp_path, monkeypatch) -> None:
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.3))
    usecases.run_live_calibration(_ws(root), "BTC", snap, rv=0.45)  # a history to read
    history_reads, applied_reads, decisions = [], [], []
    real_tail, real_read, real_decide = query.HistoryTail.__init__, applied_store.read_applied, apply.decide_run

    def counted_tail(self, path):  # type: ignore[no-untyped-def]
        history_reads.append(path)  # a pass over a history file from its end
        real_tail(self, path)

    def counted_read(*a, **k):  # type: ignore[no-untyped-def]
        applied_reads.append(a)
        return real_read(*a, **k)

    def counted_decide(*a, **k):  # type: ignore[no-untyped-def]
        decisions.append(a)
        return real_decide(*a, **k)

    monkeypatch.setattr(query.HistoryTail, "__init__", counted_tail)
    monkeypatch.setattr(applied_store, "read_applied", counted_read)
    monkeypatch.setattr(apply, "decide_run", counted_decide)
    second = usecases.run_live_calibration(_ws(root), "BTC", snap, rv=0.45)
    assert (len(history_reads), len(applied_reads), len(decisions)) == (1, 1, 1)
    assert second.smoothed_from.startswith("run ")  # the one pass found the EWMA's start  # type: ignore[union-attr]


def test_evaluate_live_measures_only_and_takes_no_decision(root, tmp_path) -> None:
    from calreport.calibration.live import evaluate_live
    from calreport.market.deribit import load_snapshot
    from calreport.market.quotes import QuoteArrays
    from calreport.market.rv import RealisedVol

    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.3))
    rows, meta = load_snapshot(snap, "BTC")
    applied = AppliedEntry(global_=1.0)
    out = evaluate_live(
        QuoteArrays.from_rows(rows), underlying="BTC", now_ms=meta.now_ms, rv=RealisedVol(0.45, 0, "manual"), applied=applied,
        previous=(applied.multipliers(), "applied"), config=CalibrationConfig(), run_id="r", snapshot_file="s", detail_file="d",
    )
    run = out.run
    assert (run.decision, run.decision_reason, run.applied_values, run.feeds_smoothing) == (None, None, None, None)
    decided = apply.decide_run(run, applied, CalibrationConfig(), "BTC")
    assert decided.decision == "apply" and decided.feeds_smoothing is True


# --------------------------------------------------------------------------- one sigma-mode rule


def test_the_sigma_mode_refusal_is_one_function_behind_policy_force_apply_and_rollback(root, monkeypatch) -> None:
    calls: list[tuple[str | None, str]] = []
    real = apply.sigma_mode_refusal

    def spy(fitted, configured, what):  # type: ignore[no-untyped-def]
        calls.append((fitted, configured))
        return real(fitted, configured, what)

    monkeypatch.setattr(apply, "sigma_mode_refusal", spy)
    run = LiveRun(run_id="R", underlying="BTC", smoothed=Multipliers(global_=1.1), samples=500, vega_sum=50.0, status="ok",
                  sigma_mode="rv")
    assert apply.decide(run, AppliedEntry(global_=1.0), PolicyConfig(), sigma_mode="atm_iv") == (
        "hold", "Sigma mode mismatch: fitted in rv, configured atm_iv"
    )
    cfg = CalibrationConfig.model_validate({"sigma_mode": "atm_iv"})
    refused = apply.force_values(run, "BTC", cfg)
    assert isinstance(refused, apply.Refused) and "fitted in sigma_mode rv, configured is atm_iv" in refused.reason
    target = apply.RollbackTarget("R0", Multipliers(global_=1.05), None)
    refused = apply.rollback_values(target, "BTC", cfg)
    assert isinstance(refused, apply.Refused) and refused.reason.endswith("configured is atm_iv; not rolled back")
    assert calls == [("rv", "atm_iv"), ("rv", "atm_iv"), (None, "atm_iv")]
    assert real("atm_iv", "atm_iv", "x") is None and real(None, "rv", "x") is None  # None is rv


def test_force_apply_and_rollback_refuse_with_the_rules_reason_and_change_nothing(root) -> None:
    with pytest.raises(RefusedError, match="no live run for BTC"):
        force_apply(root, "BTC")
    add_live_run(root, smoothed=1.08)
    force_apply(root, "BTC")
    with pytest.raises(RefusedError, match="nothing to roll back to for BTC"):
        rollback(root, "BTC")
    before = root.applied.read_bytes()
    with pytest.raises(RefusedError, match="no run nope in the BTC apply history"):
        rollback(root, "BTC", "nope")
    assert root.applied.read_bytes() == before


def test_values_beyond_the_limits_are_refused_before_anything_is_written(root) -> None:
    cfg = CalibrationConfig()
    refused = apply.checked_values(Multipliers(global_=50.0), cfg)
    assert isinstance(refused, apply.Refused) and "outside the limits" in refused.reason
    assert isinstance(apply.checked_values(Multipliers(global_=1.0, bands={"nope": 1.0}), cfg), apply.Refused)
    before = root.applied.read_bytes()
    with pytest.raises(RefusedError, match="outside the limits"):
        apply_values(root, "BTC", Multipliers(global_=50.0), source="force", run_id="x", reason="x")
    assert root.applied.read_bytes() == before
    ok = apply.checked_values(Multipliers(global_=1.23456, bands={"7-30d": 1.1}), cfg)
    assert ok == Multipliers(global_=1.2346, bands={"7-30d": 1.1})


# --------------------------------------------------------------------------- one thin-RV rule


@pytest.mark.parametrize(
    ("mode", "source", "returns", "thin"),
    [("rv", "harvest", 11, True), (None, "prices:BTC-PERPETUAL", 119, True), ("rv", "harvest", 120, False),
     ("rv", "manual", 0, False), ("rv", "MANUAL", 0, False), ("atm_iv", "harvest", 11, False),
     ("mark_iv", None, 0, False), ("rv", "harvest", None, False)],
)
def test_thin_rv_is_one_rule_of_the_sigma_mode_the_source_and_the_count(mode, source, returns, thin) -> None:
    assert apply.thin_rv(mode, source, returns, 120) is thin


def test_the_thin_rv_banner_follows_the_policys_rule_not_a_setting_of_its_own(root) -> None:
    text = root.calibration_config.read_text()
    assert "min_rv_returns: 120}" in text  # dashboard.min_rv_returns: still accepted, no longer read
    root.calibration_config.write_text(text.replace("mae_warn_pct: 40.0, min_rv_returns: 120}", "mae_warn_pct: 40.0, min_rv_returns: 5}"))
    add_live_run(root, smoothed=1.05)
    from calreport.store.history import append_row

    thin = LiveRun(run_id="T", ts="2025-12-11T13:00:00Z", underlying="BTC", source="live", samples=100, rv_returns=11,
                   rv_source="harvest", sigma_mode="rv", status="degraded", smoothed=Multipliers(global_=1.05))
    append_row(root.live_history, thin)
    render_site(root)
    html = root.index_html.read_text()
    assert "BTC: RV_7d from too little history" in html and "want at least 120" in html
    iv_mode = thin.model_copy(update={"run_id": "I", "ts": "2025-12-11T14:00:00Z", "sigma_mode": "atm_iv"})
    append_row(root.live_history, iv_mode)  # an IV base does not rest on RV: never thin
    render_site(root)
    assert "BTC: RV_7d from too little history" not in root.index_html.read_text()


# --------------------------------------------------------------------------- one rule table


def _setting(cfg: CalibrationConfig, key: str) -> object:
    value: object = cfg
    for part in key.split("."):
        value = getattr(value, part)
    return value


def test_every_rule_names_settings_the_config_has_and_renders_from_them() -> None:
    cfg = CalibrationConfig()
    for rule in apply.RULES:
        for key in rule.keys:
            _setting(cfg, key)  # AttributeError when a rule names a setting that does not exist
        label, value, text = rule.panel_row(cfg)
        assert label and value and text and "{" not in value + text


def test_the_hold_reasons_are_the_rule_tables_templates() -> None:
    def run(**kw):  # type: ignore[no-untyped-def]
        base = dict(run_id="R", underlying="BTC", smoothed=Multipliers(global_=1.084), samples=91, vega_sum=12.5, status="ok")
        return LiveRun(**{**base, **kw})

    entry, policy = AppliedEntry(global_=1.0), PolicyConfig()
    cases = [
        (run(status="failed", reason="Unrealistic"), apply.REALISM),
        (run(smoothed=None, reason="no quotes"), apply.SMOOTHED),
        (run(samples=3), apply.MIN_SAMPLES),
        (run(vega_sum=0.0), apply.MIN_VEGA),
        (run(rv_returns=11, rv_source="harvest"), apply.THIN_RV),
        (run(smoothed=Multipliers(global_=1.001)), apply.MIN_CHANGE),
    ]
    for r, rule in cases:
        decision, reason = apply.decide(r, entry, policy, min_rv_returns=120)
        prefix = rule.hold.split("{")[0]
        assert decision == "hold" and reason.startswith(prefix), (rule.name, reason)


def test_the_policy_panel_shows_the_rule_table_with_the_settings_in_force(root) -> None:
    text = root.calibration_config.read_text()
    root.calibration_config.write_text(re.sub(r"min_samples: 50", "min_samples: 77", text, count=1))
    render_site(root)
    panel = re.search(r'<section id="update-policy".*?</section>', root.index_html.read_text(), re.S).group(0)  # type: ignore[union-attr]
    cfg = CalibrationConfig.model_validate({"policy": {"min_samples": 77}})
    for rule in apply.RULES:
        label, value, _ = rule.panel_row(cfg)
        assert f"<td>{label}</td>" in panel, label
    assert re.search(r"Min samples</td><td class=\"num\">77</td>", panel)


# --------------------------------------------------------------------------- purity


def test_importing_apply_realism_and_the_core_loads_no_store_lock_or_network_module() -> None:
    probe = (
        "import sys, pkgutil, importlib, calreport.calibration as c\n"
        "import calreport.apply, calreport.realism\n"
        "[importlib.import_module('calreport.calibration.' + m.name) for m in pkgutil.iter_modules(c.__path__)]\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('calreport.store', 'filelock', 'urllib.request')))\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"
