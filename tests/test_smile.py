"""The smile (issue 12): the pure model and fit, the band lookup the engine uses."""

from __future__ import annotations

import numpy as np
import pytest

from calreport.calibration.bands import BandLookup, band_index
from calreport.calibration.smile import (
    DEFAULT_NODES,
    SmileTable,
    arbitrage_problem,
    bounds_problem,
    fit_smile,
    quotes_per_node,
    regrid,
    smile_at,
)
from calreport.store.models import Band, CalibrationConfig, SmileConfig

NODES = list(DEFAULT_NODES)
SKEW = [1.45, 1.25, 1.10, 1.0, 0.97, 1.0, 1.12]


def test_smile_is_linear_between_nodes_flat_beyond_and_one_at_the_money() -> None:
    x = np.array([-9.0, -2.5, -2.0, 0.0, 0.375, 2.5, 7.0])
    got = smile_at(x, NODES, SKEW)
    assert got[0] == got[1] == 1.45 and got[-1] == got[-2] == 1.12
    assert got[2] == pytest.approx(0.5 * (1.45 + 1.25)) and got[3] == 1.0 and got[4] == pytest.approx(0.985)


def test_band_lookup_matches_the_first_match_band_rule_with_gaps_and_overlaps() -> None:
    bands = [Band(name="a", min_dte=0, max_dte=7), Band(name="b", min_dte=5, max_dte=30), Band(name="c", min_dte=40, max_dte=90)]
    dte = np.concatenate([np.random.default_rng(3).uniform(-5, 120, 20_000), [0, 5, 7, 30, 40, 90, np.nan]])
    lookup = BandLookup(bands)
    assert np.array_equal(lookup.index(dte), band_index(dte, bands))
    slot = lookup.slot(dte)
    assert np.array_equal(slot, np.where(band_index(dte, bands) < 0, 3, band_index(dte, bands)))


def test_table_sigma_equals_the_per_band_curve_for_every_slot() -> None:
    rng = np.random.default_rng(1)
    n = 5_000
    slot = rng.integers(0, 3, n)
    base, mults = 0.45, [0.9, 1.1, 1.0]
    smiles = [SKEW, None, [1.2, 1.1, 1.02, 1.0, 1.0, 1.05, 1.1]]
    T = rng.uniform(1 / 365, 0.3, n)
    lk = rng.uniform(-0.6, 0.6, n)
    table = SmileTable.build(NODES, mults, smiles)
    got = table.sigma(slot, lk, np.sqrt(T), base)
    m = np.asarray(mults)[slot]
    want = np.empty(n)
    for s in range(3):  # reference: one np.interp per slot
        sel = slot == s
        values = smiles[s] or [1.0] * len(NODES)
        want[sel] = base * m[sel] * smile_at(lk[sel] / (base * m[sel] * np.sqrt(T[sel])), NODES, values)
    assert np.max(np.abs(got - want)) < 1e-14


def test_all_flat_table_is_base_times_multiplier_exactly() -> None:
    table = SmileTable.build(NODES, [0.9, 1.2], [None, None])
    got = table.sigma(np.array([0, 1, 1]), np.array([-0.3, 0.0, 0.4]), np.sqrt(np.array([0.01, 0.1, 0.2])), 0.5)
    assert table.flat and list(got) == [0.5 * 0.9, 0.5 * 1.2, 0.5 * 1.2]


def _synthetic_quotes(values: list[float], m: float = 1.1, base: float = 0.4, n: int = 400) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    T = rng.uniform(5 / 365, 60 / 365, n)
    x = rng.uniform(-2.8, 2.8, n)
    lk = x * base * m * np.sqrt(T)
    sigma = base * m * smile_at(x, NODES, values)
    return lk, np.sqrt(T), sigma, np.ones(n)


def test_fit_recovers_a_known_smile_and_level() -> None:
    lk, st, sigma, w = _synthetic_quotes(SKEW)
    fit = fit_smile(lk, st, 0.4, sigma, w, nodes=NODES, penalty=0.0, bounds=(0.5, 3.0), mult_bounds=(0.5, 3.0))
    assert fit.multiplier == pytest.approx(1.1, abs=2e-3)
    assert np.max(np.abs(np.array(fit.values) - SKEW)) < 0.01 and fit.values[3] == 1.0
    assert fit.objective is not None and fit.objective < 0.1 and fit.samples == 400
    assert sum(fit.quotes_per_node) >= 400 and all(c > 0 for c in fit.quotes_per_node)


