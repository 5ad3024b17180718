"""`calreport serve`: the state endpoint reads the YAML at request time, only site/ is served,
every response carries the CSP, and a change to the files of record re-renders the page."""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import time
from urllib.parse import urlsplit

import pytest
from foundation_helpers import force_apply

from calreport.commands.dashboard import DashboardActions, parse_body
from calreport.report.serve import is_record_change, make_server, resolve_site_path
from calreport.model import Multipliers, SurfaceSpec
from calreport.store.applied import apply_values, read_applied
from calreport.store.history import append_row


@pytest.fixture
def served(root):
    server, stop = make_server(root, port=0, debounce=0.05)
    try:
        yield server
    finally:
        stop()


def get(server, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        conn.request(method, path)  # raw path: no client-side normalisation of '..'
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def wait_for(predicate, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_binds_to_loopback_only(served):
    assert served.server_address[0] == "127.0.0.1"


def test_state_endpoint_equals_yaml_at_request_time(root, rows, served):
    status, headers, body = get(served, "/api/calibration/state")
    assert status == 200 and headers["content-type"] == "application/json"
    assert json.loads(body)["underlyings"]["BTC"]["global"] == 1.0
    run = rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    force_apply(root, "BTC")  # no re-render involved: the endpoint reads the YAML itself
    doc = json.loads(get(served, "/api/calibration/state")[2])
    want = read_applied(root).model_dump(by_alias=True, mode="json")["underlyings"]
    assert doc["underlyings"] == want
    assert doc["underlyings"]["BTC"]["global"] == 1.0833 and doc["underlyings"]["BTC"]["bands"] == {"0-7d": 1.05}
    assert doc["underlyings"]["BTC"]["run_id"] == run.run_id


def test_invalid_yaml_is_a_503_with_a_json_error(root, served):
    root.applied.write_text("schema_version: 1\nunderlyings:\n  BTC: {global: yes}\n")
    status, headers, body = get(served, "/api/calibration/state")
    assert status == 503
    err = json.loads(body)["error"]
    assert "applied_multipliers.yaml" in err and "multiplier must be a number" in err


@pytest.mark.parametrize(
    "path",
    [
        "/../config/applied_multipliers.yaml",
        "/..%2fconfig/applied_multipliers.yaml",
        "/%2e%2e/%2e%2e/etc/passwd",
        "/history/../../history/live_calibration.jsonl",
        "/api/../../config/calibration.yaml",
        "/.hidden",
        "/api/",
        "/nope.html",
    ],
)
def test_only_files_under_site_are_served(root, served, path):
    (root.site_dir / ".hidden").write_text("secret")
    status, _h, body = get(served, path)
    assert status == 404
    assert b"schema_version" not in body and b"secret" not in body and b"root:" not in body


def test_symlink_out_of_site_is_refused(root, tmp_path):
    (root.site_dir / "leak").symlink_to(root.config_dir)
    assert resolve_site_path(root.site_dir, "/leak/applied_multipliers.yaml") is None
    assert resolve_site_path(root.site_dir, "/") == root.index_html.resolve()


def test_directories_are_never_listed(root, served):
    status, _h, body = get(served, "/api/calibration/")
    assert status == 404 and b"state.json" not in body


def test_every_response_has_csp_and_nosniff(served):
    for path in ("/", "/index.html", "/api/calibration/state", "/api/calibration/state.json", "/missing"):
        _s, headers, _b = get(served, path)
        csp = headers["content-security-policy"]
        assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "img-src data:" in csp
        assert "script-src 'sha256-" in csp and "unsafe-eval" not in csp
        assert headers["x-content-type-options"] == "nosniff"


def test_methods_other_than_get_and_head_are_refused(served):
    assert get(served, "/", "POST")[0] == 405
    status, headers, body = get(served, "/", "HEAD")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 1000


def test_page_is_re_rendered_when_files_of_record_change(root, rows, served):
    before = served.renders
    rows.live(smoothed=1.0833)
    force_apply(root, "BTC")  # no explicit render: the watcher must do it
    assert wait_for(lambda: 'data-band="global" data-multiplier="1.0833"' in root.index_html.read_text())
    assert wait_for(lambda: served.renders > before)  # the watcher's render may land after the page shows the value
    assert served.render_errors == []


def test_renders_do_not_retrigger_themselves(root, served):
    assert wait_for(lambda: served.renders >= 1)
    time.sleep(0.5)
    settled = served.renders
    time.sleep(0.6)  # reading the files during a render must not count as a change
    assert served.renders == settled


def test_lock_and_temp_files_are_not_changes():
    assert not is_record_change("/r/config/applied_multipliers.yaml.lock")
    assert not is_record_change("/r/config/.applied_multipliers.yaml.abc123.tmp")
    assert is_record_change("/r/config/applied_multipliers.yaml")
    assert is_record_change("/r/history/live_calibration.jsonl")


# --------------------------------------------------------------------------- dashboard actions


@pytest.fixture
def acting(root):
    server, stop = make_server(root, port=0, debounce=0.05, actions=DashboardActions(root), parse_body=parse_body)
    try:
        yield server
    finally:
        stop()


def raw(server, request: bytes, timeout: float = 10.0) -> bytes:
    """Send bytes as they are (forged Host, odd methods) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=timeout) as s:
        s.sendall(request)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
        return out


def post_action(server, body, *, action="force-apply", token=None, origin="self", host=None, ctype="application/json",
                extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    port = server.server_address[1]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Host": host or f"127.0.0.1:{port}", "Content-Type": ctype, "Content-Length": str(len(data))}
    if token is not False:
        headers["X-Calreport-Token"] = server.token if token is None else token
    if origin is not None:
        headers["Origin"] = f"http://127.0.0.1:{port}" if origin == "self" else origin
    headers.update(extra or {})
    head = f"POST /api/actions/{action} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    answer = raw(server, head.encode() + data)
    top, _, payload = answer.partition(b"\r\n\r\n")
    lines = top.decode().split("\r\n")
    hdrs = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    return int(lines[0].split()[1]), hdrs, payload


def confirm(server, body: dict, *, action="force-apply") -> tuple[int, dict[str, str], bytes]:
    """What the page does: preview, then confirm with the run id and nonce the preview gave."""
    status, _h, payload = post_action(server, {"underlying": body["underlying"], "preview": True, **({"run_id": body["run_id"]} if action == "rollback" else {})}, action=action)
    assert status == 200, payload
    shown = json.loads(payload)["preview"]
    return post_action(server, {"run_id": shown["run_id"], "nonce": shown["nonce"], **body}, action=action)


def records(root) -> tuple[bytes, bytes, bytes]:
    return root.applied.read_bytes(), root.live_history.read_bytes(), root.auto_history.read_bytes()


def test_action_with_token_origin_and_host_runs_the_use_case(root, rows, acting):
    run = rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    status, _h, body = confirm(acting, {"underlying": "BTC", "run_id": run.run_id})
    assert status == 200, body
    done = json.loads(body)["done"]
    assert done["source"] == "force" and done["reason"] == "Forced by user (dashboard)" and done["run_id"] == run.run_id
    entry = read_applied(root).underlyings["BTC"]
    assert entry.global_ == 1.0833 and entry.bands == {"0-7d": 1.05} and entry.reason == "Forced by user (dashboard)"
    assert 'data-band="global" data-multiplier="1.0833"' in root.index_html.read_text()  # re-rendered before the answer


@pytest.mark.parametrize(
    ("forgery", "kwargs", "want"),
    [
        ("no token", {"token": False}, 403),
        ("wrong token", {"token": "x" * 43}, 403),
        ("foreign Origin", {"origin": "http://evil.example"}, 403),
        ("null Origin", {"origin": "null"}, 403),
        ("no Origin nor Referer", {"origin": None}, 403),
        ("foreign Referer", {"origin": None, "extra": {"Referer": "http://evil.example/"}}, 403),
        ("foreign Host (DNS rebinding)", {"host": "evil.example:8765"}, 421),
        ("right Host name, wrong port", {"host": "localhost:1"}, 421),
        ("form post", {"ctype": "application/x-www-form-urlencoded"}, 415),
        ("text/plain", {"ctype": "text/plain"}, 415),
        ("not JSON", {"body": b"underlying=BTC"}, 400),
        ("JSON array", {"body": b"[1]"}, 400),
        ("unknown key", {"body": {"underlying": "BTC", "allow_unrealistic": True, "sudo": 1}}, 400),
        ("string for a bool", {"body": {"underlying": "BTC", "allow_unrealistic": "yes"}}, 400),
        ("too large", {"body": json.dumps({"underlying": "BTC", "pad": "x" * 5000}).encode()}, 413),
        ("unknown action", {"action": "delete-everything"}, 404),
        ("chunked", {"extra": {"Transfer-Encoding": "chunked"}}, 411),
    ],
)
def test_forged_action_requests_are_refused_and_change_nothing(root, rows, acting, forgery, kwargs, want):
    rows.live(smoothed=1.0833)
    before = records(root)
    kwargs = dict(kwargs)
    body = kwargs.pop("body", {"underlying": "BTC"})
    status, headers, payload = post_action(acting, body, **kwargs)
    assert status == want, (forgery, payload)
    assert "error" in json.loads(payload)
    assert headers["x-content-type-options"] == "nosniff" and "default-src 'none'" in headers["content-security-policy"]
    assert records(root) == before, forgery  # YAML and history byte-identical


def test_read_only_serve_refuses_actions_and_serves_no_token(root, rows, served):
    rows.live(smoothed=1.0833)
    before = records(root)
    status, _h, payload = post_action(served, {"underlying": "BTC"}, token="anything")
    assert status == 403 and "read-only" in json.loads(payload)["error"]
    assert records(root) == before
    _s, _h, page = get(served, "/")
    assert b"<meta name=\"calreport-token\"" not in page


def test_token_is_in_the_served_page_only_never_on_disk(root, rows, acting):
    rows.live(smoothed=1.0833)
    _s, _h, page = get(acting, "/")
    assert f'<meta name="calreport-token" content="{acting.token}">'.encode() in page
    assert confirm(acting, {"underlying": "BTC"})[0] == 200
    for f in root.path.rglob("*"):
        if f.is_file() and ".git" not in f.parts:
            assert acting.token.encode() not in f.read_bytes(), f


def test_failed_realism_is_refused_like_the_cli_unless_overridden(root, rows, acting, capsys):
    from calreport.commands.cli import main

    rows.live(smoothed=1.5581, recommended=3.0, status="failed", reason="recommended on the fit bound")
    before = records(root)
    status, _h, payload = confirm(acting, {"underlying": "BTC"})
    refused = json.loads(payload)
    assert status == 409 and refused["override"] == "allow_unrealistic"
    capsys.readouterr()
    code = main(["--root", str(root.path), "force-apply", "--underlying", "BTC"])  # main(argv) prints what the process would
    assert code != 0 and refused["error"] in capsys.readouterr().err  # the very message the CLI gives
    assert records(root) == before
    status, _h, payload = confirm(acting, {"underlying": "BTC", "allow_unrealistic": True})
    assert status == 200 and read_applied(root).underlyings["BTC"].global_ == 1.5581


def test_confirm_for_a_run_that_is_no_longer_the_latest_is_refused(root, rows, acting):
    shown = rows.live(smoothed=1.0833)
    status, _h, payload = post_action(acting, {"underlying": "BTC", "preview": True})
    nonce = json.loads(payload)["preview"]["nonce"]
    rows.live(smoothed=1.2)  # a calibration lands while the dialog is open
    before = records(root)
    status, _h, payload = post_action(acting, {"underlying": "BTC", "run_id": shown.run_id, "nonce": nonce})
    assert status == 409 and "review the change again" in json.loads(payload)["error"]
    assert records(root) == before


def test_confirm_that_waited_on_a_calibrate_holding_the_lock_is_refused_not_applied_over_its_run(root, rows, acting, monkeypatch):
    """The confirm passes its checks while a calibrate holds the apply lock; when the lock comes free that
    calibrate has appended a newer run and applied it: the confirmed (older) run must not be written over it."""
    from calreport.store import applied as applied_store

    shown = rows.live(smoothed=1.0833)
    status, _h, payload = post_action(acting, {"underlying": "BTC", "preview": True})
    nonce = json.loads(payload)["preview"]["nonce"]
    real = applied_store.FileApplyStore.transaction
    landed = []

    def calibrate_finishes_first(self):  # type: ignore[no-untyped-def]
        if not landed:
            newer = rows.live(smoothed=1.2)
            with real(self) as tx:
                tx.replace("BTC", newer.smoothed, source="policy", run_id=newer.run_id, reason="global d=0.1167")
            landed.append(newer)
        return real(self)

    monkeypatch.setattr(applied_store.FileApplyStore, "transaction", calibrate_finishes_first)
    status, _h, payload = post_action(acting, {"underlying": "BTC", "run_id": shown.run_id, "nonce": nonce})
    assert status == 409 and f"now {landed[0].run_id}, not {shown.run_id}" in json.loads(payload)["error"]
    entry = read_applied(root).underlyings["BTC"]
    assert (entry.global_, entry.run_id, entry.source) == (1.2, landed[0].run_id, "policy")


def test_preview_says_what_will_change_and_writes_nothing(root, rows, acting):
    run = rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    before = records(root)
    status, _h, payload = post_action(acting, {"underlying": "BTC", "preview": True})
    p = json.loads(payload)["preview"]
    assert status == 200 and p["run_id"] == run.run_id and p["realism"]["status"] == "ok"
    assert p["changes"] == [{"band": "global", "old": "1.0000", "new": "1.0833"}, {"band": "0-7d", "old": "none", "new": "1.0500"}]
    assert p["command"] == "calreport force-apply --underlying BTC"
    assert records(root) == before


# --------------------------------------------------------------------------- serve hardening


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1:1", "127.0.0.2:{port}", "localhost"])
def test_foreign_host_header_is_misdirected(served, host):
    port = served.server_address[1]
    answer = raw(served, f"GET /api/calibration/state HTTP/1.1\r\nHost: {host.format(port=port)}\r\n\r\n".encode())
    assert answer.startswith(b"HTTP/1.0 421") and b"schema_version" not in answer and b"underlyings" not in answer


def test_missing_or_duplicate_host_is_a_400(served):
    port = served.server_address[1]
    assert raw(served, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 400")
    dup = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nHost: evil.example\r\n\r\n".encode()
    assert raw(served, dup).startswith(b"HTTP/1.0 400")


def test_localhost_with_the_served_port_is_accepted(served):
    port = served.server_address[1]
    assert raw(served, f"GET /api/calibration/state HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n".encode()).startswith(b"HTTP/1.0 200")


def test_idle_connection_is_closed_within_seconds(root):
    server, stop = make_server(root, port=0, idle_timeout=1.0)
    try:
        with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
            s.sendall(b"GET / HT")  # half a request line, then nothing
            t0 = time.monotonic()
            assert s.recv(1024) == b""  # closed by the server, not by our 10 s client timeout
            assert time.monotonic() - t0 < 8
    finally:
        stop()


def test_connections_are_bounded_and_idle_ones_do_not_pile_up_threads(root):
    import threading

    # a grace far beyond the test's run: under load, accepting 12 sockets can take over the default
    # 1 s, and the first four would then be evicted as slow clients instead of the rest getting 503
    server, stop = make_server(root, port=0, idle_timeout=30.0, max_connections=4, slow_client_grace=600.0)
    socks = []
    try:
        base = threading.active_count()
        for _ in range(12):  # 5 ms apart: a tight loop overflows the listen backlog and stalls 1 s per dropped SYN
            socks.append(socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10))
            time.sleep(0.005)
        time.sleep(0.5)
        assert threading.active_count() <= base + 4
        # the fifth and later get an immediate 503 with the security headers, and are closed
        answer = socks[-1].recv(65536)
        assert answer.startswith(b"HTTP/1.0 503") and b"nosniff" in answer and b"Content-Security-Policy" in answer
    finally:
        for s in socks:
            s.close()
        stop()


def test_client_disconnect_leaves_no_traceback(root, tmp_path):
    script = tmp_path / "serve_and_drop.py"
    script.write_text(
        "import socket, sys, time\n"
        "from pathlib import Path\n"
        "from calreport.store.paths import Root\n"
        "from calreport.report.serve import make_server\n"
        f"root = Root(Path({str(root.path)!r}))\n"
        "server, stop = make_server(root, port=0, quiet=False, watch=False)\n"
        "# a big page makes the write outlast the client\n"
        "root.index_html.write_bytes(b'<html><head></head>' + b'x' * 4_000_000)\n"
        "port = server.server_address[1]\n"
        "for _ in range(20):\n"
        "    s = socket.create_connection(('127.0.0.1', port))\n"
        "    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b'\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00')\n"
        "    s.sendall(f'GET / HTTP/1.1\\r\\nHost: 127.0.0.1:{port}\\r\\n\\r\\n'.encode())\n"
        "    s.close()  # reset before the page is read\n"
        "    time.sleep(0.005)  # lets the accept loop keep up: a full listen backlog stalls a connect 1 s\n"
        "time.sleep(1.0)\n"
        "stop()\n"
    )
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr and "BrokenPipe" not in out.stderr and "ConnectionReset" not in out.stderr


@pytest.mark.parametrize(
    ("request_bytes", "code"),
    [
        (b"BREW / HTTP/1.1\r\nHost: {host}\r\n\r\n", b"501"),
        (b"GET /" + b"a" * 70000 + b" HTTP/1.1\r\n\r\n", b"414"),
        (b"GET / HTTP/1.1\r\nHost: {host}\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", b"431"),
    ],
)
def test_stdlib_error_responses_carry_csp_and_nosniff(served, request_bytes, code):
    host = f"127.0.0.1:{served.server_address[1]}".encode()
    answer = raw(served, request_bytes.replace(b"{host}", host))
    head = answer.partition(b"\r\n\r\n")[0].decode()
    assert head.split()[1] == code.decode()
    assert "X-Content-Type-Options: nosniff" in head and "Content-Security-Policy: default-src 'none'" in head
    assert "<html" not in answer.decode(errors="replace").lower()


def test_preview_of_an_apply_that_would_change_nothing_is_refused_like_the_cli(root, rows, acting):
    """A stale page's button (the run applied since) gets the refusal at once, not a dialog showing
    1.0833 -> 1.0833 with a Confirm that is refused only afterwards."""
    run = rows.live(smoothed=1.0833)
    force_apply(root, "BTC")
    before = records(root)
    status, _h, payload = post_action(acting, {"underlying": "BTC", "preview": True})
    assert status == 409 and json.loads(payload)["error"].startswith(f"already applied: run {run.run_id}'s smoothed values")
    status, _h, payload = post_action(acting, {"underlying": "BTC", "preview": True, "run_id": run.run_id}, action="rollback")
    assert status == 409 and json.loads(payload)["error"].startswith(f"already applied: run {run.run_id}'s values")
    assert records(root) == before


def test_preview_names_a_change_of_the_surface_block(root, rows, acting):
    """Force-applying a step-model run over an entry quoted by the surface moves the engine to the step model:
    the dialog showed every band 'Now' = 'After' and no smile change, as if nothing changed."""
    spec = SurfaceSpec(pillars={"0-7d": 1.75, "7-30d": 16.4957, "30-90d": 55.9808}, weekend_weight=0.35, wing_slope_cap=1.8)
    apply_values(root, "BTC", Multipliers(global_=1.0833, bands={"0-7d": 1.05}, surface=spec), source="force", run_id=None, reason="x")
    rows.live(smoothed=1.0833, bands={"0-7d": 1.05})  # the same levels, no surface block
    status, _h, payload = post_action(acting, {"underlying": "BTC", "preview": True})
    p = json.loads(payload)["preview"]
    assert status == 200 and all(c["old"] == c["new"] for c in p["changes"]) and p["smile_changes"] == []
    assert p["surface_changes"] == [{"what": "surface", "old": "pillars-pchip-1", "new": "none (step model)"}]
    moved = spec.model_copy(update={"pillars": {**spec.pillars, "7-30d": 16.0}})
    run = rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    append_row(root.live_history, run.model_copy(update={
        "run_id": run.run_id + "X", "ts": "2025-12-11T23:00:00Z",
        "smoothed": Multipliers(global_=1.0833, bands={"0-7d": 1.05}, surface=moved)}))
    p = json.loads(post_action(acting, {"underlying": "BTC", "preview": True})[2])["preview"]
    assert p["surface_changes"] == [{"what": "surface pillar 7-30d", "old": "16.4957", "new": "16.0000"}]


def test_the_listen_backlog_admits_a_burst_of_connections_up_to_the_connection_limit() -> None:
    """socketserver's default backlog (5) dropped the SYNs of a burst; the client's kernel retried each a second
    later. The server listens with a backlog of MAX_CONNECTIONS, so a burst is accepted and answered (503 past it)."""
    from calreport.report.serve import MAX_CONNECTIONS, DashboardServer

    assert DashboardServer.request_queue_size >= MAX_CONNECTIONS > 5
