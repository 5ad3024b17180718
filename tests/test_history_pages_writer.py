"""History pages are written by the render and, for many pages, by one forked child as well
(render._in_two_processes): the site is byte for byte the one a single process writes, a child that
fails costs only time (its pages are written by the parent), and a page's body is spliced into the
rendered template as UTF-8 bytes exactly where the template prints it."""

from __future__ import annotations

import os
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from calreport.report import render, views
from calreport.report.render import render_site
from calreport.store import history
from calreport.store.paths import Root

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _small_pages(root: Root) -> None:
    cfg = root.calibration_config
    cfg.write_text(cfg.read_text().replace("max_rows: 50", "max_rows: 2").replace("page_size: 500", "page_size: 3"))


def _history(root: Root, rows) -> None:
    _small_pages(root)
    for i in range(40):
        rows.auto(underlying="ETH" if i % 3 else "BTC", reason="<b>odd</b> & 'q' \u00b1 \u00e9" if i % 4 == 0 else "ok")
        rows.live(underlying="BTC", status="failed" if i % 5 == 0 else "ok")


def _site(root: Root) -> dict[str, bytes]:
    return {str(p.relative_to(root.site_dir)): p.read_bytes() for p in sorted(root.site_dir.rglob("*")) if p.is_file()}


def _render_copy(root: Root, tmp: Path, name: str, monkeypatch: pytest.MonkeyPatch, fork: bool) -> tuple[dict[str, bytes], render.RenderResult]:
    """Render a copy of `root` at one path (the site names its root) with the page writer forking or not."""
    where = tmp / "copy"
    shutil.rmtree(where, ignore_errors=True)
    shutil.copytree(root.path, where)
    shutil.rmtree(where / "site", ignore_errors=True)
    with monkeypatch.context() as m:
        m.setattr(render, "_PAGES_FORK_MIN", 1 if fork else 10**9)
        m.setattr(history, "_may_fork", lambda: fork)
        result = render_site(Root(where), now=NOW)
    return _site(Root(where)), result


def test_pages_written_by_two_processes_equal_those_one_process_writes(root, rows, tmp_path, monkeypatch) -> None:
    _history(root, rows)
    forks: list[int] = []
    real_fork = os.fork
    monkeypatch.setattr(os, "fork", lambda: forks.append(1) or real_fork())
    one, one_result = _render_copy(root, tmp_path, "one", monkeypatch, fork=False)
    assert forks == []
    two, two_result = _render_copy(root, tmp_path, "two", monkeypatch, fork=True)
    assert forks, "the page writer did not fork"
    assert one_result.pages_total == two_result.pages_total == two_result.pages_written > 16
    assert sorted(two) == sorted(one)
    assert two == one


def test_a_page_writer_child_that_fails_leaves_its_pages_to_the_parent(root, rows, tmp_path, monkeypatch) -> None:
    _history(root, rows)
    one, _ = _render_copy(root, tmp_path, "one", monkeypatch, fork=False)
    parent = os.getpid()
    real = render._write_page

    def failing_in_child(*args):
        if os.getpid() != parent:
            raise OSError("disk full (in the child)")
        return real(*args)

    monkeypatch.setattr(render, "_write_page", failing_in_child)
    two, result = _render_copy(root, tmp_path, "two", monkeypatch, fork=True)
    assert two == one
    assert result.pages_written == result.pages_total


def test_a_parent_error_while_writing_pages_surfaces_after_the_child_is_reaped(root, rows, tmp_path, monkeypatch) -> None:
    _history(root, rows)
    parent = os.getpid()
    real = render._write_page

    def failing_in_parent(*args):
        if os.getpid() == parent:
            raise OSError("disk full (in the parent)")
        return real(*args)

    monkeypatch.setattr(render, "_write_page", failing_in_parent)
    with pytest.raises(OSError, match="in the parent"):
        _render_copy(root, tmp_path, "two", monkeypatch, fork=True)
    with pytest.raises(ChildProcessError):  # no child left behind, unreaped
        os.waitpid(-1, os.WNOHANG)


def test_a_history_page_is_the_template_rendered_with_its_body_as_markup() -> None:
    """render_page splices the body's bytes where the template prints it: the bytes of rendering the
    body as Markup (non-ASCII and markup characters included)."""
    plan = views.page_plans("auto", 10, 3)[1]
    body = "<tr><td>\u00b10.1315 &lt;b&gt; \u00e9</td></tr>\n"
    whole = render.env().get_template("history.html.j2").render(
        p=views.history_page(plan, "k" * 32, render.Markup(body)), csp=render.csp(), version=render.__version__
    )
    assert render.render_page(plan, "k" * 32, body.encode("utf-8")) == whole.encode("utf-8")
    assert render.render_page(plan, "k" * 32, b"") == whole.replace(body, "").encode("utf-8")
