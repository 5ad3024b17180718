"""Live means live: `calreport calibrate` without --snapshot fetches the chain, keeps it in the root
and runs on it. Tested against a recorded get_book_summary_by_currency payload (Deribit's real
shape), replayed by the client's opener and by a local http.server; never the network."""

from __future__ import annotations

import gzip
import json
import threading
import urllib.error
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from calreport.commands import cli
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.market.deribit import DeribitClient, load_snapshot
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

FIXTURES = Path(__file__).parent / "fixtures" / "deribit"
RECORDED = (FIXTURES / "book_summary_btc.json").read_bytes()


CHART = (FIXTURES / "chart_btc_perpetual_1h.json").read_bytes()
HVOL = (FIXTURES / "historical_volatility_btc.json").read_bytes()


def _replay(payload: bytes, seen: list[str]) -> DeribitClient:
    """Deribit's public API from recorded payloads: the chain, the perpetual's hourly chart, the HV."""
    def opener(url: str, timeout: float) -> bytes:
        seen.append(url)
        if "get_tradingview_chart_data" in url:
            return CHART
        if "get_historical_volatility" in url:
            return HVOL
        return payload

    return DeribitClient(opener=opener, sleep=lambda s: None)


def test_calibrate_without_a_snapshot_fetches_keeps_and_references_the_chain(root: Root) -> None:
    seen: list[str] = []
    run = actions.calibrate(Workspace.open(root), "BTC", None, rv=0.45, client=_replay(RECORDED, seen))
    assert len(seen) == 1 and "public/get_book_summary_by_currency" in seen[0] and "kind=option" in seen[0]
    assert "currency=BTC" in seen[0]  # --rv given: the price store is not fetched
    (kept,) = sorted((root.path / "data" / "snapshots" / "BTC").glob("*.json.gz"))
    assert run.snapshot_file == str(kept.relative_to(root.path))
    assert json.loads(gzip.decompress(kept.read_bytes()))["result"] == json.loads(RECORDED)["result"]
    rows, meta = load_snapshot(kept, "BTC")  # the kept file replays the run
    assert kept.name.startswith("2025-12-11T120000") and meta.n_rows == len(rows) == 20
    replay = actions.run_live_calibration(Workspace.open(root), "BTC", kept, rv=0.45)
    assert replay.recommended == run.recommended and replay.samples == run.samples


def test_a_network_failure_is_one_line_and_no_history_row(root: Root, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    def down(url: str, timeout: float) -> bytes:
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(actions, "make_client", lambda: DeribitClient(opener=down, sleep=lambda s: None))
    before = root.live_history.read_bytes()
    code = cli.main(["--root", str(root.path), "calibrate", "--underlying", "BTC", "--rv", "0.45"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and len(err) == 1
    assert "get_book_summary_by_currency failed" in err[0] and "Name or service not known" in err[0]
    assert root.live_history.read_bytes() == before
    assert not (root.path / "data" / "snapshots").exists()


def test_cli_fetches_from_a_local_http_server_speaking_deribits_json_rpc(root: Root, monkeypatch: pytest.MonkeyPatch, capsys) -> None:  # type: ignore[no-untyped-def]
    paths: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            paths.append(self.path)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(RECORDED)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/api/v2"
        monkeypatch.setattr(actions, "make_client", lambda: DeribitClient(base, timeout=5.0))
        assert cli.main(["--root", str(root.path), "calibrate", "--underlying", "BTC", "--rv", "0.45"]) == 0
    finally:
        server.shutdown()
        server.server_close()
    assert paths and paths[0].startswith("/api/v2/public/get_book_summary_by_currency?")
    (run,) = HistoryQuery.file_order(root, "live")
    assert run.snapshot_file and run.snapshot_file.startswith("data/snapshots/BTC/")
    assert "BTC live run" in capsys.readouterr().out


def test_live_calibrate_also_fetches_what_rv_needs_so_rv_rests_on_a_full_week(root: Root) -> None:
    seen: list[str] = []
    run = actions.calibrate(Workspace.open(root), "BTC", None, client=_replay(RECORDED, seen))
    methods = [u.split("/api/v2/")[1].split("?")[0] for u in seen]
    assert methods == ["public/get_tradingview_chart_data", "public/get_historical_volatility",
                       "public/get_book_summary_by_currency"]
    assert run.rv_source == "prices:BTC-PERPETUAL" and run.rv_returns is not None and run.rv_returns >= 120
    assert run.rv_warning is None and run.deribit_hv is not None
