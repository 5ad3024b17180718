"""Sweeps, runners and the generated market: a grid of variants gives the same decisions wherever it
runs (here, a process pool, a Dask cluster); the generated market scores against its known truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from calreport.calibration.backtest import NO_EVIDENCE, BacktestResult, Decision, block_length, paired_bootstrap, paired_differences
from calreport.commands import backtest as backtest_cmd
from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.commands.workspace import Workspace
from calreport.errors import CalreportError
from calreport.market.sample import SampleMarket
from calreport.model import BacktestSummary, CalibrationConfig
from calreport.store.paths import Root
from calreport.timeutil import MS_PER_DAY, MS_PER_HOUR


@pytest.fixture(autouse=True)
def _one_blas_thread():  # type: ignore[no-untyped-def]
    with threadpool_limits(limits=1):
        yield


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = Root(tmp_path / "root")
    w = Workspace.open(root, renderer=None)
    actions.init(w)
    return Workspace.open(root, renderer=None)


def _generated(ws: Workspace, out: Path, days: float = 0.2, sweep: tuple[str, ...] = ("alpha=1",), **kw) -> backtest_cmd.BacktestOutcome:  # type: ignore[no-untyped-def]
    # small on purpose: every decision fits the surface (~0.1-0.4 s); the 60-day run is a benchmark
    return backtest_cmd.run(ws, "BTC", generated=days, every="1h", horizons="1h,6h", sweep=list(sweep), out=out, mkdir=True, **kw)


def test_decisions_are_byte_identical_in_process_on_a_pool_and_on_a_dask_local_cluster(ws: Workspace, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    # 0.05 days: 2 hourly decisions per variant, the second starting from the state the first left (the size is not the point)
    here = _generated(ws, tmp_path / "here", days=0.05, workers=1)
    pool = _generated(ws, tmp_path / "pool", days=0.05, workers=2)
    with distributed.LocalCluster(processes=False, n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        dask = _generated(ws, tmp_path / "dask", days=0.05, scheduler=cluster.scheduler_address)
    assert (here.summary.workers, pool.summary.workers) == ("in-process", "pool:2")
    assert dask.summary.workers == cluster.scheduler_address
    reference = (here.directory / "decisions.jsonl").read_bytes()
    assert len(reference.splitlines()) == 2 * 2  # root + one swept variant x 2 hourly decisions (0.05 days)
    assert (pool.directory / "decisions.jsonl").read_bytes() == reference
    assert (dask.directory / "decisions.jsonl").read_bytes() == reference
    assert here.summary.differences == pool.summary.differences == dask.summary.differences


def test_a_sweep_makes_one_variant_per_combination_by_dotted_path_or_last_part() -> None:
    cfg = CalibrationConfig()
    grid = backtest_cmd.parse_sweeps(["alpha=0.3,1", "fit.min_rv_returns=24,48"])
    made = backtest_cmd.sweep_configs(cfg, grid)
    assert [n for n, _, _ in made] == ["alpha0.3+min_rv_returns24", "alpha0.3+min_rv_returns48", "alpha1+min_rv_returns24", "alpha1+min_rv_returns48"]
    assert [(c.smoothing.alpha, c.fit.min_rv_returns) for _, c, _ in made] == [(0.3, 24), (0.3, 48), (1, 24), (1, 48)]


def test_a_swept_value_equal_to_the_roots_own_is_the_root_variant_not_a_second_copy(ws: Workspace, tmp_path: Path) -> None:
    cfg = CalibrationConfig()  # alpha 0.3, as `calreport init` writes it
    made = backtest_cmd.sweep_configs(cfg, backtest_cmd.parse_sweeps(["alpha=0.3,1"]))
    assert [n for n, _, _ in made] == ["alpha1"]
    out = _generated(ws, tmp_path / "g", days=0.05, sweep=("alpha=0.3,1",), workers=1)
    assert list(out.summary.variants) == ["root", "alpha1"]
    assert "smoothing.alpha=0.3" in out.summary.variants["root"]["source"]  # the page says which swept value it stands for
    assert out.summary.sweep == {"alpha": [0.3, 1]}


@pytest.mark.parametrize(
    ("sweep", "needle"),
    [(["alpha"], "expected KEY=V1"), (["nosuch=1"], "no setting 'nosuch'"), (["alpha=7"], "alpha=7"), (["alpha=1", "alpha=2"], "twice")],
)
def test_a_bad_sweep_is_one_line_naming_the_problem(sweep: list[str], needle: str) -> None:
    with pytest.raises(CalreportError, match=needle):
        backtest_cmd.sweep_configs(CalibrationConfig(), backtest_cmd.parse_sweeps(sweep))


def test_an_unreachable_scheduler_is_one_line(ws: Workspace, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("distributed")
    monkeypatch.setattr(backtest_cmd, "SCHEDULER_TIMEOUT", "1s")  # the same refusal as after 10 s, sooner
    code = main(["--root", str(ws.root.path), "backtest", "--underlying", "BTC", "--generated", "0.1", "--scheduler", "tcp://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code != 0 and "--scheduler: cannot reach tcp://127.0.0.1:9" in err and "Traceback" not in err


def test_the_generated_market_scores_the_applied_surface_against_its_truth_beside_the_marks(ws: Workspace, tmp_path: Path) -> None:
    out = _generated(ws, tmp_path / "g", days=0.35, sweep=(), workers=1)
    s = BacktestSummary.model_validate_json((out.directory / "summary.json").read_bytes())
    assert s.generated == {"days": 0.35, "seed": 7, "every_minutes": 60.0}
    for v in s.variants.values():
        t = v["horizons"]["6h"]["truth_error_vp"]
        assert t["n"] == v["horizons"]["6h"]["decisions"] > 0 and 0 < t["mean"] < 20
    # independently: the default entry (every multiplier 1, flat smile) quotes RV; the truth error is |RV - sigma_true|
    row = next(r for r in out.decisions if r["variant"] == "root" and r["scores"].get("0h", {}).get("snapshot_ts"))
    assert row["applied_before"]["global"] == 1.0


def test_the_true_surface_is_what_the_generated_marks_scatter_around() -> None:
    t = 1_735_689_600_000 + 5 * MS_PER_HOUR
    m = SampleMarket("BTC", t - MS_PER_DAY, t + MS_PER_DAY)
    c = m.chain(t)
    T = (c["expiry_ms"] - t) / (365 * MS_PER_DAY)
    rel = c["iv"] / m.true_iv(t, np.log(c["strike"] / c["forward"]), T) - 1
    assert abs(float(np.mean(rel))) < 0.003 and 0.008 < float(np.std(rel)) < 0.016  # the 1.2 % noise, centred


# --------------------------------------------------------------------------- paired differences


def _result(a: list[float], b: list[float], horizon: str = "1h") -> BacktestResult:
    from calreport.model import LiveRun  # noqa: PLC0415

    run = LiveRun.model_construct(decision="hold")
    rows = []
    for i, (x, y) in enumerate(zip(a, b)):
        for name, v in (("a", x), ("b", y)):
            rows.append(Decision(name, i * MS_PER_HOUR, i * MS_PER_HOUR, run=run, scores={horizon: {"iv_error_vp": v}}))
    return BacktestResult(rows, [horizon], len(a), 0)


def test_a_difference_whose_interval_covers_zero_is_labelled_no_evidence() -> None:
    rng = np.random.default_rng(1)
    base = rng.normal(2, 0.3, 60)
    (row,) = paired_differences(_result(list(base + rng.normal(0, 0.2, 60)), list(base)), ["a", "b"], MS_PER_HOUR)
    assert row["low"] <= 0 <= row["high"] and row["verdict"] == NO_EVIDENCE and row["n"] == 60


def test_a_real_difference_is_named_with_the_better_variant() -> None:
    rng = np.random.default_rng(2)
    base = rng.normal(2, 0.3, 60)
    (row,) = paired_differences(_result(list(base + 0.5 + rng.normal(0, 0.2, 60)), list(base)), ["a", "b"], MS_PER_HOUR)
    assert row["low"] > 0 and row["verdict"] == "b better" and row["mean"] == pytest.approx(0.5, abs=0.1)


def test_too_few_decisions_give_no_interval_and_say_why() -> None:
    (row,) = paired_differences(_result([1.0] * 6, [0.5, 0.4, 0.6, 0.5, 0.5, 0.4]), ["a", "b"], MS_PER_HOUR)
    assert row["low"] is None and row["high"] is None and row["verdict"].startswith("too few decisions")
    (row,) = paired_differences(_result([1.0 + i % 3 for i in range(30)], [1.0] * 30, "24h"), ["a", "b"], MS_PER_HOUR)
    assert row["block"] == 24 and row["low"] is None  # 30 decisions are ~1 block of a day: no interval


def test_blocks_span_the_horizon_and_widen_the_interval_of_autocorrelated_differences() -> None:
    assert block_length(100, 24 * MS_PER_HOUR, MS_PER_HOUR) == 24 and block_length(100, 0, MS_PER_HOUR) == 5
    rng = np.random.default_rng(3)
    d = np.repeat(rng.normal(0, 1, 20), 10)  # runs of 10 equal differences: strongly autocorrelated
    lo1, hi1 = paired_bootstrap(d, 1)
    lo10, hi10 = paired_bootstrap(d, 10)
    assert hi10 - lo10 > 2 * (hi1 - lo1)
