"""Hardening: one test per defect an adversarial pass found (the unguarded live path is pinned by
test_live_guards.py, the all-garbage harvest day by the harvest tests, serve's by test_serve.py).

Each test drives the reported reproduction and pins the wanted behaviour: a one-line refusal naming
the file, a documented exit code, nothing of record changed.
"""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
from pathlib import Path

import pytest
from foundation_helpers import add_live_run

from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.errors import EXIT_REFUSED, EXIT_STALE_DASHBOARD, CalreportError, excerpt
from calreport.market.deribit import load_snapshot
from calreport.report.serve import state_response
from calreport.store.applied import read_applied
from calreport.store.config import DEFAULT_CONFIG_TEXT, load_config
from calreport.store.history import iter_lines_reversed
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "tests" / "fixtures" / "deribit" / "book_summary_btc.json"


def run_cli(capsys: pytest.CaptureFixture[str], root: Root, *args: str) -> tuple[int, str, str]:
    code = main(["--root", str(root.path), *args])
    out, err = capsys.readouterr()
    return code, out, err


def files_of_record(root: Root) -> tuple[bytes, bytes]:
    return root.applied.read_bytes(), root.live_history.read_bytes()


def assert_one_line(err: str, *needles: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[:500]
    assert "Traceback" not in err and "internal error" not in err, err[:500]
    assert len(lines[0]) < 400, lines[0][:500]
    text = re.sub(r"/\S*/", "/", lines[0])  # drop directories: pytest names them after the test
    for needle in needles:
        assert needle in text, lines[0]


def set_config(root: Root, text: str) -> None:
    root.calibration_config.write_text(text)


# --------------------------------------------------------------------------- 2: billion laughs


def laughs(levels: int) -> str:
    """An alias `a<levels>` expanding to 9**levels copies of a 10-character string."""
    lines = ['a0: &a0 "xxxxxxxxxx"']
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines)


