"""The engine's view follows the applied YAML: hot reload, last-good on bad files, band lookup."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from calreport.engine import AppliedMultipliersWatcher, EngineView
from calreport.errors import CalreportError
from calreport.model import Multipliers
from calreport.store.applied import apply_values, read_applied
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]


def _apply(root: Root, g: float, bands: dict[str, float] | None = None, run: str = "run-x", underlying: str = "BTC"):
    return apply_values(
        root, underlying, Multipliers(global_=g, bands=bands or {}), source="policy", run_id=run, reason="test"
    )


def _wait_until(pred, timeout: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


def test_multiplier_for_uses_band_containing_dte_else_global_and_1_for_missing_underlying(root):
    _apply(root, 1.0833, {"0-7d": 1.05, "30-90d": 1.2})
    with AppliedMultipliersWatcher(root) as engine:
        assert engine.multiplier_for("BTC", 0.5) == 1.05
        assert engine.multiplier_for("BTC", 6.99) == 1.05
        assert engine.multiplier_for("BTC", 7.0) == 1.0833  # 7-30d not in the YAML: global
        assert engine.multiplier_for("BTC", 45) == 1.2
        assert engine.multiplier_for("BTC", 400) == 1.0833  # outside every band: global
        assert engine.multiplier_for("SOL", 3) == 1.0  # never applied: 1.0, not an error
        dtes = np.array([0.5, 6.99, 7.0, 29.9, 30.0, 45.0, 89.9, 90.0, 400.0])
        vec = engine.multipliers_for("BTC", dtes)
        assert vec.tolist() == [engine.multiplier_for("BTC", d) for d in dtes]
        assert engine.multipliers_for("SOL", dtes).tolist() == [1.0] * len(dtes)


def test_overlapping_bands_first_band_with_a_value_wins_in_the_engine_and_the_calibration_alike():
    """One rule (calibration.bands) for the engine, the live run's tested multipliers and the policy."""
    from calreport.calibration.bands import (
        band_value,
        multiplier_at,
        multipliers_for_dte,
    )
    from calreport.model import AppliedDocument, AppliedEntry, Band

    bands = (Band(name="a", min_dte=0, max_dte=10), Band(name="b", min_dte=5, max_dte=20), Band(name="c", min_dte=15, max_dte=30))
    entry = AppliedEntry(global_=1.0, bands={"b": 1.2, "c": 1.3})
    view = EngineView(version=1, document=AppliedDocument(underlyings={"BTC": entry}), bands=bands, content_hash=None, loaded_at="")
    dtes = np.array([0.0, 4.99, 5.0, 9.99, 10.0, 15.0, 19.99, 20.0, 29.99, 30.0, np.nan])
    expected = [1.0, 1.0, 1.2, 1.2, 1.2, 1.2, 1.2, 1.3, 1.3, 1.0, 1.0]  # "a" has no value: "b" covers 5-20
    assert multipliers_for_dte(dtes, entry, bands).tolist() == expected
    assert view.multipliers_for("BTC", dtes).tolist() == expected
    assert [view.multiplier_for("BTC", d) for d in dtes] == [multiplier_at(d, entry, bands) for d in dtes] == expected
    assert (band_value(entry, "a"), band_value(entry, "b")) == (1.0, 1.2)


def test_atomic_replace_is_picked_up_by_the_directory_observer(root):
    changes: list[EngineView] = []
    with AppliedMultipliersWatcher(root, on_change=changes.append) as engine:
        assert engine.observer_kind == "inotify"
        v0 = engine.version
        _apply(root, 1.0833, run="run-a")
        assert engine.wait_for_version(v0 + 1, 2.0)
        assert engine.multiplier_for("BTC", 10) == 1.0833
        assert changes[-1].document.underlyings["BTC"].run_id == "run-a"
        assert engine.snapshot().document == read_applied(root)


def _replace_atomically(path: Path, text: str) -> None:
    """One change of content, as calreport writes it: a truncating write_text can be seen half-done
    (an empty file is a second, different bad content) when the machine is loaded."""
    tmp = path.with_name(path.name + ".tmp-test")
    tmp.write_text(text)
    os.replace(tmp, path)


def test_invalid_file_keeps_last_good_values_and_reports_once(root):
    _apply(root, 1.0833, run="good")
    errors: list[CalreportError] = []
    with AppliedMultipliersWatcher(root, on_error=errors.append) as engine:
        good = engine.snapshot()
        text = root.applied.read_text()
        _replace_atomically(root.applied, text.replace("global: 1.0833", "global: .nan"))
        assert _wait_until(lambda: engine.last_error is not None)
        assert "applied_multipliers.yaml" in str(engine.last_error)
        assert engine.multiplier_for("BTC", 10) == 1.0833
        assert engine.snapshot().version == good.version
        time.sleep(3 * engine.check_interval_s)  # periodic checks do not re-report the same bad bytes
        assert len(errors) == 1
        root.applied.write_text(text.replace("global: 1.0833", "global: 1.1100"))
        assert engine.wait_for_version(good.version + 1, 2.0)
        assert engine.multiplier_for("BTC", 10) == 1.11
        assert engine.last_error is None


