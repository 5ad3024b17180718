"""`calreport schema` prints a JSON Schema per file format, and those schemas (the models) describe
every file a demo root holds: every field any writer puts in a file is declared."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from foundation_helpers import force_apply
from pydantic import BaseModel

from calreport import jsonio
from calreport.commands.cli import main
from calreport.commands.legacy import import_legacy
from calreport.commands.schema import SCHEMAS, list_schemas, schema_json
from calreport.commands.workspace import Workspace
from calreport.market import parquet as pqday
from calreport.model import (
    ROW_TYPES,
    AppliedDocument,
    AppliedEntry,
    ApplyEvent,
    AutoRun,
    CalibrationConfig,
    HarvestRow,
    LiveRun,
    Multipliers,
    AutoRunDetail,
    RunDetail,
)
from calreport.store.applied import format_applied, read_applied
from calreport.store.config import DEFAULT_CONFIG_TEXT
from calreport.store.files import atomic_write
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]
ROW_SCHEMA = {"live_run": "live-run", "apply": "apply-event", "auto_run": "auto-run"}

LEGACY_LIVE = {
    "timestamp": "2025-12-11T19:37:08.123456Z", "underlying": "BTC", "source": "live",
    "global_metrics": {"mae_pct": 26.35, "bias_pct": -24.78, "vega_weighted_mae_pct": 13.55},
    "bands": [{"name": "weekly", "min_dte": 3.0, "max_dte": 10.0, "count": 30, "mae_pct": 20.1}],
    "recommended_iv_multiplier": 1.0488, "sample_size": 47, "vega_sum": 470.0,
    "smoothed_global_multiplier": 1.0833, "applied": True, "applied_reason": None,
}
LEGACY_HARVESTED = {
    "timestamp": "2025-12-10T22:42:08.855501Z", "underlying": "BTC", "source": "harvested",
    "global_metrics": {}, "recommended_iv_multiplier": 1.0, "sample_size": 0,
    "smoothed_global_multiplier": 1.0366, "applied": False, "applied_reason": "Sample size too small (0 < 50)",
}


def _run_schema(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)  # the CLI prints; calreport.commands.schema only gives the schemas
    out, err = capsys.readouterr()
    return code, out, err


def _validator(name: str) -> jsonschema.protocols.Validator:
    schema = schema_json(name)
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory, pristine_demo) -> Root:
    """A demo root plus what the demo does not write: imported legacy records and a recovered apply event."""
    tmp = tmp_path_factory.mktemp("schema")
    root = pristine_demo.copy_to(tmp / "demo")  # conftest: run_demo(anchor_ms=FIXED_ANCHOR), once per run
    files = []
    for name, record in (("live.json", LEGACY_LIVE), ("harvested.json", LEGACY_HARVESTED)):
        (tmp / name).write_text(json.dumps(record))
        files.append(tmp / name)
    result = import_legacy(Workspace.open(root), files)
    assert result.errors == [] and result.live == result.auto == 1
    # a writer killed between the YAML and its event: the next apply records the lost event
    doc = read_applied(root)
    lost = AppliedEntry(global_=1.15, bands={}, updated_at="2099-01-01T00:00:00Z", source="policy", run_id="X", reason="r")
    atomic_write(root.applied, format_applied(AppliedDocument(underlyings={**doc.underlyings, "BTC": lost})).encode())
    force_apply(root, "BTC")
    return root


def _history_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def harvest(demo: Root) -> tuple[list[dict[str, Any]], int]:
    """Every harvest row of the demo root, and how many lines were torn (not JSON).

    Closed days are compacted: their rows come back from the Parquet files in the JSONL shape, and
    their torn lines are in the `.errors.json` sidecars (validated against `harvest-errors`)."""
    rows, torn = [], 0
    base = demo.path / "data" / "harvest"
    for f in sorted(base.rglob("*.jsonl*")):
        data = gzip.decompress(f.read_bytes()) if f.name.endswith(".gz") else f.read_bytes()
        for line in data.splitlines():
            try:
                rows.append(jsonio.loads(line))
            except ValueError:
                torn += 1
    for f in sorted(base.rglob("*.parquet")):
        rows += pqday.read_rows(f)
    sidecars = sorted(base.rglob("*.errors.json"))
    validator = _validator("harvest-errors")
    for f in sidecars:
        doc = json.loads(f.read_bytes())
        validator.validate(doc)
        for source in doc["sources"].values():
            for rejected in source["rejected"]:
                try:
                    jsonio.loads(rejected["text"])
                except ValueError:
                    torn += 1
    assert sidecars and list(base.rglob("*.parquet"))  # the demo's closed days were compacted
    return rows, torn


def _shape(row: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, type(v).__name__) for k, v in row.items()))


def _shapes(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per distinct shape (keys and value types)."""
    seen: dict[tuple[tuple[str, str], ...], dict[str, Any]] = {}
    for row in rows:
        seen.setdefault(_shape(row), row)
    return list(seen.values())


