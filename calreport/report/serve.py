"""`calreport serve`: the dashboard on 127.0.0.1 with a live state endpoint.

- GET /api/calibration/state answers the state document read from the YAML at request time (an
  invalid YAML is a 503 with a JSON error, never stale numbers);
- every other GET serves a file under site/ only: no traversal, no dotfiles, no directory listings;
- every response carries a Content-Security-Policy that lets only the page's own script run;
- a watchdog observer re-renders site/ (debounced) whenever config/ or history/ change, so a
  force-apply from another terminal shows up on the next Refresh;
- a request whose Host is not 127.0.0.1/localhost with the served port is refused (DNS rebinding);
  idle connections time out within seconds, every request must be read and answered within
  REQUEST_DEADLINE_S however slowly it trickles in, concurrent connections are bounded and, when all
  are taken, the one sending its request longest gives way to a new one; a client that
  disconnects mid-response is not an error;
- POST /api/actions/{force-apply,rollback} run the dashboard's buttons (calreport.commands.dashboard
  hands the server the use cases; the report layer imports nothing from commands). Only from the
  page serve delivered: a per-process random token, injected into served HTML only (never written
  to site/), checked with the Origin and the Host; JSON bodies only, size-limited. `--read-only`
  (no actions handed over) turns them off.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Protocol
from urllib.parse import unquote, urlsplit

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from calreport import jsonio
from calreport.errors import CalreportError, excerpt
from calreport.report.render import csp, render_site
from calreport.store.paths import Root
from calreport.store.query import HistoryCache
from calreport.store.state import read_state

HOST = "127.0.0.1"  # never another interface: the dashboard has no authentication
STATE_PATH = "/api/calibration/state"
ACTIONS_PATH = "/api/actions/"
TOKEN_HEADER = "X-Calreport-Token"
TOKEN_META = "calreport-token"
MAX_BODY = 4096  # an action's JSON body is a few dozen bytes
IDLE_TIMEOUT_S = 5.0  # a connection that sends nothing for this long is closed
REQUEST_DEADLINE_S = 10.0  # a request not read and answered within this long is cut off, trickle or not
SLOW_CLIENT_GRACE_S = 1.0  # when full, a connection still sending its request after this long gives way
MAX_CONNECTIONS = 32  # connections served at once; more are answered 503 and closed
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
    except Exception as exc:  # noqa: BLE001 - a bug must still answer (one line), not drop the connection
        return 503, {"error": f"internal error: {type(exc).__name__}: {excerpt(str(exc), 100, plain=True)}"}


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


class Actions(Protocol):
    """What the buttons do (calreport.commands.dashboard.DashboardActions): handed in by the command."""

    def handle(self, action: str, body: Any, rerender: Callable[[Any], None]) -> tuple[int, dict]: ...


def inject_token(html: bytes, token: str) -> bytes:
    """The served copy of a page carries the token in a <meta> (outside the hashed script); the file
    on disk never does."""
    meta = f'<head>\n<meta name="{TOKEN_META}" content="{token}">'.encode()
    return html.replace(b"<head>", meta, 1)


class DashboardServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # listen() backlog: socketserver's default 5 dropped the SYNs of a burst of connections, each retried by the
    # client's kernel a second later; the burst is admitted up to MAX_CONNECTIONS and answered (503 beyond)
    request_queue_size = MAX_CONNECTIONS

    def __init__(
        self,
        root: Root,
        port: int,
        *,
        quiet: bool = False,
        actions: Actions | None = None,
        parse_body: Callable[[Any], Any] | None = None,
        idle_timeout: float = IDLE_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
        request_deadline: float = REQUEST_DEADLINE_S,
        slow_client_grace: float = SLOW_CLIENT_GRACE_S,
    ) -> None:
        self.root = root
        self.quiet = quiet
        self.actions = actions if parse_body is not None else None  # None: read-only, no token anywhere
        self.parse_body = parse_body
        self.token = secrets.token_urlsafe(32)  # per process; only ever in served HTML, never on disk
        self.idle_timeout = idle_timeout
        self.request_deadline = request_deadline
        self.slow_client_grace = slow_client_grace
        self._slots = threading.BoundedSemaphore(max_connections)
        # open connections -> (when the request being read began, or None once it is being answered;
        # when it must be done): a trickling client is cut off at its deadline and gives way when full
        self._conns: dict[socket.socket, tuple[float | None, float]] = {}
        self._conns_lock = threading.Lock()
        self._render_lock = threading.Lock()
        self.renders = 0  # completed re-renders, for tests and the log
        self.render_errors: list[str] = []
        self.history_cache = HistoryCache()
        super().__init__((HOST, port), Handler)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"

    @property
    def read_only(self) -> bool:
        return self.actions is None

    def allowed_hosts(self) -> set[str]:
        port = self.server_address[1]
        hosts = {f"127.0.0.1:{port}", f"localhost:{port}"}
        if port == 80:
            hosts |= {"127.0.0.1", "localhost"}
        return hosts

    def allowed_origins(self) -> set[str]:
        return {f"http://{h}" for h in self.allowed_hosts()}

    # ---- bounded connections: a flood of idle sockets cannot pile up threads
    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        if not self._slots.acquire(blocking=False) and not self._evict_slow_client():
            try:
                body = b"busy\n"
                head = "HTTP/1.0 503 Service Unavailable\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
                head += f"Content-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in security_headers().items())
                request.sendall(head.encode() + b"\r\n" + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connection_state(request, None)
            self._slots.release()

    def connection_state(self, sock: socket.socket, reading: bool | None) -> None:
        """Track a connection: reading a request (its deadline starts now), answering it, or gone (None)."""
        now = time.monotonic()
        with self._conns_lock:
            if reading is None:
                self._conns.pop(sock, None)
            elif reading:
                self._conns[sock] = (now, now + self.request_deadline)
            elif sock in self._conns:
                self._conns[sock] = (None, self._conns[sock][1])

    def _evict_slow_client(self) -> bool:
        """All slots taken: cut off the connection that has been sending its request longest (over
        slow_client_grace, SLOW_CLIENT_GRACE_S by default), so trickling clients never lock out a normal request. True: a slot is ours."""
        now = time.monotonic()
        with self._conns_lock:
            slow = [(since, s) for s, (since, _) in self._conns.items() if since is not None and now - since > self.slow_client_grace]
        if not slow:
            return False
        _close_socket(min(slow, key=lambda x: x[0])[1])
        return self._slots.acquire(timeout=1.0)

    def service_actions(self) -> None:
        """Every poll of serve_forever: cut off connections past their request deadline (the idle
        timeout is per read, so a client sending a byte now and then would otherwise never end)."""
        now = time.monotonic()
        with self._conns_lock:
            late = [s for s, (_, deadline) in self._conns.items() if now > deadline]
        for s in late:
            _close_socket(s)

    def handle_error(self, request, client_address):  # type: ignore[no-untyped-def]
        """A client that went away (reset, broken pipe, timed out) is not an error; anything else is
        one line on stderr, never a traceback."""
        exc = sys.exc_info()[1]
        if isinstance(exc, (ConnectionError, TimeoutError, socket.timeout)):
            return
        print(f"calreport serve: error answering a request: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)

    def render(self, config: Any = None) -> None:
        with self._render_lock:  # the watcher and an action never render at once
            self._render(config)

    def _render(self, config: Any = None) -> None:
        try:
            render_site(self.root, cache=self.history_cache, config=config)
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

    def setup(self) -> None:
        self.timeout = self.server.idle_timeout  # StreamRequestHandler sets it on the socket
        super().setup()

    def handle_one_request(self) -> None:
        """One request within the server's request deadline, from its first byte to the answer."""
        self.server.connection_state(self.connection, True)
        super().handle_one_request()

    def parse_request(self) -> bool:
        ok = super().parse_request()
        if ok:  # the headers are in: answering (no longer a slow client to evict)
            self.server.connection_state(self.connection, False)
        return ok

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The stdlib's error page without our headers (501, 414, 431...) becomes a short text with
        the CSP and nosniff, and the connection is closed."""
        short = self.responses.get(code, ("Error", ""))[0]
        body = f"{code} {short}\n".encode()
        self.close_connection = True
        self.send_response(code, short)
        self.send_header("Connection", "close")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        for k, v in security_headers().items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and code >= 200 and code not in (204, 304):
            self.wfile.write(body)

    def _host_ok(self) -> bool:
        """DNS rebinding: a page on another name resolving to 127.0.0.1 must not read the state."""
        hosts = self.headers.get_all("Host") or []
        if len(hosts) != 1:
            self._json(400, {"error": "exactly one Host header is required"}, self.command == "HEAD")
            return False
        if hosts[0].strip().lower() not in self.server.allowed_hosts():
            self._json(421, {"error": "misdirected request: Host must be 127.0.0.1 or localhost with the served port"}, self.command == "HEAD")
            return False
        return True

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
        if not self._host_ok():
            return
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
        if target.suffix.lower() == ".html" and not self.server.read_only:
            data = inject_token(data, self.server.token)
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

    do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def do_POST(self) -> None:  # noqa: N802
        if not self._host_ok():
            return
        path = urlsplit(self.path).path
        if not path.startswith(ACTIONS_PATH):
            self._refuse()
            return
        self.close_connection = True
        status, body = self._action(path[len(ACTIONS_PATH):])
        self._json(status, body, head=False)

    def _action(self, action: str) -> tuple[int, dict]:
        """Every check before the body is read; nothing of record is touched unless all pass."""
        server = self.server
        if server.actions is None or server.parse_body is None:
            return 403, {"error": "actions are off: calreport serve --read-only"}
        origin = self.headers.get("Origin")
        referer = self.headers.get("Referer")
        if origin is not None:
            if origin not in server.allowed_origins():
                return 403, {"error": "refused: the request does not come from the served page (Origin)"}
        elif referer is None or not any(referer.startswith(o + "/") for o in server.allowed_origins()):
            return 403, {"error": "refused: the request does not come from the served page (no Origin or Referer)"}
        token = self.headers.get(TOKEN_HEADER) or ""
        if not hmac.compare_digest(token.encode(), server.token.encode()):
            return 403, {"error": "refused: missing or wrong token (reload the page served by calreport serve)"}
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            return 415, {"error": "request body must be application/json"}
        if self.headers.get("Transfer-Encoding") is not None:
            return 411, {"error": "a Content-Length is required (no chunked bodies)"}
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return 411, {"error": "a Content-Length is required"}
        if not length_text.isdigit() or len(length_text) > 9:
            return 400, {"error": "bad Content-Length"}
        length = int(length_text)
        if length > MAX_BODY:
            return 413, {"error": f"request body over {MAX_BODY} bytes"}
        raw = self.rfile.read(length)
        if len(raw) != length:
            return 400, {"error": "request body shorter than its Content-Length"}
        try:
            doc = jsonio.loads_unique(raw.decode("utf-8"))  # nesting too deep is a ValueError there, not a RecursionError
        except (UnicodeDecodeError, ValueError) as exc:
            dup = "duplicate key" in str(exc)
            return 400, {"error": "request body names a key twice" if dup else "request body is not JSON"}
        if not isinstance(doc, dict):
            return 400, {"error": "request body must be a JSON object"}
        try:
            body = server.parse_body(doc)
        except CalreportError as exc:
            return 400, {"error": exc.one_line()}
        try:
            return server.actions.handle(action, body, server.render)
        except CalreportError as exc:
            return 400, {"error": exc.one_line()}
        except Exception as exc:  # noqa: BLE001 - a bug: one line to the page and stderr, the server keeps running
            print(f"calreport serve: action failed: {type(exc).__name__}: {str(exc)[:200]}", file=sys.stderr)
            return 500, {"error": f"internal error: {type(exc).__name__}"}


def _close_socket(sock: socket.socket) -> None:
    """End a connection from outside its thread: its reads return at once and the thread finishes."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


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
    root: Root,
    port: int = 0,
    *,
    watch: bool = True,
    quiet: bool = True,
    debounce: float = DEBOUNCE_S,
    actions: Actions | None = None,
    parse_body: Callable[[Any], Any] | None = None,
    idle_timeout: float = IDLE_TIMEOUT_S,
    max_connections: int = MAX_CONNECTIONS,
    request_deadline: float = REQUEST_DEADLINE_S,
    slow_client_grace: float = SLOW_CLIENT_GRACE_S,
) -> tuple[DashboardServer, Callable[[], None]]:
    """Render once, start serving on 127.0.0.1:`port` (0 = any free port) in a background thread,
    and watch the files of record. Returns the server (see `.url`) and a stop function. Without
    `actions` the server is read-only (no buttons, no token)."""
    try:
        server = DashboardServer(
            root, port, quiet=quiet, actions=actions, parse_body=parse_body,
            idle_timeout=idle_timeout, max_connections=max_connections, request_deadline=request_deadline,
            slow_client_grace=slow_client_grace,
        )
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


def serve(
    root: Root, port: int = 8765, *, actions: Actions | None = None, parse_body: Callable[[Any], Any] | None = None
) -> int:
    """`calreport serve`: run until interrupted."""
    server, stop = make_server(root, port, quiet=False, actions=actions, parse_body=parse_body)
    mode = "read-only" if server.read_only else "dashboard actions on"
    print(f"calreport: serving {root.site_dir} at {server.url} (state: {server.url.rstrip('/')}{STATE_PATH}; {mode}); Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0
