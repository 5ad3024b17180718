"""`calreport backtest` on the shared BTC harvest (../shared/data), the issue's done-when, and one
score checked against an independent computation from the raw harvest lines."""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from scipy.stats import norm
from threadpoolctl import threadpool_limits

from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.commands.workspace import Workspace
from calreport.model import BacktestDecision, BacktestSummary
from calreport.store.paths import Root
from tests.independent import copy_compacted_harvest

HARVEST = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-harvest-2025-12" / "BTC"
WINDOW = ["--from", "2025-12-10T00:00:00Z", "--to", "2025-12-13T16:00:00Z", "--every", "1h", "--horizons", "1h,24h"]

pytestmark = pytest.mark.realdata


@pytest.fixture(autouse=True)
def _one_blas_thread():  # type: ignore[no-untyped-def]
    """Many small fits in a row: one BLAS thread, as `calreport backtest` runs them (same results, less waiting)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def shared_root(tmp_path: Path, compacted_btc_harvest: Path) -> Root:
    """A root holding the shared BTC harvest, compacted (the format is not the point here; the run's
    one compacted copy, read in a tenth of the time of the gzip logs)."""
    root = Root(tmp_path / "root")
    actions.init(Workspace.open(root))
    copy_compacted_harvest(compacted_btc_harvest, root)
    assert list(root.harvest_dir("BTC").glob("*.parquet")), f"no harvest day files in {HARVEST}"
    return root


def _digest(root: Root) -> dict[str, str]:
    return {
        str(p.relative_to(root.path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for sub in ("config", "history", "site")
        for p in sorted((root.path / sub).rglob("*"))
        if p.is_file()
    }


def _backtest(root: Root, *extra: str) -> tuple[BacktestSummary, list[BacktestDecision]]:
    before = _digest(root)
    assert main(["--root", str(root.path), "backtest", "--underlying", "BTC", *WINDOW, *extra]) == 0
    assert _digest(root) == before  # YAML, history and site byte-identical
    d = max(root.backtests_dir.iterdir())
    summary = BacktestSummary.model_validate_json((d / "summary.json").read_bytes())
    rows = [BacktestDecision.model_validate_json(ln) for ln in (d / "decisions.jsonl").read_bytes().splitlines()]
    return summary, rows


def test_done_when_command_on_the_shared_harvest_holds_every_run_for_thin_harvest_rv(shared_root: Root) -> None:
    """The issue's command finishes, writes the summary, leaves the root untouched. With RV_7d from the
    harvest (at most 26 hourly returns in this harvest) the policy holds every run for thin RV."""
    summary, rows = _backtest(shared_root)
    v = summary.variants["root"]
    assert summary.horizons == ["0h", "1h", "24h"] and len(rows) == 89
    assert v["runs"] == 24 and v["applies"] == 0 and v["thin_rv_share"] == 1.0
    assert max(r.rv_returns or 0 for r in rows) <= 26
    assert set(v["holds"]) <= {"Thin RV", "Realism failed"} and v["holds"]["Thin RV"] >= 20
    for h in summary.horizons:
        assert v["horizons"][h]["iv_error_vp"]["mean"] > 0


def test_with_a_fixed_rv_the_policy_applies_and_out_of_sample_error_is_at_least_in_sample(shared_root: Root) -> None:
    """The done-when's out-of-sample check, on the same decisions (paired): the applied values score
    no better a horizon later than on the snapshot they were fitted to, on average over horizons."""
    summary, rows = _backtest(shared_root, "--rv", "0.45")
    v = summary.variants["root"]
    assert v["applies"] >= 5 and v["thin_rv_share"] == 0.0
    gaps = [v["horizons"][h]["iv_error_vp"]["mean"] - v["horizons"][h]["paired_in_sample_mean"] for h in ("1h", "24h")]
    assert sum(gaps) / len(gaps) >= 0


# --------------------------------------------------------------------------- independent check of one score


def _parse(name: str) -> tuple[int, float, bool] | None:
    parts = name.split("-")
    if len(parts) != 4 or parts[0] != "BTC":
        return None
    day = datetime.strptime(parts[1].title(), "%d%b%y").replace(hour=8, tzinfo=UTC)
    return int(day.timestamp() * 1000), float(parts[2]), parts[3] == "C"


def _independent_iv_error(snapshot_ms: int, rv: float, applied: dict) -> float:
    """OTM vega-weighted mean |sigma_syn - mark_iv| (vp) from the raw lines, with the default filters."""
    day = datetime.fromtimestamp(snapshot_ms / 1000, tz=UTC).strftime("%Y-%m-%d")
    if not (HARVEST / f"{day}.jsonl.gz").is_file():
        pytest.skip(f"../shared harvest day {day} is not the raw .jsonl.gz this check reads")
    num = den = 0.0
    with gzip.open(HARVEST / f"{day}.jsonl.gz", "rt") as fh:
        for line in fh:
            r = json.loads(line)
            if r.get("harvested_at") != snapshot_ms or (p := _parse(r["instrument_name"])) is None:
                continue
            exp, K, call = p
            F, mark, iv = r["underlying_price"], r["mark_price"], r["mark_iv"] / 100
            T = (exp - snapshot_ms) / (365 * 86_400_000)
            dte = T * 365
            bid, ask = r.get("bid_price"), r.get("ask_price")
            spread_ok = not (bid and ask and bid > 0 and ask > 0) or (ask - bid) / ((ask + bid) / 2) <= 2.0
            if not (1 <= dte <= 90 and mark >= 0.0005 and abs(math.log(K / F)) <= 0.5 and spread_ok and iv > 0):
                continue
            if (K >= F) != call:  # each strike once, on its OTM side
                continue
            band = "0-7d" if dte < 7 else "7-30d" if dte < 30 else "30-90d"
            sigma = rv * applied["bands"].get(band, applied["global"])
            d1 = (math.log(F / K) + 0.5 * iv * iv * T) / (iv * math.sqrt(T))
            w = norm.pdf(d1) * math.sqrt(T)  # Black-76 vega in coin per 1.00 vol
            num += w * abs(sigma - iv)
            den += w
    return num / den * 100


def test_a_stored_score_agrees_with_an_independent_computation_from_the_raw_harvest(shared_root: Root) -> None:
    """Flat model (smile off), so the independent side is a few lines of Black-76."""
    shared_root.calibration_config.write_text("smile: {enabled: false}\n")
    _, rows = _backtest(shared_root, "--rv", "0.45")
    applied_rows = [r for r in rows if r.decision == "apply" and r.scores["24h"].snapshot_ts]
    assert applied_rows
    r = applied_rows[0]
    score = r.scores["24h"]
    ms = int(datetime.fromisoformat(score.snapshot_ts.replace("Z", "+00:00")).timestamp() * 1000)  # type: ignore[union-attr]
    assert score.iv_error_vp == pytest.approx(_independent_iv_error(ms, 0.45, r.applied_after), rel=1e-6)  # type: ignore[arg-type]
