"""The CLI is thin: one line on stderr and a non-zero exit for bad input, never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from calreport.commands.cli import main
from calreport.store.paths import Root


def run_cli(*args: str, cwd=None, env=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "calreport", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def test_init_then_status_json_via_env_root(tmp_path, monkeypatch, capsys):
    root = tmp_path / "r"
    monkeypatch.setenv("CALREPORT_ROOT", str(root))
    assert main(["init"]) == 0  # in-process; the status below reads the variable in a real process
    r = run_cli("status", "--json", env={"CALREPORT_ROOT": str(root)})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["underlyings"]["BTC"]["global"] == 1.0 and doc["underlyings"]["BTC"]["source"] == "init"


def test_root_flag_works_before_and_after_the_command(tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    assert main(["--root", str(a), "init"]) == 0
    assert main(["init", "--root", str(b)]) == 0
    assert Root(a).applied.exists() and Root(b).applied.exists()


def test_init_is_idempotent_and_keeps_existing_files(tmp_path, capsys):
    root = Root(tmp_path)
    assert main(["--root", str(tmp_path), "init"]) == 0
    root.applied.write_text(root.applied.read_text().replace("global: 1.0000", "global: 1.2000", 1))
    before = root.applied.read_bytes()
    assert main(["--root", str(tmp_path), "init"]) == 0
    assert root.applied.read_bytes() == before
    assert "already initialised" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("setup", "args", "needle"),
    [
        (lambda r: None, ["force-apply", "--underlying", "DOGE"], "unknown underlying 'DOGE'"),
        (lambda r: r.applied.write_text("underlyings: {BTC: {global: [1]}}\n"), ["status"], "applied_multipliers.yaml"),
        (lambda r: r.calibration_config.write_text("realism: {min_mul: 0.7}\n"), ["status"], "calibration.yaml"),
        (lambda r: r.calibration_config.write_text("bands: [}\n"), ["status", "--json"], "invalid YAML"),
    ],
)
def test_bad_input_is_one_line_no_traceback(tmp_path, capsys, setup, args, needle):
    # in-process (main catches what a process would print); test_bad_input_in_a_real_process_is_one_line_no_traceback runs one
    assert main(["--root", str(tmp_path), "init"]) == 0
    setup(Root(tmp_path))
    capsys.readouterr()
    code = main(["--root", str(tmp_path), *args])
    err = capsys.readouterr().err
    assert code != 0
    assert "Traceback" not in err
    assert err.count("\n") == 1 and needle in err, err


def test_bad_input_in_a_real_process_is_one_line_no_traceback(tmp_path, capsys):
    assert main(["--root", str(tmp_path), "init"]) == 0  # the setup; the failing command runs in a real process
    Root(tmp_path).applied.write_text("underlyings: {BTC: {global: [1]}}\n")
    r = run_cli("--root", str(tmp_path), "status")
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1 and "applied_multipliers.yaml" in r.stderr, r.stderr


def test_status_shows_configured_underlying_missing_from_yaml_as_default(tmp_path, capsys):
    root = Root(tmp_path)
    main(["--root", str(tmp_path), "init"])
    root.applied.write_text("schema_version: 1\nunderlyings: {}\n")
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "status"]) == 0
    out = capsys.readouterr().out
    assert "BTC: global 1.0000 (default: never applied)" in out


def test_commands_that_report_a_broken_config_still_run_with_one_workspace(tmp_path, capsys):
    """The workspace reads config/calibration.yaml on first use: `render` shows the problem on the
    dashboard and `doctor` names it, while `status` (which needs the config) fails in one line."""
    assert main(["--root", str(tmp_path), "init"]) == 0
    root = Root(tmp_path)
    root.calibration_config.write_text(root.calibration_config.read_text() + "policy: {min_samples: 5}\n")
    capsys.readouterr()
    assert main(["--root", str(tmp_path), "render"]) == 0
    assert "duplicate key" in root.index_html.read_text()
    main(["--root", str(tmp_path), "doctor"])
    assert "duplicate key 'policy'" in capsys.readouterr().out
    assert main(["--root", str(tmp_path), "status"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "duplicate key 'policy'" in err


# --------------------------------------------------------------------------- start-up: lazy imports

HEAVY = ("numpy", "scipy", "pyarrow", "jinja2", "watchdog", "tqdm", "calreport.calibration", "calreport.market",
         "calreport.commands.backtest", "calreport.commands.usecases", "calreport.report.render")
LOADED_AFTER = r"""
import contextlib, io, sys
from calreport.commands.cli import main
with contextlib.redirect_stdout(io.StringIO()):  # the command's own output is not the answer
    try:
        main(sys.argv[2:])
    except SystemExit:
        pass
heavy = tuple(sys.argv[1].split(","))
print("\n".join(m for m in sorted(sys.modules) if any(m == h or m.startswith(h + ".") for h in heavy)))
"""


def _heavy_loaded(*argv: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", LOADED_AFTER, ",".join(HEAVY), *argv], capture_output=True, text=True, timeout=120, check=True)
    return out.stdout.split()


def test_help_and_status_load_no_command_module_numpy_scipy_or_pyarrow(tmp_path, capsys):
    """The CLI imports a command's modules in its handler, so `--help` and `status` start fast
    (benchmarks/bench_cli.py times them); `calibrate --help` parses without the calibration either."""
    assert main(["--root", str(tmp_path / "r"), "init"]) == 0  # the setup, in-process; the probes start fresh interpreters
    assert _heavy_loaded("--help") == []
    assert _heavy_loaded("calibrate", "--help") == []
    assert _heavy_loaded("--root", str(tmp_path / "r"), "status") == []


def test_the_lazy_import_probe_sees_a_command_that_loads_the_calibration(tmp_path, capsys):
    assert main(["--root", str(tmp_path / "r"), "init"]) == 0  # the setup, in-process
    assert "calreport.commands.usecases" in _heavy_loaded("--root", str(tmp_path / "r"), "rollback")