def test_applied_yaml_with_aliases_is_refused_in_one_line(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    text = root.applied.read_text().replace("reason: Initial default", "reason: &r Initial default", 1)
    root.applied.write_text(text.replace("reason: Initial default", "reason: *r", 1))  # ETH's reason: a plain alias
    code, _, err = run_cli(capsys, root, "status")
    assert code == EXIT_REFUSED
    assert_one_line(err, "applied_multipliers.yaml", "alias")


def test_alias_bomb_in_the_applied_yaml_is_refused_without_expanding_it(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    # the bomb sits in the reason: its anchors are defined inside a flow sequence of the value itself
    bomb = laughs(5).replace("\n", ", ").replace(": &", ": &")
    text = root.applied.read_text().replace("reason: Initial default", f"reason: {{{bomb}}}", 1)
    root.applied.write_text(text)
    add_live_run(root, smoothed=1.0833)
    before = files_of_record(root)
    for args in (("status",), ("status", "--json"), ("force-apply", "--underlying", "BTC")):
        code, _, err = run_cli(capsys, root, *args)
        assert code == EXIT_REFUSED
        assert_one_line(err, "applied_multipliers.yaml")
    assert files_of_record(root) == before


def test_config_with_aliases_is_refused_in_one_line(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    set_config(root, "realism: &r {min_mult: 0.7}\npolicy: {min_samples: 50}\nx: *r\n")
    code, _, err = run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")
    assert code == EXIT_REFUSED
    assert_one_line(err, "calibration.yaml", "alias")


def test_error_messages_quote_at_most_100_characters_of_input(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    text = root.applied.read_text().replace("global: 1.0000", f"global: [{', '.join(['y' * 50] * 200)}]", 1)
    root.applied.write_text(text)
    code, _, err = run_cli(capsys, root, "status")
    assert code == EXIT_REFUSED
    assert_one_line(err, "applied_multipliers.yaml")
    assert "y" * 101 not in err and err.count("y" * 50) <= 2


def test_excerpt_is_bounded_for_huge_nested_values() -> None:
    value: object = "x" * 10
    for _ in range(9):  # 9**9 strings if expanded
        value = [value] * 9
    assert len(excerpt(value)) <= 100
    assert len(excerpt(int("9" * 4000) * 10**1000)) <= 100


# --------------------------------------------------------------------------- 3: apply with a stale dashboard


def test_apply_that_cannot_rerender_reports_success_and_a_stale_dashboard(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    run = add_live_run(root, smoothed=1.0833)
    import shutil

    shutil.rmtree(root.site_dir)
    root.site_dir.write_text("not a directory\n")  # site/ cannot be written
    code, out, err = run_cli(capsys, root, "force-apply", "--underlying", "BTC")
    assert code == EXIT_STALE_DASHBOARD
    assert f"applied run {run.run_id}" in out and "1.0833" in out
    assert "stale" in err and "calreport render" in err and "Traceback" not in err
    assert read_applied(root).entry("BTC").global_ == 1.0833
    assert json.loads(root.live_history.read_text().splitlines()[-1])["type"] == "apply"


def test_render_that_cannot_write_is_an_error_not_a_stale_warning(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    import shutil

    shutil.rmtree(root.site_dir)
    root.site_dir.write_text("not a directory\n")
    code, _, err = run_cli(capsys, root, "render")
    assert code == EXIT_REFUSED
    assert_one_line(err)
    assert "/site" in err and "stale" not in err


# --------------------------------------------------------------------------- 4: band names


@pytest.mark.parametrize("name", ["short term", "<b>x</b>", "", "a/b"])
def test_config_band_name_that_is_not_a_label_is_refused_before_anything_is_written(
    root: Root, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    set_config(root, DEFAULT_CONFIG_TEXT.replace("{name: 0-7d,", f"{{name: {json.dumps(name)},"))
    before = files_of_record(root)
    code, _, err = run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")
    assert code == EXIT_REFUSED
    assert_one_line(err, "calibration.yaml", "bands")
    assert files_of_record(root) == before


# --------------------------------------------------------------------------- 5: multiplier bounds and YAML 1.1 forms


def test_limits_section_has_defaults() -> None:
    cfg = load_config(Root(Path("/nonexistent-calreport-root")))
    assert (cfg.limits.min_multiplier, cfg.limits.max_multiplier) == (0.05, 20.0)


def _live_row_with_smoothed(root: Root, value: object) -> None:
    run = add_live_run(root, smoothed=1.0833)
    lines = root.live_history.read_text().splitlines()
    row = json.loads(lines[-1])
    row["smoothed"]["global"] = value
    lines[-1] = json.dumps(row)
    root.live_history.write_text("\n".join(lines) + "\n")
    assert row["run_id"] == run.run_id


@pytest.mark.parametrize("value", [1e300, 25.0, 0.01, True, "1.5"])
def test_force_apply_refuses_a_run_whose_multiplier_is_out_of_bounds_or_not_a_number(
    root: Root, capsys: pytest.CaptureFixture[str], value: object
) -> None:
    _live_row_with_smoothed(root, value)
    before = files_of_record(root)
    code, _, err = run_cli(capsys, root, "force-apply", "--underlying", "BTC")
    assert code == EXIT_REFUSED
    assert_one_line(err)
    assert files_of_record(root) == before


@pytest.mark.parametrize("written", ["1:30", "1_0", "0x1", "0o7", "25.0", "0.01", "1e300", "yes", "'1.5'"])
def test_applied_yaml_multiplier_must_be_a_decimal_number_within_bounds(root: Root, written: str) -> None:
    root.applied.write_text(root.applied.read_text().replace("global: 1.0000", f"global: {written}", 1))
    with pytest.raises(CalreportError) as info:
        read_applied(root)
    assert "applied_multipliers.yaml" in info.value.one_line() and "underlyings.BTC" in info.value.one_line()


def test_applied_yaml_decimal_forms_still_load(root: Root) -> None:
    for written, value in (("1", 1.0), ("1.5", 1.5), ("2e0", 2.0), ("+0.5", 0.5), ("20", 20.0), ("0.05", 0.05)):
        root.applied.write_text(root.applied.read_text().split("  BTC:")[0] + f"  BTC:\n    global: {written}\n")
        assert read_applied(root).entry("BTC").global_ == value


def test_config_fit_bounds_must_lie_within_the_limits(root: Root) -> None:
    set_config(root, "fit: {min_mult: 0.01, max_mult: 3.0}\n")
    with pytest.raises(CalreportError, match="limits"):
        load_config(root)


# --------------------------------------------------------------------------- 6: huge integers


HUGE = "9" * 5000


def test_huge_integer_in_the_applied_yaml_is_a_one_line_error_naming_the_file(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    root.applied.write_text(root.applied.read_text().replace("global: 1.0000", f"global: {HUGE}", 1))
    code, _, err = run_cli(capsys, root, "status")
    assert code == EXIT_REFUSED
    assert_one_line(err, "applied_multipliers.yaml", "digits")


def test_huge_integer_in_the_config_is_a_one_line_error_naming_the_file(root: Root) -> None:
    set_config(root, f"policy: {{min_samples: {HUGE}}}\n")
    with pytest.raises(CalreportError) as info:
        load_config(root)
    assert "calibration.yaml" in info.value.one_line() and len(info.value.one_line()) < 300


def test_huge_integer_in_a_snapshot_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    p = tmp_path / "snap.json"
    p.write_text(SNAPSHOT.read_text().replace('"mark_iv": 45.49', f'"mark_iv": {HUGE}', 1))
    with pytest.raises(CalreportError) as info:
        load_snapshot(p, "BTC")
    assert "snap.json" in info.value.one_line() and len(info.value.one_line()) < 300


def test_serve_state_endpoint_answers_503_in_one_line_for_a_huge_integer(root: Root) -> None:
    root.applied.write_text(root.applied.read_text().replace("global: 1.0000", f"global: {HUGE}", 1))
    status, body = state_response(root)
    assert status == 503 and "applied_multipliers.yaml" in body["error"] and len(body["error"]) < 300


# --------------------------------------------------------------------------- 7: config values


@pytest.mark.parametrize(
    "text",
    [
        "fit: {min_mult: 3.0, max_mult: 0.5}\n",
        "fit: {min_mult: -1}\n",
        "fit: {min_mult: .nan}\n",
        "fit: {max_mult: .inf}\n",
        "auto: {expected_interval_minutes: 0}\n",
        "realism: {max_mae: .nan}\n",
        "realism: {min_mult: .nan}\n",
        "policy: {min_delta: .nan}\n",
        "policy: {max_rel_step: .nan}\n",
        "smoothing: {half_life_hours: .nan}\n",
        "underlyings: [btc]\n",
        "auto: {underlyings: [btc]}\n",
        "policy: {min_samples: yes}\n",
        "policy: {min_samples: true}\n",
        "policy: {min_samples: '50'}\n",
        "filters: {max_dte: '90'}\n",
        "git_commit: yes\n",
        "limits: {min_multiplier: 0}\n",
        "limits: {min_multiplier: 2, max_multiplier: 1}\n",
    ],
)
def test_config_value_that_cannot_be_meant_is_refused_in_one_line(
    root: Root, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    set_config(root, text)
    before = files_of_record(root)
    code, _, err = run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")
    assert code == EXIT_REFUSED, err
    assert_one_line(err, "calibration.yaml")
    assert files_of_record(root) == before


# --------------------------------------------------------------------------- 8: long history lines


def test_reading_history_backwards_is_linear_in_a_long_line(tmp_path: Path) -> None:
    """One 16 MB line read in 512-byte blocks: linear is well under a second of CPU; the old reader
    (which rebuilt the pending line for every block) copies ~2.5e11 bytes and hits the CPU limit."""
    p = tmp_path / "h.jsonl"
    long_line = b'{"type":"live_run","reason":"' + b"x" * (16 << 20) + b'"}'
    p.write_bytes(b'{"type":"apply"}\n' + long_line + b"\n" + b'{"type":"auto_run"}\n')
    code = (
        "import sys; from pathlib import Path; from calreport.store.history import iter_lines_reversed as r\n"
        "lines = list(r(Path(sys.argv[1]), block=512)); print(len(lines), [len(x) for x in lines])\n"
    )

    def limit_cpu() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (20, 20))

    proc = subprocess.run(
        [sys.executable, "-c", code, str(p)], capture_output=True, text=True, preexec_fn=limit_cpu, check=False
    )
    assert proc.returncode == 0, proc.stderr[-300:]
    assert proc.stdout.split()[0] == "3"
    # the line comes back whole in-process too, from blocks that never align with it (tiny blocks
    # across line edges: test_reading_history_backwards_keeps_lines_across_block_edges)
    assert list(iter_lines_reversed(p, block=509))[1] == long_line


def test_reading_history_backwards_keeps_lines_across_block_edges(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    lines = [("x" * n).encode() for n in (0, 1, 5, 6, 7, 13, 1, 40)]
    p.write_bytes(b"\n".join(lines) + b"\n")
    for block in (1, 2, 3, 6, 7, 64, 1 << 16):
        assert list(iter_lines_reversed(p, block=block)) == [ln for ln in reversed(lines) if ln]


# --------------------------------------------------------------------------- 11: dangling symlink


def test_dangling_symlink_as_the_applied_yaml_is_refused_and_left_alone(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    add_live_run(root, smoothed=1.0833)
    root.applied.unlink()
    os.symlink(root.path / "gone.yaml", root.applied)
    history = root.live_history.read_bytes()
    for args in (("status",), ("force-apply", "--underlying", "BTC")):
        code, _, err = run_cli(capsys, root, *args)
        assert code == EXIT_REFUSED
        assert_one_line(err, "applied_multipliers.yaml", "dangling")
    assert root.applied.is_symlink() and os.readlink(root.applied) == str(root.path / "gone.yaml")
    assert root.live_history.read_bytes() == history


# --------------------------------------------------------------------------- 12: snapshot parsing


def _snapshot_with(tmp_path: Path, old: str, new: str) -> Path:
    p = tmp_path / "snap.json"
    text = SNAPSHOT.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ('"mark_price": 0.08109754', '"mark_price": true'),
        ('"mark_price": 0.08109754', '"mark_price": "0.08109754"'),
        ('"bid_price": 0.0808', '"bid_price": "0.0808"'),
        ('"open_interest": 12.5', '"open_interest": false'),
        ('"ask_price": 0.0814', '"ask_price": "0.0814"'),
    ],
)
def test_snapshot_number_written_as_a_string_or_boolean_is_refused_in_one_line(tmp_path: Path, old: str, new: str) -> None:
    with pytest.raises(CalreportError) as info:
        load_snapshot(_snapshot_with(tmp_path, old, new), "BTC")
    assert "snap.json" in info.value.one_line() and "not a number" in info.value.one_line()


def test_deeply_nested_snapshot_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], root: Root) -> None:
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(CalreportError) as info:
        load_snapshot(p, "BTC")
    assert "deep.json" in info.value.one_line() and "nested" in info.value.one_line()
    code, _, err = run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(p), "--rv", "0.45")
    assert code == EXIT_REFUSED
    assert_one_line(err, "deep.json")


def test_deeply_nested_history_line_is_skipped_and_counted(root: Root) -> None:
    from calreport.store.history import read_history

    with root.live_history.open("ab") as fh:
        fh.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
    assert read_history(root.live_history).skipped == 1


# --------------------------------------------------------------------------- exit codes


def test_usage_errors_exit_2(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--root", str(root.path), "force-apply", "--no-such-flag"])
    assert info.value.code == 2
    capsys.readouterr()


def test_unknown_errors_exit_70_in_one_line(root: Root, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a: object, **_k: object) -> None:
        raise RuntimeError("x" * 10_000)

    monkeypatch.setattr(actions, "force_apply", boom)
    monkeypatch.delenv("CALREPORT_DEBUG", raising=False)
    code, _, err = run_cli(capsys, root, "force-apply", "--underlying", "BTC")
    assert code == 70
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "internal error: RuntimeError" in lines[0] and len(lines[0]) < 400


def test_serve_state_endpoint_answers_503_in_one_line_for_an_unexpected_error(root: Root, monkeypatch: pytest.MonkeyPatch) -> None:
    import calreport.report.serve as serve_mod

    def broken(*_a: object, **_k: object) -> None:
        raise RecursionError("x" * 5000)

    monkeypatch.setattr(serve_mod, "read_state", broken)
    status, body = state_response(root)
    assert status == 503 and body["error"].startswith("internal error: RecursionError") and len(body["error"]) < 200


@pytest.mark.parametrize("text", ["1e3", ".5", "-2E-1", "true", "null", "1:30", "0x1", "yes", "x: y", "", "日本", "a\u2028b", "'q'"])
def test_strings_the_writer_puts_in_the_applied_yaml_read_back_as_strings(root: Root, text: str) -> None:
    """The writer quotes by YAML 1.1 rules; the reader resolves by 1.2 (`1e3` is a number there)."""
    from calreport.model import Multipliers
    from calreport.store.applied import apply_values

    apply_values(root, "BTC", Multipliers(global_=1.1), source="force", run_id=text or None, reason=text)
    entry = read_applied(root).entry("BTC")
    assert entry.reason == text and entry.run_id == (text or None)


def test_dangling_symlink_as_the_config_is_refused(root: Root) -> None:
    root.calibration_config.unlink()
    os.symlink(root.path / "gone.yaml", root.calibration_config)
    with pytest.raises(CalreportError, match="dangling"):
        load_config(root)


def test_serve_action_body_nested_too_deeply_is_a_400_that_changes_nothing(root: Root) -> None:
    from test_serve import post_action

    from calreport.commands.dashboard import DashboardActions, parse_body
    from calreport.report.serve import make_server

    add_live_run(root, smoothed=1.0833)
    before = files_of_record(root)
    server, stop = make_server(root, port=0, debounce=0.05, actions=DashboardActions(root), parse_body=parse_body)
    try:
        status, _, payload = post_action(server, b"[" * 2000 + b"]" * 2000)
    finally:
        stop()
    assert status == 400 and "not JSON" in json.loads(payload)["error"]
    assert files_of_record(root) == before


def test_dashboard_action_that_cannot_rerender_reports_the_apply_with_a_stale_warning(root: Root) -> None:
    from calreport.commands.dashboard import DashboardActions, parse_body

    run = add_live_run(root, smoothed=1.0833)

    def cannot_render(_config: object) -> None:
        raise CalreportError("could not write file (No space left on device)", root.index_html)

    actions_ = DashboardActions(root, warn=lambda _m: None)
    _, shown = actions_.handle("force-apply", parse_body({"underlying": "BTC", "preview": True}), cannot_render)
    confirm = {"underlying": "BTC", "run_id": shown["preview"]["run_id"], "nonce": shown["preview"]["nonce"]}
    status, body = actions_.handle("force-apply", parse_body(confirm), cannot_render)
    assert status == 200 and body["done"]["run_id"] == run.run_id
    assert any("dashboard is stale" in w and "calreport render" in w for w in body["warnings"])
    assert read_applied(root).entry("BTC").global_ == 1.0833


def test_a_history_row_whose_smoothed_value_breaks_the_limits_never_seeds_the_ewma(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    _live_row_with_smoothed(root, 1e300)
    code, _, err = run_cli(capsys, root, "calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")
    assert code == 0, err
    row = json.loads(root.live_history.read_text().splitlines()[-1])
    assert row["smoothed_from"] == "applied" and 0.5 <= row["smoothed"]["global"] <= 3.0
