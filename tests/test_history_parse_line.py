"""A history line is validated straight from its bytes (history.parse_line: pydantic's own JSON parser)
and reads exactly as jsonio.loads + parse_row read it: the same rows, the same lines unreadable.
pydantic's parser takes what jsonio's refuses or reads otherwise (NaN, Infinity, numbers beyond the
float range, integers beyond 64 bits); such lines must go on reading as before, line by line and in
a long scan, where a whole block is checked for them at once (history._number_suspects)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from calreport import jsonio
from calreport.model import AutoRun, LiveRun
from calreport.store import history
from calreport.store.history import index_history, parse_line, parse_row, read_history

_ROW = b'{"schema_version":1,"type":"auto_run","run_id":"01KBS35CG0VZWT1WW624M7BQBD","ts":"2025-12-06T05:46:40Z","underlying":"BTC"'
_LIVE = b'{"type":"live_run","run_id":"01KBS35CG0VZWT1WW624M7BQBE","ts":"2025-12-06T05:46:40Z","underlying":"ETH"'

LINES = {
    "plain": _ROW + b',"mae_pct":11.34,"samples":1584,"status":"ok"}',
    "live": _LIVE + b',"multiplier_tested":1.1,"recommended":{"global":1.05}}',
    "apply": b'{"type":"apply","run_id":"a1","applied":{"global":1.1},"source":"force"}',
    "unknown type": b'{"type":"mystery","run_id":"m1","x":1}',
    "no type": b'{"run_id":"x","x":{"type":"auto_run"}}',
    "empty object": b"{}",
    "array": b"[1,2]",
    "type not a string": b'{"type":5}',
    "nested type first": b'{"x":{"type":"auto_run"},"type":"live_run","run_id":"y"}',
    "duplicate type": b'{"type":"live_run","type":"auto_run","run_id":"y"}',
    "duplicate type, last wrong": b'{"type":"auto_run","type":5,"run_id":"y"}',
    "duplicate field": _ROW + b',"samples":"x","samples":3}',
    "duplicate field, last wrong": _ROW + b',"samples":3,"samples":"x"}',
    "duplicate extra": _ROW + b',"zz":1,"yy":2,"zz":3}',
    "NaN": _ROW + b',"mae_pct":NaN}',
    "Infinity": _ROW + b',"mae_pct":Infinity}',
    "-Infinity": _ROW + b',"mae_pct":-Infinity}',
    "NaN in an extra": _ROW + b',"zz":NaN}',
    "NaN hidden by a duplicate": _ROW + b',"mae_pct":NaN,"mae_pct":1.0}',
    "NaN as text": _ROW + b',"reason":"NaN here, Infinity there"}',
    "nan string": _ROW + b',"mae_pct":"nan"}',
    "1e400": _ROW + b',"mae_pct":1e400}',
    "1E+400 in an extra": _ROW + b',"zz":1E+400}',
    "0.5e309": _ROW + b',"mae_pct":0.5e309}',
    "overflow hidden by a duplicate": _ROW + b',"mae_pct":2e308,"mae_pct":1.0}',
    "long mantissa": _ROW + b',"zz":' + b"9" * 400 + b".0}",
    "1e-400": _ROW + b',"mae_pct":1e-400}',
    "subnormal": _ROW + b',"mae_pct":4.9406564584124654e-324}',
    "max float": _ROW + b',"mae_pct":1.7976931348623157e308}',
    "u64 max": _ROW + b',"samples":18446744073709551615}',
    "beyond u64": _ROW + b',"samples":18446744073709551616}',
    "beyond i64": _ROW + b',"samples":-9223372036854775809}',
    "big int extra": _ROW + b',"zz":123456789012345678901234567890}',
    "big int float field": _ROW + b',"mae_pct":123456789012345678901234567890}',
    "lone surrogate": _ROW + b',"reason":"\\ud800"}',
    "surrogate pair": _ROW + b',"reason":"\\ud83d\\ude00"}',
    "invalid utf-8": _ROW + b',"reason":"\xff"}',
    "raw control char": _ROW + b',"reason":"a\x01b"}',
    "trailing garbage": _ROW + b"} x",
    "trailing comma": _ROW + b",}",
    "form feed": b'{\x0c"type":"auto_run"}',
    "whitespace around": b"  " + _ROW + b"}  \r",
    "deep extra": _ROW + b',"zz":' + b"[" * 300 + b"]" * 300 + b"}",
    "too deep": _ROW + b',"zz":' + b"[" * 1100 + b"]" * 1100 + b"}",
    "bad status": _ROW + b',"status":"weird"}',
    "bad flag": _ROW + b',"flags":[{"code":"NOPE","message":"m"}]}',
    "string number": _ROW + b',"samples":"3","mae_pct":"3.5"}',
    "float for an int": _ROW + b',"samples":3.0}',
    "leading zero": _ROW + b',"mae_pct":01}',
    "hex settings hash": _ROW + b',"settings_hash":"e1234abcde99"}',
}


def _read_as_before(line: bytes) -> object:
    """What the line reads as by the one rule (jsonio.loads, then parse_row): the row's type, fields,
    extras and the fields it set, or "unreadable"."""
    try:
        return _shown(parse_row(jsonio.loads(line)))
    except (ValueError, ValidationError, TypeError):
        return "unreadable"


def _shown(row: object) -> object:
    return (type(row), repr(row.__dict__), repr(row.__pydantic_extra__), sorted(row.model_fields_set))  # type: ignore[attr-defined]


def _read_now(line: bytes, checked: bool = False) -> object:
    try:
        return _shown(parse_line(line, checked))
    except (ValueError, ValidationError, TypeError):
        return "unreadable"


@pytest.mark.parametrize("name", sorted(LINES))
def test_a_line_reads_as_jsonio_and_parse_row_read_it(name: str) -> None:
    line = LINES[name]
    assert _read_now(line) == _read_as_before(line)


@pytest.mark.parametrize("name", ["NaN", "Infinity", "-Infinity", "NaN in an extra", "NaN hidden by a duplicate", "1e400",
                                  "1E+400 in an extra", "0.5e309", "overflow hidden by a duplicate", "beyond i64"])
def test_numbers_jsonio_refuses_stay_unreadable(name: str) -> None:
    assert _read_now(LINES[name]) == "unreadable"


def test_a_well_formed_row_is_validated_in_one_pass_from_its_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(data: object) -> None:
        raise AssertionError("went the old way")

    monkeypatch.setattr(history, "parse_row", boom)
    assert isinstance(parse_line(LINES["plain"]), AutoRun)
    assert isinstance(parse_line(LINES["live"]), LiveRun)


def _history(tmp_path: Path, lines: list[bytes]) -> Path:
    path = tmp_path / "auto_calibrate.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_a_long_scan_reads_every_line_as_read_history_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A block long enough to be checked at once (_number_suspects), with the odd lines among good rows."""
    monkeypatch.setattr(history, "_SUSPECT_STEP", 4096)  # many windows, and lines across their edges
    rnd = random.Random(7)
    good = [_ROW[:-2] + f'{i:02d}","mae_pct":{rnd.random() * 20:.4f},"samples":{rnd.randrange(10**6)}}}'.encode() for i in range(3000)]
    lines = good[:]
    for i, odd in enumerate(sorted(LINES)):
        lines.insert(37 * i + 5, LINES[odd])
    lines.insert(100, b"")
    path = _history(tmp_path, lines)
    assert path.stat().st_size >= history._BLOCK_CHECK_MIN
    index = index_history(path)
    before = read_history(path)
    assert index.skipped_lines == before.skipped_lines
    want = [r for r in (_read_as_before(line) for line in lines if line.strip()) if r != "unreadable"]
    assert [_shown(index.row(ref)) for ref in index.refs] == want == [_shown(r) for r in before.rows]


def test_the_block_check_finds_what_the_line_check_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wherever a pattern falls, across the check's windows too, the block check names a start inside
    every line the line check flags (its superset is fine: those lines only take the old way)."""
    monkeypatch.setattr(history, "_SUSPECT_STEP", 64)
    rnd = random.Random(11)
    pieces = [b"1234567890123456789", b"NaN", b"Infinity", b"1e400", b"2E+308", b"12345678901234567", b"e12", b"abc", b'"x":1.5,']
    lines = [b"".join(rnd.choice(pieces) for _ in range(rnd.randrange(1, 8))) for _ in range(2000)]
    data = b"\n".join(lines) + b"\n"
    found = history._number_suspects(data, len(data))
    assert found == sorted(found)
    pos = 0
    for line in lines:
        inside = [p for p in found if pos <= p < pos + len(line)]
        if history._numbers_may_differ(line):
            assert inside, line
        pos += len(line) + 1
