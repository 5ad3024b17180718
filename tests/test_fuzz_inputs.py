"""Fuzzing the commands over every outside input: the applied YAML, the config, a
snapshot, a harvest line, a history line and the previous system's harvest (import-harvest).

For any generated input, the command a user would run on it answers with a documented exit code
and never a traceback or an "internal error"; when it refuses (exit 1), the applied YAML and the
history are byte for byte what they were. Generators mix valid files with the hostile forms the
adversarial pass used: aliases, YAML 1.1 numbers, 5000-digit integers, deep nesting, numbers as
strings or booleans, NaN, out-of-range multipliers.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from pathlib import Path

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, given, settings

from budget import reps
from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.commands.workspace import Workspace
from calreport.errors import EXIT_OK, EXIT_REFUSED, EXIT_STALE_DASHBOARD
from calreport.market.harvest import load_harvest
from calreport.store.config import DEFAULT_CONFIG_TEXT
from calreport.store.paths import Root

REPO = Path(__file__).resolve().parents[1]
SNAPSHOT = REPO / "tests" / "fixtures" / "deribit" / "book_summary_btc.json"
# examples: the hypothesis profile's (conftest: 15, 300 with CALREPORT_LONG_TESTS=1); CALREPORT_FUZZ_EXAMPLES=1000 for a longer hunt
_EXAMPLES = {"max_examples": int(os.environ["CALREPORT_FUZZ_EXAMPLES"])} if os.environ.get("CALREPORT_FUZZ_EXAMPLES") else {}
FUZZ = settings(**_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
DOCUMENTED = {EXIT_OK, EXIT_REFUSED, EXIT_STALE_DASHBOARD}

# scalars that break naive readers, written as YAML / JSON source text
HOSTILE_TEXT = [
    "1:30", "1_0", "0x1", "0o7", "yes", "no", "on", "true", "false", "~", "null", ".nan", ".inf", "-.inf", "NaN",
    "1e300", "-1", "0", "25", "0.01", "'1.5'", '"1.5"', "9" * 5000, "[" * 3000, "{a: 1}", "[1, 2]", "&a 1", "*a",
    "!!python/object/apply:os.system ['true']", "!!int 0x1", "!!float 1_0", "!!binary aGk=", "<<", "2025-12-11",
    "x" * 300, "\"\\u0000\"", "'", "&a [*a]", "1.0833", "1.5", "0.7",
]
JSON_HOSTILE = [
    "true", "false", "null", '"0.05"', '"1.5"', "1e400", "-1", "0", "NaN", "Infinity", "9" * 5000, "[" * 3000 + "]" * 3000,
    "{}", "[]", '"' + "x" * 300 + '"', "1.5", "0.05", "25",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Root:
    root = Root(tmp_path_factory.mktemp("fuzz") / "template")
    actions.init(Workspace.open(root))
    code, _, err = _run(root, "calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")
    assert code == 0, err
    code, _, err = _run(root, "force-apply", "--underlying", "BTC")  # the YAML then holds bands and a smile
    assert code == 0 and "smile:" in root.applied.read_text(), err
    return root


@pytest.fixture
def fresh(template: Root, tmp_path: Path) -> Root:
    root = Root(tmp_path / "root")
    shutil.copytree(template.path, root.path)
    return root


def _reset(template: Root, root: Root) -> None:
    """Put the files of record back to the template's (one root per test, reset per example)."""
    for rel in ("config", "history"):
        shutil.rmtree(root.path / rel)
        shutil.copytree(template.path / rel, root.path / rel)
    shutil.rmtree(root.path / "data", ignore_errors=True)


