"""Legacy run records go into history once, never into the applied YAML."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from foundation_helpers import force_apply

from calreport.commands.cli import main
from calreport.commands.legacy import legacy_run_id
from calreport.commands.workspace import Workspace
from calreport.errors import RefusedError
from calreport.store.query import HistoryQuery
from calreport.timeutil import parse_time

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "legacy-calibration-runs"

LIVE = {
    "timestamp": "2025-12-11T19:37:08.123456Z",
    "underlying": "BTC",
    "source": "live",
    "config_hash": None,
    "global_metrics": {"mae_pct": 26.35, "bias_pct": -24.78, "mae_vol_points": 13.26, "vega_weighted_mae_pct": 13.55},
    "bands": [
        {"name": "weekly", "min_dte": 3.0, "max_dte": 10.0, "count": 30, "mae_pct": 20.1, "bias_pct": -10.0,
         "recommended_iv_multiplier": 1.21},
        {"name": "monthly", "min_dte": 10.0, "max_dte": 40.0, "count": 17, "mae_pct": 30.2, "bias_pct": -5.0,
         "recommended_iv_multiplier": 1.01},
    ],
    "recommended_iv_multiplier": 1.0488,
    "recommended_band_multipliers": [{"name": "weekly", "min_dte": 3.0, "max_dte": 10.0, "iv_multiplier": 1.21}],
    "sample_size": 47,
    "vega_sum": 470.0,
    "smoothed_global_multiplier": 1.0833,
    "smoothed_band_multipliers": [{"name": "weekly", "min_dte": 3.0, "max_dte": 10.0, "iv_multiplier": 1.2}],
    "applied": True,
    "applied_reason": "Forced by user",
}
HARVESTED = {
    "timestamp": "2025-12-10T22:42:08.855501Z",
    "underlying": "BTC",
    "source": "harvested",
    "global_metrics": {},
    "bands": None,
    "recommended_iv_multiplier": 1.0,
    "recommended_band_multipliers": None,
    "sample_size": 0,
    "vega_sum": 0.0,
    "smoothed_global_multiplier": 1.0366,
    "smoothed_band_multipliers": None,
    "applied": False,
    "applied_reason": "Sample size too small (0 < 50)",
}


def _write(tmp_path: Path, name: str, record) -> Path:
    p = tmp_path / name
    p.write_text(record if isinstance(record, str) else json.dumps(record))
    return p


def _import(root, *files: Path) -> int:
    return main(["--root", str(root.path), "import-legacy", *map(str, files)])


def test_live_record_becomes_a_legacy_live_row_without_touching_the_yaml(root, tmp_path):
    f = _write(tmp_path, "a_live.json", LIVE)
    yaml_before = root.applied.read_bytes()
    assert _import(root, f) == 0
    (run,) = HistoryQuery.file_order(root, "live")
    assert run.run_id == legacy_run_id(f.read_bytes()) and run.run_id.startswith("legacy-")
    assert run.source == "legacy" and run.ts == "2025-12-11T19:37:08.123Z"
    assert run.smoothed.global_ == 1.0833 and run.smoothed.bands == {}
    assert run.recommended.global_ == 1.0488 and run.recommended.bands == {}
    assert set(run.by_band) == {"weekly", "monthly"} and run.by_band["weekly"].recommended == 1.21
    assert run.decision == "apply" and "Legacy system applied: Forced by user" in run.decision_reason
    assert (run.status, run.samples, run.mae_pct) == ("ok", 47, 26.35)
    # provenance fields (attributes whether models.py declares them or keeps them as extras)
    assert run.imported_from == "a_live.json" and run.legacy_applied is True and run.legacy_source == "live"
    assert run.legacy["smoothed_band_multipliers"][0]["name"] == "weekly"
    assert root.applied.read_bytes() == yaml_before
    assert HistoryQuery.file_order(root, "apply") == []
    with pytest.raises(RefusedError, match="no live run"):  # an import never becomes a force-apply candidate
        force_apply(root, "BTC")


def test_harvested_record_becomes_an_auto_run_with_failed_data_quality_when_it_had_no_samples(root, tmp_path):
    assert _import(root, _write(tmp_path, "h.json", HARVESTED)) == 0
    (run,) = HistoryQuery.file_order(root, "auto")
    assert run.multiplier is None and run.samples == 0  # the old system's placeholder 1.0 is no fit (it stays in `legacy`)
    assert run.data_quality.status == "failed" and run.status == "failed"
    assert run.smoothed_multiplier == 1.0366 and run.legacy_source == "harvested"
    assert HistoryQuery.file_order(root, "live") == []


def test_status_is_recomputed_with_realism(root, tmp_path):
    insane = {**LIVE, "recommended_iv_multiplier": 0.5, "global_metrics": {"mae_pct": 4668684.92}}
    assert _import(root, _write(tmp_path, "insane.json", insane)) == 0
    (run,) = HistoryQuery.file_order(root, "live")
    assert run.status == "failed" and "Unrealistic" in run.reason


def test_reimport_is_a_noop_even_under_another_name(root, tmp_path, capsys):
    f = _write(tmp_path, "a.json", LIVE)
    assert _import(root, f, _write(tmp_path, "h.json", HARVESTED)) == 0
    live_bytes, auto_bytes = root.live_history.read_bytes(), root.auto_history.read_bytes()
    copy = tmp_path / "renamed.json"
    copy.write_bytes(f.read_bytes())
    assert _import(root, f, copy, tmp_path / "h.json") == 0
    assert "3 already imported" in capsys.readouterr().out
    assert root.live_history.read_bytes() == live_bytes and root.auto_history.read_bytes() == auto_bytes


@pytest.mark.parametrize(
    "bad, problem",
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({**LIVE, "source": "manual"}), "source"),
        (json.dumps({k: v for k, v in LIVE.items() if k != "timestamp"}), "timestamp"),
        (json.dumps({**LIVE, "timestamp": "yesterday"}), "timestamp"),
        (json.dumps({**LIVE, "underlying": "btc usd"}), "underlying"),
        (json.dumps({**LIVE, "sample_size": -3}), "sample_size"),
        (json.dumps({**LIVE, "smoothed_global_multiplier": "1.08"}), "smoothed_global_multiplier"),
        (json.dumps(LIVE).replace("26.35", "NaN"), "non-finite"),
        (json.dumps({**LIVE, "bands": [{"min_dte": 1}]}), "bands"),
        (json.dumps({**LIVE, "underlying": "SOL"}), "not configured"),
    ],
)
def test_malformed_record_is_one_line_naming_the_file_and_the_rest_is_imported(root, tmp_path, capsys, bad, problem):
    good = _write(tmp_path, "good.json", LIVE)
    broken = _write(tmp_path, "broken.json", bad)
    assert _import(root, broken, good) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "Traceback" not in captured.err
    assert "broken.json" in captured.err and problem in captured.err
    assert "imported 1 live run(s)" in captured.out and "1 failed" in captured.out
    assert len(HistoryQuery.file_order(root, "live")) == 1


def test_a_directory_imports_its_json_files_in_time_order(root, tmp_path):
    d = tmp_path / "legacy"
    d.mkdir()
    _write(d, "z_first.json", {**LIVE, "timestamp": "2025-12-01T00:00:00Z"})
    _write(d, "a_second.json", {**LIVE, "timestamp": "2025-12-02T00:00:00Z"})
    assert _import(root, d) == 0
    assert [r.ts for r in HistoryQuery.file_order(root, "live")] == ["2025-12-01T00:00:00Z", "2025-12-02T00:00:00Z"]


@pytest.mark.realdata
def test_real_legacy_records_import_once(root, capsys):
    if not DATA.is_dir():
        pytest.skip("../shared/data is absent")
    files = sorted(DATA.glob("*.json"))
    yaml_before = root.applied.read_bytes()
    assert _import(root, *files) == 0
    live, auto = HistoryQuery.file_order(root, "live"), HistoryQuery.file_order(root, "auto")
    assert len(live) == sum("_live" in f.name for f in files) and len(auto) == sum("_harvested" in f.name for f in files)
    assert all(r.source == "legacy" and r.smoothed.bands == {} and r.recommended.bands == {} for r in live)
    assert {b for r in live for b in (r.by_band or {})} <= {"weekly", "monthly"}
    assert [r.ts for r in live] == sorted(r.ts for r in live)
    applied_in_legacy = [r for r in live if r.legacy_applied]
    assert applied_in_legacy and all(r.decision == "apply" for r in applied_in_legacy)
    assert HistoryQuery.file_order(root, "apply") == [] and root.applied.read_bytes() == yaml_before
    capsys.readouterr()
    assert _import(root, *files) == 0
    assert f"{len(files)} already imported" in capsys.readouterr().out
    assert len(HistoryQuery.file_order(root, "live")) == len(live)


# --------------------------------------------------------------------------- newest first by time after an import


def _elements(html: str, section: str) -> list[dict[str, str]]:
    """Attributes of the elements carrying data-run-id inside <section id=...>, in page order."""
    body = re.search(rf'<section id="{section}".*?</section>', html, re.S).group(0)
    return [dict(re.findall(r'(data-[a-z-]+)="([^"]*)"', tag)) for tag in re.findall(r"<(?:tr|div)\b[^>]*data-run-id=[^>]*>", body)]


def test_importing_older_records_keeps_the_newest_runs_first_in_tables_and_data_health(root, rows, tmp_path):
    """import-legacy appends 2025-11 records after December runs: the tables and the Data health panel
    order by the rows' own time, so the December runs stay on top."""
    live = [rows.live() for _ in range(3)]
    auto = [rows.auto(underlying=u) for u in ("BTC", "ETH", "BTC")]
    d = tmp_path / "legacy"
    d.mkdir()
    for i in range(2):
        _write(d, f"live{i}.json", {**LIVE, "timestamp": f"2025-11-0{i + 1}T00:00:00Z"})
        _write(d, f"harvested{i}.json", {**HARVESTED, "timestamp": f"2025-11-0{i + 1}T12:00:00Z"})
    assert _import(root, d) == 0
    assert [r.source for r in HistoryQuery.file_order(root, "live")][-2:] == ["legacy", "legacy"]  # appended last ...
    html = root.index_html.read_text()  # ... and the import re-rendered the dashboard
    live_table = [e["data-run-id"] for e in _elements(html, "live-history")]
    auto_table = [e["data-run-id"] for e in _elements(html, "auto-history")]
    legacy_live = [r.run_id for r in HistoryQuery.file_order(root, "live") if r.source == "legacy"]
    legacy_auto = [r.run_id for r in HistoryQuery.file_order(root, "auto") if r.run_id.startswith("legacy-")]
    assert live_table == [r.run_id for r in reversed(live)] + legacy_live[::-1]
    assert auto_table == [r.run_id for r in reversed(auto)] + legacy_auto[::-1]
    health = {e["data-underlying"]: e["data-run-id"] for e in _elements(html, "data-health")}
    assert health == {"BTC": auto[2].run_id, "ETH": auto[1].run_id}


