"""Update policy: apply or hold, with reasons that name the rule and the numbers."""

from __future__ import annotations

from calreport.apply import decide, decide_values
from calreport.model import AppliedEntry, LiveRun, Multipliers, PolicyConfig

POLICY = PolicyConfig()  # min_samples 50, min_vega_sum 1, min_delta 0.03, max_rel_step 0.25


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
    assert d == ("apply", "global d=0.0100; bands changed: 0-7d; samples=91")


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
    assert decision == "apply" and reason.endswith("capped at 25 % (global 1.4000 -> 1.2500)")
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
