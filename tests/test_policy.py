"""Update policy: apply or hold, with reasons that name the rule and the numbers."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from calreport.apply import decide, decide_values
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import AppliedEntry, LiveRun, Multipliers, PolicyConfig, Smile
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery

POLICY = PolicyConfig(max_rel_step=0.25)  # min_samples 50, min_vega_sum 1, min_delta 0.03, a 25 % step floor


def run(g: float = 1.084, bands: dict[str, float] | None = None, samples: int = 91, vega: float = 12.5,
        status: str = "ok") -> LiveRun:
    return LiveRun(
        run_id="R1", underlying="BTC", smoothed=Multipliers(global_=g, bands=bands or {}), samples=samples,
        vega_sum=vega, status=status, reason="Calibration within thresholds" if status != "failed" else "Unrealistic",
    )


def entry(g: float = 1.0, bands: dict[str, float] | None = None) -> AppliedEntry:
    return AppliedEntry(global_=g, bands=bands or {})


def test_small_sample_holds_with_the_numbers() -> None:
    assert decide(run(samples=47), entry(), POLICY) == ("hold", "Sample size too small (47 < 50)")


def test_small_change_holds_with_global_delta_and_no_bands() -> None:
    assert decide(run(g=1.0026), entry(), POLICY) == (
        "hold", "Change too small (global d=0.0026 < 0.03; bands: none)"
    )


def test_small_change_lists_band_deltas_when_bands_exist() -> None:
    d = decide(run(g=1.01, bands={"7-30d": 1.02}), entry(1.0, {"7-30d": 1.0}), POLICY)
    assert d == ("hold", "Change too small (global d=0.0100 < 0.03; bands: 7-30d d=0.0200)")


def test_apply_names_global_delta_changed_bands_and_samples() -> None:
    d = decide(run(g=1.084, bands={"weekly": 1.2}), entry(1.0), POLICY)
    assert d == ("apply", "global d=0.0840; bands changed: weekly; samples=91")


def test_band_change_alone_is_enough_to_apply() -> None:
    d = decide(run(g=1.01, bands={"0-7d": 1.08}), entry(1.0), POLICY)
    assert d == ("apply", "global d=0.0100; bands changed: 0-7d; moved within their change limit, written smoothed: "
                 "global 1.0000 -> 1.0100 (d=0.0100 < 0.03); samples=91")


def test_dropping_an_applied_band_counts_as_its_change() -> None:
    # the run has no 0-7d value: the engine would fall back to global 1.00 where 1.20 was applied
    d = decide(run(g=1.0), entry(1.0, {"0-7d": 1.2}), POLICY)
    assert d == ("apply", "global d=0.0000; bands changed: 0-7d; samples=91")


def test_realism_failure_holds_first() -> None:
    assert decide(run(samples=10, status="failed"), entry(), POLICY) == ("hold", "Realism failed: Unrealistic")


def test_zero_vega_holds() -> None:
    assert decide(run(vega=0.0), entry(), POLICY) == ("hold", "Summed vega too small (0.0000 < 1)")


def test_min_vega_setting_is_honoured() -> None:
    p = PolicyConfig(min_vega_sum=20.0)
    assert decide(run(vega=12.5), entry(), p) == ("hold", "Summed vega too small (12.5000 < 20)")


def test_a_step_too_large_is_capped_and_applied_never_held() -> None:
    decision, reason, values = decide_values(run(g=1.4), entry(1.0), POLICY)
    assert decision == "apply" and reason.endswith("capped at max(6 SE, 25 %) (global 1.4000 -> 1.2500)")
    assert values is not None and values.global_ == 1.25
    assert decide(run(g=0.5, bands={"0-7d": 0.9}), entry(1.0), POLICY)[0] == "apply"
    assert decide_values(run(g=0.5, bands={"0-7d": 0.9}), entry(1.0), POLICY)[2].global_ == 0.75  # type: ignore[union-attr]


def test_thin_rv_holds_with_the_return_count_and_manual_rv_is_never_thin() -> None:
    thin = run(g=1.1).model_copy(update={"rv_source": "harvest", "rv_returns": 11})
    assert decide(thin, entry(1.0), POLICY, min_rv_returns=120) == ("hold", "Thin RV: RV_7d from 11 hourly returns (< 120)")
    manual = run(g=1.1).model_copy(update={"rv_source": "manual", "rv_returns": 0})
    assert decide(manual, entry(1.0), POLICY, min_rv_returns=120)[0] == "apply"


def test_each_underlying_is_compared_with_its_own_applied_entry() -> None:
    eth_run = run(g=1.30)
    btc_applied, eth_applied = entry(1.30), entry(1.10)
    assert decide(eth_run, btc_applied, POLICY)[0] == "hold"  # what a BTC comparison would say
    assert decide(eth_run, eth_applied, POLICY) == ("apply", "global d=0.2000; bands changed: none; samples=91")


def test_no_smoothed_value_holds() -> None:
    r = LiveRun(run_id="R", underlying="BTC", samples=0, status="ok", reason="no usable quotes")
    assert decide(r, entry(), POLICY) == ("hold", "No smoothed multiplier (no usable quotes)")


def test_the_step_cap_scales_with_the_standard_error_and_the_fraction_is_its_floor() -> None:
    noisy = run(g=1.4).model_copy(update={"multiplier_se": Multipliers(global_=0.05)})
    _, reason, values = decide_values(noisy, entry(1.0), PolicyConfig(max_rel_step=0.10, max_step_se=6.0, significant_se=0))
    assert values is not None and values.global_ == 1.3  # 6 x 0.05 = 0.30 beats the 10 % floor
    sure = run(g=1.4).model_copy(update={"multiplier_se": Multipliers(global_=0.001)})
    assert decide_values(sure, entry(1.0), PolicyConfig(max_rel_step=0.10, max_step_se=6.0, significant_se=0))[2].global_ == 1.1  # type: ignore[union-attr]
    assert "capped at max(6 SE, 10 %)" in reason


def test_a_change_significant_against_its_se_is_applied_whole_not_smoothed() -> None:
    r = run(g=1.1).model_copy(update={"recommended": Multipliers(global_=1.2), "multiplier_se": Multipliers(global_=0.01)})
    applied = entry(1.0).model_copy(update={"run_id": "R0", "source": "policy"})
    decision, reason, values = decide_values(r, applied, PolicyConfig(max_rel_step=0.25))
    assert decision == "apply" and values is not None and values.global_ == 1.2  # the fit, not the smoothed 1.1
    assert "applied whole: global" in reason
    within = r.model_copy(update={"multiplier_se": Multipliers(global_=0.2)})  # 0.2 < 2 SE: smoothed
    assert decide_values(within, applied, PolicyConfig(max_rel_step=0.25, min_delta_se=0))[2].global_ == 1.1  # type: ignore[union-attr]


def test_a_first_apply_over_the_untouched_defaults_takes_the_fit_whole() -> None:
    r = run(g=1.1).model_copy(update={"recommended": Multipliers(global_=1.5)})
    untouched = AppliedEntry(global_=1.0, source="init")
    decision, reason, values = decide_values(r, untouched, POLICY)
    assert decision == "apply" and values is not None and values.global_ == 1.5 and reason.startswith("first apply over the untouched defaults")
    applied = entry(1.0).model_copy(update={"run_id": "R0", "source": "policy"})
    assert decide_values(r, applied, POLICY)[2].global_ == 1.1  # type: ignore[union-attr]  # applied by a run: the policy


def test_a_capped_surface_smile_moves_as_one_blend_of_the_applied_and_the_new_curve() -> None:
    from calreport.model import Smile, SurfaceSpec

    nodes = [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
    new = Smile(nodes=nodes, global_=[1.6, 1.3, 1.1, 1.0, 0.97, 1.0, 1.12])
    spec = SurfaceSpec(pillars={"0-7d": 1.75}, weekend_weight=0.35, wing_slope_cap=1.8)
    r = run(g=1.0).model_copy(update={"smoothed": Multipliers(global_=1.0, smile=new, surface=spec)})
    applied = entry(1.0).model_copy(update={"run_id": "R0", "source": "policy", "surface": spec})  # the same quoting model
    _, _, values = decide_values(r, applied, POLICY)
    got = values.smile.global_  # type: ignore[union-attr]
    lam = 0.25 / 0.6  # the largest fraction keeping x=-2.50 (1.0 -> 1.6) within 25 %
    assert got == [round(1.0 + lam * (v - 1.0), 4) for v in new.global_]
    assert values.surface == spec  # type: ignore[union-attr]


def test_an_apply_names_every_value_it_writes_smoothed_though_it_moved_within_its_change_limit() -> None:
    # the BTC 12-11 -> 12-13 runs under the default config: 0-7d moved 0.9185 -> 0.8652, less than its 1 SE
    # of 0.0664, and the reason read "bands changed: none" though the smoothed band was written
    se = Multipliers(global_=0.0163, bands={"0-7d": 0.0664, "7-30d": 0.008, "30-90d": 0.0064})
    r = run(g=0.9947, bands={"0-7d": 0.8652, "7-30d": 1.0300, "30-90d": 1.0023}).model_copy(update={"multiplier_se": se})
    decision, reason, values = decide_values(r, entry(0.9882, {"0-7d": 0.9185, "7-30d": 0.9815, "30-90d": 0.9970}), POLICY)
    assert decision == "apply" and values is not None and values.bands["0-7d"] == 0.8652
    assert reason == (
        "global d=0.0065; bands changed: 7-30d; moved within their change limit, written smoothed: "
        "global 0.9882 -> 0.9947 (d=0.0065 < 0.03), 0-7d 0.9185 -> 0.8652 (d=0.0533 < 0.0664 = 1 x SE), "
        "30-90d 0.9970 -> 1.0023 (d=0.0053 < 0.03); samples=91"
    )


def test_an_apply_names_the_smile_nodes_it_writes_smoothed_under_their_change_limit() -> None:
    nodes = [-1.0, 0.0, 1.0]
    smoothed = Multipliers(global_=1.0, smile=Smile(nodes=nodes, global_=[1.20, 1.0, 1.01], bands={"0-7d": [1.3, 1.0, 1.0]}))
    applied = AppliedEntry(global_=1.0, smile=Smile(nodes=nodes, global_=[1.10, 1.0, 1.0], bands={"0-7d": [1.3, 1.0, 1.0]}))
    r = run(g=1.0).model_copy(update={"smoothed": smoothed})
    decision, reason, _ = decide_values(r, applied, POLICY)
    assert decision == "apply"
    assert reason.endswith("smile nodes changed: global x=-1.00; smile nodes moved within their change limit, written smoothed: global x=1.00")


def test_an_apply_whose_every_value_passed_its_limit_adds_nothing_about_small_moves() -> None:
    assert decide(run(g=1.084, bands={"weekly": 1.2}), entry(1.0, {"weekly": 1.0}), POLICY) == (
        "apply", "global d=0.0840; bands changed: weekly; samples=91"
    )


SNAPSHOTS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"


@pytest.mark.realdata
@pytest.mark.skipif(not SNAPSHOTS.is_dir(), reason="../shared/data is absent")
def test_the_second_real_btc_run_names_every_band_its_apply_moved(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root))
    for snap in ("BTC-2025-12-11T1936Z.json", "BTC-2025-12-13T1543Z.json"):
        run_ = actions.run_live_calibration(Workspace.open(root), "BTC", SNAPSHOTS / snap, rv=0.43)
    assert run_.decision == "apply"
    event = next(HistoryQuery.tail(root, "apply", "BTC"))
    moved = [b for b in event.applied.bands if round(event.applied.bands[b], 4) != round(event.previous.bands.get(b, -1), 4)]
    assert moved  # 0-7d 0.9185 -> 0.8652 among them
    reason = event.reason or ""
    for band in moved:
        assert f"{band} {event.previous.bands[band]:.4f} -> {event.applied.bands[band]:.4f}" in reason or re.search(
            rf"bands changed: [^;]*\b{re.escape(band)}\b", reason
        ), (band, reason)
