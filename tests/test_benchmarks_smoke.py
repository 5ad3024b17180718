"""The benchmark harness runs and its correctness checks hold (quick mode; no timing assertions)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/ is not installed, only calreport

import benchmarks.__main__ as bench_main
from benchmarks import (
    Figure,
    bench_append,
    bench_iv,
    bench_pricing,
    fmt_value,
    percentile,
)


def _finite_positive(f: Figure) -> bool:
    return math.isfinite(f.value) and f.value > 0


def test_pricing_quick_produces_throughput_and_loop_baseline_agrees() -> None:
    figs = bench_pricing.run(quick=True)
    assert [f.name for f in figs[:2]] == ["pricing throughput, 1e+04 options", "pricing throughput, 1e+05 options"]
    assert all(_finite_positive(f) and f.baseline and f.ratio for f in figs)
    F, K, T, sigma, is_call = bench_pricing.chain_inputs(200)
    loop = np.array(bench_pricing.loop_price(*(a.tolist() for a in (F, K, T, sigma, is_call))))
    assert np.max(np.abs(loop - bench_pricing.black76_price(F, K, T, sigma, is_call))) < 1e-12


def test_iv_quick_error_within_target_and_bisection_baseline_converges() -> None:
    figs = bench_iv.run(quick=True)
    rate, error = figs
    assert _finite_positive(rate) and rate.baseline and rate.baseline > 0
    assert error.value <= bench_iv.TARGET_ERROR and error.met is True
    assert error.baseline is not None and error.baseline < 1e-9  # the baseline is a real inversion too


def test_concurrent_appends_lose_nothing() -> None:
    figs = bench_append.run(quick=True)
    rate, lost, experiment = figs
    assert _finite_positive(rate) and rate.baseline and rate.baseline > 0
    assert lost.value == 0 and lost.met is True
    assert "0 lost, 0 duplicated, 0 torn" in experiment.notes[0]


def test_verify_counts_lost_duplicated_and_torn_lines(tmp_path) -> None:
    p = tmp_path / "h.jsonl"
    p.write_bytes(b'{"writer":0,"seq":0}\n{"writer":0,"seq":0}\n{"writer":1,"seq":0}\n{"writer":1,"se\n')
    assert bench_append.verify(p, 2, 2) == (2, 1, 1)  # (0,1) and (1,1) lost; (0,0) twice; one torn line


def test_main_prints_table_and_writes_results(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setattr(bench_main, "RESULTS_PATH", tmp_path / "RESULTS.md")
    assert bench_main.main(["--quick", "--only", "iv", "--write-results"]) == 0
    out = capsys.readouterr().out
    assert "| figure | value | baseline (same run) | ratio | target | met? |" in out
    assert "IV max abs error" in out
    text = (tmp_path / "RESULTS.md").read_text()
    assert "nproc" in text and "numpy" in text and "IV inversion throughput" in text


def test_unknown_benchmark_is_refused() -> None:
    with pytest.raises(SystemExit):
        bench_main.main(["--only", "nope"])


def test_helpers() -> None:
    assert percentile(list(range(1, 201)), 99) == 198
    assert fmt_value(0.0412, "s") == "41.2 ms" and fmt_value(1.5e7, "options/s") == "15.00M options/s"


def test_smile_bench_quick_runs_and_its_gathered_sigma_matches_per_band_interp() -> None:
    from benchmarks import bench_smile

    figs = bench_smile.run(quick=True)
    assert [f.name for f in figs] == [
        "pricing with the smile (EngineView.price: sigma + Black-76), 1e+04 options",
        "pricing with the smile (EngineView.price: sigma + Black-76), 1e+05 options",
    ]
    assert all(_finite_positive(f) and f.baseline for f in figs)
    v = bench_smile.view(True)
    F, K, T, _ = bench_smile.chain(20_000)
    assert np.max(np.abs(v.sigma("BTC", K, F, T, 0.43) - bench_smile.reference_sigma(v, K, F, T, 0.43))) < 1e-14


def test_uncertainty_quick_vectorised_bootstrap_matches_one_fit_per_draw() -> None:
    """The vectorised expiry bootstrap and the refit-per-draw baseline give the same standard error."""
    from benchmarks import bench_uncertainty

    (fig,) = bench_uncertainty.run(quick=True)
    assert _finite_positive(fig) and fig.baseline and fig.baseline > 0
    vec, loop = (float(x) for x in fig.notes[0].split("se vectorised ")[1].split(" vs one fit per draw "))
    assert vec == pytest.approx(loop, rel=0.05)