def test_a_node_without_quotes_is_pinned_by_the_penalty_to_its_neighbours_line() -> None:
    lk, st, sigma, w = _synthetic_quotes([1.3, 1.2, 1.1, 1.0, 1.0, 1.0, 1.0])
    x = lk / (0.4 * 1.1 * st)
    keep = x > -1.5  # nothing informs the x=-2.5 node
    fit = fit_smile(lk[keep], st[keep], 0.4, sigma[keep], w[keep], nodes=NODES, penalty=1.0, bounds=(0.5, 3.0), mult_bounds=(0.5, 3.0))
    assert fit.quotes_per_node[0] == 0
    slope = (fit.values[2] - fit.values[1]) / 0.75  # the line through the informed neighbours
    assert fit.values[0] == pytest.approx(fit.values[1] - slope * 1.0, abs=0.02)


def test_fit_with_fixed_values_fits_only_the_level() -> None:
    lk, st, sigma, w = _synthetic_quotes(SKEW, m=0.9)
    fit = fit_smile(lk, st, 0.4, sigma, w, nodes=NODES, penalty=1.0, bounds=(0.5, 3.0), mult_bounds=(0.5, 3.0), fixed_values=SKEW)
    assert fit.values == tuple(SKEW) and fit.multiplier == pytest.approx(0.9, abs=1e-3)


def test_price_objective_fit_agrees_with_the_iv_fit_on_clean_data() -> None:
    lk, st, sigma, w = _synthetic_quotes(SKEW)
    from calreport.calibration.pricing import black76_price

    F = np.full(lk.size, 100.0)
    K = F * np.exp(lk)
    is_call = lk >= 0
    mark = black76_price(F, K, st**2, sigma, is_call)
    fit = fit_smile(
        lk, st, 0.4, sigma, w, nodes=NODES, penalty=0.0, bounds=(0.5, 3.0), mult_bounds=(0.5, 3.0),
        objective="price_vega_rel", price_inputs=(F, K, is_call, mark),
    )
    assert fit.multiplier == pytest.approx(1.1, abs=5e-3) and np.max(np.abs(np.array(fit.values) - SKEW)) < 0.03


def test_quotes_per_node_counts_each_hat_support() -> None:
    assert quotes_per_node(np.array([-3.0, -2.0, 0.1, 0.2, 5.0, np.nan]), NODES) == [2, 1, 0, 2, 2, 0, 1]


def test_bounds_and_arbitrage_problems_name_the_node() -> None:
    assert bounds_problem(NODES, [3.4, 1.2, 1.1, 1.0, 1.0, 1.0, 1.0], (0.5, 3.0)) == "node x=-2.50 value 3.4000 outside [0.5, 3]"
    assert arbitrage_problem(NODES, SKEW, 0.2) is None
    # a call wing far above its neighbours makes the call price rise with strike
    assert "between x=1.50 and x=2.50" in (arbitrage_problem(NODES, [1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 3.0], 0.3) or "")
    # a spike at one node bends the call prices the wrong way there
    assert arbitrage_problem(NODES, [1.0, 1.0, 1.0, 1.0, 1.4, 1.0, 1.0], 0.3) == "negative butterfly at node x=0.75"


def test_regrid_reads_the_same_curve_at_new_nodes() -> None:
    assert regrid(NODES, SKEW, [-2.0, 0.0, 2.0]) == pytest.approx([1.35, 1.0, 1.06])
    assert regrid(NODES, SKEW, NODES) == SKEW


