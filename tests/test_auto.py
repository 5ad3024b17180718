"""Auto-calibrate: realistic runs stay ok, insane ones are failed with a reason, nothing is ever applied."""

from __future__ import annotations

import gzip
import io
import json
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from calreport.calibration import auto
from calreport.calibration.auto import (
    assess_data_quality,
    parse_dte_range,
    parse_lookback,
)
from calreport.commands import cli
from calreport.commands import usecases as actions
from calreport.commands.cli import main as cli_main
from calreport.commands.usecases import run_auto_calibration
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.market.sample import MS_PER_DAY, MS_PER_HOUR, SampleMarket, write_harvest
from calreport.store.config import load_config
from calreport.store.history import read_history
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from tests.independent import copy_compacted_harvest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data"
END = 1765627200000  # 2025-12-13T12:00:00Z
END_DT = datetime.fromtimestamp(END / 1000, tz=UTC)


def _build(root: Root, *, unit_error_window: tuple[int, int] | None = None) -> None:
    """Six days of hourly snapshots (a week of RV history) and the last 14 hours at 5 minutes."""
    actions.init(Workspace.open(root))
    m = SampleMarket("BTC", END - 7 * MS_PER_DAY, END, seed=3)
    times = np.concatenate(
        [m.harvest_times(END - 6 * MS_PER_DAY, END - 14 * MS_PER_HOUR - 1, 60), m.harvest_times(END - 14 * MS_PER_HOUR, END, 5)]
    )
    write_harvest(root, m, times, unit_error_window=unit_error_window)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auto-template") / "root"
    _build(Root(path))
    return path


@pytest.fixture
def sample_root(template: Path, tmp_path: Path) -> Root:
    dest = tmp_path / "root"
    shutil.copytree(template, dest)
    return Root(dest)


def _set_config(root: Root, old: str, new: str) -> None:
    text = root.calibration_config.read_text()
    assert old in text
    root.calibration_config.write_text(text.replace(old, new))


def test_realistic_harvest_gives_an_ok_row_with_both_errors(sample_root: Root) -> None:
    run = run_auto_calibration(Workspace.open(sample_root), "BTC", dte="3-10", lookback="1d", as_of=END_DT)
    assert run.status == "ok", run.reason
    assert run.data_quality.status == "ok" and run.data_quality.issues == []
    assert 0.75 < run.multiplier < 1.4 and not run.multiplier_on_bound
    assert 0 < run.vega_weighted_mae_pct < 50 and 0 < run.mae_pct < 60
    assert run.samples > 1000 and run.snapshots_used == 178 and run.snapshots_expected == 288
    assert (run.dte_min, run.dte_max, run.lookback) == (3.0, 10.0, "1d")
    assert run.rv_7d is not None and run.data_quality.rv_returns >= 120
    assert run.as_of == "2025-12-13T12:00:00Z" and run.harvest_end == "2025-12-13T12:00:00Z"
    assert run.settings_hash == load_config(sample_root).settings_hash()
    (row,) = HistoryQuery.file_order(sample_root, "auto")
    assert row.run_id == run.run_id and row.vega_weighted_mae_pct == run.vega_weighted_mae_pct


def test_no_data_in_the_window_is_a_failed_row_not_a_crash(sample_root: Root) -> None:
    long_ago = datetime(2024, 1, 1, tzinfo=UTC)
    run = run_auto_calibration(Workspace.open(sample_root), "BTC", lookback="14d", as_of=long_ago)
    assert run.status == "failed"
    assert run.reason.startswith("Data quality failed")
    assert "no harvested snapshots" in run.reason
    assert run.data_quality.status == "failed" and run.multiplier is None and run.samples == 0
    assert [r.run_id for r in HistoryQuery.file_order(sample_root, "auto")] == [run.run_id]


def test_underlying_never_harvested_is_a_failed_row(sample_root: Root) -> None:
    run = run_auto_calibration(Workspace.open(sample_root), "ETH", lookback="1d", as_of=END_DT)
    assert run.status == "failed" and "no harvested snapshots" in run.data_quality.issues[0]


