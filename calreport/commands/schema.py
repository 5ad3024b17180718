"""`calreport schema [NAME]`: the JSON Schema of each file format calreport reads or writes.

The pydantic models in calreport.model are the schema; this gives them as JSON Schema
(draft 2020-12) so other tools can validate the files (the CLI prints them). docs/FILES.md describes every file.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from calreport.model import (
    AlertEvent,
    AppliedDocument,
    ApplyEvent,
    AutoRun,
    AutoRunDetail,
    BacktestDecision,
    BacktestSummary,
    CalibrationConfig,
    HarvestErrors,
    HarvestRow,
    LiveRun,
    RunDetail,
    StateDocument,
)

SCHEMA_ID_BASE = "https://calreport.invalid/schema/"  # a name, not a place: nothing is fetched

SCHEMAS: dict[str, type[BaseModel]] = {
    "applied": AppliedDocument,
    "config": CalibrationConfig,
    "state": StateDocument,
    "live-run": LiveRun,
    "apply-event": ApplyEvent,
    "auto-run": AutoRun,
    "run-detail": RunDetail,
    "auto-run-detail": AutoRunDetail,
    "harvest-row": HarvestRow,
    "alert-event": AlertEvent,
    "harvest-errors": HarvestErrors,
    "backtest-summary": BacktestSummary,
    "backtest-decision": BacktestDecision,
}

DESCRIPTIONS: dict[str, str] = {
    "applied": "config/applied_multipliers.yaml: the multipliers the engine uses (YAML)",
    "config": "config/calibration.yaml: bands, filters, fit, smoothing, policy, realism, auto, dashboard (YAML)",
    "state": "site/api/calibration/state.json and `calreport status --json`: the applied YAML as JSON",
    "live-run": 'history/live_calibration.jsonl, a line with "type": "live_run": one live calibration',
    "apply-event": 'history/live_calibration.jsonl, a line with "type": "apply": one write of the applied YAML',
    "auto-run": "history/auto_calibrate.jsonl, one line: one auto-calibrate run over the harvest",
    "run-detail": "history/runs/<run_id>.json: the quote-level detail of one live run",
    "auto-run-detail": "history/runs/<run_id>.json of an auto run: its delta buckets, uncertainty and smile",
    "harvest-row": "data/harvest/<UNDERLYING>/YYYY-MM-DD.jsonl(.gz), one line: a Deribit book-summary row",
    "alert-event": "history/alerts.jsonl, one line: an alert raised for a run and its delivery",
    "harvest-errors": "data/harvest/<UNDERLYING>/YYYY-MM-DD.errors.json: lines compaction set aside",
    "backtest-summary": "backtests/<id>/summary.json: settings and per-variant results of one `calreport backtest`",
    "backtest-decision": "backtests/<id>/decisions.jsonl, one line: one decision time of one backtest variant",
}


def list_schemas() -> list[tuple[str, str]]:
    """(name, one-line description) of every format, in a stable order."""
    return [(name, DESCRIPTIONS[name]) for name in SCHEMAS]


def schema_json(name: str) -> dict[str, Any]:
    """The JSON Schema of format `name` (KeyError for an unknown name)."""
    model = SCHEMAS[name]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{SCHEMA_ID_BASE}{name}.json",
        **schema,
        "title": f"calreport {name}",
        "description": " ".join(f"{DESCRIPTIONS[name]}. {model.__doc__ or ''} See docs/FILES.md.".split()),
    }
