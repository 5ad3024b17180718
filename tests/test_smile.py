"""The smile: the pure model and fit, the band lookup the engine uses."""

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
from calreport.model import Band, CalibrationConfig, SmileConfig

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
from calreport.commands.workspace import Workspace  # noqa: E402
from calreport.model import Multipliers, Smile  # noqa: E402
from calreport.store import applied as applied_store  # noqa: E402
from calreport.store.history import ensure_history_files  # noqa: E402
from calreport.store.state import read_state  # noqa: E402

SMILE = Smile(nodes=NODES, global_=SKEW, bands={"7-30d": [1.4, 1.2, 1.1, 1.0, 0.97, 1.0, 1.1]})


def test_a_version_1_file_reads_as_flat_and_the_next_apply_writes_the_current_version_and_says_so(root) -> None:
    root.applied.write_text("schema_version: 1\nunderlyings:\n  BTC: {global: 1.1, bands: {0-7d: 0.9}}\n")
    ensure_history_files(root)
    doc = applied_store.read_applied(root)
    assert doc.schema_version == 1 and doc.entry("BTC").smile is None
    assert any("schema_version 1 (pre-smile format" in line for line in format_doctor(run_doctor(Workspace.open(root))))
    ev = applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r1", reason="x")
    assert ev.schema_upgrade == "1 -> 3" and ev.previous.smile is None and ev.applied.smile == SMILE
    text = root.applied.read_text()
    assert "schema_version: 3" in text and "        - 1.2500  # x=-1.50\n" in text and "        7-30d:\n" in text
    assert applied_store.read_applied(root).entry("BTC").smile == SMILE
    assert read_state(root).to_json_dict()["underlyings"]["BTC"]["smile"]["global"] == SKEW
    assert "schema_version 3; smiles applied: BTC" in "\n".join(format_doctor(run_doctor(Workspace.open(root))))
    again = applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r2", reason="x")
    assert again.schema_upgrade is None and "schema_upgrade" not in again.to_json_dict()
    assert "(YAML schema_version 1 -> 3)" in log_lines(root, verbose=True)[-1]


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
    text = "\n".join(format_doctor(run_doctor(Workspace.open(root))))
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


# --------------------------------------------------------------------------- the smile on real data

import json  # noqa: E402
from pathlib import Path  # noqa: E402

from scipy.stats import norm  # noqa: E402

from calreport.commands.cli import main as cli_main  # noqa: E402
from calreport.store.applied import read_applied  # noqa: E402
from calreport.store.query import HistoryQuery  # noqa: E402
from calreport.store.paths import Root  # noqa: E402

SNAP_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
DONE_WHEN = [("BTC", "BTC-2025-12-11T1936Z.json", 0.43), ("ETH", "ETH-2025-12-11T1936Z.json", 0.60), ("BTC", "BTC-2025-12-13T1543Z.json", 0.43)]


