"""Render site/ from the files of record: index.html, paged history pages and state.json.

This is the I/O edge of the dashboard: read config, YAML, history and run details once, build
the view-models (views.py, pure), fill the templates, write every file by atomic replace. If the
YAML is invalid the page still renders, with a banner and no applied numbers, and the last good
state.json is kept.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined
from pydantic import ValidationError

from calreport import __version__
from calreport.errors import CalreportError
from calreport.report import views
from calreport.store import history
from calreport.store.applied import read_applied
from calreport.store.config import CalibrationConfig, load_config
from calreport.store.files import atomic_write
from calreport.store.history import HistoryIndex, StaleIndex
from calreport.store.models import AutoRun, LiveRun, RunDetail, utc_now
from calreport.store.paths import Root
from calreport.store.state import state_document

TEMPLATES = Path(__file__).parent / "templates"
HISTORY_SUBDIR = "history"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_PAGE_RE = re.compile(r"^(live|auto)-(\d+)\.html$")

ENV = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=True,  # every template, whatever its extension (select_autoescape would skip *.j2)
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _script_text() -> str:
    return ENV.get_template("app.js.j2").render()


SCRIPT_HASH = "sha256-" + base64.b64encode(hashlib.sha256(_script_text().encode("utf-8")).digest()).decode()


def csp(*, header: bool = False) -> str:
    """The page's Content-Security-Policy: only our own inline script (by hash) may run."""
    parts = [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        f"script-src '{SCRIPT_HASH}'",
        "img-src data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
    if header:  # ignored (with a console warning) when delivered by <meta>
        parts.append("frame-ancestors 'none'")
    return "; ".join(parts)


def _code_key() -> str:
    """Changes whenever the templates or the view code change, so stale history pages are redone."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(TEMPLATES.glob("*.j2")) + [Path(views.__file__), Path(__file__), Path(views.charts.__file__)]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


CODE_KEY = _code_key()


@dataclass
class RenderResult:
    """What a render did and where the time went (seconds), for benchmarks and the CLI."""

    timings: dict[str, float] = field(default_factory=dict)
    index_bytes: int = 0
    pages_total: int = 0
    pages_written: int = 0
    state_written: bool = False
    problems: list[str] = field(default_factory=list)


class HistoryCache:
    """History indexes kept between renders. History files are append-only, so a long-running
    process (`calreport serve`) parses only the lines appended since its last read, and every
    process starts from the index persisted under data/cache/history/ (history.index_history says
    when either is trusted). Counts and skipped lines equal history.read_history(path)'s."""

    def __init__(self) -> None:
        self._files: dict[Path, HistoryIndex] = {}

    def read(self, path: Path, cache_file: Path | None = None) -> HistoryIndex:
        index = history.index_history(path, self._files.get(path), cache_file)
        self._files[path] = index
        return index

    def forget(self) -> None:
        self._files.clear()


def history_cache_file(root: Root, path: Path) -> Path:
    return root.cache_dir / "history" / f"{path.name}.index"


def _read_details(root: Root, runs: list) -> tuple[dict[str, RunDetail], dict[str, str]]:
    details: dict[str, RunDetail] = {}
    errors: dict[str, str] = {}
    for run in runs:
        rid = run.run_id or ""
        if not _SAFE_ID.match(rid):
            continue
        path = root.run_detail(rid)
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            continue
        except OSError as exc:
            errors[rid] = f"history/runs/{rid}.json: cannot read ({exc.strerror or exc})"
            continue
        try:
            details[rid] = RunDetail.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors[rid] = f"history/runs/{rid}.json is unreadable ({first}); quote detail not shown"
    return details, errors


def read_inputs(
    root: Root,
    now: datetime | None = None,
    timings: dict[str, float] | None = None,
    cache: HistoryCache | None = None,
    persist: bool = True,
) -> views.Inputs:
    """Read every file of record once. Problems become banner text, never exceptions."""
    t = timings if timings is not None else {}
    t0 = time.perf_counter()
    config_error = applied_error = None
    try:
        config = load_config(root)
    except CalreportError as exc:
        config, config_error = CalibrationConfig(), exc.one_line()
    applied = None
    if config_error:
        applied_error = "cannot check the applied multipliers while config/calibration.yaml is invalid"
    else:
        try:
            applied = read_applied(root, config)
        except CalreportError as exc:
            applied_error = exc.one_line()
    t1 = time.perf_counter()
    cache = cache if cache is not None else HistoryCache()
    live, auto = (cache.read(p, history_cache_file(root, p) if persist else None) for p in (root.live_history, root.auto_history))
    t2 = time.perf_counter()
    latest = views.latest_by_underlying(views.live_only(live.of_type(LiveRun)))
    details, detail_errors = _read_details(root, list(latest.values()))
    t3 = time.perf_counter()
    t["read_config_yaml"] = t1 - t0
    t["parse_history"] = t2 - t1
    t["read_details"] = t3 - t2
    return views.Inputs(
        config=config,
        config_error=config_error,
        applied=applied,
        applied_error=applied_error,
        live=live,
        auto=auto,
        details=details,
        detail_errors=detail_errors,
        now=now or utc_now(),
        state_json_exists=root.state_json.exists(),
    )


def render_index(inp: views.Inputs) -> str:
    return ENV.get_template("index.html.j2").render(d=views.build_dashboard(inp), csp=csp(), version=__version__)


def render_page(page: views.HistoryPage) -> str:
    return ENV.get_template("history.html.j2").render(p=page, rows=page.rows(), csp=csp(), version=__version__)


def _page_is_current(path: Path, key: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return f'name="calreport-page-key" content="{key}"'.encode() in head


def write_pages(root: Root, inp: views.Inputs, result: RenderResult) -> None:
    """Paged history when a table has more rows than the index shows; unchanged pages are not rewritten."""
    out_dir = root.site_dir / HISTORY_SUBDIR
    keep: set[str] = set()
    limit = inp.config.dashboard.max_rows
    for kind, count in (("live", len(inp.live.of_type(LiveRun))), ("auto", len(inp.auto.of_type(AutoRun)))):
        if count <= limit:
            continue
        for page in views.build_pages(inp, kind, CODE_KEY):
            name = f"{kind}-{page.number}.html"
            keep.add(name)
            result.pages_total += 1
            path = out_dir / name
            if _page_is_current(path, page.key):
                continue
            atomic_write(path, render_page(page).encode("utf-8"))
            result.pages_written += 1
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            if _PAGE_RE.match(p.name) and p.name not in keep:
                p.unlink(missing_ok=True)


def state_json_bytes(inp: views.Inputs) -> bytes | None:
    if inp.applied is None:
        return None
    doc = state_document(inp.applied, inp.now)
    return (json.dumps(doc.to_json_dict(), indent=2) + "\n").encode("utf-8")


def render_site(root: Root, now: datetime | None = None, cache: HistoryCache | None = None) -> RenderResult:
    """Regenerate site/ from the files of record. The one renderer behind every write and `calreport render`
    (`cache` lets a long-running server parse only appended history lines)."""
    try:
        return _render_site(root, now, cache if cache is not None else HistoryCache(), persist=True)
    except StaleIndex:  # a cached index that lied about a row: never trusted again, read from scratch
        for p in (root.live_history, root.auto_history):
            history_cache_file(root, p).unlink(missing_ok=True)
        if cache is not None:
            cache.forget()
        return _render_site(root, now, HistoryCache(), persist=False)


def _render_site(root: Root, now: datetime | None, cache: HistoryCache, persist: bool) -> RenderResult:
    result = RenderResult()
    t = result.timings
    inp = read_inputs(root, now, t, cache, persist)
    if inp.config_error:
        result.problems.append(inp.config_error)
    if inp.applied_error:
        result.problems.append(inp.applied_error)
    t0 = time.perf_counter()
    html = render_index(inp)
    t1 = time.perf_counter()
    with history.gc_paused():  # thousands of rows formatted and escaped: no cycles to collect
        write_pages(root, inp, result)
    t2 = time.perf_counter()
    state = state_json_bytes(inp)
    if state is not None:  # invalid YAML: keep the last good state document
        atomic_write(root.state_json, state)
        result.state_written = True
    data = html.encode("utf-8")
    atomic_write(root.index_html, data)
    t3 = time.perf_counter()
    result.index_bytes = len(data)
    t["build_and_render_index"] = t1 - t0
    t["history_pages"] = t2 - t1
    t["write"] = t3 - t2
    t["total"] = sum(v for k, v in t.items() if k != "total")
    return result
