"""Render site/ from the files of record (the dashboard is filled in by the report package)."""

from __future__ import annotations

import json

from calreport.fsutil import atomic_write
from calreport.paths import Root
from calreport.state import read_state


def render_state_json(root: Root) -> None:
    doc = read_state(root)
    atomic_write(root.state_json, (json.dumps(doc.to_json_dict(), indent=2) + "\n").encode("utf-8"))


def render_site(root: Root) -> None:
    render_state_json(root)