def _flow(tmp: Path, underlying: str, fit_snap: str, price_snap: str, rv: float, *, smile: bool = True) -> list[dict]:
    """calibrate (--rv fixed) -> force-apply -> price, through the CLI, in a fresh root; the priced rows.
    Smoothing alpha 1: the applied values are this one run's fit (no EWMA from the initial 1.0)."""
    if not (SNAP_DIR / fit_snap).is_file() or not (SNAP_DIR / price_snap).is_file():
        pytest.skip("../shared/data is absent")
    root = tmp / ("smile" if smile else "flat")
    assert cli_main(["--root", str(root), "init"]) == 0
    cfg = root / "config" / "calibration.yaml"
    text = cfg.read_text().replace("alpha: 0.3", "alpha: 1.0")
    cfg.write_text(text if smile else text.replace("enabled: true", "enabled: false"))
    args = ["--root", str(root)]
    assert cli_main([*args, "calibrate", "--underlying", underlying, "--snapshot", str(SNAP_DIR / fit_snap), "--rv", str(rv)]) == 0
    # the fit applied: by the policy, else forced (a force-apply of the values already applied is refused)
    if cli_main([*args, "force-apply", "--underlying", underlying]) != 0:
        assert read_applied(Root(root)).entry(underlying).run_id == HistoryQuery.latest_live_run(Root(root), underlying).run_id
    out = root / "priced.json"
    assert cli_main([*args, "price", "--underlying", underlying, "--snapshot", str(SNAP_DIR / price_snap), "--rv", str(rv), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _independent_errors(rows: list[dict]) -> tuple[float, float, int]:
    """(OTM vega-weighted |sigma - mark_iv| in vp, <10-delta put bucket mean gap in vp, OTM quotes), from
    the price rows alone with scipy.stats.norm (not calreport's desk code). Universe: the calibration's
    default filters (1 <= DTE <= 90, |ln K/F| <= 0.5, mark >= 0.0005 coin), OTM by K vs F."""
    F, K, T, s = (np.array([r[c] for r in rows], dtype=float) for c in ("forward", "strike", "T", "sigma"))
    miv = np.array([np.nan if r["mark_iv"] is None else r["mark_iv"] for r in rows])
    mark = np.array([np.nan if r["mark_price"] is None else r["mark_price"] for r in rows])
    call = np.array([r["instrument_name"].endswith("-C") for r in rows])
    with np.errstate(invalid="ignore", divide="ignore"):
        use = np.where(call, K >= F, K < F) & (miv > 0) & (mark >= 0.0005) & (T * 365 >= 1) & (T * 365 <= 90) & (np.abs(np.log(K / F)) <= 0.5)
        d1 = np.log(F / K) / (miv * np.sqrt(T)) + 0.5 * miv * np.sqrt(T)
    w = np.where(use, np.nan_to_num(norm.pdf(d1) * np.sqrt(T)), 0.0)
    err = float(np.sum(w * np.abs(np.nan_to_num(s - miv))) / w.sum() * 100)
    wing = use & ~call & (np.abs(norm.cdf(d1) - 1) < 0.10)
    gap = float(np.sum(w[wing] * (s[wing] - miv[wing])) / w[wing].sum() * 100)
    return err, gap, int(use.sum())


@pytest.mark.realdata
@pytest.mark.parametrize(("underlying", "snap", "rv"), DONE_WHEN, ids=[s for _, s, _ in DONE_WHEN])
def test_priced_snapshot_has_otm_iv_error_under_1vp_and_the_put_wing_within_3vp(tmp_path: Path, underlying: str, snap: str, rv: float) -> None:
    rows = _flow(tmp_path, underlying, snap, snap, rv)
    err, gap, n = _independent_errors(rows)
    flat_err, flat_gap, _ = _independent_errors(_flow(tmp_path, underlying, snap, snap, rv, smile=False))
    assert n > 100
    assert err <= 1.0, (err, flat_err)  # measured: BTC 12-11 0.40, ETH 0.59, BTC 12-13 0.69 (flat 2.42 / 3.01 / 2.52)
    assert -3.0 <= gap <= 3.0, (gap, flat_gap)  # measured: -0.45 / -0.47 / +0.01 (flat -14.7 / -19.3 / -14.0)
    assert flat_gap < -10.0  # the flat model still sells the wing cheap: the test can tell the two apart
    # every price is Black-76 at its own sigma (coin), recomputed with scipy.stats.norm
    F, K, T, s, p = (np.array([r[c] for r in rows], dtype=float) for c in ("forward", "strike", "T", "sigma", "price"))
    call = np.array([r["instrument_name"].endswith("-C") for r in rows])
    k = K / F
    d1 = -np.log(k) / (s * np.sqrt(T)) + 0.5 * s * np.sqrt(T)
    d2 = d1 - s * np.sqrt(T)
    want = np.where(call, norm.cdf(d1) - k * norm.cdf(d2), k * norm.cdf(-d2) - norm.cdf(-d1))
    assert np.max(np.abs(p - want)) <= 1e-9
    assert set(rows[0]) == {"instrument_name", "expiry", "strike", "forward", "T", "band", "sigma", "price", "delta", "vega", "mark_price", "mark_iv"}


@pytest.mark.realdata
def test_out_of_sample_two_days_later_the_smile_cuts_the_otm_iv_error_to_under_0_6x_flat(tmp_path: Path) -> None:
    fit, later = "BTC-2025-12-11T1936Z.json", "BTC-2025-12-13T1543Z.json"
    smile_err = _independent_errors(_flow(tmp_path, "BTC", fit, later, 0.43))[0]
    flat_err = _independent_errors(_flow(tmp_path, "BTC", fit, later, 0.43, smile=False))[0]
    assert smile_err <= 0.6 * flat_err, (smile_err, flat_err)  # measured 0.96 vs 2.63 vp: 0.36x


# --------------------------------------------------------------------------- live runs, flat model, price command

from calreport.calibration.bands import multipliers_for_dte  # noqa: E402
from calreport.calibration.live import evaluate_live  # noqa: E402
from calreport.calibration.pricing import black76_price, year_fraction  # noqa: E402
from calreport.market.quotes import QuoteArrays  # noqa: E402
from calreport.market.rv import manual_rv  # noqa: E402
from calreport.model import AppliedEntry  # noqa: E402
from calreport.apply import decide_run  # noqa: E402
from tests.test_calibrate import NOW_MS, synth_rows, write_snapshot  # noqa: E402


def _skewed_rows() -> list[dict]:
    """A synthetic chain whose marks carry a put skew (marks priced at rv x 1.1 x a smile in ln K/F)."""
    return synth_rows(rv=0.45, multiplier=1.1, smile=0.6, strikes_per_side=8)


def _evaluate(config: CalibrationConfig, applied: AppliedEntry, rows: list[dict]):  # type: ignore[no-untyped-def]
    return evaluate_live(
        QuoteArrays.from_rows(rows), underlying="BTC", now_ms=NOW_MS, rv=manual_rv(0.45), applied=applied,
        previous=(applied.multipliers(), "applied"), config=config, run_id="r", snapshot_file="s.json", detail_file="d.json",
    )


def test_smile_disabled_is_the_flat_model_exactly_whatever_the_yaml_holds() -> None:
    cfg = CalibrationConfig.model_validate({"smile": {"enabled": False}})
    rows = _skewed_rows()
    plain = AppliedEntry(global_=1.0, bands={"7-30d": 1.05})
    with_smile = plain.model_copy(update={"smile": SMILE})
    a, b = _evaluate(cfg, plain, rows), _evaluate(cfg, with_smile, rows)
    da, db = a.run.to_json_dict(), b.run.to_json_dict()
    assert {k: v for k, v in da.items() if k != "tested"} == {k: v for k, v in db.items() if k != "tested"}
    assert a.detail == b.detail
    assert "smile_fit" not in da and "smile" not in da["recommended"] and "smile" not in da["smoothed"]
    # the synthetic prices are Black-76 at rv x the band multiplier, nothing else
    q = QuoteArrays.from_rows(rows)
    by_name = {d.instrument: d for d in a.detail.quotes}
    idx = [i for i, n in enumerate(q.instrument) if n in by_name]
    T = year_fraction(q.expiry_ms[idx], NOW_MS)
    sigma = 0.45 * multipliers_for_dte(T * 365.0, plain, cfg.bands)
    want = black76_price(q.underlying_price[idx], q.strike[idx], T, sigma, q.is_call[idx])
    got = np.array([by_name[n].synthetic for n in q.instrument[idx]])
    assert np.array_equal(got, want)


def test_a_live_run_fits_and_records_the_smile_and_it_beats_flat_on_a_skewed_chain() -> None:
    rows = _skewed_rows()
    flat_run = _evaluate(CalibrationConfig.model_validate({"smile": {"enabled": False}}), default_entry_(), rows).run
    run = _evaluate(STEP, default_entry_(), rows).run  # the step model's smile (the surface: test_surface_done_when.py)
    rec = run.recommended
    assert rec is not None and rec.smile is not None and rec.smile.nodes == NODES
    assert rec.smile.global_[0] > rec.smile.global_[2] > 1.0  # the put wing is dearer than the money
    assert run.smile_fit is not None and run.smile_fit["global"].source == "fitted"
    assert sum(run.smile_fit["global"].quotes_per_node) >= run.smile_fit["global"].samples
    assert run.smile_fit["global"].iv_error_vp < 0.5 * run.iv_error_vp  # type: ignore[operator]
    assert flat_run.recommended is not None and flat_run.recommended.smile is None


def default_entry_() -> AppliedEntry:
    return AppliedEntry(global_=1.0)


STEP = CalibrationConfig.model_validate({"surface": {"enabled": False}})  # the step model: a band's level constant within it


def test_a_band_with_too_few_otm_quotes_takes_the_global_smile_with_its_own_level() -> None:
    cfg = CalibrationConfig.model_validate({"smile": {"min_quotes_per_band": 40}, "surface": {"enabled": False}})
    run = _evaluate(cfg, default_entry_(), _skewed_rows()).run
    assert run.smile_fit is not None and run.recommended is not None and run.recommended.smile is not None
    thin = [b for b, s in run.smile_fit.items() if s.source == "global"]
    assert thin and all(b not in run.recommended.smile.bands for b in thin)
    assert all(b in run.recommended.bands for b in thin)  # the level is still fitted per band


def test_an_unrealistic_smoothed_smile_fails_realism_naming_the_node() -> None:
    """The fit is held inside smile.bounds; a smoothed smile dragged out by a wild previous one is not."""
    wild = Smile(nodes=NODES, global_=[6.0, 1.3, 1.1, 1.0, 1.0, 1.0, 1.1])
    out = evaluate_live(
        QuoteArrays.from_rows(_skewed_rows()), underlying="BTC", now_ms=NOW_MS, rv=manual_rv(0.45), applied=default_entry_(),
        previous=(Multipliers(global_=1.0, smile=wild), "run x"), config=CalibrationConfig(), run_id="r", snapshot_file="s.json",
        detail_file="d.json",
    )
    assert out.run.status == "failed" and "smoothed smile global: node x=-2.50 value" in (out.run.reason or "")
    assert out.run.decision is None  # evaluate_live measures; calreport.apply decides, once
    decided = decide_run(out.run, default_entry_(), CalibrationConfig(), "BTC")
    assert decided.decision == "hold" and "Realism failed" in (decided.decision_reason or "")


def test_policy_caps_each_node_step_and_names_the_capped_nodes() -> None:
    from calreport.apply import decide_values
    from calreport.model import LiveRun

    sm = Smile(nodes=NODES, global_=[1.6, 1.3, 1.1, 1.0, 0.97, 1.0, 1.12])
    run = LiveRun(status="ok", samples=500, vega_sum=30.0, smoothed=Multipliers(global_=1.0, smile=sm), rv_source="manual")
    decision, reason, values = decide_values(run, AppliedEntry(global_=1.0), CalibrationConfig(policy={"max_rel_step": 0.25}).policy)
    assert decision == "apply" and values is not None and values.smile is not None
    assert values.smile.global_[:2] == [1.25, 1.25] and values.smile.global_[2:] == [1.1, 1.0, 0.97, 1.0, 1.12]
    assert "smile nodes changed: global x=-2.50/-1.50/-0.75/0.75/2.50" in reason  # |0.97 - 1| = min_delta counts
    assert "smile global x=-2.50 1.6000 -> 1.2500" in reason and "capped at max(6 SE, 25 %)" in reason
    held = decide_values(run.model_copy(update={"smoothed": Multipliers(global_=1.0, smile=SMILE)}), AppliedEntry(global_=1.0, smile=SMILE), CalibrationConfig().policy)
    assert held[0] == "hold" and "smile nodes: none" in held[1]


def test_ewma_smooths_the_smile_node_by_node_from_a_flat_previous() -> None:
    from calreport.calibration.smoothing import ewma

    out = ewma(Multipliers(global_=1.0, smile=SMILE), Multipliers(global_=1.0), 0.5, ["0-7d", "7-30d", "30-90d"])
    assert out.smile is not None and out.smile.global_ == [1.225, 1.125, 1.05, 1.0, 0.985, 1.0, 1.06]
    assert out.smile.bands["7-30d"] == [1.2, 1.1, 1.05, 1.0, 0.985, 1.0, 1.05]


def test_price_command_json_and_csv_carry_the_same_rows_and_refuse_bad_input_in_one_line(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    root = tmp_path / "r"
    assert cli_main(["--root", str(root), "init"]) == 0
    snap = write_snapshot(tmp_path / "s.json", _skewed_rows())
    out_json, out_csv = tmp_path / "p.json", tmp_path / "p.csv"
    base = ["--root", str(root), "price", "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45"]
    assert cli_main([*base, "--out", str(out_json)]) == 0
    assert cli_main([*base, "--format", "csv", "--out", str(out_csv)]) == 0
    rows = json.loads(out_json.read_text())
    lines = out_csv.read_text().splitlines()
    assert lines[0].split(",") == list(rows[0]) and len(lines) == len(rows) + 1
    assert rows[0]["sigma"] == pytest.approx(0.45 * 1.0)  # nothing applied yet: flat at multiplier 1
    capsys.readouterr()
    for argv, problem in [
        ([*base[:-1], "-0.2", "--out", str(tmp_path / "x.json")], "--rv must be"),
        (["--root", str(root), "price", "--underlying", "BTC", "--snapshot", str(tmp_path / "missing.json"), "--rv", "0.4"], "missing.json"),
        (["--root", str(root), "price", "--underlying", "DOGE", "--snapshot", str(snap), "--rv", "0.4"], "unknown underlying"),
    ]:
        assert cli_main(argv) != 0
        err = capsys.readouterr().err
        assert problem in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()


def test_price_stderr_summary_says_no_violation_when_clean_and_names_the_first_otherwise(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from calreport.commands.price import arbitrage_summary
    from calreport.model.runs import ArbitrageCheck

    root = tmp_path / "r"
    assert cli_main(["--root", str(root), "init"]) == 0
    snap = write_snapshot(tmp_path / "s.json", _skewed_rows())
    capsys.readouterr()
    argv = ["--root", str(root), "price", "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45", "--out", str(tmp_path / "p.json")]
    assert cli_main(argv) == 0
    err = capsys.readouterr().err
    last = next(line for line in err.splitlines() if line.startswith("arbitrage: "))
    assert last.startswith("arbitrage: listed 0 butterflies") and last.endswith("calendars; no violation"), err
    dirty = {"listed": ArbitrageCheck(), "grid": ArbitrageCheck(butterflies=2, first="butterfly at K/F 1.20, 3 days")}
    line = arbitrage_summary(dirty)
    assert line.endswith("; first grid: butterfly at K/F 1.20, 3 days") and "no violation" not in line


# --------------------------------------------------------------------------- dashboard

from calreport.report import render_site  # noqa: E402
from calreport.report.smile import SKEW_FLAG  # noqa: E402


def test_dashboard_shows_the_smile_per_band_with_its_table_and_flags_a_fitted_skew_not_applied(tmp_path: Path) -> None:
    root = tmp_path / "r"
    assert cli_main(["--root", str(root), "init"]) == 0
    cfg = root / "config" / "calibration.yaml"
    # the policy holds (min_samples too high): the fitted smile stays unapplied, the YAML stays flat
    cfg.write_text(cfg.read_text().replace("min_samples: 50,", "min_samples: 100000,").replace("alpha: 0.3", "alpha: 1.0"))
    snap = write_snapshot(tmp_path / "s.json", _skewed_rows())
    assert cli_main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(snap), "--rv", "0.45"]) == 0
    html = (root / "site" / "index.html").read_text()
    assert 'id="smile"' in html and html.count('class="smile-band"') == 3
    assert 'data-flag="SKEW_NOT_APPLIED"' in html and f"BTC: {SKEW_FLAG}" in html
    assert "market OTM IV" in html and "fitted (latest run)" in html and 'class="s-fit"' in html
    assert "&lt;10D put" in html  # the delta-bucket table of the latest run
    assert "<td class=\"mono\">x=-2.50</td>" in html
    # once applied (force-apply), fitted == applied: no flag
    assert cli_main(["--root", str(root), "force-apply", "--underlying", "BTC"]) == 0
    html = (root / "site" / "index.html").read_text()
    assert 'data-flag="SKEW_NOT_APPLIED"' not in html and 'class="smile-band"' in html


def test_dashboard_without_a_fitted_smile_says_so_and_draws_no_smile_chart(root) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import RowFactory

    RowFactory(root).live("BTC")
    render_site(root)
    html = root.index_html.read_text()
    assert "The latest live run fitted no smile" in html and 'class="smile-band"' not in html


def test_rollback_restores_the_earlier_smile_and_its_event_carries_both(root) -> None:  # type: ignore[no-untyped-def]
    from foundation_helpers import rollback

    ensure_history_files(root)
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.05, smile=SMILE), source="force", run_id="r1", reason="x")
    other = Smile(nodes=NODES, global_=[1.3, 1.2, 1.05, 1.0, 1.0, 1.02, 1.05])
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.1, smile=other), source="force", run_id="r2", reason="x")
    ev = rollback(root, "BTC")
    assert ev.run_id == "r1" and ev.previous.smile == other and ev.applied.smile == SMILE
    assert applied_store.read_applied(root).entry("BTC").smile == SMILE


