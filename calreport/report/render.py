"""Render site/ from the files of record: index.html, paged history pages and state.json.

This is the I/O edge of the dashboard: read config, YAML, history and run details once, build
the view-models (views.py, pure), fill the templates, write every file by atomic replace. If the
YAML is invalid the page still renders, with a banner and no applied numbers, and the last good
state.json is kept.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import os
import re
import shlex
import time
from dataclasses import dataclass, field
from datetime import datetime
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Sequence

from filelock import Timeout
from jinja2 import Environment, FileSystemBytecodeCache, FileSystemLoader, StrictUndefined, TemplateError
from markupsafe import Markup, escape

try:  # markupsafe's C escape, str -> str: escape() without the Markup object and its copy back to str
    from markupsafe._speedups import _escape_inner as _escape_text
except ImportError:  # pragma: no cover - markupsafe without its speedups, or a version that renamed it

    def _escape_text(s: str) -> str:
        return str(escape(s))
from pydantic import ValidationError

from calreport import __version__, fmt, timeutil
from calreport.errors import CalreportError
from calreport.model import AutoRun, BacktestSummary, CalibrationConfig, HistoryRow, RunDetail
from calreport.report import charts, compare, views
from calreport.report.backtest import BacktestLink, backtest_page, sync_backtest_pages
from calreport.store import history
from calreport.store.applied import read_applied
from calreport.store.config import load_config
from calreport.store.files import atomic_write, locked, read_input
from calreport.store.history import RowRef, StaleIndex
from calreport.store.paths import Root, lock_path
from calreport.store.query import HistoryCache, HistoryQuery, history_cache_file
from calreport.store.state import StatusIndex, state_document

TEMPLATES = Path(__file__).parent / "templates"
HISTORY_SUBDIR = "history"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
_PAGE_RE = re.compile(r"^(live|auto)-(\d+)\.html$")
_HISTORY_FILES = {"live": "history/live_calibration.jsonl", "auto": "history/auto_calibrate.jsonl"}


@functools.cache
def env() -> Environment:
    """The template environment, made on first use (importing this module opens no template)."""
    e = Environment(
        loader=FileSystemLoader(str(TEMPLATES)),
        autoescape=True,  # every template, whatever its extension (select_autoescape would skip *.j2)
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    e.filters["shell"] = shlex.quote  # a CLI argument shown for copy-paste is quoted for the shell
    return e


class _BytecodeCache(FileSystemBytecodeCache):
    """FileSystemBytecodeCache whose writes may fail: the compiled templates are a speed-up, never a reason for a
    render to fail (a cache dir removed while a process runs: `rm -r data/cache` under `calreport serve`, or the
    directory of a root rendered earlier by the same process; Jinja's own writer raises FileNotFoundError then)."""

    def dump_bytecode(self, bucket: Any) -> None:
        try:
            super().dump_bytecode(bucket)
        except OSError:
            pass


def use_bytecode_cache(root: Root) -> None:
    """Compiled templates kept under the root's cache dir (data/cache/jinja): a one-shot render in a
    fresh process loads them instead of compiling every template (~0.03-0.05 s of a warm render).
    Jinja keys each entry by the template's name and source checksum, so an edited template is
    compiled again; the directory is calreport's own, like the history index beside it. A root whose
    cache dir cannot be made renders without it."""
    path = root.cache_dir / "jinja"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        env().bytecode_cache = None
        return
    env().bytecode_cache = _BytecodeCache(str(path))


def compile_templates() -> None:
    """Compile every template now (into the bytecode cache when it is on): what a cold render does
    while worker processes parse a long history, instead of after. A template that does not compile
    is left for the render that uses it to report."""
    for p in sorted(TEMPLATES.glob("*.j2")):
        try:
            env().get_template(p.name)
        except TemplateError:
            pass
    script_hash()
    code_key()


@functools.cache
def script_hash() -> str:
    """The CSP hash of the page's one inline script (rendered on first use, then kept)."""
    text = env().get_template("app.js.j2").render()
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()


def csp(*, header: bool = False) -> str:
    """The page's Content-Security-Policy: only our own inline script (by hash) may run."""
    parts = [
        "default-src 'none'",
        "style-src 'unsafe-inline'",
        f"script-src '{script_hash()}'",
        "img-src data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
    ]
    if header:  # ignored (with a console warning) when delivered by <meta>
        parts.append("frame-ancestors 'none'")
    return "; ".join(parts)


@functools.cache
def code_key() -> str:
    """Changes whenever the templates or the view code change, so stale history pages are redone
    (hashed on first use, then kept)."""
    h = hashlib.sha256(__version__.encode())
    for p in sorted(TEMPLATES.glob("*.j2")) + [Path(views.__file__), Path(__file__), Path(charts.__file__)]:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


@dataclass
class RenderResult:
    """What a render did and where the time went (seconds), for benchmarks and the CLI."""

    timings: dict[str, float] = field(default_factory=dict)
    index_bytes: int = 0
    pages_total: int = 0
    pages_written: int = 0
    state_written: bool = False
    problems: list[str] = field(default_factory=list)
    # peak memory (VmHWM, kB) of each process that parsed part of the history for this render
    # (history._scan_parallel); they share the parent's pages copy-on-write, so a sum overstates
    scan_worker_peaks_kb: list[int] = field(default_factory=list)


def _read_details(root: Root, runs: list) -> tuple[dict[str, RunDetail], dict[str, str]]:
    details: dict[str, RunDetail] = {}
    errors: dict[str, str] = {}
    for run in runs:
        rid = run.run_id or ""
        if not _SAFE_ID.match(rid):
            continue
        path = root.run_detail(rid)
        if not path.exists():
            continue
        try:
            raw = read_input(path)  # regular files only: a FIFO here must not hang the render
        except CalreportError as exc:
            errors[rid] = f"history/runs/{rid}.json: {exc.problem}"
            continue
        try:
            details[rid] = RunDetail.model_validate_json(raw)
        except (ValidationError, ValueError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            errors[rid] = f"history/runs/{rid}.json is unreadable ({first}); quote detail not shown"
    return details, errors


def _skipped(query: HistoryQuery, kind: str) -> tuple[int, list[int]]:
    got = query.skipped(kind)  # type: ignore[arg-type]
    return got.count, got.lines


def shown_history(query: HistoryQuery, config: CalibrationConfig) -> views.HistoryShown:
    """Exactly the history rows the dashboard shows, typed, newest first by time."""
    n, points = config.dashboard.max_rows, views.CHART_POINTS
    latest_live = query.latest_live()
    applying: dict[tuple[str, str], object] = {}
    for u, run in latest_live.items():
        if run.run_id and (event := query.apply_event_naming(u, run.run_id)) is not None:
            applying[(u, run.run_id)] = event
    names = sorted(query.underlyings())
    chart_runs = {u: query.live_runs(points, u)[::-1] for u in names}
    chart_events = {}
    for u, runs in chart_runs.items():
        times = [t for r in runs if (t := timeutil.time_ms(r.ts)) is not None]
        chart_events[u] = query.apply_events_for_chart(u, min(times)) if times else []
    return views.HistoryShown(
        underlyings=set(names),
        latest_live=latest_live,
        latest_auto=query.latest_auto(),
        latest_events=query.latest_apply_events(),
        applying_event=applying,  # type: ignore[arg-type]
        live_rows=query.live_runs(n),
        live_total=query.total("live"),
        auto_rows=query.auto_runs(n),
        auto_total=query.total("auto"),
        event_log=query.apply_events(n),
        events_total=query.total("apply"),
        chart_runs=chart_runs,
        chart_events=chart_events,
        chart_autos={u: query.auto_runs(points, u)[::-1] for u in names},
        skipped={path: _skipped(query, kind) for kind, path in _HISTORY_FILES.items()},
    )


def read_inputs(
    root: Root,
    now: datetime | None = None,
    timings: dict[str, float] | None = None,
    cache: HistoryCache | None = None,
    persist: bool = True,
    config: CalibrationConfig | None = None,
) -> tuple[views.Inputs, HistoryQuery]:
    """Read every file of record once. Problems become banner text, never exceptions. Returns the
    query too: the history pages ask it for their rows."""
    t = timings if timings is not None else {}
    t0 = time.perf_counter()
    config_error = applied_error = None
    if config is None:  # a command passes the config it already read; `calreport render` reads it here
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
    query = HistoryQuery.read(root, cache, persist, on_row=page_view, meanwhile=compile_templates)
    t2 = time.perf_counter()
    shown = shown_history(query, config)
    statuses = StatusIndex.from_events(applied, query.apply_event_keys()) if applied is not None else None
    t3 = time.perf_counter()
    details, detail_errors = _read_details(root, list(shown.latest_live.values()))
    t4 = time.perf_counter()
    t["read_config_yaml"] = t1 - t0
    t["parse_history"] = t2 - t1
    t["shown_rows"] = t3 - t2
    t["read_details"] = t4 - t3
    inputs = views.Inputs(
        config=config,
        config_error=config_error,
        applied=applied,
        applied_error=applied_error,
        history=shown,
        statuses=statuses,
        details=details,
        detail_errors=detail_errors,
        now=now or timeutil.utc_now(),
        state_json_exists=root.state_json.exists(),
    )
    return inputs, query


def cli_prefix(root: Root | None) -> str:
    """`calreport --root ROOT`, shell-quoted: the start of every command the static page shows."""
    return "calreport" if root is None else shlex.join(["calreport", "--root", str(root.path)])


def render_index(
    inp: views.Inputs, root: Root | None = None, backtests: list[BacktestLink] | None = None, compare_links: dict[str, str] | None = None
) -> str:
    return env().get_template("index.html.j2").render(
        d=views.build_dashboard(inp, compare_links), csp=csp(), version=__version__, cli=cli_prefix(root), backtests=backtests or []
    )


def render_compare(c: compare.Comparison, command: str) -> str:
    return env().get_template("compare.html.j2").render(
        c=c, sections=compare.sections(c), a_time=fmt.time(c.a.time), b_time=fmt.time(c.b.time), command=command,
        csp=csp(), version=__version__,
    )


def write_compare_pages(root: Root, inp: views.Inputs) -> dict[str, str]:
    """site/compare/<run_id>.html for each live run on the dashboard's table: the applied state of its
    underlying -> the run. Unchanged pages are not rewritten; pages of runs no longer shown are removed.
    Returns run_id -> href (relative to site/)."""
    out_dir = root.site_dir / "compare"
    links: dict[str, str] = {}
    if inp.applied is not None:
        known = {r.run_id: r for r in [*inp.history.live_rows, *inp.history.latest_live.values()] if r.run_id}
        for run in inp.history.live_rows:
            rid = run.run_id or ""
            if not _SAFE_ID.match(rid) or rid in links:
                continue
            entry = inp.applied.entry(run.underlying or "")
            c = compare.compare(compare.side_of_applied(entry, known.get(entry.run_id or "")), compare.side_of_run(run))
            data = render_compare(c, f"{cli_prefix(root)} diff {shlex.quote(rid)}").encode("utf-8")
            path = root.site_dir / compare.page_name(rid)
            try:
                same = path.read_bytes() == data
            except OSError:
                same = False
            if not same:
                atomic_write(path, data)
            links[rid] = compare.page_name(rid)
    if out_dir.is_dir():
        for p in out_dir.glob("*.html"):
            if p.stem not in links:
                p.unlink(missing_ok=True)
    return links


def render_backtest_page(summary: BacktestSummary, rows: Sequence[dict[str, Any]], *, back_href: str | None) -> str:
    """One backtest's page (report/backtest.py views; same base template, CSP and styles as the dashboard)."""
    page = backtest_page(summary, rows, back_href=back_href)
    return env().get_template("backtest.html.j2").render(p=page, csp=csp(), version=__version__)


_BODY_MARK = "\x00calreport-page-body\x00"  # no template prints a NUL of its own


def render_page(plan: views.PagePlan, key: str, body: bytes) -> bytes:
    """A history page as UTF-8: the template rendered around a marker, the body's bytes put in its place.
    A long history's rows arrive as UTF-8 (page_view), so 500 rows are joined as bytes, never decoded
    and encoded again; the bytes are those of rendering the body as Markup."""
    text = env().get_template("history.html.j2").render(p=views.history_page(plan, key, Markup(_BODY_MARK)), csp=csp(), version=__version__)
    head, mark, tail = text.partition(_BODY_MARK)
    if not mark or _BODY_MARK in tail:
        raise ValueError("history.html.j2 must print the page body exactly once")
    return b"".join((head.encode("utf-8"), body, tail.encode("utf-8")))


class CompiledRow:
    """A row macro of _macros.html.j2 (live_row, auto_row) compiled to literal text and value slots,
    so a history page's 500 rows cost a string join each instead of a template call (the rows of
    a 100,000-run history are all written by a cold render).

    The macro tests fields only for being empty, so its output depends on which fields are empty
    (the row's shape) and, beyond that, only on the escaped values it prints. Each shape is rendered
    once with a marker for every non-empty field; a row is that text with its escaped values in the
    markers' places. Output is the macro's own, byte for byte (tests/test_report.py checks it)."""

    _MARK = re.compile("\x01(\\d+)\x02")

    def __init__(self, macro: str) -> None:
        self.macro = macro
        self._shapes: dict[tuple[bool, ...], tuple[list[str], Callable[[list[str]], tuple[str, ...]]]] = {}

    def _compile(self, row: tuple[str, ...], shape: tuple[bool, ...]) -> tuple[list[str], Callable[[list[str]], tuple[str, ...]]]:
        marked = type(row)._make(f"\x01{i}\x02" if full else "" for i, full in enumerate(shape))  # type: ignore[attr-defined]
        text = str(getattr(env().get_template("_macros.html.j2").module, self.macro)(marked))
        pieces = self._MARK.split(text)  # literal, slot, literal, slot, ..., literal
        literals = pieces[0::2]
        if any("\x01" in p or "\x02" in p for p in literals):
            raise ValueError(f"macro {self.macro} changed a field marker; it may only print fields")
        slots = [int(i) for i in pieces[1::2]]
        pick: Callable[[list[str]], tuple[str, ...]]
        if len(slots) > 1:
            pick = itemgetter(*slots)
        else:  # itemgetter of one index gives the item itself, not a 1-tuple
            pick = lambda values: tuple(values[i] for i in slots)  # noqa: E731
        parts = [""] * (2 * len(literals) - 1)  # literal, value, literal, ..., literal: joined at once
        parts[0::2] = literals
        compiled = (parts, pick)
        self._shapes[shape] = compiled
        return compiled

    def __call__(self, row: tuple[str, ...]) -> str:
        shape = tuple(map(bool, row))
        parts, pick = self._shapes.get(shape) or self._compile(row, shape)
        escaped = _escape_text("\x00".join(row)).split("\x00")  # one escape call for the whole row
        if len(escaped) != len(row):  # a value holds NUL itself
            escaped = [_escape_text(v) for v in row]
        out = parts[:]  # a "%" format of the same text costs a third more: it parses the text every time
        out[1::2] = pick(escaped)
        return "".join(out)


LIVE_ROW = CompiledRow("live_row")
AUTO_ROW = CompiledRow("auto_row")


def page_view(run: HistoryRow) -> object:
    """What a history page keeps of a row the index validated: an auto run's finished row HTML as
    UTF-8 (a few hundred bytes: it crosses a scan worker's pipe and joins its page without a decode
    or an encode), a live run's formatted row (its status is derived per render); else None."""
    if type(run) is AutoRun:  # the common row of a long history, without page_row's checks
        return AUTO_ROW(views.auto_row(run)).encode("utf-8")
    row = views.page_row(run)
    return AUTO_ROW(row).encode("utf-8") if isinstance(row, views.AutoRow) else row


def page_body(kind: str, rows: list, statuses: list[str]) -> bytes:
    """The rows of one history page as UTF-8 HTML, newest first, one line each."""
    if kind == "live":
        html = [LIVE_ROW(r) for r in views.with_status(rows, statuses)]
        return ("\n".join(html) + "\n").encode("utf-8") if html else b""
    return b"\n".join(rows) + b"\n" if rows else b""


_PAGE_END = b"</html>"


def _page_is_current(path: Path, key: str) -> bool:
    """The page on disk carries `key` and is whole (pages are written without fsync: a power cut
    may leave one short, and the next render rewrites it)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - len(_PAGE_END)))
            end = fh.read()
    except OSError:
        return False
    return f'name="calreport-page-key" content="{key}"'.encode() in head and end == _PAGE_END


def page_key(plan: views.PagePlan, size: int, refs: list[RowRef], statuses: list[str]) -> str:
    """Changes only when the page's rows, their derived status, its neighbours or the code change."""
    h = hashlib.sha256(f"{code_key()}|{plan.kind}|{size}|{plan.newer is not None}|".encode())
    h.update("".join([f"{r.run_id}:{r.ts}:{s}|" for r, s in zip(refs, statuses)]).encode())  # the same bytes, hashed at once
    return h.hexdigest()[:32]


def write_pages(root: Root, inp: views.Inputs, query: HistoryQuery, result: RenderResult) -> None:
    """Paged history when a table has more rows than the index shows; unchanged pages are not rewritten
    (a page's rows are read and formatted only when it must be written)."""
    out_dir = root.site_dir / HISTORY_SUBDIR
    keep: set[str] = set()
    limit, size = inp.config.dashboard.max_rows, inp.config.dashboard.page_size
    for kind in ("live", "auto"):
        total = query.total(kind)  # type: ignore[arg-type]
        if total <= limit:
            continue
        for plan in views.page_plans(kind, total, size):
            refs = query.page_refs(kind, plan.number, size)  # type: ignore[arg-type]
            if kind == "live":
                statuses = [views.derive_status(inp.statuses, r) for r in refs]  # type: ignore[arg-type]
            else:
                statuses = [r.status or views.UNKNOWN for r in refs]
            key = page_key(plan, size, refs, statuses)
            name = f"{kind}-{plan.number}.html"
            keep.add(name)
            result.pages_total += 1
            path = out_dir / name
            if _page_is_current(path, key):
                continue
            rows = query.page_views(kind, plan.number, size, page_view)  # type: ignore[arg-type]
            atomic_write(path, render_page(plan, key, page_body(kind, rows, statuses)), durable=False)
            result.pages_written += 1
    query.release_views()
    if out_dir.is_dir():
        for p in out_dir.iterdir():
            if _PAGE_RE.match(p.name) and p.name not in keep:
                p.unlink(missing_ok=True)


def state_json_bytes(inp: views.Inputs) -> bytes | None:
    if inp.applied is None:
        return None
    doc = state_document(inp.applied, inp.now)
    return (json.dumps(doc.to_json_dict(), indent=2) + "\n").encode("utf-8")


RENDER_LOCK_TIMEOUT_S = 120.0  # a cold render of 100,000 rows takes seconds; one stuck this long is not waited for


def render_site(
    root: Root,
    now: datetime | None = None,
    cache: HistoryCache | None = None,
    *,
    config: CalibrationConfig | None = None,
) -> RenderResult:
    """Regenerate site/ from the files of record. The one renderer behind every write and `calreport render`
    (`cache` lets a long-running server parse only appended history lines).

    One render at a time per root (site/'s sibling lock), each reading the files of record once it holds the
    lock: two renders at once (`calreport serve` re-rendering while `calibrate` does) could otherwise finish
    in the other order, and the one that read older files would remove the history pages the newer one wrote."""
    try:
        with locked(root.site_dir, timeout=RENDER_LOCK_TIMEOUT_S):
            try:
                return _render_site(root, now, cache if cache is not None else HistoryCache(), persist=True, config=config)
            except StaleIndex:  # a cached index that lied about a row: never trusted again, read from scratch
                for p in (root.live_history, root.auto_history):
                    history_cache_file(root, p).unlink(missing_ok=True)
                if cache is not None:
                    cache.forget()
                return _render_site(root, now, HistoryCache(), persist=False, config=config)
    except Timeout:
        raise CalreportError(f"another render of this root held its lock for {RENDER_LOCK_TIMEOUT_S:g} s", lock_path(root.site_dir)) from None


def _render_site(
    root: Root, now: datetime | None, cache: HistoryCache, persist: bool, config: CalibrationConfig | None = None
) -> RenderResult:
    result = RenderResult()
    t = result.timings
    use_bytecode_cache(root)
    with history.gc_paused():  # 100,000 rows validated, indexed and formatted: no cycles to collect
        inp, query = read_inputs(root, now, t, cache, persist, config)
    result.scan_worker_peaks_kb = query.scan_worker_peaks_kb()
    if inp.config_error:
        result.problems.append(inp.config_error)
    if inp.applied_error:
        result.problems.append(inp.applied_error)
    t0 = time.perf_counter()
    links = write_compare_pages(root, inp)
    html = render_index(inp, root, sync_backtest_pages(root), links)
    t1 = time.perf_counter()
    with history.gc_paused():  # thousands of rows formatted and escaped: no cycles to collect
        write_pages(root, inp, query, result)
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
