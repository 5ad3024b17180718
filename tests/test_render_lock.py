"""One render of a root at a time: a render that starts while another holds site/'s lock waits for it and
then reads the files of record as they are when it starts, so the dashboard left behind is always the newest
files' (two renders at once could finish in the other order, and the older one would remove the history
pages the newer one wrote)."""

from __future__ import annotations

import threading
import time

import pytest

from calreport.errors import CalreportError
from calreport.report import render
from calreport.report.render import render_site
from calreport.store.files import locked
from calreport.store.paths import Root
from tests.foundation_helpers import add_live_run


def test_a_render_waits_for_the_one_running_and_then_shows_the_files_as_they_are(root: Root) -> None:
    first = add_live_run(root)
    render_site(root)
    done = threading.Event()
    errors: list[BaseException] = []

    def later_render() -> None:
        try:
            render_site(root)
        except BaseException as exc:  # pragma: no cover - reported by the assert below
            errors.append(exc)
        done.set()

    with locked(root.site_dir):  # another render holds the lock
        t = threading.Thread(target=later_render)
        t.start()
        assert not done.wait(0.5), "a render ran while another held site/'s lock"
        second = add_live_run(root, smoothed=1.2, ts="2025-12-11T11:16:00Z")  # written while it waits
    assert done.wait(60) and not errors, errors
    t.join()
    page = (root.site_dir / "index.html").read_text()
    assert second.run_id in page and first.run_id in page


def test_a_render_stuck_behind_a_held_lock_fails_in_one_line(root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "RENDER_LOCK_TIMEOUT_S", 0.2)
    with locked(root.site_dir):
        t0 = time.monotonic()
        with pytest.raises(CalreportError, match="another render of this root held its lock for 0.2 s"):
            render_site(root)
        assert time.monotonic() - t0 < 10
