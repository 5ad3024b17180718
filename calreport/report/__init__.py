"""The static dashboard (site/index.html) and the state document (site/api/calibration/state.json)."""

from __future__ import annotations

from calreport.model import CalibrationConfig
from calreport.store.paths import Root


def render_site(root: Root, config: CalibrationConfig | None = None) -> None:
    """Render site/ from the files of record (`config`: the one the command already read)."""
    from calreport.report.render import render_site as _render

    _render(root, config=config)
