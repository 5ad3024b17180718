"""Hardening, round two, the rest: import-harvest refusals and duplicates, compaction and quote loading
that count a (snapshot, instrument) once, unit errors in a snapshot (USD marks, mark_iv as a fraction),
a version-1 applied YAML with a smile, doctor against site/, history files that are not regular
files, and --days / --every out of range. Each test drives the reported reproduction.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_harvest_parquet import DEC11, LATER, chain, lines_of, write_legacy, write_log

from calreport.commands.cli import main
from calreport.market.compact import compact_closed_days
from calreport.market.harvest import load_harvest
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]
REAL_SNAPSHOT = REPO / ".." / "shared" / "data" / "deribit-snapshots" / "BTC-2025-12-11T1936Z.json"
SNAPSHOT = REAL_SNAPSHOT if REAL_SNAPSHOT.exists() else REPO / "tests" / "fixtures" / "deribit" / "book_summary_btc.json"


def run_cli(capsys: pytest.CaptureFixture[str], root: Root, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(root.path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:600]
    assert "Traceback" not in err and "internal error" not in err, err[:600]
    return lines[0]


# --------------------------------------------------------------------------- import-harvest


def _legacy(base: Path, n: int = 3) -> Path:
    """A previous-system harvest of n snapshots on 2025-12-11; returns DIR (holding BTC/)."""
    return write_legacy(base, {DEC11 + i * 900_000: chain(DEC11 + i * 900_000, 30) for i in range(n)})


def _day_dir(legacy: Path) -> Path:
    return legacy / "BTC" / "2025" / "12" / "11"


def _first(legacy: Path) -> Path:
    return sorted(_day_dir(legacy).iterdir())[0]


def _no_instrument_name(f: Path) -> None:
    pq.write_table(pq.read_table(f).drop_columns(["instrument_name"]), f)


def _harvest_time_1e18(f: Path) -> None:
    t = pq.read_table(f)
    pq.write_table(t.set_column(0, "harvest_time", pa.array([10**18] * t.num_rows, pa.int64())), f)


def _not_parquet(f: Path) -> None:
    f.write_bytes(b"this is not a parquet file\n" * 10)


def _link_to_passwd(f: Path) -> None:
    f.unlink()
    f.symlink_to("/etc/passwd")


@pytest.mark.parametrize(
    ("spoil", "needle"),
    [
        (_no_instrument_name, "no instrument_name column"),
        (_harvest_time_1e18, "harvest_time values outside 2025-12-11"),
        (_not_parquet, "not readable as Parquet"),
        (_link_to_passwd, "a symlink out of the imported directory"),
    ],
    ids=["no-instrument-name", "harvest-time-1e18", "unreadable", "symlink-to-passwd"],
)
def test_import_harvest_refuses_a_file_it_cannot_import_in_one_line_and_writes_nothing(
    root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str], spoil, needle: str  # type: ignore[no-untyped-def]
) -> None:
    legacy = _legacy(tmp_path / "live_deribit")
    bad = _first(legacy)
    spoil(bad)
    code, out, err = run_cli(capsys, root, "import-harvest", str(legacy), "--underlying", "BTC")
    line = one_line(err)
    assert code == 1, (out, err)
    assert str(bad) in line and needle in line and "nothing imported" in line
    d = root.harvest_dir("BTC")
    assert not d.exists() or not any(p.suffix == ".parquet" for p in d.iterdir())


def test_import_harvest_names_how_many_more_files_are_refused(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = _legacy(tmp_path / "live_deribit")
    for f in sorted(_day_dir(legacy).iterdir())[:2]:
        _not_parquet(f)
    code, _, err = run_cli(capsys, root, "import-harvest", str(legacy), "--underlying", "BTC")
    assert code == 1 and "(and 1 more files)" in one_line(err)


def test_a_symlink_inside_the_imported_directory_is_imported(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = _legacy(tmp_path / "live_deribit")
    f = _first(legacy)
    kept = legacy / "elsewhere" / "kept.parquet"  # inside DIR, outside DIR/BTC
    kept.parent.mkdir()
    shutil.move(f, kept)
    f.symlink_to(kept)
    code, out, err = run_cli(capsys, root, "import-harvest", str(legacy), "--underlying", "BTC")
    assert code == 0, err
    assert "90 rows read, 90 added" in out


def test_the_same_snapshot_file_twice_in_the_old_layout_is_imported_once(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    legacy = _legacy(tmp_path / "live_deribit")
    f = _first(legacy)
    shutil.copy(f, f.with_name("copy of " + f.name))
    code, out, err = run_cli(capsys, root, "import-harvest", str(legacy), "--underlying", "BTC")
    assert code == 0, err
    assert "120 rows read, 90 added, 0 already present" in out and "30 duplicate rows" in out
    frame = load_harvest(root, "BTC", 0, DEC11 * 2)
    assert len(frame) == 90 and len(frame.snapshot_times()) == 3
    code, out, _ = run_cli(capsys, root, "import-harvest", str(legacy), "--underlying", "BTC")  # again: nothing new
    assert code == 0 and "0 added, 90 already present" in out
    assert len(load_harvest(root, "BTC", 0, DEC11 * 2)) == 90


@pytest.mark.parametrize("spoil", [_no_instrument_name, _harvest_time_1e18], ids=["no-instrument-name", "harvest-time-1e18"])
def test_the_old_layout_reader_counts_such_a_file_as_schema_errors_instead_of_crashing(tmp_path: Path, spoil) -> None:  # type: ignore[no-untyped-def]
    legacy = _legacy(tmp_path / "live_deribit")
    spoil(_first(legacy))
    frame = load_harvest(legacy, "BTC", 0, DEC11 * 2)
    assert len(frame) == 60 and frame.schema_errors == 30


# --------------------------------------------------------------------------- compaction


def test_compaction_re_reading_an_edited_leftover_log_adds_no_duplicate_rows(tmp_path: Path) -> None:
    root = Root(tmp_path)
    d = root.harvest_dir("BTC")
    first = [r for t in (DEC11, DEC11 + 300_000) for r in chain(t, 20)]
    write_log(d, lines_of(first))
    assert [r.rows for r in compact_closed_days(root, "BTC", LATER).done] == [40]
    # the consumed log comes back edited (so the footer no longer recognises it) with one new snapshot
    extra = chain(DEC11 + 600_000, 20)
    write_log(d, lines_of([*first[:-1], {**first[-1], "volume": 99.0}, *extra]))
    (done,) = compact_closed_days(root, "BTC", LATER).done
    assert (done.rows, done.added, done.duplicates) == (60, 20, 40)
    tbl = pq.read_table(d / "2025-12-11.parquet", columns=["harvested_at", "instrument_name"]).to_pylist()
    assert len({(r["harvested_at"], r["instrument_name"]) for r in tbl}) == len(tbl) == 60


def test_harvest_compact_exits_1_when_a_day_cannot_be_compacted(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    d = root.harvest_dir("BTC")
    write_log(d, lines_of(chain(DEC11)))
    pq.write_table(pa.table({"x": [1]}), d / "2025-12-11.parquet")  # not one calreport wrote
    code, out, err = run_cli(capsys, root, "harvest", "compact", "--underlying", "BTC")
    assert code == 1 and "2025-12-11: not compacted" in out
    assert "1 day(s) not compacted" in one_line(err)


def test_harvest_compact_exits_1_when_the_harvest_directory_is_a_file(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    d = root.harvest_dir("BTC")
    d.parent.mkdir(parents=True, exist_ok=True)
    d.write_text("not a directory\n")
    code, out, err = run_cli(capsys, root, "harvest", "compact", "--underlying", "BTC")
    assert code == 1 and "is not a directory" in out
    one_line(err)


# --------------------------------------------------------------------------- a quote counts once


def _snapshot_rows() -> list[dict]:
    return json.loads(SNAPSHOT.read_bytes())["result"]


def _write_snapshot(path: Path, rows: list[dict]) -> Path:
    path.write_text(json.dumps({"jsonrpc": "2.0", "result": rows}))
    return path


def _last_live(root: Root) -> dict:
    rows = [json.loads(line) for line in root.live_history.read_bytes().splitlines()]
    return [r for r in rows if r["type"] == "live_run"][-1]


def test_a_snapshot_listing_every_row_twice_gives_the_samples_of_one(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = _snapshot_rows()
    once = _write_snapshot(tmp_path / "once.json", rows)
    twice = _write_snapshot(tmp_path / "twice.json", rows + rows)
    assert run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(once), "--rv", "0.45")[0] == 0
    a = _last_live(root)
    assert run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(twice), "--rv", "0.45")[0] == 0
    b = _last_live(root)
    assert a["samples"] > 0 and b["samples"] == a["samples"] and b["quotes_total"] == a["quotes_total"]


def test_harvest_rows_written_twice_are_one_quote_each(tmp_path: Path) -> None:
    snap = chain(DEC11, 30)
    write_log(tmp_path / "BTC", lines_of(snap + snap[:10]))
    frame = load_harvest(tmp_path, "BTC", 0, DEC11 * 2)
    assert len(frame) == 30
    assert len({(t, c) for t, c in zip(frame.harvested_at.tolist(), frame.code.tolist(), strict=True)}) == 30


# --------------------------------------------------------------------------- unit errors in a snapshot


def test_mark_iv_given_as_a_fraction_fails_data_quality_in_an_rv_mode_run(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_snapshot(tmp_path / "good.json", _snapshot_rows())
    assert run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(good), "--rv", "0.45")[0] == 0
    ok = _last_live(root)
    assert not any("mark_iv" in i for i in ok.get("data_quality_issues") or [])
    rows = [{**r, "mark_iv": r["mark_iv"] / 100.0} for r in _snapshot_rows()]
    bad = _write_snapshot(tmp_path / "fraction.json", rows)
    assert run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(bad), "--rv", "0.45")[0] == 0
    run = _last_live(root)
    assert run["sigma_mode"] == "rv" and run["data_quality_status"] == "failed"
    assert any("mark_iv looks like a fraction" in i for i in run["data_quality_issues"])
    assert run["status"] != "ok"


def test_price_warns_about_a_snapshot_with_usd_marks(root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _write_snapshot(tmp_path / "coin.json", _snapshot_rows())
    code, _, err = run_cli(capsys, root, "price", "--underlying", "BTC", "--snapshot", str(good), "--rv", "0.45")
    assert code == 0 and "warning" not in err
    usd = _write_snapshot(tmp_path / "usd.json", [{**r, "mark_price": r["mark_price"] * r["underlying_price"]} for r in _snapshot_rows()])
    code, out, err = run_cli(capsys, root, "price", "--underlying", "BTC", "--snapshot", str(usd), "--rv", "0.45")
    assert code == 0 and json.loads(out)
    assert "Traceback" not in err and "internal error" not in err, err[:600]
    (line,) = [ln for ln in err.splitlines() if ln.startswith("calreport: warning:")]  # beside price's arbitrage summary line
    assert "usd.json" in line and "look like USD prices" in line


# --------------------------------------------------------------------------- the applied YAML and site/


def test_a_version_1_applied_yaml_with_a_smile_is_refused(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    root.applied.write_text(
        "schema_version: 1\nunderlyings:\n  BTC:\n    global: 1.0\n    bands: {}\n"
        "    smile:\n      nodes: [-1, 0, 1]\n      global: [1.1, 1, 1.1]\n"
    )
    code, _, err = run_cli(capsys, root, "status")
    line = one_line(err)
    assert code == 1 and "applied_multipliers.yaml" in line and "a smile needs schema_version 2 or later" in line


def test_doctor_warns_when_site_state_does_not_match_the_yaml(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    from foundation_helpers import add_live_run

    add_live_run(root, "BTC")
    assert run_cli(capsys, root, "force-apply", "--underlying", "BTC")[0] == 0
    assert root.state_json.exists()
    code, out, _ = run_cli(capsys, root, "doctor")
    assert code == 0 and "state.json" not in out
    state = json.loads(root.state_json.read_bytes())
    state["underlyings"]["BTC"]["global"] = 1.2345
    root.state_json.write_text(json.dumps(state))
    code, out, _ = run_cli(capsys, root, "doctor")
    assert code == 0  # a warning: the engine reads the YAML
    assert "WARNING: site/api/calibration/state.json does not match config/applied_multipliers.yaml for BTC" in out
    assert "fix: run `calreport render`" in out
    assert run_cli(capsys, root, "render")[0] == 0
    assert "state.json" not in run_cli(capsys, root, "doctor")[1]


# --------------------------------------------------------------------------- history files are regular files


@pytest.mark.parametrize("which", ["live", "auto"])
@pytest.mark.parametrize("command", ["doctor", "render"])
def test_a_fifo_as_a_history_file_is_refused_without_hanging(root: Root, which: str, command: str, calreport_process) -> None:
    path = root.live_history if which == "live" else root.auto_history
    path.unlink(missing_ok=True)
    os.mkfifo(path)
    proc = calreport_process(["--root", str(root.path), command], timeout=30)  # a process of its own: a hang is killed
    assert proc.returncode == 1, proc.stdout + proc.stderr
    line = one_line(proc.stderr)
    assert path.name in line and "not a regular file (a FIFO)" in line
    assert path.is_fifo()


def test_a_fifo_as_a_run_detail_does_not_hang_render(root: Root, calreport_process) -> None:
    from foundation_helpers import add_live_run

    add_live_run(root, "BTC")
    run_id = _last_live(root)["run_id"]
    detail = root.run_detail(run_id)
    detail.parent.mkdir(parents=True, exist_ok=True)
    detail.unlink(missing_ok=True)
    os.mkfifo(detail)
    proc = calreport_process(["--root", str(root.path), "render"], timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- arguments out of range


@pytest.mark.parametrize(
    "args",
    [
        ("prices", "fetch", "--underlying", "BTC", "--days", "1e9"),
        ("prices", "fetch", "--underlying", "BTC", "--days", "0"),
        ("prices", "fetch", "--underlying", "BTC", "--days", "nan"),
        ("harvest", "--every", "0", "--underlying", "BTC"),
        ("harvest", "--every", "1e308"),
        ("harvest", "--every", "inf"),
        ("harvest", "--every", "soon"),
    ],
)
def test_days_and_every_out_of_range_are_usage_errors(root: Root, capsys: pytest.CaptureFixture[str], args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--root", str(root.path), *args])
    err = capsys.readouterr().err
    assert exc.value.code == 2, err
    assert "Traceback" not in err and f"argument {args[-2] if args[-1] != 'BTC' else args[-4]}" in err


def test_first_per_key_keeps_the_first_row_of_each_pair() -> None:
    from calreport.market.quotes import first_per_key

    assert first_per_key(np.array([1, 1, 2]), np.array([0, 1, 0])) is None
    assert first_per_key(np.array([1, 1, 1, 2]), np.array([0, 0, 1, 0])).tolist() == [0, 2, 3]
    assert first_per_key(np.array([2, 1, 2, 1]), np.array([5, 3, 5, 4])).tolist() == [0, 1, 3]