# --------------------------------------------------------------------------- the command


def test_schema_without_a_name_lists_every_format_with_a_description(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_schema(["schema"], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert [ln.split()[0] for ln in lines] == list(SCHEMAS) == [n for n, _ in list_schemas()]
    assert set(SCHEMAS) == {"applied", "config", "state", "live-run", "apply-event", "auto-run", "run-detail", "auto-run-detail", "harvest-row",
                            "harvest-errors", "backtest-summary", "backtest-decision", "alert-event"}
    assert all(len(ln.split(None, 1)) == 2 for ln in lines)


def test_an_unknown_schema_name_is_one_line_on_stderr_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run_schema(["schema", "nope"], capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "unknown schema 'nope'" in err and "live-run" in err


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_each_schema_is_a_valid_json_schema_with_id_title_and_description(name: str) -> None:
    schema = schema_json(name)
    jsonschema.validators.validator_for(schema).check_schema(schema)
    assert schema["$id"].endswith(f"/{name}.json") and name in schema["title"]
    assert "docs/FILES.md" in schema["description"] and "\n" not in schema["description"]


def test_schema_state_validates_the_rendered_state_document(demo: Root, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run_schema(["schema", "state"], capsys)
    assert code == 0
    schema = json.loads(out)
    state = json.loads(demo.state_json.read_text())
    jsonschema.validate(state, schema)
    broken = {**state, "underlyings": {"BTC": {**state["underlyings"]["BTC"], "global": "1.05"}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


# --------------------------------------------------------------------------- every file of a demo root


def test_applied_and_config_yaml_of_a_demo_root_validate(demo: Root) -> None:
    _validator("applied").validate(yaml.safe_load(demo.applied.read_text()))
    _validator("config").validate(yaml.safe_load(demo.calibration_config.read_text()))


def test_every_history_line_validates_against_the_schema_of_its_type(demo: Root) -> None:
    validators = {t: _validator(n) for t, n in ROW_SCHEMA.items()}
    seen: dict[str, int] = {}
    for path in (demo.live_history, demo.auto_history):
        for row in _history_lines(path):
            validators[row["type"]].validate(row)
            seen[row["type"]] = seen.get(row["type"], 0) + 1
    assert set(seen) == set(ROW_SCHEMA) and min(seen.values()) >= 3, seen


def _auto_run_ids(root: Root) -> set[str]:
    return {row["run_id"] for row in _history_lines(root.auto_history) if row.get("detail_file")}


def test_every_run_detail_file_validates(demo: Root) -> None:
    live, auto = _validator("run-detail"), _validator("auto-run-detail")
    files = sorted(demo.runs_dir.glob("*.json"))
    autos = _auto_run_ids(demo)
    assert len(files) >= 5 and autos and len(files) > len(autos)
    for f in files:
        (auto if f.stem in autos else live).validate(json.loads(f.read_text()))


def test_every_shape_of_harvest_line_validates(harvest: tuple[list[dict[str, Any]], int]) -> None:
    """Every distinct shape of line (keys and value types) and every 100th line of every file
    (about 360k lines in all: validating each one would take half a minute)."""
    rows, torn = harvest
    assert torn == 2  # the demo's harvester was killed mid-line once per underlying
    shapes = _shapes(rows)
    validator = _validator("harvest-row")
    for row in [*shapes, *rows[::100]]:
        validator.validate(row)
    assert len(shapes) >= 3  # complete books, one-sided books, the early shape without bid/ask
    assert any("underlying_index" in r and "bid_price" not in r for r in shapes)


@pytest.mark.parametrize(
    ("name", "document"),
    [
        ("applied", {"schema_version": 1, "underlyings": {"BTC": {"global": "1.05"}}}),
        ("applied", {"schema_version": 1, "underlyings": {"BTC": {"global": True}}}),
        ("config", {"polcy": {"min_samples": 5}}),
        ("harvest-row", {"instrument_name": "BTC-27DEC24-60000-C", "mark_price": "0.05", "mark_iv": 50,
                         "underlying_price": 60000, "harvested_at": 1}),
        ("harvest-row", {"instrument_name": "BTC-27DEC24-60000-C", "mark_price": 0.05, "mark_iv": 50,
                         "underlying_price": 60000}),
        ("apply-event", {"type": "live_run"}),
    ],
)
def test_the_schemas_reject_what_the_readers_reject(name: str, document: dict[str, Any]) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _validator(name).validate(document)


# --------------------------------------------------------------------------- every written field is declared


def _undeclared(model: BaseModel, where: str) -> list[str]:
    out = [f"{where}.{k}" for k in (model.model_extra or {})]
    for name, value in model:
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else [(None, value)]
        for key, v in items:
            if isinstance(v, BaseModel) and name != "legacy":
                out += _undeclared(v, f"{where}.{name}" + (f"[{key}]" if key is not None else ""))
    return out


def test_every_field_the_writers_put_in_rows_and_detail_files_is_declared(
    demo: Root, harvest: tuple[list[dict[str, Any]], int]
) -> None:
    undeclared: list[str] = []
    types = set()
    for path in (demo.live_history, demo.auto_history):
        for row in _history_lines(path):
            model = ROW_TYPES[row["type"]].model_validate(row)
            types.add((row["type"], row.get("source"), bool(row.get("imported_from")), bool(row.get("recovered"))))
            undeclared += _undeclared(model, row["type"])
    autos = _auto_run_ids(demo)
    for f in demo.runs_dir.glob("*.json"):
        model = AutoRunDetail if f.stem in autos else RunDetail
        undeclared += _undeclared(model.model_validate_json(f.read_bytes()), f.name)
    for row in _shapes(harvest[0]):
        undeclared += _undeclared(HarvestRow.model_validate(row), "harvest")
    # the rows cover calreport's own writers, the legacy import and a recovered apply event
    assert {("live_run", "live", False, False), ("live_run", "legacy", True, False), ("auto_run", None, True, False),
            ("apply", "policy", False, True)} <= types, types
    harvest_extra = {u for u in undeclared if u.startswith("harvest.")}
    deribit_extra = {"harvest.base_currency", "harvest.quote_currency", "harvest.mid_price", "harvest.volume",
                     "harvest.interest_rate"}
    assert harvest_extra <= deribit_extra  # Deribit's own fields calreport passes through and never reads
    assert [u for u in undeclared if not u.startswith("harvest.")] == []


def test_optional_fields_are_written_only_by_the_writers_that_set_them() -> None:
    plain = LiveRun(run_id="r", ts="2025-12-11T10:00:00Z", underlying="BTC").to_json_dict()
    assert not {"imported_from", "legacy", "legacy_source", "legacy_applied", "legacy_applied_reason"} & set(plain)
    assert plain["vega_sum"] is None  # ordinary optional fields are still written as null
    event = ApplyEvent(run_id="r", applied=Multipliers(global_=1.1)).to_json_dict()
    assert "recovered" not in event
    assert ApplyEvent(run_id="r", recovered=True).to_json_dict()["recovered"] is True
    legacy = AutoRun(run_id="legacy-1", imported_from="x.json", legacy_applied_reason=None).to_json_dict()
    assert legacy["imported_from"] == "x.json" and legacy["legacy_applied_reason"] is None
    assert "smoothed_multiplier" not in legacy


def _fields(schema: dict[str, Any]) -> set[str]:
    out = set(schema.get("properties", {}))
    for sub in schema.get("$defs", {}).values():
        out |= set(sub.get("properties", {}))
    return out


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_every_field_of_every_format_is_documented_in_docs_files_md(name: str) -> None:
    doc = (REPO / "docs" / "FILES.md").read_text()
    assert f"calreport schema {name}" in doc
    documented = ("`{f}`", ".{f}`", "`{f}.")  # config keys appear as `section.key`
    missing = sorted(f for f in _fields(schema_json(name)) if not any(d.format(f=f) in doc for d in documented))
    assert missing == []


# --------------------------------------------------------------------------- config defaults


def _keys(value: Any, prefix: str = "") -> set[str]:
    if isinstance(value, dict):
        return {prefix + k for k in value} | {x for k, v in value.items() for x in _keys(v, f"{prefix}{k}.")}
    return set()


@pytest.mark.parametrize(
    "text",
    [pytest.param((REPO / "config" / "calibration.yaml").read_text(), id="repository config/calibration.yaml"),
     pytest.param(DEFAULT_CONFIG_TEXT, id="the file init writes")],
)
def test_the_default_settings_file_lists_exactly_the_model_defaults(text: str) -> None:
    data = yaml.safe_load(text)
    assert text.startswith("# calreport settings. Every key is optional; these are the built-in defaults.")
    assert CalibrationConfig.model_validate(data) == CalibrationConfig()
    assert _keys(data) == _keys(CalibrationConfig().model_dump(mode="json"))  # every setting, spelt out


def test_the_repository_config_file_is_the_file_init_writes() -> None:
    assert (REPO / "config" / "calibration.yaml").read_text() == DEFAULT_CONFIG_TEXT
