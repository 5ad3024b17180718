"""The one-shot render keeps its compiled templates in the root's cache, and never trusts them blindly."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime

from calreport.report import render
from calreport.report.render import render_site
from calreport.store.paths import Root


def _site_bytes(root: Root) -> dict[str, bytes]:
    return {str(p.relative_to(root.site_dir)): p.read_bytes() for p in sorted(root.site_dir.rglob("*.html"))}


def test_render_keeps_compiled_templates_in_the_roots_cache_dir(root: Root, rows) -> None:
    for _ in range(3):
        rows.auto()
    render.env.cache_clear()  # a fresh process: nothing compiled in memory yet
    render_site(root)
    cached = list((root.cache_dir / "jinja").iterdir())
    assert cached, "a render should leave its compiled templates under data/cache/jinja"


def test_a_corrupt_template_cache_is_compiled_again_and_the_pages_are_the_same(root: Root, rows) -> None:
    for _ in range(3):
        rows.auto()
    now = datetime(2025, 12, 12, tzinfo=UTC)  # the page shows when it was rendered
    render.env.cache_clear()
    render_site(root, now)
    before = _site_bytes(root)
    for p in (root.cache_dir / "jinja").iterdir():
        p.write_bytes(b"not marshalled code")
    render.env.cache_clear()
    render_site(root, now)
    assert _site_bytes(root) == before


def test_a_root_whose_cache_dir_cannot_be_made_still_renders(root: Root, rows) -> None:
    rows.auto()
    shutil.rmtree(root.cache_dir / "jinja", ignore_errors=True)  # `init` rendered once already
    root.cache_dir.mkdir(parents=True, exist_ok=True)
    (root.cache_dir / "jinja").write_bytes(b"a file where the directory would go")
    render.env.cache_clear()
    result = render_site(root)
    assert root.index_html.exists() and not result.problems


def test_a_cache_dir_removed_while_the_process_runs_costs_the_cache_not_the_render(root: Root, rows) -> None:
    """The environment is the process's; its bytecode cache points at the last root rendered. With that
    directory gone (`rm -r data/cache` under `calreport serve`, or an earlier root of the same process
    deleted) a template compiled afresh raised FileNotFoundError from Jinja's cache writer: the backtest
    page of another root failed that way in the test suite."""
    rows.auto()
    render.env.cache_clear()
    render_site(root)  # the environment's bytecode cache is now this root's data/cache/jinja
    shutil.rmtree(root.cache_dir)
    render.env().cache.clear()  # nothing compiled in memory: the next template is compiled and dumped
    html = render.env().get_template("history.html.j2")  # what render_backtest_page & co. do
    assert html is not None and not root.cache_dir.exists()  # no cache dir made again behind the user's back