def test_smile_config_refuses_a_grid_without_zero_or_unordered() -> None:
    with pytest.raises(ValueError, match="including 0"):
        SmileConfig(nodes=[-1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        SmileConfig(nodes=[0.0, -1.0, 1.0])
    assert CalibrationConfig().smile.enabled and CalibrationConfig().smile.nodes == NODES


# --------------------------------------------------------------------------- files of record

from calreport.commands.audit import describe_change, log_lines  # noqa: E402
from calreport.commands.doctor import format_doctor, run_doctor  # noqa: E402
from calreport.store import applied as applied_store  # noqa: E402
from calreport.store.history import ensure_history_files  # noqa: E402
from calreport.store.models import Multipliers, Smile  # noqa: E402
from calreport.store.state import read_state  # noqa: E402

SMILE = Smile(nodes=NODES, global_=SKEW, bands={"7-30d": [1.4, 1.2, 1.1, 1.0, 0.97, 1.0, 1.1]})


def test_a_version_1_file_reads_as_flat_and_the_next_apply_writes_version_2_and_says_so(root) -> None:
    root.applied.write_text("schema_version: 1\nunderlyings:\n  BTC: {global: 1.1, bands: {0-7d: 0.9}}\n")
    ensure_history_files(root)
    doc = applied_store.read_applied(root)
    assert doc.schema_version == 1 and doc.entry("BTC").smile is None
    assert any("schema_version 1 (pre-smile format" in line for line in format_doctor(run_doctor(root)))
    ev = applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r1", reason="x")
    assert ev.schema_upgrade == "1 -> 2" and ev.previous.smile is None and ev.applied.smile == SMILE
    text = root.applied.read_text()
    assert "schema_version: 2" in text and "        - 1.2500  # x=-1.50\n" in text and "        7-30d:\n" in text
    assert applied_store.read_applied(root).entry("BTC").smile == SMILE
    assert read_state(root).to_json_dict()["underlyings"]["BTC"]["smile"]["global"] == SKEW
    assert "schema_version 2; smiles applied: BTC" in "\n".join(format_doctor(run_doctor(root)))
    again = applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r2", reason="x")
    assert again.schema_upgrade is None and "schema_upgrade" not in again.to_json_dict()
    assert "(YAML schema_version 1 -> 2)" in log_lines(root)[-1]


def test_a_moved_node_is_one_line_of_the_diff_and_named_in_the_log(root) -> None:
    ensure_history_files(root)
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r1", reason="x")
    before = root.applied.read_text().splitlines()
    moved = SMILE.model_copy(update={"global_": [1.45, 1.28, 1.1, 1.0, 0.97, 1.0, 1.12]})
    ev = applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=moved), source="force", run_id="r2", reason="x")
    after = root.applied.read_text().splitlines()
    changed = [(a, b) for a, b in zip(before, after) if a != b and "updated_at" not in a and "run_id" not in a]
    assert changed == [("        - 1.2500  # x=-1.50", "        - 1.2800  # x=-1.50")]
    assert describe_change(ev.previous, ev.applied) == "global 1.0500 -> 1.0500, smile global x=-1.50 1.2500 -> 1.2800"


def test_doctor_names_a_hand_edited_smile_node(root) -> None:
    ensure_history_files(root)
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r1", reason="x")
    root.applied.write_text(root.applied.read_text().replace("- 1.2500  # x=-1.50", "- 1.3000  # x=-1.50"))
    text = "\n".join(format_doctor(run_doctor(root)))
    assert "smile global x=-1.50 in YAML 1.3000 != last apply event 1.2500" in text


def test_applying_a_smile_of_an_undefined_band_is_refused(root) -> None:
    ensure_history_files(root)
    bad = Smile(nodes=NODES, global_=SKEW, bands={"weekly": SKEW})
    with pytest.raises(Exception, match="smile band 'weekly' is not defined"):
        applied_store.apply_values(root, "BTC", Multipliers(global_=1.0, smile=bad), source="force", run_id="r1", reason="x")


# --------------------------------------------------------------------------- engine

from calreport.calibration.smile import sigma_for  # noqa: E402
from calreport.engine import AppliedMultipliersWatcher  # noqa: E402


def test_engine_sigma_is_the_applied_smile_hot_reloaded_and_flat_without_one(root) -> None:
    ensure_history_files(root)
    rng = np.random.default_rng(5)
    T = rng.uniform(1 / 365, 100 / 365, 3000)
    F = np.full(T.size, 90_000.0)
    K = F * np.exp(rng.uniform(-0.5, 0.5, T.size))
    cfg = CalibrationConfig()
    with AppliedMultipliersWatcher(root, observer="none") as w:
        flat_sigma = w.sigma("BTC", K, F, T, 0.43)
        assert np.array_equal(flat_sigma, 0.43 * w.multipliers_for("BTC", T * 365.0))
        values = Multipliers(global_=1.05, bands={"0-7d": 0.9}, smile=SMILE)
        applied_store.apply_values(root, "BTC", values, source="force", run_id="r1", reason="x")
        w.refresh()
        got = w.sigma("BTC", K, F, T, 0.43)
        want = sigma_for(values, cfg.bands, T * 365.0, np.log(K / F), T, 0.43)
        assert np.max(np.abs(got - want)) < 1e-15 and not np.array_equal(got, flat_sigma)
        # one option by hand: 10-day put at x = -1.5 in the 7-30d band (global multiplier, band smile)
        t, m = 10 / 365, 1.05
        k = 90_000.0 * np.exp(-1.5 * 0.43 * m * np.sqrt(t))
        assert w.sigma("BTC", np.array([k]), np.array([90_000.0]), np.array([t]), 0.43)[0] == pytest.approx(0.43 * m * 1.2, rel=1e-12)
        root.calibration_config.write_text(root.calibration_config.read_text().replace("enabled: true", "enabled: false"))
        w.refresh()
        assert np.array_equal(w.sigma("BTC", K, F, T, 0.43), 0.43 * w.multipliers_for("BTC", T * 365.0))
