"""What the engine quotes for an entry: the surface when the entry carries a surface block (schema 3),
the step model exactly as before for entries written by older versions; the YAML alone decides."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from calreport.calibration.smile import sigma_for
from calreport.engine import EngineView
from calreport.model import CalibrationConfig, Multipliers, Smile, SurfaceSpec
from calreport.store import applied as applied_store
from calreport.store.history import ensure_history_files
from independent import surface_sigma_ref, variance_days

NODES = [-2.5, -1.5, -0.75, 0.0, 0.75, 1.5, 2.5]
SKEW = {"0-7d": [1.40, 1.19, 1.10, 1.0, 0.99, 1.03, 1.22], "7-30d": [1.45, 1.24, 1.07, 1.0, 0.94, 0.98, 1.13],
        "30-90d": [1.47, 1.26, 1.12, 1.0, 0.97, 1.0, 1.15]}
SMILE = Smile(nodes=NODES, global_=SKEW["30-90d"], bands=SKEW)
LEVELS = {"0-7d": 0.92, "7-30d": 0.98, "30-90d": 1.0}
SPEC = SurfaceSpec(pillars={"0-7d": 1.75, "7-30d": 16.4957, "30-90d": 55.9808}, weekend_weight=0.35, wing_slope_cap=1.8)
NOW = datetime(2025, 12, 11, 19, 36, 18, tzinfo=UTC)  # a Thursday
NOW_MS = NOW.timestamp() * 1000.0


def _chain(n: int = 400, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    T = rng.uniform(0.2, 150, n) / 365.0
    F = np.full(n, 90_000.0)
    K = F * np.exp(rng.uniform(-1.2, 1.2, n) * np.sqrt(T))
    return K, F, T


def _view(root, cfg: CalibrationConfig | None = None) -> EngineView:  # type: ignore[no-untyped-def]
    cfg = cfg or CalibrationConfig()
    return EngineView.from_document(applied_store.read_applied(root, cfg), cfg)


def test_a_version_2_file_is_quoted_by_the_step_model_exactly_until_an_apply_writes_a_surface_entry(root) -> None:  # type: ignore[no-untyped-def]
    ensure_history_files(root)
    v2 = Multipliers(global_=1.0, bands=LEVELS, smile=SMILE)
    applied_store.apply_values(root, "BTC", v2, source="force", run_id="r1", reason="x")
    text = root.applied.read_text().replace("schema_version: 3", "schema_version: 2")
    root.applied.write_text(text)  # what a version-2 calreport wrote: no surface block
    cfg = CalibrationConfig()
    K, F, T = _chain()
    view = _view(root)
    assert view.document.schema_version == 2 and view.entry("BTC").surface is None  # type: ignore[union-attr]
    step = sigma_for(v2, cfg.bands, T * 365.0, np.log(K / F), T, 0.43)  # the step model, as before the surface
    assert np.array_equal(view.sigma("BTC", K, F, T, 0.43, NOW_MS), step)
    assert np.array_equal(view.sigma("BTC", K, F, T, 0.43), step)  # no clock involved
    v3 = v2.model_copy(update={"surface": SPEC})
    ev = applied_store.apply_values(root, "BTC", v3, source="force", run_id="r2", reason="x")
    assert ev.schema_upgrade == "2 -> 3" and ev.applied.surface == SPEC
    assert "surface:\n      model: pillars-pchip-1\n      pillars:\n        0-7d: 1.7500" in root.applied.read_text()
    surf = _view(root).sigma("BTC", K, F, T, 0.43, NOW_MS)
    assert not np.allclose(surf, step)
    assert np.array_equal(surf, sigma_for(v3, cfg.bands, T * 365.0, np.log(K / F), T, 0.43, now_ms=NOW_MS))


def test_the_surface_quote_matches_an_independent_implementation(root) -> None:  # type: ignore[no-untyped-def]
    ensure_history_files(root)
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.0, bands=LEVELS, smile=SMILE, surface=SPEC), source="force", run_id="r", reason="x")
    entry = applied_store.read_applied(root).entry("BTC").model_dump(by_alias=True, mode="json")
    K, F, T = _chain(120)
    got = _view(root).sigma("BTC", K, F, T, 0.43, NOW_MS)
    for i in range(K.size):  # a reference loop over a few options (test only)
        expiry = NOW + timedelta(days=float(T[i] * 365.0))
        want = surface_sigma_ref(entry, 0.43, float(np.log(K[i] / F[i])), T[i] * 365.0, variance_days(NOW, expiry, 0.35))
        assert got[i] == pytest.approx(want, rel=1e-9), i


def test_a_config_edit_does_not_change_what_a_surface_entry_quotes(root) -> None:  # type: ignore[no-untyped-def]
    ensure_history_files(root)
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.0, bands=LEVELS, smile=SMILE, surface=SPEC), source="force", run_id="r", reason="x")
    K, F, T = _chain()
    before = _view(root).sigma("BTC", K, F, T, 0.43, NOW_MS)
    edited = CalibrationConfig.model_validate({
        "surface": {"weekend_weight": 1.0, "wing_slope_cap": 0.5},
        "bands": [{"name": "0-7d", "min_dte": 0, "max_dte": 5}, {"name": "7-30d", "min_dte": 5, "max_dte": 40},
                  {"name": "30-90d", "min_dte": 40, "max_dte": 120}],
    })
    assert np.array_equal(_view(root, edited).sigma("BTC", K, F, T, 0.43, NOW_MS), before)


def test_an_expiry_under_one_day_is_quoted_on_the_front_pillars_flat_level(root) -> None:  # type: ignore[no-untyped-def]
    """Under one day (calibration drops it: filters.min_dte 1) the front pillar's level extends flat:
    ATM sigma = base x m_front x sqrt(tau / T), tau on the variance clock (a weekday night here)."""
    ensure_history_files(root)
    applied_store.apply_values(root, "BTC", Multipliers(global_=1.0, bands=LEVELS, smile=SMILE, surface=SPEC), source="force", run_id="r", reason="x")
    T = np.array([6.0, 12.0]) / 24.0 / 365.0
    atm = _view(root).sigma("BTC", np.full(2, 90_000.0), np.full(2, 90_000.0), T, 0.43, NOW_MS)
    tau = np.array([variance_days(NOW, NOW + timedelta(hours=h), 0.35) for h in (6.0, 12.0)]) / 365.0
    assert atm == pytest.approx(0.43 * LEVELS["0-7d"] * np.sqrt(tau / T), rel=1e-12)


def test_multiplier_for_a_surface_entry_is_the_at_the_money_level_the_engine_quotes_not_the_band_step() -> None:
    from calreport.model import AppliedDocument, AppliedEntry

    cfg = CalibrationConfig()
    entry = AppliedEntry(global_=1.0, bands=LEVELS, smile=SMILE, surface=SPEC)
    view = EngineView.from_document(AppliedDocument(underlyings={"BTC": entry}), cfg)
    dtes = np.array([0.5, 1.75, 4.0, 6.9, 7.1, 12.0, 25.0, 45.0, 80.0, 120.0])
    T = dtes / 365.0
    ones = np.ones_like(T)
    for base in (0.43, 0.8):  # the ATM quote over its base, whatever the base
        atm = view.sigma("BTC", ones, ones, T, base, NOW_MS) / base
        assert np.allclose(view.multipliers_for("BTC", dtes, now_ms=NOW_MS), atm, rtol=1e-12, atol=0)
    got = view.multipliers_for("BTC", dtes, now_ms=NOW_MS)
    assert view.multiplier_for("BTC", 12.0, now_ms=NOW_MS) == pytest.approx(got[5], rel=1e-12)
    step = np.array([LEVELS["0-7d"]] * 4 + [LEVELS["7-30d"]] * 3 + [LEVELS["30-90d"]] * 2 + [1.0])
    assert np.abs(got - step).max() > 0.01  # the band step (what it returned) is not what is quoted
    # the step model (no surface block) keeps the band rule exactly
    flat_view = EngineView.from_document(AppliedDocument(underlyings={"BTC": entry.model_copy(update={"surface": None})}), cfg)
    assert flat_view.multipliers_for("BTC", dtes).tolist() == step.tolist()
