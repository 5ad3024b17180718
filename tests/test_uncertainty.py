"""multiplier_se / multiplier_ci95 (calibration/uncertainty.py) and the policy's SE rule.

The real-data test re-derives the expiry bootstrap on the shared BTC 2025-12-13 snapshot with a
plain implementation (own instrument parser, scipy.stats.norm Black-76, brentq IV, one bounded
Brent fit per draw over the replicated quotes) and requires agreement within 5 %.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.optimize import brentq, minimize_scalar
from scipy.stats import norm

from calreport.apply import decide
from calreport.calibration.uncertainty import (
    Z95,
    bootstrap_se,
    combine,
    iv_terms,
    rv_se,
)
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import AppliedEntry, LiveRun, Multipliers, PolicyConfig, RunDetail
from calreport.store.paths import Root
from tests.independent import b76, expiry_seconds
from tests.test_calibrate import synth_rows, write_snapshot

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
SNAP = SHARED / "deribit-snapshots" / "BTC-2025-12-13T1543Z.json"


def test_expiries_that_agree_give_a_zero_bootstrap_error() -> None:
    base = np.full(6, 0.5)
    sigma = base * 0.9  # every expiry says 0.9
    se, n_exp, draws = bootstrap_se(iv_terms(base, sigma, np.ones(6)), np.ones(6), np.array([1, 1, 2, 2, 3, 3]),
                                    bounds=(0.5, 3.0), draws=50, seed=1)
    assert n_exp == 3 and draws == 50
    assert se == pytest.approx(0.0, abs=1e-3)


def test_bootstrap_error_of_disagreeing_expiries_matches_a_plain_loop_and_is_seeded() -> None:
    ratios = np.array([0.8, 0.9, 1.0, 1.1, 1.25])  # one quote per expiry, equal weights
    base = np.full(5, 0.5)
    args = (iv_terms(base, base * ratios, np.ones(5)), np.ones(5), np.arange(5))
    se, n_exp, _ = bootstrap_se(*args, bounds=(0.5, 3.0), draws=300, seed=7)
    counts = np.random.default_rng(7).multinomial(5, np.full(5, 0.2), size=300)
    plain = []
    for c in counts:  # weighted median of the resampled ratios, by brute force on a fine grid
        grid = np.linspace(0.5, 1.5, 20001)
        plain.append(grid[np.argmin((c[None, :] * np.abs(grid[:, None] - ratios[None, :])).sum(axis=1))])
    assert n_exp == 5
    assert se == pytest.approx(float(np.std(plain, ddof=1)), rel=0.02)
    assert bootstrap_se(*args, bounds=(0.5, 3.0), draws=300, seed=7)[0] == se
    assert bootstrap_se(*args, bounds=(0.5, 3.0), draws=300, seed=8)[0] != se


def test_one_expiry_has_no_bootstrap_and_manual_rv_no_rv_term() -> None:
    assert bootstrap_se(iv_terms(0.5, np.array([0.5, 0.6]), np.ones(2)), np.ones(2), np.array([1, 1]),
                        bounds=(0.5, 3.0), draws=50, seed=1)[0] is None
    assert rv_se(0.9, 26, manual=False) == pytest.approx(0.9 / math.sqrt(52))
    assert rv_se(0.9, 0, manual=True) is None


def test_combined_error_is_root_sum_of_squares_with_a_log_symmetric_interval() -> None:
    u = combine(1.0, 0.03, 0.04)
    assert u.se == pytest.approx(0.05)
    lo, hi = u.ci95  # type: ignore[misc]
    assert lo * hi == pytest.approx(1.0) and hi == pytest.approx(math.exp(Z95 * 0.05))
    assert combine(1.0, None, None).se is None


def _run(g: float, se: float | None) -> LiveRun:
    return LiveRun(
        run_id="r", ts="2025-12-11T10:00:00Z", underlying="BTC", samples=200, vega_sum=20.0, status="ok",
        recommended=Multipliers(global_=g), smoothed=Multipliers(global_=g), rv_source="manual",
        multiplier_se=Multipliers(global_=se) if se is not None else None,
    )


def test_policy_holds_a_change_inside_its_standard_error_and_applies_one_beyond_it() -> None:
    applied = AppliedEntry(global_=1.0, source="policy", run_id="r0")  # applied by a run (untouched defaults take a fit whole)
    policy = PolicyConfig(min_delta=0.03, min_delta_se=1.0)
    d, reason = decide(_run(1.05, 0.0613), applied, policy)
    assert d == "hold" and reason.startswith("Change too small (global d=0.0500 < 0.0613 = 1 x SE")
    assert decide(_run(1.07, 0.0613), applied, policy)[0] == "apply"
    assert decide(_run(1.05, None), applied, policy)[0] == "apply"  # older rows: min_delta only
    assert decide(_run(1.05, 0.0613), applied, PolicyConfig(min_delta=0.03, min_delta_se=0.0))[0] == "apply"


def test_a_live_run_records_se_and_ci95_for_global_and_each_band(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    # the surface refit is off by default (its cost); switched on here with a few draws, and intervals
    # allowed from as few distinct resamples as those give (the refusal has its own tests)
    text = root.calibration_config.read_text().replace("refit_draws: 0,", "refit_draws: 6,")
    root.calibration_config.write_text(text.replace("min_distinct_resamples: 20", "min_distinct_resamples: 2"))
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1, smile=0.3))
    run = actions.run_live_calibration(Workspace.open(root), "BTC", snap, rv=0.45)
    assert run.multiplier_se is not None and run.multiplier_se.global_ is not None
    assert set(run.multiplier_se.bands) == set(run.recommended.bands)  # type: ignore[union-attr]
    lo, hi = run.multiplier_ci95.global_  # type: ignore[union-attr, misc]
    assert lo < run.recommended.global_ < hi  # type: ignore[union-attr, operator]
    # the surface is what rv mode applies: its refit bootstrap, with the configured draws (manual RV: no RV term)
    g = run.uncertainty["global"]  # type: ignore[index]
    assert g.method == "surface refit" and g.se_rv is None and g.draws == 6
    assert all(len(run.uncertainty[b].nodes) == 7 for b in run.recommended.bands)  # type: ignore[index, union-attr, arg-type]


# ------------------------------------------------------------------ independent cross-check

@pytest.mark.realdata
def test_bootstrap_se_on_the_shared_btc_snapshot_agrees_with_an_independent_refit(tmp_path: Path) -> None:
    if not SNAP.is_file():
        pytest.skip("../shared/data is absent")
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    draws, seed = 80, 11
    # the flat grid bootstrap (auto runs, the flat model): smile off, so the level it refits is the one recommended
    text = root.calibration_config.read_text().replace("bootstrap_draws: 400", f"bootstrap_draws: {draws}")
    text = text.replace("smile:\n  enabled: true", "smile:\n  enabled: false")
    assert "smile:\n  enabled: false" in text
    root.calibration_config.write_text(text)
    run = actions.run_live_calibration(Workspace.open(root), "BTC", SNAP, rv=0.45)
    detail = RunDetail.model_validate_json((root.path / run.detail_file).read_text())  # type: ignore[operator]
    used = {q.instrument for q in detail.quotes}

    rows = {r["instrument_name"]: r for r in json.loads(SNAP.read_text())["result"]}
    now = max(r["creation_timestamp"] for r in rows.values()) / 1000.0
    F, K, t, call, mark, exp = [], [], [], [], [], []
    for name in sorted(used):  # own parser: BTC-13DEC25-90000-C, expiry 08:00 UTC
        _, d, k, cp = name.split("-")
        e = expiry_seconds(d)
        F.append(rows[name]["underlying_price"]); K.append(float(k)); t.append((e - now) / (365 * 86400))
        call.append(cp == "C"); mark.append(rows[name]["mark_price"]); exp.append(e)
    F, K, t, mark, exp = (np.array(a, dtype=float) for a in (F, K, t, mark, exp))
    call = np.array(call)
    iv = np.array([  # the mark's own IV, one brentq per quote
        brentq(lambda s, i=i: float(b76(F[i:i+1], K[i:i+1], t[i:i+1], np.array([s]), call[i:i+1])[0]) - mark[i], 1e-4, 10.0)
        for i in range(mark.size)
    ])
    w = norm.pdf(np.log(F / K) / (iv * np.sqrt(t)) + 0.5 * iv * np.sqrt(t)) * np.sqrt(t)
    keys = np.unique(exp)
    counts = np.random.default_rng(seed).multinomial(keys.size, np.full(keys.size, 1.0 / keys.size), size=draws)
    per_quote = counts[:, np.searchsorted(keys, exp)]  # draws x quotes: how often each quote is drawn

    def refit(c: np.ndarray) -> float:
        def f(m: float) -> float:
            return float((c * w * np.abs(b76(F, K, t, np.full(F.size, 0.45 * m), call) - mark) / mark).sum() / (c * w).sum())
        coarse = np.geomspace(0.5, 3.0, 60)
        j = int(np.argmin([f(m) for m in coarse]))
        res = minimize_scalar(f, bounds=(coarse[max(j - 1, 0)], coarse[min(j + 1, 59)]), method="bounded",
                              options={"xatol": 1e-7})
        return float(res.x)

    ms = np.array([refit(c) for c in per_quote])
    assert run.uncertainty["global"].expiries == keys.size  # type: ignore[index]
    assert run.uncertainty["global"].se_expiry == pytest.approx(float(np.std(ms, ddof=1)), rel=0.05)  # type: ignore[index]
    assert run.multiplier_se.global_ == run.uncertainty["global"].se  # type: ignore[union-attr, index]


def test_dashboard_shows_the_standard_error_beside_each_recommended_multiplier(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    from calreport.model import Interval95
    from calreport.report.render import render_site

    rows.live(recommended=0.9467, bands={"0-7d": 0.856}, multiplier_se=Multipliers(global_=0.0156, bands={"0-7d": 0.0636}),
              multiplier_ci95=Interval95(global_=[0.9167, 0.9778]))
    rows.auto(multiplier=1.12, multiplier_se=0.041)
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    assert html.count("\u00b10.0156") >= 3  # latest card, live card, live history row
    assert "\u00b10.0636" in html and "\u00b10.0410" in html
    assert "95 %: 0.9167-0.9778" in html


def test_rows_without_a_standard_error_render_no_plus_minus(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    from calreport.report.render import render_site

    rows.live()
    rows.auto()
    render_site(root)
    assert "\u00b1" not in root.index_html.read_text(encoding="utf-8")


def test_the_latest_run_card_says_what_its_se_rests_on(tmp_path: Path) -> None:
    """Under the default config (fit.surface_se flat) a surface run's ± is the flat fit's bootstrap, another
    statistic than the surface's: the card says so and names the setting that gives the surface's own; "wild
    cluster" with its refits under fit.surface_se wild; "surface refit" with its draws under the opt-in resampling."""
    snap = write_snapshot(tmp_path / "s.json", synth_rows(rv=0.45, multiplier=1.1, smile=0.3))
    basis = {}
    for name, edit in (("default", ("", "")), ("wild", ("surface_se: flat,", "surface_se: wild,")), ("resample", ("refit_draws: 0,", "refit_draws: 2,"))):
        root = Root(tmp_path / name)
        actions.init(Workspace.open(root))
        text = root.calibration_config.read_text()
        assert edit[0] in text
        root.calibration_config.write_text(text.replace(*edit) if edit[0] else text)
        actions.calibrate(Workspace.open(root), "BTC", snap, rv=0.45)
        page = (root.path / "site" / "index.html").read_text()
        basis[name] = page.split('data-field="se-basis"', 1)[1].split(">", 1)[1].split("<", 1)[0]
    assert basis["default"] == "±: flat-fit SE, not the surface SE (fit.surface_se: wild gives that)"
    assert basis["wild"] == "±: wild cluster, 16 refits"  # the synthetic chain's 5-8 expiries: a 16-run design
    assert basis["resample"] == "±: surface refit, 2 draws"
