"""Alerts: tell someone when a run failed, was held for review or raised new flags.

Delivery is I/O, so it lives here and not in the calibration core. Config `alerts:`:
- `command`: a program started with the event JSON on stdin (a string is split with shlex, never
  handed to a shell); delivered when it exits 0.
- `webhook`: an http(s) URL the event JSON is POSTed to (Content-Type application/json); delivered
  on a 2xx answer.
Each delivery is bounded by `alerts.timeout_s`; a command that overruns is killed with its whole
process group. Whatever happens, the run stands: every attempt (ok or not, with the error) is
appended to history/alerts.jsonl and a failure is also reported through the workspace's warn.

    alert_triggers(kind, run, previous_flags) -> ["failed" | "held_for_review" | "new_flags", ...]
    build_event(kind, run, triggers, new) -> the JSON event
    deliver(event, cfg) -> [AlertDelivery]
    notify(ws, kind, run, previous_flags) -> AlertEvent | None
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any

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

ROUTINE_HOLD = "Change too small"  # the policy's everyday hold: nothing for a human to review
MAX_ERROR_CHARS = 200


def alert_triggers(kind: str, run: LiveRun | AutoRun, previous_flags: list[RunFlag] | None) -> list[str]:
    """Why `run` deserves an alert: failed; held for a reason a human should review (not the
    routine "Change too small"); flags the previous run of the underlying did not have."""
    out: list[str] = []
    if run.status == "failed":
        out.append("failed")
    elif kind == "live" and isinstance(run, LiveRun) and run.decision == "hold":
        if not (run.decision_reason or "").startswith(ROUTINE_HOLD):
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
    """None when the command read the event and exited 0, else why not."""
    try:
        proc = subprocess.Popen(  # noqa: S603 - the user's own configured program, no shell
            argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
    except OSError as exc:
        return _one_line(f"cannot start {argv[0]}: {exc.strerror or exc}")
    try:
        _, err = proc.communicate(payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # its children too: none may keep the pipes open
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=1.0)
        return f"timed out after {timeout:g} s (killed)"
    if proc.returncode != 0:
        tail = _one_line(err.decode("utf-8", "replace")) if err else ""
        return f"exit status {proc.returncode}" + (f": {tail}" if tail else "")
    return None


def _post(url: str, payload: bytes, timeout: float) -> str | None:
    """None on a 2xx answer, else why not."""
    req = urllib.request.Request(url, data=payload, method="POST", headers={"Content-Type": "application/json", "User-Agent": "calreport-alerts"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - http(s) only (config validates)
            status = resp.status
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError) or "timed out" in str(reason):
            return f"timed out after {timeout:g} s"
        return _one_line(f"cannot reach the webhook: {reason}")
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