def _run(root: Root, *args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(["--root", str(root.path), *args])
        except SystemExit as exc:  # argparse
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def _record(root: Root) -> tuple[bytes | None, ...]:
    paths = (root.applied, root.live_history, root.auto_history)
    return tuple(p.read_bytes() if p.is_file() else None for p in paths)


def _check(root: Root, *args: str) -> int:
    before = _record(root)
    code, out, err = _run(root, *args)
    assert "Traceback" not in out + err and "internal error" not in err, (args, err[-300:])
    assert code in DOCUMENTED, (args, code, err[-300:])
    if code == EXIT_REFUSED:
        if args[0] == "doctor" and not err:  # doctor's 1 is its report of mismatches (on stdout), not a refusal
            assert out.strip(), args
        else:
            assert len(err.strip().splitlines()) == 1, (args, err[-600:])
        assert len(err) < 1000, (args, err[:300])
        assert _record(root) == before, f"{args} refused but changed a file of record"
    return code


def _mutate(text: str, data: st.DataObject, tokens: list[str]) -> str:
    """Replace the value after one `key:` (or insert a token anywhere) a few times."""
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        token = data.draw(st.sampled_from(tokens), label="token")
        spots = [i + 2 for i in range(len(text) - 1) if text[i : i + 2] == ": "]
        if spots and data.draw(st.booleans(), label="replace value"):
            i = data.draw(st.sampled_from(spots), label="spot")
            end = min((j for j in (text.find("\n", i), text.find(",", i), text.find("}", i)) if j != -1), default=len(text))
            text = text[:i] + token + text[end:]
        else:
            i = data.draw(st.integers(0, len(text)), label="at")
            text = text[:i] + token + text[i:]
    return text


# --------------------------------------------------------------------------- the applied YAML


@FUZZ
@given(data=st.data())
def test_fuzzed_applied_yaml_is_used_or_refused_without_changing_anything(template: Root, fresh: Root, data: st.DataObject) -> None:
    _reset(template, fresh)
    fresh.applied.write_text(_mutate(fresh.applied.read_text(), data, HOSTILE_TEXT), errors="surrogatepass")
    for args in (("status",), ("status", "--json"), ("force-apply", "--underlying", "BTC")):
        _check(fresh, *args)


# --------------------------------------------------------------------------- the config


@FUZZ
@given(data=st.data())
def test_fuzzed_config_is_used_or_refused_without_changing_anything(template: Root, fresh: Root, data: st.DataObject) -> None:
    _reset(template, fresh)
    fresh.calibration_config.write_text(_mutate(DEFAULT_CONFIG_TEXT, data, HOSTILE_TEXT), errors="surrogatepass")
    for args in (("status",), ("force-apply", "--underlying", "BTC"), ("calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")):
        _check(fresh, *args)


# --------------------------------------------------------------------------- a snapshot

SNAPSHOT_ROWS = json.loads(SNAPSHOT.read_text())["result"]
SNAPSHOT_KEYS = sorted({k for r in SNAPSHOT_ROWS for k in r})


@FUZZ
@given(
    n=st.integers(1, 6),
    edits=st.lists(st.tuples(st.integers(0, 5), st.sampled_from(SNAPSHOT_KEYS), st.sampled_from(JSON_HOSTILE)), max_size=3),
    envelope=st.booleans(),
)
def test_fuzzed_snapshot_is_calibrated_or_refused_without_changing_anything(
    template: Root, fresh: Root, tmp_path: Path, n: int, edits: list[tuple[int, str, str]], envelope: bool
) -> None:
    _reset(template, fresh)
    rows = [dict(r) for r in SNAPSHOT_ROWS[:n]]
    raws: dict[str, str] = {}
    for i, key, raw in edits:  # raw JSON text, so 5000-digit integers and deep nesting reach the parser
        rows[i % n][key] = f"@@{i % n}.{key}@@"
        raws[f'"@@{i % n}.{key}@@"'] = raw
    body = json.dumps(rows)
    for placeholder, raw in raws.items():
        body = body.replace(placeholder, raw)
    p = tmp_path / "snap.json"
    p.write_text('{"jsonrpc": "2.0", "result": ' + body + "}" if envelope else body)
    _check(fresh, "calibrate", "--underlying", "BTC", "--snapshot", str(p), "--rv", "0.45")


# --------------------------------------------------------------------------- a harvest line

HARVEST_ROW = {
    "instrument_name": "BTC-19DEC25-85000-C", "mark_price": 0.081, "mark_iv": 45.5, "underlying_price": 92150.5,
    "bid_price": 0.0808, "ask_price": 0.0814, "open_interest": 12.5, "creation_timestamp": 1765454400000,
    "harvested_at": 1765454400000,
}


@FUZZ
@given(
    lines=st.lists(
        st.one_of(
            st.tuples(st.sampled_from(sorted(HARVEST_ROW)), st.sampled_from(JSON_HOSTILE)).map(
                lambda kv: json.dumps({**HARVEST_ROW, kv[0]: "@@"}).replace('"@@"', kv[1]).encode()
            ),
            st.binary(max_size=40),
            st.just(json.dumps(HARVEST_ROW).encode()),
        ),
        max_size=6,
    )
)
def test_fuzzed_harvest_lines_never_break_auto_calibrate_or_calibrate(template: Root, fresh: Root, lines: list[bytes]) -> None:
    _reset(template, fresh)
    day = fresh.harvest_dir("BTC") / "2025-12-11.jsonl"
    day.parent.mkdir(parents=True, exist_ok=True)
    day.write_bytes(b"\n".join(lines) + b"\n")
    _check(fresh, "auto-calibrate", "--underlying", "BTC", "--as-of", "2025-12-11T12:00:00Z", "--lookback", "1d")
    _check(fresh, "calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT))  # RV_7d from the harvest


# --------------------------------------------------------------------------- a history line


@FUZZ
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(["smoothed", "recommended", "status", "underlying", "run_id", "type", "source", "ts", "samples"]), st.sampled_from(JSON_HOSTILE + ['{"global": true}', '{"global": "1.5"}', '{"global": 1e300}', '{"global": 1.2, "bands": {"7-30d": -1}}', '"BTC"', '"failed"'])),
        max_size=3,
    ),
    junk=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_fuzzed_history_line_never_breaks_force_apply_status_or_doctor(
    template: Root, fresh: Root, edits: list[tuple[str, str]], junk: bytes | None
) -> None:
    _reset(template, fresh)
    lines = fresh.live_history.read_bytes().splitlines()
    row = json.loads(lines[-1])
    for key, raw in edits:
        row[key] = f"@@{key}@@"
    text = json.dumps(row)
    for key, raw in edits:
        text = text.replace(f'"@@{key}@@"', raw)
    with fresh.live_history.open("ab") as fh:
        fh.write(text.encode() + b"\n" + (junk + b"\n" if junk is not None else b""))
    for args in (("force-apply", "--underlying", "BTC"), ("status",), ("doctor",), ("log",)):
        code = _check(fresh, *args)
        assert args[0] != "doctor" or code in (0, 1)