def test_marks_divided_by_the_forward_fail_as_unrealistic(sample_root: Root) -> None:
    """The old system's unit error: the fit pins at the lower bound with MAE in the millions of %."""
    _set_config(sample_root, "min_mark_price: 0.0005", "min_mark_price: 0.0")
    for p in sample_root.harvest_dir("BTC").glob("*.jsonl"):
        rows = [json.loads(ln) for ln in p.read_text().splitlines()]
        for r in rows:
            r["mark_price"] /= r["underlying_price"]
        p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run = run_auto_calibration(Workspace.open(sample_root), "BTC", lookback="1d", as_of=END_DT)
    assert run.status == "failed"
    assert "Unrealistic" in run.reason and "multiplier 0.5000" in run.reason
    assert run.multiplier == 0.5 and run.multiplier_on_bound
    assert run.mae_pct > 10_000 and run.vega_weighted_mae_pct is not None


def test_marks_in_usd_fail_data_quality(tmp_path: Path) -> None:
    root = Root(tmp_path / "root")
    _build(root, unit_error_window=(END - 14 * MS_PER_HOUR, END + 1))
    run = run_auto_calibration(Workspace.open(root), "BTC", lookback="12h", as_of=END_DT)
    assert run.status == "failed"
    assert "no-arbitrage bound" in run.reason


def test_malformed_lines_are_counted_in_data_quality(sample_root: Root) -> None:
    day = sample_root.harvest_dir("BTC") / "2025-12-13.jsonl"
    lines = day.read_bytes().splitlines(keepends=True)
    n_bad = len(lines) // 20  # 5% of the day's lines are garbage
    day.write_bytes(b"".join(lines) + b"{not json\n" * n_bad)
    run = run_auto_calibration(Workspace.open(sample_root), "BTC", lookback="1d", as_of=END_DT)
    assert run.data_quality.schema_errors == n_bad
    assert run.status == "degraded"
    assert any(i.startswith(f"schema errors: {n_bad} of") for i in run.data_quality.issues)


def test_auto_runs_never_touch_the_applied_multipliers(sample_root: Root) -> None:
    from tests.foundation_helpers import add_live_run

    add_live_run(sample_root, smoothed=1.0833)
    actions.force_apply(Workspace.open(sample_root), "BTC")
    before = sample_root.applied.read_bytes()
    ok = actions.auto_calibrate(Workspace.open(sample_root), "BTC", lookback="1d", as_of=END_DT)
    failed = actions.auto_calibrate(Workspace.open(sample_root), "BTC", lookback="1d", as_of=datetime(2024, 1, 1, tzinfo=UTC))
    assert sample_root.applied.read_bytes() == before
    assert ok.status == "ok" and failed.status == "failed"
    # the auto runs are now the newest rows of all, and still nothing changed
    assert [r.run_id for r in HistoryQuery.file_order(sample_root, "auto")][-2:] == [ok.run_id, failed.run_id]
    assert not any(getattr(r, "run_id", None) in (ok.run_id, failed.run_id) for r in read_history(sample_root.live_history).rows)
    assert "1.0833" in before.decode()


AUTO_MODULES = ["calreport.calibration.auto", "calreport.calibration.fit", "calreport.calibration.select",
                "calreport.realism", "calreport.market.harvest", "calreport.market.rv"]


@pytest.mark.parametrize("module", AUTO_MODULES)
def test_importing_the_auto_calibration_never_loads_the_applier(module: str) -> None:
    """A fresh interpreter imports the module (and all it imports, directly or not); the applier stays out."""
    probe = f"import sys, {module}; print('calreport.store.applied' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"


def test_the_applier_probe_sees_an_indirect_import() -> None:
    """The probe above can fail: importing the use cases (which apply) does load the applier."""
    probe = "import sys, calreport.commands.usecases; print('calreport.store.applied' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "True"


@pytest.mark.parametrize(("text", "expected"), [("14d", ("14d", 14 * MS_PER_DAY)), ("12h", ("12h", 12 * MS_PER_HOUR)), ("90m", ("90m", 90 * 60_000)), ("1W", ("1w", 7 * MS_PER_DAY))])
def test_lookbacks(text: str, expected: tuple[str, int]) -> None:
    assert parse_lookback(text) == expected