def test_price_without_a_snapshot_prices_the_fetched_chain(root) -> None:  # type: ignore[no-untyped-def]
    from calreport.commands.price import price_table
    from calreport.commands.workspace import Workspace
    from calreport.market.deribit import check_snapshot_rows

    rows = _skewed_rows()

    class FakeClient:  # Deribit's book-summary rows, as DeribitClient.book_summary returns them
        def book_summary(self, currency: str):  # type: ignore[no-untyped-def]
            assert currency == "BTC"
            return rows, check_snapshot_rows(rows, "deribit", "BTC")

    out = price_table(Workspace.open(root), "btc", None, rv=0.45, client=FakeClient())[0]
    assert len(out) == len(rows) and {r["band"] for r in out} <= {"0-7d", "7-30d", "30-90d", None}


def test_smile_settings_are_strict_numbers() -> None:
    with pytest.raises(ValueError):
        CalibrationConfig.model_validate({"smile": {"penalty": "1.0"}})
    with pytest.raises(ValueError):
        CalibrationConfig.model_validate({"smile": {"enabled": "yes"}})


def test_the_fit_kernel_price_and_vega_equal_black76() -> None:
    from calreport.calibration.pricing import black76_price_vega_live, black76_vega

    rng = np.random.default_rng(11)
    F = np.full(2000, 90_000.0)
    T = rng.uniform(1 / 365, 0.5, F.size)
    sig = rng.uniform(0.2, 1.2, F.size)
    K = F * np.exp(rng.uniform(-0.6, 0.6, F.size))
    call = rng.random(F.size) < 0.5
    price, vega = black76_price_vega_live(K / F, np.sqrt(T), sig, np.where(call, 1.0, -1.0))
    assert np.max(np.abs(price - black76_price(F, K, T, sig, call))) < 1e-15
    assert np.max(np.abs(vega - black76_vega(F, K, T, sig))) < 1e-15


