"""What the dashboard's buttons do under `calreport serve`: Force-Apply Latest and Roll back to this.

The HTTP side (token, Origin, Host, size, JSON-only) lives in calreport.report.serve; this module is
the commands-layer half it is handed: it previews an action (old -> new values, the run, its realism
status) and runs it through the very use cases the CLI runs (same lock, same apply event, same
refusals), with `via="dashboard"` so the reason says where the user acted. A fresh workspace is
opened per action, so a long-running server sees config edits like a new command would.
"""

from __future__ import annotations

import secrets
import shlex
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from calreport import fmt
from calreport.apply import accepted, force_refusal, rollback_target, rollback_values
from calreport.commands import usecases
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError, RefusedError
from calreport.model import NOTE_MAX_CHARS, ApplyEvent, CalibrationConfig, Multipliers, surface_changes
from calreport.report.compare import changed_smile_nodes
from calreport.store.applied import FileApplyStore, read_applied
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

VIA = "dashboard"
ACTIONS = ("force-apply", "rollback")
OVERRIDE = "allow_unrealistic"  # the one refusal the dashboard may override, after a second confirmation
KEEP_NONCES = 256  # previews whose confirmation may still come, and answers a repeated click gets again

Rerender = Callable[[CalibrationConfig | None], None]


