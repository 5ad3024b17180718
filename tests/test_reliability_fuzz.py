"""Fuzzing every reader of outside input: the applied YAML, legacy records, snapshots, harvest
lines, history lines. Never a traceback: a one-line CalreportError or a counted skip."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import hypothesis.strategies as st
import pytest
import yaml
from foundation_helpers import add_live_run
from hypothesis import HealthCheck, example, given, settings

from calreport.commands import usecases as actions
from calreport.commands.cli import main as cli_main
from calreport.commands.legacy import parse_legacy
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.store.applied import read_applied
from calreport.store.history import read_history
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]
FUZZ = settings(deadline=None,  # examples: the hypothesis profile (conftest: 25; 300 when long)
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

VALID = """schema_version: 1
underlyings:
  BTC:
    global: 1.0833
    bands:
      0-7d: 1.0500
    updated_at: '2025-12-11T10:16:00Z'
    source: force
    run_id: 01JF00000000000000000000AA
    reason: Forced by user
"""
EDGE_CASES = [
    VALID.replace("global: 1.0833", "global: 1.0833\n    global: 1.2"),  # duplicate key
    VALID.replace("  BTC:\n", "  BTC: !!python/object/apply:os.system ['true']\n  XBT:\n"),
    "!!python/object:__main__.Evil {}\n",
    VALID.replace("  BTC:", "  on:"),  # a YAML 1.1 boolean key (a lower-case name under YAML 1.2)
    VALID.replace("  BTC:", "  yes:"),
    VALID.replace("global: 1.0833", "global: '1e-3'"),
    VALID.replace("global: 1.0833", "global: 1e-3"),  # YAML 1.2: 0.001, below the limits
    VALID.replace("global: 1.0833", "global: .nan"),
    VALID.replace("global: 1.0833", "global: NaN"),
    VALID.replace("global: 1.0833", "global: .inf"),
    VALID.replace("global: 1.0833", "global: -1.0"),
    VALID.replace("global: 1.0833", "global: yes"),
    VALID.replace("global: 1.0833", "global: [1.0833]"),
    VALID.replace("    global: 1.0833\n", ""),  # missing key
    VALID.replace("schema_version: 1", "schema_version: 4"),  # a version no calreport has written
    VALID.replace("    updated_at:", "    smile: {nodes: [-1, 0, 1], global: [1.2, 1.1, 1.0]}\n    updated_at:"),  # 1 at x=0
    VALID.replace("    updated_at:", "    smile: {nodes: [-1, 0, 1], global: [1.2, 1.0]}\n    updated_at:"),  # a value short
    VALID.replace("    updated_at:", "    smile: {nodes: [1, 0, -1], global: [1.2, 1.0, 1.1]}\n    updated_at:"),  # unordered
    VALID.replace("    updated_at:", "    smile: {nodes: [-1, 0, 1], global: [.nan, 1.0, 1.1]}\n    updated_at:"),
    VALID.replace("    updated_at:", "    smile: {nodes: [-1, 0, 1], global: [1.2, 1.0, 1.1], bands: {weekly: [1, 1, 1]}}\n    updated_at:"),
    VALID.replace("source: force", "source: auto"),
    VALID.replace("0-7d: 1.0500", "weekly: 1.0500"),
    VALID.replace("updated_at: '2025-12-11T10:16:00Z'", "updated_at: 2025-13-45"),
    VALID.replace("run_id: 01JF00000000000000000000AA", "run_id: 12345"),
    VALID[: len(VALID) // 2],  # half-written
    "",
    "\x00\x01\x02",
    "- a\n- b\n",
    "&a [*a]\n",
    "a: &x {b: *x}\n",
    "underlyings: {BTC: {global: 1.1, <<: {global: 2}}}\n",
    "{" * 200,
]

yaml_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-10, 10), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.sampled_from(["1e-3", "ON", "yes", "~", ".nan", "0x1F", "2025-12-11"]),
)
yaml_values = st.recursive(yaml_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)
entry_like = st.fixed_dictionaries(
    {},
    optional={
        "global": yaml_values, "bands": st.dictionaries(st.sampled_from(["0-7d", "7-30d", "x", ""]), yaml_values, max_size=3),
        "updated_at": yaml_values, "source": st.sampled_from(["force", "policy", "init", "auto", 3]),
        "run_id": yaml_values, "reason": yaml_values, "extra": yaml_values,
    },
)
doc_like = st.fixed_dictionaries(
    {}, optional={"schema_version": st.sampled_from([1, 2, "1", None]), "underlyings": st.dictionaries(st.sampled_from(["BTC", "ETH", "btc", "B"]), entry_like | yaml_values, max_size=3), "x": yaml_values}
)


def _check_applied(root: Root, text: str) -> None:
    root.applied.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        doc = read_applied(root)
    except CalreportError as exc:
        assert "\n" not in exc.one_line() and "applied_multipliers.yaml" in exc.one_line()
        return
    for e in doc.underlyings.values():  # whatever validates is usable by the engine
        assert math.isfinite(e.global_) and e.global_ > 0
        assert all(math.isfinite(v) and v > 0 for v in e.bands.values())
        if e.smile is not None:
            assert all(math.isfinite(v) and v > 0 for vs in [e.smile.global_, *e.smile.bands.values()] for v in vs)


@pytest.mark.parametrize("text", EDGE_CASES)
def test_yaml_edge_cases_are_one_line_errors(root, text):
    root.applied.write_text(text)
    with pytest.raises(CalreportError) as info:
        read_applied(root)
    assert "\n" not in info.value.one_line()


@FUZZ
@given(doc=doc_like)
def test_fuzzed_yaml_documents_never_raise_anything_but_calreport_error(root, doc):
    _check_applied(root, yaml.safe_dump(doc, allow_unicode=True))


@FUZZ
@given(data=st.data())
@example(data=None)
def test_mutated_valid_yaml_never_raises_anything_but_calreport_error(root, data):
    text = VALID
    if data is not None:
        for _ in range(data.draw(st.integers(1, 4))):
            i = data.draw(st.integers(0, len(text)))
            op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
            s = data.draw(st.text(min_size=1, max_size=4, alphabet=st.sampled_from(list(":-{}[]&*!%@'\"#\n\t |>?,.0123456789eE+xN"))))
            text = text[:i] + s + text[i:] if op == "insert" else text[:i] + text[i + len(s):] if op == "delete" else text[:i] + s + text[i + len(s):]
    _check_applied(root, text)


legacy_numbers = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-5, 10**6), st.text(max_size=4), st.booleans())
legacy_records = st.fixed_dictionaries(
    {
        "timestamp": st.one_of(st.just("2025-12-11T19:37:08Z"), st.integers(), st.text(max_size=10), st.none()),
        "underlying": st.sampled_from(["BTC", "ETH", "btc", "", "SOL", 5]),
        "source": st.sampled_from(["live", "harvested", "manual", None]),
    },
    optional={
        "global_metrics": st.one_of(st.none(), st.dictionaries(st.sampled_from(["mae_pct", "bias_pct", "vega_weighted_mae_pct", "z"]), legacy_numbers, max_size=4), st.lists(legacy_numbers, max_size=2)),
        "bands": st.one_of(st.none(), st.lists(st.dictionaries(st.sampled_from(["name", "min_dte", "max_dte", "count", "mae_pct"]), legacy_numbers, max_size=5), max_size=3)),
        "recommended_iv_multiplier": legacy_numbers, "smoothed_global_multiplier": legacy_numbers, "sample_size": legacy_numbers,
        "vega_sum": legacy_numbers, "applied": st.one_of(st.booleans(), st.none(), st.text(max_size=3)), "applied_reason": st.one_of(st.none(), st.text(max_size=20)),
        "smoothed_band_multipliers": st.one_of(st.none(), st.lists(st.dictionaries(st.sampled_from(["name", "iv_multiplier"]), legacy_numbers), max_size=2)),
    },
)


@FUZZ
@given(rec=legacy_records, raw=st.one_of(st.none(), st.binary(max_size=64)))
def test_fuzzed_legacy_records_parse_or_fail_in_one_line(rec, raw):
    data = raw if raw is not None else json.dumps(rec).encode()
    try:
        parse_legacy(data, "fuzz.json")
    except CalreportError as exc:
        assert "\n" not in exc.one_line() and exc.one_line().startswith("fuzz.json: malformed legacy record")


@FUZZ
@given(rec=legacy_records)
def test_fuzzed_legacy_import_counts_every_file(root, tmp_path_factory, rec):
    from calreport.commands.legacy import import_legacy

    d = tmp_path_factory.mktemp("legacy")
    (d / "r.json").write_text(json.dumps(rec))
    result = import_legacy(Workspace.open(root), [d / "r.json"])
    assert result.live + result.auto + result.already + len(result.errors) == 1
    assert all("\n" not in e.one_line() for e in result.errors)


quote_fields = st.dictionaries(
    st.sampled_from(["instrument_name", "mark_price", "mark_iv", "underlying_price", "creation_timestamp", "base_currency", "bid_price"]),
    st.one_of(st.none(), st.floats(), st.integers(), st.text(max_size=20), st.sampled_from(["BTC-27DEC24-60000-C", "BTC", "ETH-1JAN25-3000-P", "BTC-PERPETUAL"])),
    max_size=7,
)


@FUZZ
@example(payload=[{"instrument_name": "BTC-27DEC24-60000-C", "mark_price": 0.01, "mark_iv": 50.0, "underlying_price": 1.0,
                   "creation_timestamp": float("inf")}])
@given(payload=st.one_of(st.lists(quote_fields, max_size=5), st.fixed_dictionaries({"jsonrpc": st.just("2.0")}, optional={"result": st.lists(quote_fields, max_size=4), "error": st.one_of(st.none(), st.text(max_size=5), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))}), yaml_values))
def test_fuzzed_snapshots_load_or_fail_in_one_line(tmp_path_factory, payload):
    deribit = pytest.importorskip("calreport.market.deribit")
    p = tmp_path_factory.mktemp("snap") / "s.json"
    try:
        p.write_text(json.dumps(payload, allow_nan=True))
    except (ValueError, TypeError):
        return
    try:
        rows, meta = deribit.load_snapshot(p)
    except CalreportError as exc:
        assert "\n" not in exc.one_line()
        return
    assert meta.n_rows == len(rows) > 0


harvest_lines = st.lists(
    st.one_of(
        quote_fields.map(lambda d: json.dumps(d, allow_nan=True).encode()),
        st.binary(max_size=30),
        st.just(b'{"instrument_name": "BTC-27DEC24-60000-C", "mark_price": 0.01, "mark_iv": 50, "underlying_price": 60000, "harvested_at": 1733900000000}'),
        st.just(b'{"instrument_name": "BTC-27DEC24-60000-C", "mark_price": 0.01, "mark_iv": 50'),  # torn
    ),
    max_size=8,
)


@FUZZ
@example(lines=[b"{}"])
@given(lines=harvest_lines)
def test_fuzzed_harvest_lines_are_kept_or_counted(lines):
    harvest = pytest.importorskip("calreport.market.harvest")
    data = b"\n".join(lines)
    day = harvest.parse_day_bytes(data, "BTC")
    nonblank = [ln for ln in data.split(b"\n") if ln and not ln.isspace()]
    assert day.lines == len(nonblank)
    assert day.n + day.schema_errors + day.bad_names == day.lines


@FUZZ
@given(lines=st.lists(st.one_of(st.binary(max_size=40), st.just(b'{"type": "apply", "run_id": "x"}'), st.just(b'{"type": "live_run", "samples": "many"}'), st.just(b'{"type": "zzz"}')), max_size=10))
def test_fuzzed_history_lines_are_read_or_counted(tmp_path_factory, lines):
    p = tmp_path_factory.mktemp("hist") / "h.jsonl"
    p.write_bytes(b"\n".join(lines))
    read = read_history(p)
    nonblank = [ln for ln in p.read_bytes().split(b"\n") if ln.strip()]
    assert len(read.rows) + read.skipped == len(nonblank)


# --------------------------------------------------------------------------- the CLI on a hand-broken YAML


def _cli(root: Root, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "calreport", "--root", str(root.path), *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def _broken_root(tmp_path: Path, broken: str) -> Root:
    root = Root(tmp_path / "root")
    actions.init(Workspace.open(root))
    add_live_run(root, smoothed=1.0833)
    root.applied.write_text(broken)
    return root


@pytest.mark.parametrize("broken", [EDGE_CASES[0], EDGE_CASES[1], EDGE_CASES[7], EDGE_CASES[19]])
def test_cli_reports_a_hand_broken_yaml_in_one_line_and_never_overwrites_it(tmp_path, capsys, broken):
    root = _broken_root(tmp_path, broken)
    capsys.readouterr()
    for args in (("status",), ("status", "--json"), ("force-apply", "--underlying", "BTC"), ("doctor",)):
        code = cli_main(["--root", str(root.path), *args])  # in-process: main catches what a process would print
        out, err = capsys.readouterr()
        assert code != 0, args
        assert "Traceback" not in err + out
        if args[0] != "doctor":
            assert len(err.strip().splitlines()) == 1 and "applied_multipliers.yaml" in err
        assert root.applied.read_text() == broken, f"{args} overwrote the broken file"


def test_the_calreport_process_reports_a_hand_broken_yaml_in_one_line(tmp_path):
    root = _broken_root(tmp_path, EDGE_CASES[0])
    for args in (("status",), ("force-apply", "--underlying", "BTC")):
        proc = _cli(root, *args)
        assert proc.returncode != 0, args
        assert "Traceback" not in proc.stderr + proc.stdout
        assert len(proc.stderr.strip().splitlines()) == 1 and "applied_multipliers.yaml" in proc.stderr
        assert root.applied.read_text() == EDGE_CASES[0], f"{args} overwrote the broken file"