def test_engine_price_in_blocks_equals_sigma_then_black76_exactly() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import bench_smile

    v = bench_smile.view(True)
    F, K, T, c = bench_smile.chain(100_000)  # several blocks
    sigma, price = v.price("BTC", K, F, T, c, 0.43)
    assert np.array_equal(sigma, v.sigma("BTC", K, F, T, 0.43))
    assert np.array_equal(price, black76_price(F, K, T, sigma, c))
    base = np.full(T.size, 0.43)  # a per-option base too
    assert np.array_equal(v.price("BTC", K, F, T, c, base)[0], sigma)


def test_skew_not_applied_is_not_raised_when_the_config_turns_the_smile_off() -> None:
    """With smile.enabled false the engine quotes no smile at all: a fitted skew the YAML does not carry is the
    config's choice, not a smile the policy failed to apply, so no SKEW_NOT_APPLIED (the panel says why)."""
    from calreport.model import AppliedEntry, CalibrationConfig, LiveRun, Multipliers, Smile
    from calreport.report.smile import build_smile_sections

    nodes = [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
    skew = Smile(nodes=nodes, global_=[1.6, 1.3, 1.1, 1.0, 0.97, 1.0, 1.12])
    run = LiveRun(run_id="R", underlying="BTC", ts="2025-12-11T19:36:00Z", rv_7d=0.43, status="ok",
                  recommended=Multipliers(global_=1.0, smile=skew), smoothed=Multipliers(global_=1.0, smile=skew))
    applied = {"BTC": AppliedEntry(global_=1.0, run_id="A", source="policy")}  # flat: no smile applied
    on = CalibrationConfig()
    off = on.model_copy(update={"smile": on.smile.model_copy(update={"enabled": False})})
    flagged = build_smile_sections(["BTC"], {"BTC": run}, {}, applied, on)[0]
    assert flagged.flagged_bands and flagged.flag_text.startswith("SKEW_NOT_APPLIED")
    quiet = build_smile_sections(["BTC"], {"BTC": run}, {}, applied, off)[0]
    assert not quiet.flagged_bands and quiet.flag_text == ""
    assert "the engine quotes no smile" in quiet.note
