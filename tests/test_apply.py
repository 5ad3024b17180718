"""The applied YAML is the single source of truth: apply, force-apply, derived status."""

from __future__ import annotations

import json
import os
import stat

import pytest
import yaml
from foundation_helpers import add_auto_run, add_live_run, force_apply

from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError, RefusedError
from calreport.model import Multipliers
from calreport.store.applied import (
    FileApplyStore,
    apply_values,
    format_applied,
    read_applied,
)
from calreport.store.config import load_config
from calreport.store.paths import Root, lock_path
from calreport.store.query import HistoryQuery
from calreport.store.state import read_state, status_index


@pytest.fixture
def root(tmp_path) -> Root:
    r = Root(tmp_path / "root")
    actions.init(Workspace.open(r))
    return r


def _status_json(root: Root, capsys) -> dict:
    assert main(["--root", str(root.path), "status", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_force_apply_makes_yaml_state_and_run_agree(root, capsys):
    run = add_live_run(root, smoothed=1.0833, bands={"0-7d": 1.05, "7-30d": 1.09})
    event = force_apply(root, "BTC")

    raw = yaml.safe_load(root.applied.read_text())["underlyings"]["BTC"]
    assert raw["global"] == 1.0833 and raw["bands"] == {"0-7d": 1.05, "7-30d": 1.09}
    assert raw["run_id"] == run.run_id and raw["source"] == "force" and raw["reason"] == "Forced by user"
    state = _status_json(root, capsys)["underlyings"]["BTC"]
    assert state["global"] == raw["global"] == run.smoothed.global_
    assert state["bands"] == raw["bands"] == run.smoothed.bands
    assert status_index(root).status_of(run) == "applied"
    assert event.previous.global_ == 1.0 and event.applied.global_ == 1.0833


def test_later_apply_supersedes_earlier_run(root):
    first = add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    second = add_live_run(root, smoothed=1.12)
    force_apply(root, "BTC")
    idx = status_index(root)
    assert idx.status_of(first) == "superseded"
    assert idx.status_of(second) == "applied"
    assert read_applied(root).entry("BTC").global_ == 1.12


def test_run_never_applied_is_held_and_failed_realism_is_failed(root):
    held = add_live_run(root, smoothed=1.05)
    failed = add_live_run(root, smoothed=0.5, status="failed")
    idx = status_index(root)
    assert idx.status_of(held) == "held"
    assert idx.status_of(failed) == "failed"


def test_force_apply_refuses_failed_run_unless_allowed(root):
    add_live_run(root, smoothed=0.5, status="failed")
    before = root.applied.read_bytes()
    with pytest.raises(RefusedError, match="--allow-unrealistic"):
        force_apply(root, "BTC")
    assert root.applied.read_bytes() == before
    force_apply(root, "BTC", allow_unrealistic=True)
    assert read_applied(root).entry("BTC").global_ == 0.5


def test_auto_runs_never_change_applied_even_when_newest(root, capsys):
    live = add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    before = root.applied.read_bytes()
    add_auto_run(root, multiplier=1.3, mae=10.0)
    add_auto_run(root, multiplier=0.5)
    assert root.applied.read_bytes() == before
    # force-apply after the auto runs still takes the latest *live* run: already applied, so refused
    with pytest.raises(RefusedError, match=f"already applied: run {live.run_id}'s"):
        force_apply(root, "BTC")
    assert read_applied(root).entry("BTC").global_ == 1.0833 and root.applied.read_bytes() == before


def test_force_apply_without_live_run_is_refused_and_writes_nothing(root, capsys):
    add_auto_run(root, multiplier=1.2, mae=10.0)  # an auto run is never a candidate
    before = root.applied.read_bytes()
    history_before = root.live_history.read_bytes()
    assert main(["--root", str(root.path), "force-apply", "--underlying", "BTC"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("calreport: error: no live run for BTC") and "\n" not in err
    assert root.applied.read_bytes() == before
    assert root.live_history.read_bytes() == history_before


def test_eth_is_applied_independently_of_btc(root):
    add_live_run(root, "BTC", smoothed=1.0833)
    add_live_run(root, "ETH", smoothed=0.95)
    force_apply(root, "ETH")
    doc = read_applied(root)
    assert doc.entry("ETH").global_ == 0.95
    assert doc.entry("BTC").global_ == 1.0  # untouched


def test_missing_underlying_means_one_not_an_error(tmp_path):
    root = Root(tmp_path)
    assert read_applied(root).entry("BTC").global_ == 1.0  # no file at all
    root.config_dir.mkdir()
    root.applied.write_text("schema_version: 1\nunderlyings: {}\n")
    assert read_applied(root).entry("ETH").global_ == 1.0


def test_yaml_output_is_deterministic_and_diffable(root):
    add_live_run(root, smoothed=1.08333333, bands={"7-30d": 1.09, "0-7d": 1.05})
    force_apply(root, "BTC")
    text = root.applied.read_text()
    assert text.startswith("# Applied IV multipliers")
    assert "    global: 1.0833\n" in text
    # bands in config (DTE) order, 4 decimals
    assert "    bands:\n      0-7d: 1.0500\n      7-30d: 1.0900\n" in text
    assert format_applied(read_applied(root)) == text  # re-formatting the parsed file is a fixed point
    assert text.index("  BTC:") < text.index("  ETH:")


def test_apply_event_records_previous_and_new_values(root):
    first = add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    add_live_run(root, smoothed=1.2)
    force_apply(root, "BTC")
    events = HistoryQuery.file_order(root, "apply", "BTC")
    assert [e.applied.global_ for e in events] == [1.0833, 1.2]
    assert events[1].previous.global_ == 1.0833 and events[1].previous_run_id == first.run_id


def test_apply_keeps_file_mode_and_lock_file(root):
    os.chmod(root.applied, 0o640)
    add_live_run(root)
    force_apply(root, "BTC")
    assert stat.S_IMODE(os.stat(root.applied).st_mode) == 0o640
    assert lock_path(root.applied).exists()
    leftovers = [p.name for p in root.config_dir.iterdir() if p.name.endswith(".tmp")]
    assert leftovers == []


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("schema_version: 1\nunderlyings:\n  BTC:\n    global: 1.1\n    global: 1.2\n", "duplicate key 'global'"),
        ("schema_version: 1\nunderlyings:\n  BTC:\n    gloabl: 1.1\n", "unknown key"),
        ("schema_version: 1\nunderlyings:\n  BTC:\n    global: '1e-3'\n", "must be a number"),
        ("schema_version: 1\nunderlyings:\n  BTC:\n    global: .nan\n", "finite"),
        ("schema_version: 1\nunderlyings:\n  BTC:\n    global: yes\n", "must be a number"),
        ("schema_version: 1\nunderlyings:\n  BTC: {global: 1.0, bands: {weekly: 1.1}}\n", "not defined"),
        ("schema_version: 1\nunderlyings: [BTC\n", "invalid YAML"),
        ("!!python/object:os.system {}\n", "invalid YAML"),
        ("", "empty"),
    ],
)
def test_hand_broken_yaml_is_a_one_line_error_and_never_overwritten(root, capsys, text, problem):
    root.applied.write_text(text)
    add_live_run(root)
    with pytest.raises(CalreportError) as exc:
        read_applied(root)
    assert problem in str(exc.value) and str(root.applied) in str(exc.value)
    for argv in (["status"], ["status", "--json"], ["force-apply", "--underlying", "BTC"]):
        assert main(["--root", str(root.path), *argv]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err and "applied_multipliers.yaml" in err
    assert root.applied.read_text() == text
    assert HistoryQuery.file_order(root, "apply") == []


def test_apply_rejects_unknown_band_and_bad_values(root):
    with pytest.raises(RefusedError):
        apply_values(root, "BTC", Multipliers(global_=1.1, bands={"weekly": 1.2}), source="policy", run_id="r", reason="x")
    with pytest.raises(RefusedError):
        apply_values(root, "BTC", Multipliers(global_=float("nan")), source="policy", run_id="r", reason="x")
    with pytest.raises(CalreportError, match="unknown underlying"):
        apply_values(root, "XRP", Multipliers(global_=1.1), source="policy", run_id="r", reason="x")
    assert HistoryQuery.file_order(root, "apply") == []


def test_failed_history_append_restores_previous_yaml(root, monkeypatch):
    add_live_run(root)
    before = root.applied.read_bytes()
    import calreport.store.applied as apply_mod

    def boom(*a, **k):
        raise CalreportError("could not append (No space left on device)", root.live_history)

    monkeypatch.setattr(apply_mod, "append_row", boom)
    with pytest.raises(CalreportError, match="No space"):
        force_apply(root, "BTC")
    assert root.applied.read_bytes() == before
    assert HistoryQuery.file_order(root, "apply") == []


def test_state_document_numbers_are_the_yaml_numbers(root):
    add_live_run(root, smoothed=1.23456, bands={"30-90d": 0.98765})
    force_apply(root, "BTC")
    raw = yaml.safe_load(root.applied.read_text())
    state = read_state(root).to_json_dict()
    for name, entry in raw["underlyings"].items():
        assert state["underlyings"][name]["global"] == entry["global"]
        assert state["underlyings"][name]["bands"] == (entry["bands"] or {})
        assert state["underlyings"][name]["run_id"] == entry["run_id"]
    assert set(state) == {"schema_version", "underlyings", "generated_at"}


def test_apply_after_a_kill_between_yaml_and_event_records_the_lost_event_first(root):
    """A writer killed after replacing the YAML left no apply event; the next apply records it."""
    from calreport.model import AppliedDocument, AppliedEntry
    from calreport.store.applied import RECOVERED_NOTE
    from calreport.store.files import atomic_write

    first = add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    # simulate the kill: the YAML moved on to run X, its event never made it to history
    doc = read_applied(root)
    lost = AppliedEntry(global_=1.15, bands={}, updated_at="2099-01-01T00:00:00Z", source="policy", run_id="X", reason="r")
    atomic_write(root.applied, format_applied(AppliedDocument(underlyings={**doc.underlyings, "BTC": lost})).encode())
    add_live_run(root, smoothed=1.2)
    force_apply(root, "BTC")
    events = HistoryQuery.file_order(root, "apply", "BTC")
    assert [(e.run_id, e.applied.global_) for e in events][-2:] == [("X", 1.15), (events[-1].run_id, 1.2)]
    recovered = events[-2]
    assert RECOVERED_NOTE in recovered.reason and recovered.previous.global_ == 1.0833
    assert recovered.previous_run_id == first.run_id
    assert events[-1].previous.global_ == 1.15 and events[-1].previous_run_id == "X"


def test_hand_edit_that_keeps_updated_at_is_not_recorded_as_an_apply(root):
    add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    root.applied.write_text(root.applied.read_text().replace("global: 1.0833", "global: 1.2000"))
    add_live_run(root, smoothed=1.3)
    force_apply(root, "BTC")
    events = HistoryQuery.file_order(root, "apply", "BTC")
    assert len(events) == 2 and events[-1].previous.global_ == 1.2  # the truth of what was replaced


def test_force_apply_takes_the_newest_whole_live_run_when_the_last_line_is_torn(root):
    add_live_run(root, smoothed=1.05)
    newest = add_live_run(root, smoothed=1.0833)
    add_live_run(root, "ETH", smoothed=0.9)
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","underlying":"BTC","run_id":"torn","smoothed":{"glo')
    event = force_apply(root, "BTC")
    assert event.run_id == newest.run_id and read_applied(root).entry("BTC").global_ == 1.0833



OPEN_COUNTER = r"""
import os, sys
from pathlib import Path
from calreport.commands import workspace
from calreport.commands.cli import main
root = Path(sys.argv[1]).resolve()
watched = {str(root / "config" / "calibration.yaml"): "config", str(root / "config" / "applied_multipliers.yaml"): "applied"}
counts = {"config": 0, "applied": 0, "render config": 0, "render applied": 0}
rendering = []
def hook(event, args):
    if event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        name = watched.get(os.path.abspath(os.fsdecode(args[0])))
        if name:
            counts[("render " if rendering else "") + name] += 1
real_render = workspace.render_site
def render_site(*args, **kwargs):
    rendering.append(1)
    try:
        real_render(*args, **kwargs)
    finally:
        rendering.pop()
workspace.render_site = render_site
sys.addaudithook(hook)
code = main(["--root", str(root), *sys.argv[2:]])
print(code, *counts.values())
"""


def _opens(root, *args: str) -> dict[str, int]:
    """Opens of config/calibration.yaml and the applied YAML by one CLI command in a fresh interpreter,
    by the command itself and by its re-render."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", OPEN_COUNTER, str(root.path), *args], capture_output=True, text=True,
                         timeout=120, check=True)
    values = [int(x) for x in out.stdout.split()[-5:]]
    return dict(zip(["exit", "config", "applied", "render config", "render applied"], values))


def test_the_open_counter_sees_every_read(root):
    """The counter can fail: `status` reads both files, `render` reads them inside the re-render."""
    assert _opens(root, "status") == {"exit": 0, "config": 1, "applied": 1, "render config": 0, "render applied": 0}
    rendered = _opens(root, "render")
    assert rendered["config"] + rendered["render config"] == 1 and rendered["render applied"] >= 1


@pytest.fixture(scope="module")
def force_apply_opens(tmp_path_factory: pytest.TempPathFactory) -> tuple[Root, dict[str, int]]:
    """One `force-apply` of a live run in a fresh interpreter, counted once for the two tests that read it."""
    root = Root(tmp_path_factory.mktemp("opens") / "root")
    actions.init(Workspace.open(root))
    add_live_run(root, smoothed=1.0833)
    return root, _opens(root, "force-apply", "--underlying", "BTC")


def test_one_force_apply_opens_the_config_once_and_the_applied_yaml_once_before_the_re_render(force_apply_opens):
    root, n = force_apply_opens
    assert n["exit"] == 0 and read_applied(root).entry("BTC").global_ == 1.0833
    assert (n["config"], n["applied"]) == (1, 1)  # the workspace, and the apply transaction under its lock


def test_one_force_apply_opens_the_config_once_and_the_applied_yaml_at_most_twice(force_apply_opens):
    _, n = force_apply_opens
    assert n["exit"] == 0
    assert n["config"] + n["render config"] == 1 and n["applied"] + n["render applied"] <= 2


class _CalibrateFinishesFirst(FileApplyStore):
    """A live `calibrate` held the apply lock while force-apply chose its run: when force-apply gets the
    lock, that calibrate has appended a newer run and the policy has applied it (what it leaves behind)."""

    def transaction(self):  # type: ignore[no-untyped-def]
        newer = add_live_run(self.root, smoothed=1.12, ts="2025-12-11T11:16:00Z")
        with super().transaction() as tx:
            tx.replace("BTC", newer.smoothed, source="policy", run_id=newer.run_id, reason="global d=0.0367")
        self.newer = newer
        return super().transaction()


def test_force_apply_waiting_on_a_calibrate_applies_the_latest_run_under_the_lock_not_the_one_before_it(root):
    from calreport import apply

    add_live_run(root, smoothed=1.0833)  # held; force-apply reads it as "the latest" before the lock
    store = _CalibrateFinishesFirst(root, load_config(root))
    with pytest.raises(RefusedError, match="already applied"):  # the latest run is the one the policy just applied
        apply.force_apply(store, "BTC")
    entry = read_applied(root).entry("BTC")
    assert (entry.global_, entry.run_id, entry.source) == (1.12, store.newer.run_id, "policy")  # not rolled back to 1.0833


def test_force_apply_of_a_confirmed_run_is_refused_when_a_newer_run_landed_while_it_waited(root):
    from calreport import apply

    shown = add_live_run(root, smoothed=1.0833)  # the run the dashboard's dialog showed
    store = _CalibrateFinishesFirst(root, load_config(root))
    with pytest.raises(RefusedError, match=f"the latest BTC live run is now {{0}}, not {shown.run_id}".format("[0-9A-Z]+")):
        apply.force_apply(store, "BTC", run_id=shown.run_id)
    assert read_applied(root).entry("BTC").global_ == 1.12
