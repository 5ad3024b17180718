"""A history page's rows arrive as UTF-8 (render.page_view) and its body is spliced into the rendered
template as bytes exactly where the template prints it: the bytes of rendering the body as Markup."""

from __future__ import annotations

from calreport.report import render, views


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
