"""A HistoryTail shared by two readers: the one that starts later still sees every row."""

from __future__ import annotations

from calreport.model import ApplyEvent, LiveRun, Multipliers
from calreport.store.history import append_row
from calreport.store.paths import Root
from calreport.store.query import HistoryTail


def test_a_later_reader_of_another_row_type_sees_the_lines_an_earlier_reader_passed_over(tmp_path) -> None:
    root = Root(tmp_path)
    root.live_history.parent.mkdir(parents=True)
    for i in range(3):
        append_row(root.live_history, LiveRun(run_id=f"r{i}", underlying="BTC", ts=f"2025-12-1{i}T00:00:00Z"))
    append_row(root.live_history, ApplyEvent(run_id="r0", underlying="BTC", ts="2025-12-10T00:00:01Z", applied=Multipliers(global_=1.1)))
    append_row(root.live_history, LiveRun(run_id="r3", underlying="BTC", ts="2025-12-13T00:00:00Z"))
    tail = HistoryTail(root.live_history)
    # the apply transaction's recovery reads back to the last apply event first ...
    assert [e.run_id for e in tail.rows(ApplyEvent, "BTC")] == ["r0"]
    # ... and the live run's previous-run lookup that follows must still see every live run
    assert [r.run_id for r in tail.rows(LiveRun, "BTC")] == ["r3", "r2", "r1", "r0"]
    assert [r.run_id for r in tail.rows(LiveRun, "ETH")] == []
