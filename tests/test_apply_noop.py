"""An apply that would change nothing is refused ("already applied"), its button is hidden, and a
run whose values a rollback replaced reads as rolled back."""

from __future__ import annotations

from pathlib import Path

import pytest

from calreport.commands.cli import main
from calreport.errors import RefusedError
from calreport.report import views
from calreport.report.render import read_inputs
from calreport.store.query import HistoryQuery
from calreport.store.applied import read_applied
from calreport.store.config import load_config
from calreport.store.paths import Root
from calreport.store.state import status_index
from tests.foundation_helpers import add_live_run, force_apply, rollback


def test_force_apply_of_the_run_already_applied_is_refused_and_writes_nothing(root: Root) -> None:
    run = add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    before = (root.applied.read_bytes(), root.live_history.read_bytes())
    with pytest.raises(RefusedError, match=f"already applied: run {run.run_id}'s smoothed values"):
        force_apply(root, "BTC")
    assert (root.applied.read_bytes(), root.live_history.read_bytes()) == before


def test_rollback_to_the_current_apply_is_refused(root: Root) -> None:
    a = add_live_run(root, smoothed=1.05)
    force_apply(root, "BTC")
    b = add_live_run(root, smoothed=1.10)
    force_apply(root, "BTC")
    with pytest.raises(RefusedError, match="already applied"):
        rollback(root, "BTC", to=b.run_id)
    assert len(HistoryQuery.file_order(root, "apply", "BTC")) == 2
    assert rollback(root, "BTC").run_id == a.run_id  # the previous apply is still a target
    with pytest.raises(RefusedError, match="already applied"):
        rollback(root, "BTC", to=a.run_id)


def test_a_run_whose_values_a_rollback_replaced_reads_as_rolled_back(root: Root) -> None:
    a = add_live_run(root, smoothed=1.05)
    force_apply(root, "BTC")
    b = add_live_run(root, smoothed=1.10, ts="2025-12-11T11:00:00Z")
    force_apply(root, "BTC")
    idx = status_index(root)
    assert idx.status_of(a) == "superseded" and idx.status_of(b) == "applied"
    rollback(root, "BTC")
    idx = status_index(root)
    assert idx.status_of(a) == "applied"
    assert idx.status_of(b) == "rolled-back"
    assert idx.rollback_reason(b).startswith(f"Rolled back: run {a.run_id}'s values re-applied at ")
    inp, _ = read_inputs(root)
    card = next(c for c in views.build_latest(["BTC"], inp) if c.underlying == "BTC")
    assert card.status == "rolled-back" and "Rolled back" in card.reason and "Forced by user" not in card.reason


def test_a_run_applied_again_after_its_rollback_is_applied_then_superseded(root: Root) -> None:
    a = add_live_run(root, smoothed=1.05)
    force_apply(root, "BTC")
    b = add_live_run(root, smoothed=1.10)
    force_apply(root, "BTC")
    rollback(root, "BTC")  # b rolled back
    rollback(root, "BTC", to=b.run_id)  # b again: a is now the one a rollback replaced
    idx = status_index(root)
    assert idx.status_of(b) == "applied" and idx.status_of(a) == "rolled-back"


def test_the_page_data_say_which_buttons_would_change_nothing(root: Root) -> None:
    a = add_live_run(root, smoothed=1.05)
    inp, _ = read_inputs(root)
    card = views.build_latest(["BTC"], inp)[0]
    assert card.can_force_apply and card.force_refusal == ""
    force_apply(root, "BTC")
    b = add_live_run(root, smoothed=1.10)
    force_apply(root, "BTC")
    inp, _ = read_inputs(root)
    card = views.build_latest(["BTC"], inp)[0]
    assert not card.can_force_apply and card.force_refusal.startswith("already applied")
    log = {r.run_id: r for r in views.build_applied(inp, ["BTC"]).log}
    assert not log[b.run_id].can_rollback and log[b.run_id].rollback_refusal.startswith("already applied")
    assert log[a.run_id].can_rollback and log[a.run_id].rollback_refusal == ""


def test_a_failed_run_keeps_its_button_for_the_realism_override(root: Root) -> None:
    add_live_run(root, smoothed=1.05, status="failed")
    inp, _ = read_inputs(root)
    assert views.build_latest(["BTC"], inp)[0].can_force_apply


SNAPSHOTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"


@pytest.mark.realdata
@pytest.mark.skipif(not SNAPSHOTS.is_dir(), reason="shared data absent")
def test_under_the_default_config_a_force_apply_of_the_run_the_policy_applied_whole_is_refused(tmp_path: Path) -> None:
    """The default config's runs carry the surface block: the no-op check must compare it too, or a
    force-apply of the run just applied whole writes an event that changes nothing ("0.9947 -> 0.9947")."""
    root = tmp_path / "root"
    assert main(["--root", str(root), "init"]) == 0
    snap = str(SNAPSHOTS / "BTC-2025-12-11T1936Z.json")
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", snap, "--rv", "0.43"]) == 0
    r = Root(root)
    assert read_applied(r, load_config(r)).underlyings["BTC"].surface is not None  # the first apply took the fit whole
    inp, _ = read_inputs(r)
    card = views.build_latest(["BTC"], inp)[0]
    assert not card.can_force_apply and card.force_refusal.startswith("already applied")
    before = (r.applied.read_bytes(), r.live_history.read_bytes())
    assert main(["--root", str(root), "force-apply", "--underlying", "BTC"]) == 1
    assert (r.applied.read_bytes(), r.live_history.read_bytes()) == before
    with pytest.raises(RefusedError, match="already applied"):
        rollback(r, "BTC", to=HistoryQuery.latest_live_run(r, "BTC").run_id)


def _page(root: Root) -> str:
    assert main(["--root", str(root.path), "render"]) == 0
    return root.index_html.read_text()


def test_the_page_offers_no_button_nor_command_for_an_apply_that_would_change_nothing(root: Root) -> None:
    """can_force_apply / can_rollback are what the page shows: a Force-Apply Latest of the run already
    applied and a Roll back to the values applied now are not offered (nor their CLI lines); the
    refusal is said instead. The other rows keep theirs."""
    a = add_live_run(root, smoothed=1.05)
    force_apply(root, "BTC")
    b = add_live_run(root, smoothed=1.10)
    force_apply(root, "BTC")
    html = _page(root)
    assert 'data-action="force-apply" data-for="BTC"' not in html
    assert "force-apply --underlying BTC</code>" not in html
    assert f"already applied: run {b.run_id}&#39;s smoothed values" in html or f"already applied: run {b.run_id}'s smoothed values" in html
    assert f'data-action="rollback" data-for="BTC" data-run="{b.run_id}"' not in html
    assert f"rollback --underlying BTC --to {b.run_id}</code>" not in html
    assert f'data-action="rollback" data-for="BTC" data-run="{a.run_id}"' in html
    assert f"rollback --underlying BTC --to {a.run_id}</code>" in html
    # ETH has no run: nothing to force; a fresh run keeps its button
    c = add_live_run(root, smoothed=1.15)
    html = _page(root)
    assert f'data-action="force-apply" data-for="BTC" data-run="{c.run_id}"' in html


def test_a_refused_apply_writes_nothing_even_when_a_killed_writer_left_an_event_to_recover(root: Root) -> None:
    """The recovery of a lost apply event (YAML written, event not appended) waits for the transaction's first
    write: a force-apply refused as "already applied" used to append the recovered event, and a refusal must
    leave every file of record as it was (found by tests/test_fuzz_inputs.py)."""
    add_live_run(root, smoothed=1.0833)
    force_apply(root, "BTC")
    lines = root.live_history.read_bytes().splitlines(keepends=True)
    root.live_history.write_bytes(b"".join(lines[:-1]))  # killed after the YAML, before its apply event
    before = (root.applied.read_bytes(), root.live_history.read_bytes())
    with pytest.raises(RefusedError, match="already applied"):
        force_apply(root, "BTC")
    assert (root.applied.read_bytes(), root.live_history.read_bytes()) == before
    b = add_live_run(root, smoothed=1.10)
    event = force_apply(root, "BTC")  # the next write records the lost event first, then its own
    events = HistoryQuery.file_order(root, "apply", "BTC")
    assert [e.recovered for e in events][-2:] == [True, None] and events[-1].run_id == event.run_id == b.run_id
