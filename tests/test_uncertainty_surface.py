"""The uncertainty of what is applied (the surface's levels and smile nodes), checked against an independent
refit-per-draw bootstrap on the three shared snapshots (default config, `--rv` fixed, fewer draws).

Independent: its own resampling loop replicates each resampled expiry's quotes (np.repeat, not weights) and
calls the fits from scratch (fit_surface with its default IRLS rounds, fit_smile for the global level),
never calreport's bootstrap code. The draw set is shared (same seed, same multinomial counts), so the
comparison is not blurred by Monte-Carlo error: what differs is only how each draw is refitted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from calreport.calibration.smile import fit_smile
from calreport.calibration.surface_fit import fit_surface
from calreport.calibration.uncertainty import distinct_resamples, param_uncertainty
from calreport.commands.cli import main
from foundation_helpers import calibrate_capturing_surface_uncertainty

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
CASES = {"BTC 12-11": ("BTC", "BTC-2025-12-11T1936Z.json", 0.43), "ETH 12-11": ("ETH", "ETH-2025-12-11T1936Z.json", 0.60),
         "BTC 12-13": ("BTC", "BTC-2025-12-13T1543Z.json", 0.43)}
DRAWS = 4
TOL = 0.25


def _independent(args: tuple) -> dict[str, np.ndarray]:  # type: ignore[type-arg]
    """Per parameter (levels, nodes, global level): the sd over the same draws, each refitted from scratch."""
    priced, (problem, full), _rec, g_smile, _rv, config = args
    q = priced.sel.quotes
    keys = np.unique(q.expiry_ms[problem.mask | priced.otm])
    counts = np.random.default_rng(config.fit.bootstrap_seed).multinomial(keys.size, np.full(keys.size, 1.0 / keys.size), size=DRAWS)
    # the surface's inputs, and the global smile's (OTM quotes, the configured objective)
    e_s = np.searchsorted(keys, q.expiry_ms[problem.mask])
    g = priced.otm
    e_g = np.searchsorted(keys, q.expiry_ms[g])
    lk_g = np.log(q.strike[g] / q.underlying_price[g])
    price = (q.underlying_price[g], q.strike[g], q.is_call[g], q.mark_price[g])
    out = []
    for c in counts:  # one draw, one set of refits
        rs, rg = np.repeat(np.arange(e_s.size), c[e_s]), np.repeat(np.arange(e_g.size), c[e_g])
        sf = fit_surface(problem.log_k[rs], problem.T[rs], problem.tau[rs], problem.sigma[rs], problem.weights[rs], base=problem.base,
                         pillar_tau=problem.pillar_tau, nodes=problem.nodes, start_levels=full.levels, start_values=full.values,
                         **problem.options)
        sm = config.smile
        gf = fit_smile(lk_g[rg], np.sqrt(priced.sel.T[g][rg]), priced.base[g][rg], priced.sigma_mark[g][rg], priced.weights[g][rg],
                       nodes=sm.nodes, penalty=sm.penalty, bounds=tuple(sm.bounds), mult_bounds=(config.fit.min_mult, config.fit.max_mult),
                       objective=config.fit.objective, price_inputs=tuple(a[rg] for a in price), start_multiplier=g_smile.multiplier,
                       start_values=list(g_smile.values))
        out.append(np.concatenate([sf.levels, np.asarray(sf.values).reshape(-1), [gf.multiplier]]))
    return {"draws": np.array(out), "counts": counts}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:  # type: ignore[type-arg]
    if not SNAP.is_dir():
        pytest.skip("shared data absent")
    out = {}
    for label, (und, snap, rv) in CASES.items():  # three snapshots
        root = tmp_path_factory.mktemp("root")
        assert main(["--root", str(root), "init"]) == 0
        cfg_file = root / "config" / "calibration.yaml"
        cfg = yaml.safe_load(cfg_file.read_text())
        cfg["fit"]["refit_draws"] = DRAWS
        cfg_file.write_text(yaml.safe_dump(cfg))
        run, args = calibrate_capturing_surface_uncertainty(root, und, SNAP / snap, rv)
        out[label] = {"run": run, "independent": _independent(args), "labels": list(args[2].bands)}
    return out


pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")]


@pytest.mark.parametrize("label", list(CASES))
def test_reported_se_of_every_level_and_node_matches_an_independent_refit_bootstrap(runs, label: str) -> None:  # type: ignore[no-untyped-def]
    r = runs[label]
    unc, ind, labels = r["run"]["uncertainty"], r["independent"]["draws"], r["labels"]
    P = len(labels)
    n = len(unc[labels[0]]["nodes"])
    sd = np.std(ind, axis=0, ddof=1)
    pairs = [("global level", unc["global"]["se"], sd[-1])]
    for p, b in enumerate(labels):
        pairs.append((f"{b} level", unc[b]["se"], sd[p]))
        for i, node in enumerate(unc[b]["nodes"]):
            if node["x"] != 0.0:
                pairs.append((f"{b} x={node['x']}", node["se"], sd[P + p * n + i]))
    # --rv is manual: no RV term, so the reported SE is the bootstrap's alone. A floor of 0.002 (a fifth of a
    # typical node SE; rounding to 4 decimals) keeps near-zero SEs from failing on noise in the 4th decimal.
    print(label, [(what, got, round(float(want), 4)) for what, got, want in pairs])  # the figures, with -s
    bad = [(what, got, want) for what, got, want in pairs if abs(got - want) > TOL * max(want, 0.002)]
    assert not bad, f"{label}: reported vs independent SE: {bad}"


def test_no_interval_is_shown_from_fewer_distinct_resamples_than_configured(runs) -> None:  # type: ignore[no-untyped-def]
    for r in runs.values():
        for label, e in r["run"]["uncertainty"].items():
            assert e["method"] == "surface refit"
            for entry in [e, *e["nodes"]]:
                if entry.get("distinct") is not None and entry["distinct"] < 20:
                    assert entry["ci95"] is None and "distinct resamples" in entry["refused"], (label, entry)
                if entry.get("ci95") is not None:
                    assert entry["distinct"] >= 20


def test_an_interval_needs_the_configured_distinct_resamples_and_two_expiries() -> None:
    counts = np.array([[2, 0], [1, 1], [0, 2], [1, 1]])  # 3 distinct resamples of 2 expiries
    samples = np.array([1.0, 1.1, 1.2, 1.1])
    refused = param_uncertainty(1.1, samples, counts, se_rv=None, min_distinct=4)
    assert refused.ci95 is None and refused.se is not None and refused.distinct == 3
    assert refused.refused == "3 distinct resamples (< 4)"
    shown = param_uncertainty(1.1, samples, counts, se_rv=None, min_distinct=3)
    assert shown.ci95 is not None
    # Student's t with 1 dof (12.7), not 1.96
    assert shown.ci95[1] / 1.1 == pytest.approx(np.exp(12.706 * shown.se / 1.1), rel=1e-3)
    one = param_uncertainty(1.1, samples, counts[:, :1], se_rv=None, min_distinct=2)
    assert one.ci95 is None and one.refused == "1 expiry informs it"
    assert distinct_resamples(counts) == 3


def test_rv_sampling_error_adds_to_a_level_in_quadrature() -> None:
    counts = np.random.default_rng(1).multinomial(6, np.full(6, 1 / 6), size=50)
    samples = 1.0 + 0.01 * np.random.default_rng(2).standard_normal(50)
    u = param_uncertainty(1.0, samples, counts, se_rv=0.02, min_distinct=20)
    assert u.se == pytest.approx(np.hypot(np.std(samples, ddof=1), 0.02))


def _node_run(rec_smile: list[float], smoothed_smile: list[float], node_se: list[float | None]):  # type: ignore[no-untyped-def]
    from calreport.model import LiveRun, Multipliers, NodeUncertainty, Smile, UncertaintyEntry

    nodes = [-1.5, 0.0, 1.5]
    entry = UncertaintyEntry(se=0.001, nodes=[NodeUncertainty(x=x, se=s) for x, s in zip(nodes, node_se)])
    return LiveRun(
        run_id="R", underlying="BTC", samples=500, vega_sum=50.0, status="ok", sigma_mode="rv",
        recommended=Multipliers(global_=1.0, smile=Smile(nodes=nodes, global_=rec_smile)),
        smoothed=Multipliers(global_=1.0, smile=Smile(nodes=nodes, global_=smoothed_smile)),
        multiplier_se=Multipliers(global_=0.001), uncertainty={"global": entry},
    )


def test_a_node_move_within_its_standard_error_holds_and_a_significant_one_is_applied_whole() -> None:
    from calreport.apply import decide_values
    from calreport.model import AppliedEntry, PolicyConfig, Smile

    applied = AppliedEntry(global_=1.0, run_id="A", source="policy", smile=Smile(nodes=[-1.5, 0.0, 1.5], global_=[1.0, 1.0, 1.0]))
    policy = PolicyConfig(min_delta=0.03, min_delta_se=1.0, significant_se=2.0, max_rel_step=0.1, max_step_se=6.0)
    # a move of 0.05 at x=-1.5 beats min_delta (0.03) but not 1 SE (0.08): held
    held = decide_values(_node_run([1.05, 1.0, 1.0], [1.05, 1.0, 1.0], [0.08, None, 0.08]), applied, policy)
    assert held[0] == "hold"
    # the same move with SE 0.01 (5 SE > 2 SE): the recommended curve applied whole, not the smoothed one
    go = decide_values(_node_run([1.05, 1.0, 1.0], [1.04, 1.0, 1.0], [0.01, None, 0.01]), applied, policy)
    assert go[0] == "apply" and "smile global" in go[1] and go[2].smile.global_ == [1.05, 1.0, 1.0]
    # without node SEs (older rows) only min_delta counts
    old = decide_values(_node_run([1.05, 1.0, 1.0], [1.05, 1.0, 1.0], [None, None, None]), applied, policy)
    assert old[0] == "apply"