def test_deleted_file_keeps_last_good_values(root):
    _apply(root, 1.0833)
    with AppliedMultipliersWatcher(root) as engine:
        root.applied.unlink()
        assert _wait_until(lambda: engine.last_error is not None)
        assert "disappeared" in str(engine.last_error)
        assert engine.multiplier_for("BTC", 10) == 1.0833
        _apply(root, 1.2)  # the file comes back through apply (previous = defaults)
        assert _wait_until(lambda: engine.multiplier_for("BTC", 10) == 1.2)


def test_snapshot_is_a_private_copy(root):
    _apply(root, 1.0833)
    with AppliedMultipliersWatcher(root) as engine:
        snap = engine.snapshot()
        snap.document.underlyings["BTC"].bands["0-7d"] = 9.0
        snap.document.underlyings.pop("ETH", None)
        assert engine.multiplier_for("BTC", 1) == 1.0833
        with pytest.raises(dataclasses.FrozenInstanceError):
            snap.version = 99  # type: ignore[misc]


@pytest.mark.parametrize("observer", ["polling", "none"])
def test_polling_fallback_and_periodic_check_alone_see_changes(root, observer):
    """'none' has no observer at all: the periodic content check stands in for dropped inotify events."""
    with AppliedMultipliersWatcher(root, observer=observer, check_interval_s=0.05) as engine:
        assert engine.observer_kind == observer
        v0 = engine.version
        _apply(root, 1.3)
        assert engine.wait_for_version(v0 + 1, 3.0)
        assert engine.multiplier_for("ETH", 1) == 1.0 and engine.multiplier_for("BTC", 1) == 1.3


def test_calibration_yaml_band_change_is_reloaded(root):
    _apply(root, 1.0833, {"0-7d": 1.05})
    with AppliedMultipliersWatcher(root) as engine:
        assert engine.multiplier_for("BTC", 8) == 1.0833
        cfg = root.calibration_config.read_text()
        root.calibration_config.write_text(cfg.replace("{name: 0-7d, min_dte: 0, max_dte: 7}", "{name: 0-7d, min_dte: 0, max_dte: 10}"))
        assert _wait_until(lambda: engine.multiplier_for("BTC", 8) == 1.05)


def test_start_refuses_a_broken_file_it_has_no_good_values_for(root):
    root.applied.write_text("schema_version: 1\nunderlyings: {BTC: {global: '1e-3'}}\n")
    with pytest.raises(CalreportError, match="applied_multipliers.yaml"):
        AppliedMultipliersWatcher(root).start()


def test_missing_file_at_start_means_every_underlying_at_one(root):
    root.applied.unlink()
    with AppliedMultipliersWatcher(root) as engine:
        assert engine.multiplier_for("BTC", 3) == 1.0
        assert engine.last_error is None


def test_failing_callback_does_not_stop_reloading(root):
    def boom(view: EngineView) -> None:
        raise RuntimeError("callback bug")

    with AppliedMultipliersWatcher(root, on_change=boom) as engine:
        _apply(root, 1.1)
        assert _wait_until(lambda: engine.multiplier_for("BTC", 1) == 1.1)
        _apply(root, 1.2)
        assert _wait_until(lambda: engine.multiplier_for("BTC", 1) == 1.2)
        assert len(engine.callback_errors) >= 2


def test_watch_command_prints_each_change_and_exits_0_on_ctrl_c(root):
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    # Ctrl-C as a terminal delivers it: a test run started in the background (a shell without job control,
    # some CI runners) ignores SIGINT, the child would inherit that and Python would not raise KeyboardInterrupt
    proc = subprocess.Popen(
        [sys.executable, "-m", "calreport", "--root", str(root.path), "watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509 - no threads started yet in the child
    )
    try:
        first = proc.stdout.readline()  # type: ignore[union-attr]
        assert first.startswith("version 1 loaded"), first
        lines = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        assert any("BTC: global 1.0000" in line for line in lines)
        _apply(root, 1.0833, {"0-7d": 1.05}, run="run-w")
        header = proc.stdout.readline()  # type: ignore[union-attr]
        assert header.startswith("version 2"), header
        body = [proc.stdout.readline() for _ in range(2)]  # type: ignore[union-attr]
        btc = next(line for line in body if "BTC:" in line)
        assert "global 1.0833" in btc and "0-7d 1.0500" in btc and "7-30d 1.0833 (global)" in btc and "run-w" in btc
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_bad_calibration_yaml_edit_is_reported_once_until_its_bytes_change(root):
    """A config edit the engine cannot use is one message, not one per periodic check; a new bad edit is a new one."""
    errors: list[CalreportError] = []
    with AppliedMultipliersWatcher(root, on_error=errors.append, check_interval_s=0.01) as engine:
        cfg = root.calibration_config.read_text()
        root.calibration_config.write_text(cfg.replace("alpha: 0.3", "alpha: 7"))
        assert _wait_until(lambda: engine.last_error is not None)
        time.sleep(2.5)  # past two full content checks (FULL_CHECK_S) and any editor-burst debounce
        assert len(errors) == 1, [e.one_line() for e in errors]
        assert "smoothing.alpha" in str(errors[0])
        root.calibration_config.write_text(cfg.replace("alpha: 0.3", "alpha: 8"))
        assert _wait_until(lambda: len(errors) == 2)
        time.sleep(1.5)
        assert len(errors) == 2
        root.calibration_config.write_text(cfg)  # fixed: the next bad edit is reported again
        time.sleep(0.3)
        root.calibration_config.write_text(cfg.replace("alpha: 0.3", "alpha: 7"))
        assert _wait_until(lambda: len(errors) == 3)
