"""`calreport harvest --every`: the loop, its signals, its backoff, the index price, closed-day compaction."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from calreport.commands import usecases as actions
from calreport.commands.harvester import BACKOFF_START_S, run_harvester
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.market.deribit import DeribitClient
from calreport.market.harvest import load_harvest
from calreport.store.paths import Root

FIXTURES = Path(__file__).parent / "fixtures" / "deribit"
DEC11 = 1765440000000  # 2025-12-11T08:00:00Z


def test_index_price_reads_the_recorded_get_index_price_payload() -> None:
    urls: list[str] = []

    def opener(url: str, timeout: float) -> bytes:
        urls.append(url)
        return (FIXTURES / "index_price_btc.json").read_bytes()

    assert DeribitClient(opener=opener).index_price("BTC") == 92143.86
    assert urls == ["https://www.deribit.com/api/v2/public/get_index_price?index_name=btc_usd"]


@pytest.mark.parametrize(
    ("payload", "needle"),
    [
        ((FIXTURES / "error_envelope.json").read_text(), "Invalid params"),
        ('{"jsonrpc": "2.0", "result": {"estimated_delivery_price": 1.0}}', "no usable index_price"),
        ('{"jsonrpc": "2.0", "result": {"index_price": "92000"}}', "no usable index_price"),
    ],
)
def test_index_price_refuses_an_error_or_a_missing_price_in_one_line(payload: str, needle: str) -> None:
    with pytest.raises(CalreportError, match=needle) as exc:
        DeribitClient(opener=lambda u, t: payload.encode(), retries=0).index_price("BTC")
    assert "\n" not in exc.value.one_line()


class FakeDeribit(DeribitClient):
    """The real client over a replaying opener: the recorded book summary (its times moved on by
    `step_ms` per fetch) and the recorded index price; `fail` makes the next fetches time out."""

    def __init__(self, start_ms: int, step_ms: int = 300_000) -> None:
        super().__init__(opener=self.replay, retries=0, sleep=lambda s: None)
        self.book = json.loads((FIXTURES / "book_summary_btc.json").read_text())
        self.index = json.loads((FIXTURES / "index_price_btc.json").read_text())
        self.rows = self.book["result"]
        self.t = start_ms
        self.step = step_ms
        self.fail = 0
        self.on_fetch: Any = None
        self.calls = 0

    def replay(self, url: str, timeout: float) -> bytes:
        if "get_index_price" in url:
            self.index["result"]["index_price"] = 92000.0 + (self.t // self.step) % 1000
            return json.dumps(self.index).encode()
        self.calls += 1
        if self.on_fetch is not None:
            self.on_fetch()
        if self.fail:
            self.fail -= 1
            raise urllib.error.URLError("timed out")
        t, self.t = self.t, self.t + self.step
        rows = [{**r, "creation_timestamp": t} for r in self.rows]
        return json.dumps({**self.book, "result": rows}).encode()


def _ws(tmp_path: Path) -> Workspace:
    root = Root(tmp_path)
    actions.init(Workspace.open(root))
    return Workspace.open(root)


def test_the_loop_harvests_each_interval_with_the_index_price(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    fake = FakeDeribit(DEC11)
    clock = [DEC11 / 1000]
    waits: list[float] = []

    def wait(ev: threading.Event, s: float) -> bool:
        waits.append(s)
        clock[0] += s
        return False

    stats = run_harvester(ws, ["BTC"], 300, client=fake, clock=lambda: clock[0], max_cycles=3, wait=wait)
    assert (stats.cycles, stats.snapshots, stats.errors) == (3, 3, 0)
    assert waits == [300, 300]
    f = load_harvest(ws.root, "BTC", 0, DEC11 * 2)
    assert f.snapshot_times().tolist() == [DEC11, DEC11 + 300_000, DEC11 + 600_000]
    assert np.isfinite(f.index_price).all() and len(np.unique(f.index_price)) == 3


def test_network_errors_back_off_with_the_reason_logged_then_recover(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    fake = FakeDeribit(DEC11)
    fake.fail = 3
    waits: list[float] = []
    log: list[str] = []

    def wait(ev: threading.Event, s: float) -> bool:
        waits.append(s)
        return False

    stats = run_harvester(ws, ["BTC"], 60, client=fake, max_cycles=5, wait=wait, log=log.append)
    assert waits[:3] == [BACKOFF_START_S, 2 * BACKOFF_START_S, 4 * BACKOFF_START_S]
    assert (stats.errors, stats.snapshots) == (3, 2)
    assert sum("timed out" in line for line in log) == 3
    assert sum("next attempt in" in line for line in log) == 3


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_the_loop_after_the_current_write(tmp_path: Path, sig: signal.Signals) -> None:
    """The signal arrives while a snapshot is being fetched: that snapshot is still written whole,
    no further cycle starts, and the process's own handlers are back afterwards."""
    ws = _ws(tmp_path)
    fake = FakeDeribit(DEC11)
    fake.on_fetch = lambda: fake.calls == 2 and os.kill(os.getpid(), sig)
    before = signal.getsignal(sig)
    offset = time.time() - DEC11 / 1000  # the harvester's clock says Dec 11: the day stays open
    stats = run_harvester(ws, ["BTC"], 0.01, client=fake, max_cycles=50, clock=lambda: time.time() - offset)
    assert stats.stopped_by == sig.name and stats.cycles == 2 and fake.calls == 2
    day = ws.root.harvest_dir("BTC") / "2025-12-11.jsonl"
    lines = day.read_bytes().splitlines()
    assert len(lines) == 2 * len(fake.rows) and all(json.loads(ln) for ln in lines)  # whole lines only
    assert signal.getsignal(sig) is before