# --------------------------------------------------------------------------- config ranges, special files, action bodies

RANGE_TEXT = [
    "-0.1", "-5", "0", "0.0", "1e9", "1000000000", "10001", "-1e-9", "1e-300", "4294967296", "['10-3']", "['3-3']",
    "[X]", "[]", "[C, C]", "[99999999999d]", "[0d]", "[" + ", ".join(str(i / 10) for i in range(-600, 601)) + "]",
]


@FUZZ
@given(data=st.data())
def test_fuzzed_config_values_out_of_range_are_refused_never_an_internal_error(template: Root, fresh: Root, data: st.DataObject) -> None:
    _reset(template, fresh)
    fresh.calibration_config.write_text(_mutate(DEFAULT_CONFIG_TEXT, data, RANGE_TEXT))
    for args in (("status",), ("calibrate", "--underlying", "BTC", "--snapshot", str(SNAPSHOT), "--rv", "0.45")):
        _check(fresh, *args)


@pytest.mark.parametrize("which", ["applied", "calibration_config"])
@pytest.mark.parametrize("kind", ["fifo", "/dev/zero", "/dev/null", "directory"])
def test_special_files_in_place_of_the_files_of_record_are_refused_in_one_line(template: Root, fresh: Root, which: str, kind: str) -> None:
    path = getattr(fresh, which)
    path.unlink()
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path.symlink_to(kind)
    for args in (("status",), ("doctor",), ("force-apply", "--underlying", "BTC")):
        assert _check(fresh, *args) == EXIT_REFUSED, args


ACTION_VALUES = st.one_of(
    st.sampled_from(["BTC", "ETH", "btc", "", "x" * 100, "01J0000000000000000000000"]), st.booleans(), st.none(),
    st.integers(-2, 2), st.floats(allow_nan=True), st.lists(st.integers(), max_size=2), st.text(max_size=20),
)
ACTION_KEYS = st.sampled_from(["underlying", "run_id", "nonce", "preview", "allow_unrealistic", "extra"])


@FUZZ
@given(pairs=st.lists(st.tuples(ACTION_KEYS, ACTION_VALUES), max_size=6), action=st.sampled_from(["force-apply", "rollback", "nope"]))
def test_fuzzed_action_bodies_are_answered_or_refused_and_change_nothing_unless_done(template: Root, fresh: Root, pairs, action) -> None:  # type: ignore[no-untyped-def]
    from calreport import jsonio
    from calreport.commands.dashboard import DashboardActions, parse_body
    from calreport.errors import CalreportError

    _reset(template, fresh)
    raw = "{" + ", ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in pairs) + "}"  # duplicate keys included
    before = _record(fresh)
    try:
        doc = jsonio.loads_unique(raw)
        status, answer = DashboardActions(fresh, warn=lambda _m: None).handle(action, parse_body(doc), lambda _c: None)
    except (ValueError, CalreportError):
        status, answer = 400, {"error": "refused before the use case"}
    assert status in (200, 400, 404, 409), (status, answer)
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys) or "nonce" not in keys or status != 200:  # no confirmed nonce: nothing written
        assert _record(fresh) == before, (raw, status, answer)


# --------------------------------------------------------------------------- the previous system's harvest (import-harvest)