@pytest.mark.parametrize("text", ["", "14", "-1d", "0d", "1y", "d"])
def test_bad_lookbacks_are_one_line_errors(text: str) -> None:
    with pytest.raises(CalreportError, match="--lookback"):
        parse_lookback(text)


def test_dte_ranges() -> None:
    assert parse_dte_range("3-10") == (3.0, 10.0)
    assert parse_dte_range(" 0.5 - 2d") == (0.5, 2.0)
    for bad in ("10-3", "3", "a-b", "3-3"):
        with pytest.raises(CalreportError, match="--dte"):
            parse_dte_range(bad)


def test_cli_bad_arguments_are_one_line(sample_root: Root, capsys: pytest.CaptureFixture) -> None:
    assert cli_main(["--root", str(sample_root.path), "auto-calibrate", "--underlying", "BTC", "--dte", "10-3"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--dte" in err
    assert cli_main(["--root", str(sample_root.path), "auto-calibrate", "--underlying", "XRP"]) == 1
    assert "unknown underlying" in capsys.readouterr().err


def test_script_runs_one_auto_calibration_and_rerenders(sample_root: Root) -> None:
    out = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "auto_calibrate_iv.py"), "--underlying", "BTC", "--root",
         str(sample_root.path), "--lookback", "1d", "--as-of", "2025-12-13T12:00:00Z"],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert out.returncode == 0, out.stderr
    assert "OK (Calibration within thresholds)" in out.stdout
    (run,) = HistoryQuery.file_order(sample_root, "auto")
    assert run.run_id in sample_root.index_html.read_text()


def test_daily_job_exit_codes(sample_root: Root) -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import daily_auto_calibrate as daily
    finally:
        sys.path.pop(0)
    assert daily.exit_code(["ok", "ok"]) == 0
    assert daily.exit_code(["ok", "degraded"]) == 1
    assert daily.exit_code(["ok", "failed"]) == 1
    assert daily.exit_code(["failed", "failed"]) == 2
    assert daily.exit_code([]) == 2
    _set_config(sample_root, "lookbacks: [14d]", "lookbacks: [1d]")
    # BTC is harvested and ok, ETH has no harvest at all: some failed -> 1
    assert daily.main(["--root", str(sample_root.path), "--as-of", "2025-12-13T12:00:00Z"]) == 1
    assert [r.status for r in HistoryQuery.file_order(sample_root, "auto")] == ["ok", "failed"]
    # nothing in the window for either: all failed -> 2
    assert daily.main(["--root", str(sample_root.path), "--as-of", "2024-01-01T00:00:00Z"]) == 2


def test_daily_job_names_the_harvest_range_when_the_window_ending_now_is_empty(sample_root: Root, capsys: pytest.CaptureFixture) -> None:
    """Cron runs the job without --as-of: a harvest that stopped days ago must say so, as `calreport auto-calibrate` does."""
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import daily_auto_calibrate as daily
    finally:
        sys.path.pop(0)
    _set_config(sample_root, "auto:\n  underlyings: [BTC, ETH]", "auto:\n  underlyings: [BTC]")
    capsys.readouterr()
    assert daily.main(["--root", str(sample_root.path)]) == 2  # the window ending now (2026+) holds nothing
    err = capsys.readouterr().err
    assert "the BTC harvest covers 2025-12-07 to 2025-12-13 (UTC days)" in err and "--as-of 2025-12-13T23:59:59Z" in err, err
    assert daily.main(["--root", str(sample_root.path), "--as-of", "2024-01-01T00:00:00Z"]) == 2
    assert "covers" not in capsys.readouterr().err  # an explicit --as-of is the user's choice: no hint


