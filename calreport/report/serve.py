"""`calreport serve`: the dashboard on 127.0.0.1 with a live state endpoint.

- GET /api/calibration/state answers the state document read from the YAML at request time (an
  invalid YAML is a 503 with a JSON error, never stale numbers);
- every other GET serves a file under site/ only: no traversal, no dotfiles, no directory listings;
- every response carries a Content-Security-Policy that lets only the page's own script run;
- a watchdog observer re-renders site/ (debounced) whenever config/ or history/ change, so a
  force-apply from another terminal shows up on the next Refresh.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable
from urllib.parse import unquote, urlsplit

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from calreport.errors import CalreportError
from calreport.report.render import csp, render_site
from calreport.store.paths import Root
from calreport.store.query import HistoryCache
from calreport.store.state import read_state

HOST = "127.0.0.1"  # never another interface: the dashboard has no authentication
STATE_PATH = "/api/calibration/state"
DEBOUNCE_S = 0.2
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".png": "image/png",
    ".svg": "image/svg+xml",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}


def resolve_site_path(site: Path, url_path: str) -> Path | None:
    """The file under `site` that `url_path` names, or None (traversal, dotfile, missing, a directory
    without index.html). Symlinks leading out of site/ are refused too."""
    path = unquote(urlsplit(url_path).path)
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." or p.startswith(".") for p in parts):
        return None
    base = site.resolve()
    try:
        target = base.joinpath(*parts).resolve()
    except (OSError, RuntimeError):
        return None
    if not target.is_relative_to(base):
        return None
    if target.is_dir():
        target = target / "index.html"
    return target if target.is_file() else None


def security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": csp(header=True),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }


def state_response(root: Root) -> tuple[int, dict]:
    """(HTTP status, body) for the state endpoint, read from the YAML now."""
    try:
        return 200, read_state(root).to_json_dict()
    except CalreportError as exc:
        return 503, {"error": exc.one_line()}


class Debouncer:
    """Run `fn` once, `delay` seconds after the last trigger; runs never overlap."""

    def __init__(self, delay: float, fn: Callable[[], None]) -> None:
        self.delay, self.fn = delay, fn
        self._lock = threading.Lock()
        self._run_lock = threading.Lock()
        self._timer: threading.Timer | None = None

    def trigger(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
            self._timer = threading.Timer(self.delay, self._run)
            self._timer.daemon = True
            self._timer.start()

    def _run(self) -> None:
        with self._run_lock:
            self.fn()

    def cancel(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None


def is_record_change(path: str) -> bool:
    """Lock files and atomic-write temp files are not changes of a file of record."""
    name = os.path.basename(path)
    return bool(name) and not (name.endswith(".lock") or name.startswith(".") or name.endswith((".tmp", "~")))


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Root, port: int, *, quiet: bool = False) -> None:
        self.root = root
        self.quiet = quiet
        self.renders = 0  # completed re-renders, for tests and the log
        self.render_errors: list[str] = []
        self.history_cache = HistoryCache()
        super().__init__((HOST, port), Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    def render(self) -> None:
        try:
            render_site(self.root, cache=self.history_cache)
        except CalreportError as exc:  # e.g. site/ not writable: keep serving the last page
            self.render_errors.append(exc.one_line())
            print(f"calreport serve: render failed: {exc.one_line()}", file=sys.stderr)
        except Exception as exc:  # a bug must not take the server down
            self.render_errors.append(f"{type(exc).__name__}: {exc}")
            print(f"calreport serve: render failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        self.renders += 1


class Handler(BaseHTTPRequestHandler):
    server: DashboardServer
    server_version = "calreport"
    sys_version = ""

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        if not self.server.quiet:
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, content_type: str, head: bool) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in security_headers().items():
            self.send_header(k, v)
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, status: int, body: dict, head: bool) -> None:
        self._send(status, (json.dumps(body, indent=2) + "\n").encode(), "application/json", head)

    def _handle(self, head: bool) -> None:
        path = urlsplit(self.path).path
        if path in (STATE_PATH, STATE_PATH + "/"):
            status, body = state_response(self.server.root)
            self._json(status, body, head)
            return
        target = resolve_site_path(self.server.root.site_dir, self.path)
        if target is None:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
            return
        try:
            data = target.read_bytes()
        except OSError:
            self._send(404, b"not found\n", "text/plain; charset=utf-8", head)
            return
        ctype = CONTENT_TYPES.get(target.suffix.lower(), "application/octet-stream")
        self._send(200, data, ctype, head)

    def do_GET(self) -> None:  # noqa: N802 - stdlib naming
        self._handle(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._handle(head=True)

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        for k, v in security_headers().items():
            self.send_header(k, v)
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815


def _watch(server: DashboardServer, debouncer: Debouncer):  # type: ignore[no-untyped-def]
    class _OnChange(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            # reads (opened / closed without writing) happen during every render: not changes
            if event.is_directory or event.event_type in ("opened", "closed_no_write"):
                return
            paths = [str(event.src_path), str(getattr(event, "dest_path", "") or "")]
            if any(p and is_record_change(p) for p in paths):
                debouncer.trigger()

    observer = Observer()
    handler = _OnChange()
    for d in (server.root.config_dir, server.root.history_dir):
        if d.is_dir():
            observer.schedule(handler, str(d), recursive=True)
    observer.daemon = True
    observer.start()
    return observer


def make_server(
    root: Root, port: int = 0, *, watch: bool = True, quiet: bool = True, debounce: float = DEBOUNCE_S
) -> tuple[DashboardServer, Callable[[], None]]:
    """Render once, start serving on 127.0.0.1:`port` (0 = any free port) in a background thread,
    and watch the files of record. Returns the server (see `.url`) and a stop function."""
    try:
        server = DashboardServer(root, port, quiet=quiet)
    except OSError as exc:
        raise CalreportError(f"cannot listen on {HOST}:{port} ({exc.strerror or exc})") from None
    server.render()
    debouncer = Debouncer(debounce, server.render)
    observer = _watch(server, debouncer) if watch else None
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, name="calreport-serve", daemon=True)
    thread.start()

    def stop() -> None:
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)
        debouncer.cancel()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return server, stop


def serve(root: Root, port: int = 8765) -> int:
    """`calreport serve`: run until interrupted."""
    server, stop = make_server(root, port, quiet=False)
    print(f"calreport: serving {root.site_dir} at {server.url} (state: {server.url.rstrip('/')}{STATE_PATH}); Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
