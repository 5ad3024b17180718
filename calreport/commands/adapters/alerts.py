"""Alerts: tell someone when a run failed, was held for review or raised new flags.

Delivery is I/O, so it lives here and not in the calibration core. Config `alerts:`:
- `command`: a program started with the event JSON on stdin (a string is split with shlex, never
  handed to a shell); delivered when it exits 0.
- `webhook`: an http(s) URL the event JSON is POSTed to (Content-Type application/json); delivered
  on a 2xx answer.
Each delivery is bounded by `alerts.timeout_s` as a whole (wall clock, however slowly the other
end talks) and keeps at most 64 KB of what it reads; a command that overruns is killed with its
whole process group. Whatever happens, the run stands: every attempt (ok or not, with the error) is
appended to history/alerts.jsonl and a failure is also reported through the workspace's warn.

    alert_triggers(kind, run, previous_flags) -> ["failed" | "held_for_review" | "new_flags", ...]
    build_event(kind, run, triggers, new) -> the JSON event
    deliver(event, cfg) -> [AlertDelivery]
    notify(ws, kind, run, previous_flags) -> AlertEvent | None
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import select
import selectors
import shlex
import signal
import socket
import subprocess
import threading
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from calreport.apply import routine_hold
from calreport.calibration.flags import new_flags
from calreport.model import (
    AlertDelivery,
    AlertEvent,
    AlertsConfig,
    AutoRun,
    LiveRun,
    RunFlag,
)
from calreport.store.history import append_row
from calreport.timeutil import iso_utc, utc_now

if TYPE_CHECKING:
    from calreport.commands.workspace import Workspace

MAX_ERROR_CHARS = 200
KEEP_BYTES = 64 * 1024  # of a command's stderr; the rest is read and dropped
READ_CHUNK = 65536
KILL_WAIT_S = 0.8  # for a killed command's process group to be gone (within the timeout_s + 1 s promise)


def alert_triggers(kind: str, run: LiveRun | AutoRun, previous_flags: list[RunFlag] | None) -> list[str]:
    """Why `run` deserves an alert: failed; held for a reason a human should review (not a routine hold:
    apply.routine_hold); flags the previous run of the underlying did not have."""
    out: list[str] = []
    if run.status == "failed":
        out.append("failed")
    elif kind == "live" and isinstance(run, LiveRun) and run.decision == "hold":
        if not routine_hold(run.decision_reason):
            out.append("held_for_review")
    if new_flags(run.flags, previous_flags):
        out.append("new_flags")
    return out


def build_event(kind: str, run: LiveRun | AutoRun, triggers: list[str], previous_flags: list[RunFlag] | None) -> dict[str, Any]:
    """The JSON every channel receives: what happened, to which run, with its flags and reasons."""
    event: dict[str, Any] = {
        "source": "calreport",
        "kind": kind,
        "triggers": triggers,
        "underlying": run.underlying,
        "run_id": run.run_id,
        "ts": run.ts,
        "status": run.status,
        "reason": run.reason,
        "flags": [f.model_dump(mode="json") for f in (run.flags or [])],
        "new_flags": new_flags(run.flags, previous_flags),
    }
    if isinstance(run, LiveRun):
        event |= {
            "decision": run.decision,
            "decision_reason": run.decision_reason,
            "recommended": run.recommended.global_ if run.recommended else None,
            "multiplier_se": run.multiplier_se.global_ if run.multiplier_se else None,
        }
    else:
        event |= {"multiplier": run.multiplier, "multiplier_se": run.multiplier_se, "dte": [run.dte_min, run.dte_max], "lookback": run.lookback}
    return event


def _one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_ERROR_CHARS]


def _run_command(argv: list[str], payload: bytes, timeout: float) -> str | None:
    """None when the command read the event and exited 0, else why not.

    The whole delivery (writing the event, the command's run, reading its stderr) ends by the
    deadline; stdout is discarded and only the first KEEP_BYTES of stderr are kept, so a command
    printing without end costs neither memory nor time beyond timeout_s.
    """
    deadline = time.monotonic() + timeout
    try:
        proc = subprocess.Popen(  # noqa: S603 - the user's own configured program, no shell
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        return _one_line(f"cannot start {argv[0]}: {exc.strerror or exc}")
    assert proc.stdin is not None and proc.stderr is not None
    err = bytearray()
    pending = memoryview(payload)
    with selectors.DefaultSelector() as sel:
        os.set_blocking(proc.stdin.fileno(), False)
        sel.register(proc.stderr, selectors.EVENT_READ)
        if pending:
            sel.register(proc.stdin, selectors.EVENT_WRITE)
        else:
            proc.stdin.close()
        while sel.get_map():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            for key, _ in sel.select(left):
                if key.fileobj is proc.stdin:
                    try:
                        pending = pending[os.write(proc.stdin.fileno(), pending):]
                    except BlockingIOError:
                        continue
                    except OSError:  # the command does not read its stdin: not our failure to report
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(proc.stdin)
                        proc.stdin.close()
                else:
                    chunk = os.read(proc.stderr.fileno(), READ_CHUNK)
                    if not chunk:
                        sel.unregister(proc.stderr)
                    elif len(err) < KEEP_BYTES:
                        err += chunk[: KEEP_BYTES - len(err)]
    try:
        proc.wait(timeout=max(deadline - time.monotonic(), 0.001))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its children too: none may keep the pipes open
        _wait_gone(proc, KILL_WAIT_S)
        return f"timed out after {timeout:g} s (killed)"
    finally:
        for f in (proc.stdin, proc.stderr):
            with contextlib.suppress(OSError):
                f.close()
    if proc.returncode != 0:
        tail = _one_line(bytes(err).decode("utf-8", "replace")) if err else ""
        return f"exit status {proc.returncode}" + (f": {tail}" if tail else "")
    return None


def _wait_gone(proc: subprocess.Popen[bytes], limit: float) -> None:
    """After the kill: wait (at most `limit` s) for the command and every process of its group to be
    gone, which is when the last of them has closed its end of the stderr pipe."""
    end = time.monotonic() + limit
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=limit)
    if proc.stderr is None or proc.stderr.closed:
        return
    fd = proc.stderr.fileno()
    with contextlib.suppress(OSError):
        while (left := end - time.monotonic()) > 0 and select.select([fd], [], [], left)[0]:
            if not os.read(fd, READ_CHUNK):
                return


def _post(url: str, payload: bytes, timeout: float) -> str | None:
    """None on a 2xx answer, else why not.

    `timeout` bounds the whole delivery, not each read: the request runs in a worker thread and
    its socket is shut down at the deadline, so a server answering a byte at a time cannot hold
    the run. Only the status line and headers are read (http.client bounds their size).
    """
    parts = urlsplit(url)
    conn_cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    try:
        conn = conn_cls(parts.hostname or "", parts.port, timeout=timeout)
    except (ValueError, OSError) as exc:
        return _one_line(f"cannot reach the webhook: {exc}")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    result: dict[str, Any] = {}

    def post() -> None:
        try:
            conn.request("POST", target, body=payload, headers={"Content-Type": "application/json", "User-Agent": "calreport-alerts"})
            result["status"] = conn.getresponse().status
        except Exception as exc:  # noqa: BLE001 - reported as the delivery's error
            result["error"] = exc

    worker = threading.Thread(target=post, name="calreport-webhook", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        sock = conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        worker.join(1.0)
        conn.close()
        return f"timed out after {timeout:g} s"
    conn.close()
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, TimeoutError) or "timed out" in str(exc):
            return f"timed out after {timeout:g} s"
        return _one_line(f"cannot reach the webhook: {getattr(exc, 'strerror', None) or exc}")
    status = result.get("status", 0)
    return None if 200 <= status < 300 else f"HTTP {status}"


def deliver(event: dict[str, Any], cfg: AlertsConfig) -> list[AlertDelivery]:
    """Send `event` to every configured channel, each within cfg.timeout_s; never raises."""
    payload = json.dumps(event, sort_keys=True).encode("utf-8")
    out: list[AlertDelivery] = []
    if cfg.command:
        argv = shlex.split(cfg.command) if isinstance(cfg.command, str) else list(cfg.command)
        started = time.monotonic()
        error = _run_command(argv, payload, cfg.timeout_s) if argv else "empty command"
        out.append(AlertDelivery(channel="command", target=(argv or [""])[0], ok=error is None, error=error,
                                 elapsed_s=round(time.monotonic() - started, 3)))
    if cfg.webhook:
        started = time.monotonic()
        error = _post(cfg.webhook, payload, cfg.timeout_s)
        out.append(AlertDelivery(channel="webhook", target=cfg.webhook, ok=error is None, error=error,
                                 elapsed_s=round(time.monotonic() - started, 3)))
    return out


def notify(ws: Workspace, kind: str, run: LiveRun | AutoRun, previous_flags: list[RunFlag] | None) -> AlertEvent | None:
    """Raise and deliver the alert `run` deserves, if any, and record it. Never fails the run: a
    delivery failure is recorded in history/alerts.jsonl and reported through ws.warn."""
    try:
        cfg = ws.config.alerts
        if not (cfg.command or cfg.webhook):
            return None
        triggers = alert_triggers(kind, run, previous_flags)
        if not triggers:
            return None
        event = build_event(kind, run, triggers, previous_flags)
        row = AlertEvent(
            schema_version=1, run_id=run.run_id, ts=iso_utc(utc_now()), underlying=run.underlying, kind=kind,
            triggers=triggers, event=event, deliveries=deliver(event, cfg),
        )
        append_row(ws.root.alert_history, row)
    except Exception as exc:  # noqa: BLE001 - an alert must never fail the run it reports
        ws.warn(f"alert for run {run.run_id} not recorded: {_one_line(str(exc))}")
        return None
    for d in row.deliveries:
        if not d.ok:
            ws.warn(f"alert {d.channel} {d.target} failed for run {run.run_id}: {d.error}")
    return row