def test_dashboard_says_the_harvest_stopped_when_the_auto_window_ends_hours_after_its_last_snapshot(sample_root: Root) -> None:
    """A harvester that died at END: the daily run six hours later still finds a day of data (ok), but the
    dashboard must not read as if the harvest were current."""
    from calreport.report import render_site
    from datetime import timedelta

    ws = Workspace.open(sample_root)
    at = END_DT + timedelta(hours=1)  # the daily job: its window ends when it runs
    run_auto_calibration(ws, "BTC", dte="3-10", lookback="1d", as_of=at, now=lambda: at)  # within 2 h: current
    render_site(sample_root)
    html = sample_root.index_html.read_text()
    assert "Stale harvest" not in html and 'data-field="stale-harvest"' not in html
    at = END_DT + timedelta(hours=6)
    run = run_auto_calibration(ws, "BTC", dte="3-10", lookback="1d", as_of=at, now=lambda: at)
    assert run.harvest_end == "2025-12-13T12:00:00Z" and run.snapshots_used and run.status == "ok"
    render_site(sample_root)
    html = sample_root.index_html.read_text()
    assert "Stale harvest" in html and "is the harvester running?" in html
    assert "BTC harvest ends 6.0 h before the window end of its latest auto run" in html
    assert 'data-field="stale-harvest"' in html  # on the Data health card too


def test_a_past_window_ending_after_the_harvest_is_a_gap_not_a_stopped_harvester(sample_root: Root) -> None:
    """`--as-of` a day before the run (a backfill, a study): the window's last hours without snapshots are a gap
    in that window; the banner asked "is the harvester running?" of a harvest that may well go on after it (found
    by QA on the shared harvest: ETH --as-of 2025-12-12T11:00Z, 9.3 h gap, harvest continuing to Dec 13)."""
    from calreport.report import render_site
    from datetime import timedelta

    at = END_DT + timedelta(hours=6)
    run_auto_calibration(Workspace.open(sample_root), "BTC", dte="3-10", lookback="1d", as_of=at, now=lambda: at + timedelta(days=1))
    render_site(sample_root)
    html = sample_root.index_html.read_text()
    assert "Harvest gap" in html and "Stale harvest" not in html and "is the harvester running?" not in html
    assert "a gap in the harvest at the end of a window that ended 24.0 h before the run (--as-of)" in html
    assert 'data-field="stale-harvest"' in html  # the card still says the window's data ends early


