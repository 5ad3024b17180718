"""The static dashboard (site/index.html) and the state document (site/api/calibration/state.json)."""

from __future__ import annotations

from calreport.store.paths import Root


def render_site(root: Root) -> None:
    """Render site/ from the files of record. Implemented in calreport.report.render."""
    from calreport.report.render import render_site as _render

    _render(root)
