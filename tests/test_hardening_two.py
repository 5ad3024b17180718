"""Hardening, round two: one test per defect of the second adversarial pass, then the rules behind them.

Every test drives the reported reproduction and pins the wanted behaviour: recovered kills leave
`calreport doctor` clean, every read is bounded and refuses special files, every delivery has a
wall-clock deadline and bounded buffers, `--out` never lands in the files of record, every config
value and argument has a range, and dashboard actions are strict, confirmed and answered once.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from calreport.commands.cli import main
from calreport.model import ApplyEvent, Multipliers
from calreport.report.serve import MAX_CONNECTIONS, SLOW_CLIENT_GRACE_S, make_server
from calreport.store.applied import apply_values
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "tests" / "fixtures" / "deribit" / "book_summary_btc.json"


def run_cli(capsys: pytest.CaptureFixture[str], root: Root, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(root.path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:500]
    assert "Traceback" not in err and "internal error" not in err, err[:500]
    assert len(lines[0]) < 400, lines[0][:500]
    text = re.sub(r"/\S*/", "/", lines[0])
    for needle in needles:
        assert needle in text, lines[0]


# --------------------------------------------------------------------------- 1: recovery leaves doctor clean

KILL_POINTS = ("before-yaml", "after-yaml", "after-event")


def _killed_child(root: Root, point: str, argv: list[str]) -> None:
    """Run `argv` in a forked child that SIGKILLs itself at `point` of the apply it makes."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child never returns
        try:
            import calreport.store.applied as applied_mod

            def die() -> None:
                os.kill(os.getpid(), signal.SIGKILL)

            real_write, real_append = applied_mod.atomic_write, applied_mod.append_row

            def write(path, data):  # type: ignore[no-untyped-def]
                if point == "before-yaml" and Path(path) == root.applied:
                    die()
                real_write(path, data)

            def append(path, row):  # type: ignore[no-untyped-def]
                if isinstance(row, ApplyEvent) and point == "after-yaml":
                    die()
                real_append(path, row)
                if isinstance(row, ApplyEvent) and point == "after-event":
                    die()

            applied_mod.atomic_write, applied_mod.append_row = write, append
            main(["--root", str(root.path), *argv])
        finally:
            os._exit(99)  # the kill point was never reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, f"{argv} ended with {status} before {point}"