def test_progress_bar_only_on_a_terminal(sample_root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(cli, "PROGRESS_DELAY_S", 0)
    tty, pipe = Tty(), io.StringIO()
    calls: list[tuple[int, int, str]] = []
    for stream in (tty, pipe):
        with cli.harvest_progress("reading BTC harvest", stream) as progress:
            def both(done: int, total: int, name: str, progress=progress) -> None:
                calls.append((done, total, name))
                progress(done, total, name)

            run_auto_calibration(Workspace.open(sample_root), "BTC", lookback="1d", as_of=END_DT, progress=both)
    total = calls[-1][1]
    assert total > 1 and calls[0][:2] == (0, total) and calls[-1][0] == total  # every day file, then done
    assert "reading BTC harvest" in tty.getvalue() and f"/{total} [" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_data_quality_rules_name_every_issue() -> None:
    cfg = load_config(Root(Path("/nonexistent")))
    base = {"lines": 1000, "schema_errors": 0, "bad_names": 0, "snapshots": 288, "snapshots_expected": 288,
            "expiries": 3, "strikes": 40, "samples": 5000, "rv_returns": 160, "snapshots_without_rv": 0,
            "above_bound": 0, "in_range": 6000, "dte_label": "3-10", "window": "w"}
    assert assess_data_quality(auto.Evidence(**base), cfg).status == "ok"
    thin = assess_data_quality(auto.Evidence(**{**base, "snapshots": 50, "expiries": 1}), cfg)
    assert thin.status == "degraded" and len(thin.issues) == 2 and thin.completeness == pytest.approx(50 / 288, abs=1e-4)
    no_rv = assess_data_quality(auto.Evidence(**{**base, "snapshots_without_rv": 288, "rv_returns": 3}), cfg)
    assert no_rv.status == "failed" and "RV history too short" in no_rv.issues[0]
    junk = assess_data_quality(auto.Evidence(**{**base, "schema_errors": 600}), cfg)
    assert junk.status == "failed" and "unreadable" in junk.issues[0]


# --------------------------------------------------------------------------- real Deribit harvest

needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/data is absent")
AS_OF = datetime(2025, 12, 13, 23, 59, tzinfo=UTC)


def _real_root(tmp_path: Path) -> Root:
    root = Root(tmp_path / "root")
    actions.init(Workspace.open(root))
    d = root.harvest_dir("BTC")
    d.mkdir(parents=True)
    for f in sorted((SHARED / "deribit-harvest-2025-12" / "BTC").glob("*.jsonl.gz")):
        (d / f.name).symlink_to(f.resolve())  # symlinks in the tmp root, never into the repo
    return root


@pytest.mark.realdata
@needs_shared
def test_real_btc_harvest_writes_vega_weighted_mae(tmp_path: Path, compacted_btc_harvest: Path) -> None:
    root = Root(tmp_path / "root")  # the run's compacted copy of the shared harvest (the format is not the point)
    actions.init(Workspace.open(root))
    copy_compacted_harvest(compacted_btc_harvest, root)
    run = run_auto_calibration(Workspace.open(root), "BTC", dte="3-10", lookback="1d", as_of=AS_OF)
    assert run.vega_weighted_mae_pct is not None and run.mae_pct is not None
    assert run.status in ("ok", "degraded") and 0.7 <= run.multiplier <= 1.6
    assert run.samples > 500 and run.data_quality.schema_errors == 0
    assert HistoryQuery.file_order(root, "auto")[-1].vega_weighted_mae_pct == run.vega_weighted_mae_pct


@pytest.mark.realdata
@needs_shared
def test_real_btc_harvest_with_unit_error_fails_as_unrealistic(tmp_path: Path) -> None:
    root = _real_root(tmp_path)
    _set_config(root, "min_mark_price: 0.0005", "min_mark_price: 0.0")
    d = root.harvest_dir("BTC")
    # the unit error in every day the 1d window ending AS_OF reads; the days before it feed only RV, from the
    # underlying's price, which the error does not touch (rewriting them too cost ~4 s of a 2-core run)
    first_day = f"{AS_OF - timedelta(days=2):%Y-%m-%d}"
    window_days = [link for link in sorted(d.glob("*.jsonl.gz")) if link.name[:10] >= first_day]
    assert len(window_days) >= 2
    for link in window_days:
        out = []
        for ln in gzip.decompress(link.read_bytes()).splitlines():
            r = json.loads(ln)
            r["mark_price"] = r["mark_price"] / r["underlying_price"]
            out.append(json.dumps(r))
        link.unlink()
        (d / link.name[: -len(".gz")]).write_text("\n".join(out) + "\n")
    run = run_auto_calibration(Workspace.open(root), "BTC", dte="3-10", lookback="1d", as_of=AS_OF)
    assert run.status == "failed"
    assert "Unrealistic" in run.reason and "multiplier 0.5000" in run.reason
    assert run.mae_pct > 1_000_000 and run.vega_weighted_mae_pct is not None


def test_auto_run_records_the_window_smile_and_applies_nothing(sample_root: Root) -> None:
    before = sample_root.applied.read_bytes()
    run = run_auto_calibration(Workspace.open(sample_root), "BTC", dte="3-10", lookback="1d", as_of=END_DT)
    assert run.smile is not None and run.smile.nodes == [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
    assert run.smile.global_[3] == 1.0 and all(0.5 <= v <= 3.0 for v in run.smile.global_)
    assert run.smile_fit is not None and run.smile_fit.samples and run.smile_fit.samples <= auto.SMILE_MAX_QUOTES
    assert run.smile_multiplier is not None and 0.5 <= run.smile_multiplier <= 3.0
    assert sample_root.applied.read_bytes() == before
    _set_config(sample_root, "enabled: true", "enabled: false")
    flat = run_auto_calibration(Workspace.open(sample_root), "BTC", dte="3-10", lookback="1d", as_of=END_DT)
    assert not {"smile", "smile_multiplier", "smile_fit"} & set(flat.to_json_dict())