def test_a_stop_during_a_failing_fetch_does_not_announce_a_next_attempt(tmp_path: Path) -> None:
    """SIGTERM (systemctl stop) while Deribit is unreachable: the log ends with the stop, not with
    'network trouble: next attempt in 5 s', which no attempt follows."""
    ws = _ws(tmp_path)
    fake = FakeDeribit(DEC11)
    fake.fail = 5
    log: list[str] = []
    fake.on_fetch = lambda: os.kill(os.getpid(), signal.SIGTERM)
    stats = run_harvester(ws, ["BTC"], 60, client=fake, max_cycles=5, log=log.append)
    assert stats.stopped_by == "SIGTERM" and stats.cycles == 1 and stats.errors == 1
    assert not any("next attempt in" in line for line in log), log
    assert any("book summary failed" in line for line in log)


def test_the_loop_compacts_closed_days_once_per_utc_day(tmp_path: Path) -> None:
    ws = _ws(tmp_path)
    fake = FakeDeribit(DEC11 + 15 * 3_600_000, step_ms=3 * 3_600_000)  # 23:00, then 02:00 next day
    clock = [(DEC11 + 15 * 3_600_000) / 1000]

    def wait(ev: threading.Event, s: float) -> bool:
        clock[0] += s
        return False

    stats = run_harvester(ws, ["BTC"], 3 * 3600, client=fake, clock=lambda: clock[0], max_cycles=3, wait=wait)
    assert stats.compacted == ["BTC 2025-12-11"]
    names = sorted(p.name for p in ws.root.harvest_dir("BTC").iterdir() if not p.name.endswith(".lock"))
    assert names == ["2025-12-11.parquet", "2025-12-12.jsonl"]
    assert len(load_harvest(ws.root, "BTC", 0, DEC11 * 2).snapshot_times()) == 3


def test_every_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(CalreportError, match="--every"):
        run_harvester(_ws(tmp_path), ["BTC"], 0, client=FakeDeribit(DEC11), max_cycles=1)


def test_cli_harvest_argument_mistakes_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from calreport.commands.cli import main

    root = ["--root", str(_ws(tmp_path).root.path)]
    for args, needle in (
        (["harvest"], "--underlying is required"),
        (["harvest", "--every", "60", "--from-file", "x.json"], "cannot be combined with --from-file"),
        (["harvest", "compact", "--every", "60"], "harvest compact takes only --underlying"),
    ):
        assert main([*root, *args]) == 1
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1, (args, err)
    with pytest.raises(SystemExit) as exc:  # out of range: a usage error (exit 2)
        main([*root, "harvest", "--every", "-5", "--underlying", "BTC"])
    assert exc.value.code == 2 and "argument --every: expected a number in [1, 86400]" in capsys.readouterr().err