@pytest.mark.realdata
def test_real_legacy_import_into_a_demo_root_keeps_the_demo_runs_first(demo_root, capsys):
    """The run's demo root (FIXED_ANCHOR, 2025-12-13 12:00Z) takes the real records older than it: the demo's
    newest runs stay first; then the one record written after the anchor (15:45Z) comes first, as its time says."""
    if not DATA.is_dir():
        pytest.skip("../shared/data is absent")
    from calreport.commands.demo import FIXED_ANCHOR

    root = demo_root
    newest_live = max(reversed(HistoryQuery.file_order(root, "live")), key=lambda r: parse_time(r.ts)).run_id  # ties: appended last
    newest_auto = {
        u: max(reversed([r for r in HistoryQuery.file_order(root, "auto") if r.underlying == u]), key=lambda r: parse_time(r.as_of or r.ts)).run_id
        for u in {r.underlying for r in HistoryQuery.file_order(root, "auto")}
    }
    files = sorted(DATA.glob("*.json"))
    stamp = lambda f: datetime.strptime(f.name[:15], "%Y%m%d_%H%M%S").replace(tzinfo=UTC).timestamp() * 1000  # noqa: E731
    older = [f for f in files if stamp(f) < FIXED_ANCHOR]
    later = [f for f in files if stamp(f) >= FIXED_ANCHOR]
    assert len(older) >= 10 and len(later) == 1  # the shared data as its README describes it
    assert _import(root, *older) == 0
    html = root.index_html.read_text()
    assert _elements(html, "live-history")[0]["data-run-id"] == newest_live
    assert not _elements(html, "auto-history")[0]["data-run-id"].startswith("legacy-")
    health = {e["data-underlying"]: e["data-run-id"] for e in _elements(html, "data-health")}
    assert {u: health[u] for u in newest_auto} == newest_auto
    assert _import(root, *later) == 0
    first = _elements(root.index_html.read_text(), "live-history")[0]["data-run-id"]
    assert first.startswith("legacy-") and first != newest_live


def test_import_legacy_returns_a_result_and_prints_nothing(root, tmp_path, capsys):
    from calreport.commands.legacy import format_import, import_legacy

    good, bad = _write(tmp_path, "good.json", LIVE), _write(tmp_path, "bad.json", "{not json")
    result = import_legacy(Workspace.open(root), [good, bad])
    assert capsys.readouterr() == ("", "")
    assert (result.live, result.auto, result.already, result.exit_code, result.changed) == (1, 0, 0, 1, True)
    out, err = format_import(result, root)
    assert len(err) == 1 and err[0].startswith("calreport: error: ") and "bad.json" in err[0]
    assert out == ["imported 1 live run(s) into live_calibration.jsonl and 0 auto run(s) into auto_calibrate.jsonl; "
                   "0 already imported; 1 failed"]