LEGACY_HOSTILE_COLUMN = [
    None, "drop", "strings", "nulls", "huge", "negative", "bool",
]
LEGACY_TIMES = [10**18, -1, 0, 2**63 - 1, None, 1765454400000 * 10**6, 1765454400000, 1765454400]


def _legacy_file(path: Path, ts_ms: int, n: int, column: str, spoil: str | None, raw_time: int | None | str) -> None:
    """One previous-system snapshot file (its column names), possibly spoiled one way."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    strikes = [80000 + 1000 * (i // 2) for i in range(n)]
    cols: dict[str, pa.Array] = {
        "harvest_time": pa.array([ts_ms * 1_000_000] * n, pa.int64()).cast(pa.timestamp("ns", tz="UTC")),
        "instrument_name": pa.array([f"BTC-19DEC25-{k}-{'C' if i % 2 else 'P'}" for i, k in enumerate(strikes)]),
        "mark_price": pa.array([0.01 + 0.001 * i for i in range(n)]),
        "mark_iv": pa.array([45.0] * n),
        "underlying_price": pa.array([92000.0] * n),
        "best_bid_price": pa.array([0.0098] * n),
        "best_ask_price": pa.array([0.0102] * n),
        "open_interest": pa.array([10.0] * n),
    }
    if raw_time != "keep":
        cols["harvest_time"] = pa.array([raw_time] * n, pa.int64())
    if spoil == "drop":
        cols.pop(column)
    elif spoil == "strings":
        cols[column] = pa.array(["x"] * n)
    elif spoil == "nulls":
        cols[column] = pa.nulls(n, cols[column].type)
    elif spoil == "huge":
        cols[column] = pa.array([2**62] * n, pa.int64())
    elif spoil == "negative":
        cols[column] = pa.array([-1.0] * n)
    elif spoil == "bool":
        cols[column] = pa.array([True] * n)
    pq.write_table(pa.table(cols), path)


@settings(FUZZ, max_examples=reps(10, 150))
@given(
    files=st.lists(
        st.tuples(
            st.integers(0, 3),  # snapshot (15 minutes apart)
            st.integers(0, 12),  # rows
            st.sampled_from(["harvest_time", "instrument_name", "mark_price", "mark_iv", "underlying_price", "best_bid_price"]),
            st.sampled_from(LEGACY_HOSTILE_COLUMN),
            st.one_of(st.just("keep"), st.sampled_from(LEGACY_TIMES)),
            st.sampled_from([None, None, None, "garbage", "passwd", "fifo", "copy", "empty"]),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_previous_system_harvest_is_imported_or_refused_in_one_line(
    template: Root, fresh: Root, tmp_path_factory: pytest.TempPathFactory, files: list
) -> None:
    _reset(template, fresh)
    src = tmp_path_factory.mktemp("legacy")
    day = src / "BTC" / "2025" / "12" / "11"
    day.mkdir(parents=True)
    for i, (snap, n, column, spoil, raw_time, kind) in enumerate(files):
        path = day / f"BTC_2025-12-11_{i:02d}{snap * 15:02d}.parquet"
        if kind == "passwd":
            path.symlink_to("/etc/passwd")
        elif kind == "fifo":
            os.mkfifo(path)
        elif kind == "garbage":
            path.write_bytes(b"PAR1" + os.urandom(40))
        elif kind == "empty":
            path.write_bytes(b"")
        else:
            _legacy_file(path, 1765440000000 + snap * 900_000, n, column, spoil, raw_time)
            if kind == "copy":
                shutil.copy(path, path.with_name("copy-" + path.name))
    harvest = fresh.harvest_dir("BTC")
    before = sorted(p.name for p in harvest.iterdir()) if harvest.is_dir() else []
    code = _check(fresh, "import-harvest", str(src), "--underlying", "BTC")
    after = sorted(p.name for p in harvest.iterdir() if not p.name.endswith(".lock")) if harvest.is_dir() else []
    if code == EXIT_REFUSED:
        assert after == [p for p in before if not p.endswith(".lock")], "a refused import wrote into the harvest"
    else:
        frame = load_harvest(fresh, "BTC", 0, 2 * 1765440000000)
        keys = list(zip(frame.harvested_at.tolist(), frame.code.tolist(), strict=True))
        assert len(keys) == len(set(keys)), "a (snapshot, instrument) imported twice"
        _check(fresh, "import-harvest", str(src), "--underlying", "BTC")  # again: idempotent
        assert len(load_harvest(fresh, "BTC", 0, 2 * 1765440000000)) == len(frame)
        _check(fresh, "auto-calibrate", "--underlying", "BTC", "--as-of", "2025-12-11T12:00:00Z", "--lookback", "1d")