def _prepare(root: Root, op: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    if op == "calibrate":  # a policy that applies the fixture snapshot's run
        cfg = root.calibration_config.read_text()
        cfg = cfg.replace("policy: {min_samples: 50, min_vega_sum: 1.0, min_delta: 0.03,", "policy: {min_samples: 5, min_vega_sum: 0.0, min_delta: 0.0,")
        root.calibration_config.write_text(cfg.replace("min_delta_se: 1.0}", "min_delta_se: 0.0}"))
        return ["calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45"]
    from foundation_helpers import add_live_run, force_apply

    add_live_run(root, "BTC", smoothed=1.0833)
    if op == "force-apply":
        return ["force-apply", "--underlying", "BTC"]
    force_apply(root, "BTC")
    add_live_run(root, "BTC", smoothed=1.2147)
    force_apply(root, "BTC")
    return ["rollback", "--underlying", "BTC"]


@pytest.mark.parametrize("op", ["force-apply", "rollback", "calibrate"])
@pytest.mark.parametrize("point", KILL_POINTS)
def test_doctor_is_clean_after_a_kill_at_each_point_is_recovered(root: Root, op: str, point: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv = _prepare(root, op, capsys)
    capsys.readouterr()
    _killed_child(root, point, argv)
    # the next apply (of another underlying) recovers the lost event under the YAML's lock
    apply_values(root, "ETH", Multipliers(global_=1.05), source="force", run_id=None, reason="next apply")
    code, out, err = run_cli(capsys, root, "doctor")
    assert code == 0, out + err


# --------------------------------------------------------------------------- 2: slow clients never lock up serve


def connect_paced(port: int) -> socket.socket:
    """A connection to the server, then a 5 ms pause so its accept loop takes it: connecting in a
    tight loop holds the GIL, fills the listen backlog (5) and the kernel drops the next SYN, which the
    client resends only after 1 s (four such stalls made the 32 connections take 4 s)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    time.sleep(0.005)
    return sock


def _tricklers(port: int, n: int, every: float, stop: threading.Event) -> list[socket.socket]:
    """`n` connections that each send a request line, then one header line every `every` seconds."""
    socks = [connect_paced(port) for _ in range(n)]

    def trickle() -> None:
        for s in socks:
            with contextlib.suppress(OSError):
                s.sendall(b"GET / HTTP/1.1\r\n")
        i = 0
        while not stop.wait(every):
            i += 1
            for s in socks:
                with contextlib.suppress(OSError):
                    s.sendall(f"X-Slow-{i}: {i}\r\n".encode())

    threading.Thread(target=trickle, daemon=True).start()
    return socks


def _timed_get(port: int) -> tuple[int, float]:
    t0 = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/api/calibration/state")
        status = conn.getresponse().status
    finally:
        conn.close()
    return status, time.monotonic() - t0


def test_32_trickling_connections_do_not_block_a_normal_get(root: Root) -> None:
    server, stop_server = make_server(root, port=0, watch=False)  # the defaults: 32 connections, 5 s idle
    stop = threading.Event()
    port = server.server_address[1]
    socks = _tricklers(port, MAX_CONNECTIONS, 0.3, stop)
    try:
        time.sleep(SLOW_CLIENT_GRACE_S + 0.5)
        for _ in range(3):
            status, took = _timed_get(port)
            assert status == 200 and took < 1.0, (status, took)
    finally:
        stop.set()
        for s in socks:
            s.close()
        stop_server()


def test_a_request_trickled_byte_by_byte_is_cut_off_at_the_request_deadline(root: Root) -> None:
    server, stop_server = make_server(root, port=0, watch=False, request_deadline=1.5)
    stop = threading.Event()
    (sock,) = _tricklers(server.server_address[1], 1, 0.2, stop)  # each read well within the idle timeout
    try:
        t0 = time.monotonic()
        sock.settimeout(10)
        with contextlib.suppress(ConnectionError):
            while sock.recv(4096):
                pass
        assert time.monotonic() - t0 < 4.0
    finally:
        stop.set()
        sock.close()
        stop_server()


# --------------------------------------------------------------------------- 3, 4: deliveries bounded in time and memory

DELIVER = (
    "import json, sys, time\n"
    "from calreport.commands.adapters.alerts import deliver\n"
    "from calreport.model import AlertsConfig\n"
    "cfg = AlertsConfig.model_validate(json.loads(sys.argv[1]))\n"
    "t0 = time.monotonic()\n"
    "(d,) = deliver({'run_id': 'r1'}, cfg)\n"
    "took = time.monotonic() - t0\n"
    "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0].split()[1]\n"
    "print(json.dumps({'took': took, 'ok': d.ok, 'error': d.error, 'peak_rss_kb': int(hwm)}))\n"
)


def _deliver_in_child(cfg: dict) -> tuple[dict, float]:
    """Run one delivery in a fresh interpreter: (its result, the child's peak RSS in MB, from
    /proc VmHWM: getrusage would count the forked copy of this test process before its exec)."""
    proc = subprocess.run([sys.executable, "-c", DELIVER, json.dumps(cfg)], capture_output=True, env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout)
    return result, result["peak_rss_kb"] / 1024


@pytest.mark.parametrize(
    ("script", "timeout", "want"),
    [
        ("yes xxx >&2", 2, "timed out after 2 s (killed)"),  # stderr without end
        ("head -c 200000000 /dev/zero | tr '\\0' x >&2; exit 1", 10, "exit status 1: xxxx"),  # 200 MB, then a failure
    ],
)
def test_an_alert_command_flooding_stderr_ends_by_its_timeout_in_bounded_memory(script: str, timeout: float, want: str) -> None:
    result, rss_mb = _deliver_in_child({"command": ["sh", "-c", script], "timeout_s": timeout})
    assert result["error"].startswith(want) and len(result["error"]) < 300
    assert result["took"] < timeout + 1.0
    assert rss_mb < 100, rss_mb


def test_a_flooding_alert_command_is_still_recorded_in_history(root: Root, tmp_path: Path) -> None:
    from foundation_helpers import add_live_run

    from calreport.commands.adapters.alerts import notify
    from calreport.commands.workspace import Workspace
    from calreport.store.history import read_history

    cfg = root.calibration_config.read_text()
    root.calibration_config.write_text(cfg.replace("alerts: {command: null, webhook: null, timeout_s: 5.0}", "alerts: {command: [sh, -c, 'yes xxx >&2'], timeout_s: 1}"))
    run = add_live_run(root, status="failed")
    row = notify(Workspace.open(root), "live", run, None)
    assert row is not None and row.deliveries[0].error == "timed out after 1 s (killed)"
    assert [r.run_id for r in read_history(root.alert_history).rows] == [run.run_id]


class _TricklingHook:
    """A webhook that reads the request, then answers one header line per `every` seconds, forever."""

    def __init__(self, every: float) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.every, self.stop = every, threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.sock.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                i = 0
                while not self.stop.wait(self.every):
                    i += 1
                    conn.sendall(f"X-Slow-{i}: {i}\r\n".encode())

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def test_a_webhook_answering_a_line_a_second_is_cut_off_at_its_timeout() -> None:
    hook = _TricklingHook(0.5)
    try:
        result, rss_mb = _deliver_in_child({"webhook": hook.url, "timeout_s": 2})
    finally:
        hook.close()
    assert not result["ok"] and result["error"] == "timed out after 2 s"
    assert result["took"] < 2 + 1.0
    assert rss_mb < 100, rss_mb


# --------------------------------------------------------------------------- 5, 6: --out never lands in the files of record


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", ["config/applied_multipliers.yaml", "history/live_calibration.jsonl", "site/index.html", "data/x.json", "config"])
def test_price_out_refuses_the_files_of_record(root: Root, capsys: pytest.CaptureFixture[str], target: str) -> None:
    before = _tree(root.path)
    code, _, err = run_cli(capsys, root, "price", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45", "--out", str(root.path / target))
    assert code == 1
    assert_one_line(err, "--out is inside the files of record")
    assert _tree(root.path) == before


def test_price_out_through_a_symlink_into_config_is_refused(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    link = tmp_path / "looks-harmless.json"
    link.symlink_to(root.applied)
    before = root.applied.read_bytes()
    code, _, err = run_cli(capsys, root, "price", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45", "--out", str(link))
    assert code == 1 and root.applied.read_bytes() == before
    assert_one_line(err, "files of record")


def test_price_out_into_a_missing_directory_needs_mkdir(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "a" / "b" / "quotes.json"
    args = ("price", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45", "--out", str(out))
    code, _, err = run_cli(capsys, root, *args)
    assert code == 1 and not (tmp_path / "a").exists()
    assert_one_line(err, "does not exist", "--mkdir")
    code, _, err = run_cli(capsys, root, *args, "--mkdir")
    assert code == 0 and json.loads(out.read_bytes())


def test_price_out_over_a_special_file_is_refused(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = run_cli(capsys, root, "price", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45", "--out", str(fifo))
    assert code == 1 and fifo.is_fifo()
    assert_one_line(err, "not a regular file")


def test_backtest_out_site_is_refused_and_the_dashboard_kept(demo_root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    before = _tree(demo_root.site_dir)
    code, _, err = run_cli(capsys, demo_root, "backtest", "--underlying", "BTC", "--every", "24h", "--out", str(demo_root.site_dir))
    assert code == 1, err
    assert_one_line(err, "--out is inside the files of record (site/")
    assert _tree(demo_root.site_dir) == before


# --------------------------------------------------------------------------- 10: special files are refused, reads are bounded


def _special(kind: str, path: Path) -> None:
    path.unlink(missing_ok=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
@pytest.mark.parametrize("command", [("status",), ("doctor",), ("force-apply", "--underlying", "BTC")])
def test_a_special_file_as_the_applied_yaml_is_refused_without_hanging(root: Root, kind: str, command: tuple[str, ...], calreport_process) -> None:
    from foundation_helpers import add_live_run

    add_live_run(root, "BTC")
    _special(kind, root.applied)
    proc = calreport_process(["--root", str(root.path), *command], timeout=30)  # a process of its own: a hang is killed
    assert proc.returncode == 1, proc.stderr
    assert "not a regular file" in proc.stdout + proc.stderr and "Traceback" not in proc.stderr
    assert os.path.islink(root.applied) or root.applied.is_fifo()  # left as it was


@pytest.mark.parametrize("kind", ["fifo", "dev-zero"])
def test_a_special_file_as_the_config_is_refused(root: Root, kind: str, capsys: pytest.CaptureFixture[str]) -> None:
    _special(kind, root.calibration_config)
    code, _, err = run_cli(capsys, root, "status")
    assert code == 1
    assert_one_line(err, "calibration.yaml", "not a regular file")


def test_snapshot_dev_zero_is_refused_in_one_line(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, root, "price", "--underlying", "BTC", "--snapshot", "/dev/zero", "--rv", "0.45")
    assert code == 1
    assert_one_line(err, "not a regular file (a character device)")
    assert "/dev/zero" in err


def test_an_input_over_its_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    from calreport.errors import CalreportError
    from calreport.store.files import read_input

    big = tmp_path / "big.json"
    with open(big, "wb") as fh:
        fh.truncate(10_000)  # sparse
    assert len(read_input(big, limit=10_000)) == 10_000
    with pytest.raises(CalreportError, match="over the 9,999-byte limit"):
        read_input(big, limit=9_999)


def test_a_gzip_bomb_snapshot_is_refused_at_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import gzip

    from calreport.errors import CalreportError
    from calreport.market.deribit import load_snapshot
    from calreport.store import files

    monkeypatch.setattr(files, "MAX_INPUT_BYTES", 1 << 20)
    monkeypatch.setattr(files.decompress_gzip, "__defaults__", (1 << 20,))
    bomb = tmp_path / "s.json.gz"
    bomb.write_bytes(gzip.compress(b" " * (8 << 20)))
    with pytest.raises(CalreportError, match="gzip content over"):
        load_snapshot(bomb, "BTC")


# --------------------------------------------------------------------------- 8: every config value has a range


def _with_config(root: Root, old: str, new: str) -> None:
    text = root.calibration_config.read_text()
    assert old in text, old
    root.calibration_config.write_text(text.replace(old, new, 1))


CONFIG_REFUSALS = [
    ("max_rel_step: 0.1,", "max_rel_step: -0.1,", "policy.max_rel_step"),
    ("bootstrap_draws: 400", "bootstrap_draws: 1000000000", "fit.bootstrap_draws"),
    ("bootstrap_draws: 400", "bootstrap_draws: 1000000", "fit.bootstrap_draws"),
    ("bootstrap_seed: 11", "bootstrap_seed: -1", "fit.bootstrap_seed"),
    ("nodes: [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]", "nodes: [" + ", ".join(str(i / 100) for i in range(-5000, 5001)) + "]", "smile"),
    ("nodes: [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]", "nodes: [-1e9, 0.0, 1e9]", "smile"),
    ("policy: {min_samples: 50,", "policy: {min_samples: -5,", "policy.min_samples"),
    ("min_delta: 0.03", "min_delta: -0.01", "policy.min_delta"),
    ("max_abs_log_moneyness: 0.5", "max_abs_log_moneyness: -0.5", "filters.max_abs_log_moneyness"),
    ("max_mae: 400.0", "max_mae: -1.0", "realism.max_mae"),
    ("max_dte: 90.0", "max_dte: 0.5", "filters"),
    ("option_types: [C, P]", "option_types: [X]", "filters.option_types"),
    ("option_types: [C, P]", "option_types: []", "filters.option_types"),
    ("atm_rv_max: 1.4", "atm_rv_max: 0.5", "flags"),
    ("dte_ranges: ['3-10']", "dte_ranges: ['10-3']", "auto.dte_ranges"),
    ("lookbacks: [14d]", "lookbacks: [99999999999d]", "auto.lookbacks"),
    ("min_snapshot_coverage: 0.5", "min_snapshot_coverage: 2.0", "auto.min_snapshot_coverage"),
    ("underlyings: [BTC, ETH]\n# DTE", "underlyings: []\n# DTE", "underlyings"),
]


@pytest.mark.parametrize(("old", "new", "key"), CONFIG_REFUSALS, ids=[c[2] + ":" + c[1][:30] for c in CONFIG_REFUSALS])
def test_config_value_out_of_range_is_refused_naming_the_file_and_key(root: Root, capsys: pytest.CaptureFixture[str], old: str, new: str, key: str) -> None:
    _with_config(root, old, new)
    t0 = time.monotonic()
    code, _, err = run_cli(capsys, root, "status")
    assert code == 1, err
    assert_one_line(err, "calibration.yaml", key)
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------- 9: arguments out of range are usage errors


@pytest.mark.parametrize(
    "args",
    [
        ("auto-calibrate", "--underlying", "BTC", "--lookback", "99999999999d"),
        ("auto-calibrate", "--underlying", "BTC", "--lookback", "0d"),
        ("serve", "--port", "65536"),
        ("serve", "--port", "-1"),
        ("serve", "--port", "http"),
    ],
)
def test_an_argument_out_of_range_is_a_usage_error(root: Root, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(root.path), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err and "internal error" not in err and args[-2] in err


# --------------------------------------------------------------------------- 11: schema NAME quotes an excerpt


def test_schema_with_a_huge_name_quotes_an_excerpt(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, root, "schema", "x" * 5000)
    assert code == 2
    assert_one_line(err, "unknown schema")
    assert "x" * 101 not in err


# --------------------------------------------------------------------------- 12: dashboard actions are strict, confirmed, answered once


@pytest.fixture
def acting(root: Root):  # type: ignore[no-untyped-def]
    from calreport.commands.dashboard import DashboardActions, parse_body

    server, stop = make_server(root, port=0, watch=False, actions=DashboardActions(root, warn=lambda _m: None), parse_body=parse_body)
    try:
        yield server
    finally:
        stop()


def _post(server, body: bytes | dict) -> tuple[int, dict]:  # type: ignore[no-untyped-def]
    port = server.server_address[1]
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/api/actions/force-apply", body=data, headers={
            "Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}", "X-Calreport-Token": server.token,
            "Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def _apply_events(root: Root) -> int:
    return sum('"applied"' in line for line in root.live_history.read_text().splitlines())


def test_an_action_body_with_a_duplicate_key_is_refused_and_runs_nothing(root: Root, acting) -> None:  # type: ignore[no-untyped-def]
    from foundation_helpers import add_live_run

    add_live_run(root)
    before = root.applied.read_bytes(), root.live_history.read_bytes()
    status, body = _post(acting, b'{"underlying": "BTC", "preview": true, "preview": false}')
    assert status == 400 and "twice" in body["error"]
    assert (root.applied.read_bytes(), root.live_history.read_bytes()) == before


@pytest.mark.parametrize("missing", ["run_id", "nonce", "both"])
def test_a_confirmation_without_the_previewed_run_id_and_nonce_is_refused(root: Root, acting, missing: str) -> None:  # type: ignore[no-untyped-def]
    from foundation_helpers import add_live_run

    add_live_run(root)
    _, shown = _post(acting, {"underlying": "BTC", "preview": True})
    body = {"underlying": "BTC", "run_id": shown["preview"]["run_id"], "nonce": shown["preview"]["nonce"]}
    for key in (("run_id", "nonce") if missing == "both" else (missing,)):
        del body[key]
    before = root.applied.read_bytes(), root.live_history.read_bytes()
    status, answer = _post(acting, body)
    assert status == 400 and "run_id and nonce" in answer["error"]
    assert (root.applied.read_bytes(), root.live_history.read_bytes()) == before


def test_a_made_up_nonce_is_refused(root: Root, acting) -> None:  # type: ignore[no-untyped-def]
    from foundation_helpers import add_live_run

    run = add_live_run(root)
    status, answer = _post(acting, {"underlying": "BTC", "run_id": run.run_id, "nonce": "x" * 22})
    assert status == 409 and "review the change again" in answer["error"]
    assert _apply_events(root) == 0


def test_five_concurrent_clicks_write_one_apply_event_and_get_the_first_answer(root: Root, acting) -> None:  # type: ignore[no-untyped-def]
    from foundation_helpers import add_live_run

    add_live_run(root)
    _, shown = _post(acting, {"underlying": "BTC", "preview": True})
    body = {"underlying": "BTC", "run_id": shown["preview"]["run_id"], "nonce": shown["preview"]["nonce"]}
    answers: list[tuple[int, dict]] = []
    clicks = [threading.Thread(target=lambda: answers.append(_post(acting, body))) for _ in range(5)]
    for t in clicks:
        t.start()
    for t in clicks:
        t.join(60)
    assert len(answers) == 5 and all(a == answers[0] for a in answers), answers
    assert answers[0][0] == 200 and answers[0][1]["done"]["run_id"] == shown["preview"]["run_id"]
    assert _apply_events(root) == 1