class ActionBody(BaseModel):
    """The JSON body of a dashboard POST: nothing else is accepted (strict types, no extra keys)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    underlying: str = Field(min_length=1, max_length=40)
    run_id: str | None = Field(default=None, min_length=1, max_length=80)  # the run the preview showed
    nonce: str | None = Field(default=None, min_length=1, max_length=80)  # the preview's, once
    preview: bool = False
    allow_unrealistic: bool = False
    note: str | None = Field(default=None, max_length=NOTE_MAX_CHARS)  # the dialog's optional note, kept in the apply event


def parse_body(doc: Any) -> ActionBody:
    """The body as an ActionBody, or a CalreportError naming the first problem (no input echoed)."""
    try:
        return ActionBody.model_validate(doc)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err.get("loc", ())) or "body"
        raise CalreportError(f"request body: {where}: {err.get('msg', 'invalid')}") from None


def cli_command(action: str, underlying: str, run_id: str | None = None, *, allow_unrealistic: bool = False) -> str:
    """The CLI line that does what the button does (shown in the dialog and copied on the static page)."""
    parts = ["calreport", action, "--underlying", underlying]
    if action == "rollback" and run_id:
        parts += ["--to", run_id]
    if allow_unrealistic:
        parts.append("--allow-unrealistic")
    return shlex.join(parts)


def _values(m: Multipliers | None) -> dict[str, Any]:
    if m is None:
        return {"global": None, "bands": {}}
    return {"global": m.global_, "bands": dict(m.bands)}


def changes(old: Multipliers | None, new: Multipliers | None) -> list[dict[str, str]]:
    """old -> new per row (global first, then every band either side has), formatted as the page does."""
    o, n = _values(old), _values(new)
    rows = [{"band": "global", "old": fmt.mult(o["global"]), "new": fmt.mult(n["global"])}]
    for band in list(dict.fromkeys([*o["bands"], *n["bands"]])):
        ov, nv = o["bands"].get(band), n["bands"].get(band)
        rows.append({
            "band": band,
            "old": fmt.mult(ov) if ov is not None else "none",
            "new": fmt.mult(nv) if nv is not None else "removed (global applies)",
        })
    return rows


def event_json(ev: ApplyEvent) -> dict[str, Any]:
    return {
        "underlying": ev.underlying,
        "source": ev.source,
        "run_id": ev.run_id,
        "reason": ev.reason,
        "previous": _values(ev.previous),
        "applied": _values(ev.applied),
        "note": ev.note,
    }


class DashboardActions:
    """The buttons' use cases for one served root; one action at a time per server."""

    def __init__(self, root: Root, *, warn: Callable[[str], None] | None = None) -> None:
        self.root = root
        self._warn = warn or (lambda m: print(f"calreport serve: {m}", file=sys.stderr))
        self._lock = threading.Lock()
        # A confirmation carries the nonce of the preview it confirms: (action, underlying, run_id)
        # it was issued for; once done, the nonce maps to the answer every repeat of it gets.
        self._issued: OrderedDict[str, tuple[str, str, str | None]] = OrderedDict()
        self._answers: OrderedDict[str, tuple[int, dict[str, Any]]] = OrderedDict()

    def _issue(self, plan: dict[str, Any]) -> str:
        nonce = secrets.token_urlsafe(16)
        self._issued[nonce] = (plan["action"], plan["underlying"], plan["run_id"])
        while len(self._issued) > KEEP_NONCES:
            self._issued.popitem(last=False)
        return nonce

    def _workspace(self, rerender: Rerender, warnings: list[str]) -> Workspace:
        def warn(message: str) -> None:
            warnings.append(message)
            self._warn(message)

        return Workspace.open(self.root, renderer=lambda _root, config: rerender(config), warn=warn)

    def preview(self, ws: Workspace, action: str, body: ActionBody) -> dict[str, Any]:
        """What the action would change, read from the files of record now (writes nothing)."""
        cfg = ws.config
        name = cfg.check_underlying(body.underlying)
        current = read_applied(self.root, cfg).entry(name)
        old = Multipliers(global_=current.global_, bands=dict(current.bands), smile=current.smile, surface=current.surface)
        if action == "force-apply":
            run = HistoryQuery.latest_live_run(self.root, name)
            if run is None:
                raise RefusedError(f"no live run for {name}; run `calreport calibrate` first")
            refused = force_refusal(run, name, current, cfg, allow_unrealistic=True)  # the realism override is asked for
            if refused is not None:
                refused.raise_()
            new, run_id = run.smoothed, run.run_id
            realism = {"status": fmt.text(run.status), "reason": fmt.text(run.reason)}
        else:
            if not body.run_id:
                raise CalreportError("request body: run_id: the run to roll back to is required")
            store = FileApplyStore(self.root, cfg)
            target = accepted(rollback_target(
                store.apply_events(name), name, current.run_id, body.run_id, run_of=store.run_of, where=store.where
            ))
            new, run_id = accepted(rollback_values(target, name, cfg, current)), target.run_id
            realism = {"status": "previously applied", "reason": "re-applies values that were applied before"}
        return {
            "action": action,
            "underlying": name,
            "run_id": run_id,
            "current_run_id": current.run_id,
            "realism": realism,
            "changes": changes(old, new),
            "smile_changes": changed_smile_nodes(old.smile, new.smile if new is not None else None),
            # the model the engine quotes with (surface block added, dropped, a pillar moved): same levels, other quotes
            "surface_changes": [
                {"what": what, "old": a, "new": b} for what, a, b in surface_changes(old.surface, new.surface if new is not None else None)
            ],
            "command": cli_command(action, name, run_id),
            "needs_override": action == "force-apply" and realism["status"] == "failed",
        }

    def handle(self, action: str, body: ActionBody, rerender: Rerender) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body). 200 done or previewed; 409 refused (nothing changed); 400 bad request."""
        if action not in ACTIONS:
            return 404, {"error": "no such action"}
        warnings: list[str] = []
        with self._lock:
            if not body.preview:
                if body.run_id is None or body.nonce is None:
                    return 400, {"error": "request body: a confirmation carries the run_id and nonce of the preview it confirms"}
                if body.nonce in self._answers:  # a repeated click: the first answer, nothing done twice
                    return self._answers[body.nonce]
                if body.nonce not in self._issued:
                    return 409, {"error": "this confirmation is unknown or expired; review the change again", "refused": True}
            ws = self._workspace(rerender, warnings)
            try:
                plan = self.preview(ws, action, body)
                if body.preview:
                    return 200, {"preview": plan | {"nonce": self._issue(plan)}}
                if self._issued[body.nonce] != (action, plan["underlying"], body.run_id):
                    return 400, {"error": "request body: the nonce belongs to another action, underlying or run"}
                if body.run_id is not None and plan["run_id"] != body.run_id:
                    raise RefusedError(
                        f"the latest {plan['underlying']} live run is now {plan['run_id']}, not {body.run_id}; "
                        "review the change again"
                    )
                if action == "force-apply":
                    ev = usecases.force_apply(
                        ws, plan["underlying"], allow_unrealistic=body.allow_unrealistic, via=VIA, note=body.note
                    )
                else:
                    ev = usecases.rollback(ws, plan["underlying"], to=plan["run_id"], via=VIA, note=body.note)
            except RefusedError as exc:
                out: dict[str, Any] = {"error": exc.one_line(), "refused": True}
                if action == "force-apply" and not body.allow_unrealistic and self._failed_realism(body.underlying):
                    out["override"] = OVERRIDE
                    out["override_command"] = cli_command(action, body.underlying, allow_unrealistic=True)
                return 409, out
            except CalreportError as exc:
                return 400, {"error": exc.one_line()}
            answer = 200, {"done": event_json(ev), "warnings": warnings}
            del self._issued[body.nonce]
            self._answers[body.nonce] = answer
            while len(self._answers) > KEEP_NONCES:
                self._answers.popitem(last=False)
        return answer

    def _failed_realism(self, underlying: str) -> bool:
        try:
            run = HistoryQuery.latest_live_run(self.root, underlying)
        except CalreportError:
            return False
        return run is not None and run.status == "failed" and run.smoothed is not None
