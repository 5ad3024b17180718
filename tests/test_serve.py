"""`calreport serve`: the state endpoint reads the YAML at request time, only site/ is served,
every response carries the CSP, and a change to the files of record re-renders the page."""

from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest

from calreport.report.serve import is_record_change, make_server, resolve_site_path
from calreport.store import applied as apply
from calreport.store.applied import read_applied


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
    apply.force_apply(root, "BTC")  # no re-render involved: the endpoint reads the YAML itself
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
    apply.force_apply(root, "BTC")  # no explicit render: the watcher must do it
    assert wait_for(lambda: 'data-band="global" data-multiplier="1.0833"' in root.index_html.read_text())
    assert served.renders > before
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
