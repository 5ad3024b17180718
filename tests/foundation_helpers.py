"""Row builders shared by the foundation tests (plain functions, no fixtures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calreport import apply
from calreport.model import ApplyEvent, AutoRun, DataQuality, LiveRun, Multipliers
from calreport.store.applied import FileApplyStore
from calreport.store.config import load_config
from calreport.store.history import append_row
from calreport.store.ids import new_run_id
from calreport.store.paths import Root


def add_live_run(
    root: Root,
    underlying: str = "BTC",
    smoothed: float = 1.0833,
    bands: dict[str, float] | None = None,
    status: str = "ok",
    ts: str = "2025-12-11T10:16:00Z",
) -> LiveRun:
    run = LiveRun(
        schema_version=1,
        run_id=new_run_id(),
        ts=ts,
        underlying=underlying,
        multiplier_tested=0.9266,
        rv_7d=0.432,
        atm_iv=0.419,
        recommended=Multipliers(global_=1.0488, bands={}),
        smoothed=Multipliers(global_=smoothed, bands=bands or {}),
        mae_pct=15.74,
        vega_weighted_mae_pct=12.82,
        samples=47,
        status=status,
        reason="Calibration within thresholds" if status == "ok" else "Unrealistic",
        decision="hold",
        decision_reason="Sample size too small (47 < 50)",
    )
    append_row(root.live_history, run)
    return run


def add_auto_run(root: Root, underlying: str = "BTC", multiplier: float = 0.5, mae: float = 4668684.92) -> AutoRun:
    run = AutoRun(
        schema_version=1,
        run_id=new_run_id(),
        ts="2025-12-11T10:20:00Z",
        underlying=underlying,
        dte_min=3,
        dte_max=10,
        lookback="14d",
        multiplier=multiplier,
        mae_pct=mae,
        vega_weighted_mae_pct=None,
        samples=2305,
        data_quality=DataQuality(status="ok", issues=[]),
        status="failed",
        reason="Unrealistic auto-calibration: multiplier or MAE outside sane range",
    )
    append_row(root.auto_history, run)
    return run


def force_apply(root: Root, underlying: str, *, allow_unrealistic: bool = False, via: str | None = None) -> ApplyEvent:
    """calreport.apply.force_apply on a root's files, without the command's hooks or re-render."""
    return apply.force_apply(FileApplyStore(root, load_config(root)), underlying, allow_unrealistic=allow_unrealistic, via=via)


def rollback(root: Root, underlying: str, to: str | None = None, *, via: str | None = None) -> ApplyEvent:
    """calreport.apply.rollback on a root's files, without the command's hooks or re-render."""
    return apply.rollback(FileApplyStore(root, load_config(root)), underlying, to, via=via)


def apply_flat_surface_seed(root: Root, underlying: str = "BTC", level: float = 1.0) -> None:
    """Force-apply a seed of the configured quoting model (the surface: every pillar at `level`, a flat smile),
    as a run would have applied it, so a live run's EWMA continues from it (a step-model seed is another
    quoting model: the EWMA would restart and the fit apply whole)."""
    from calreport.calibration.surface import quoting_model
    from calreport.model import Smile
    from calreport.store.applied import apply_values
    from calreport.store.config import load_config

    config = load_config(root)
    spec = quoting_model(config, "rv")
    assert spec is not None, "the default config quotes the surface"
    flat = Smile(nodes=list(config.smile.nodes), global_=[1.0] * len(config.smile.nodes))
    seed = Multipliers(global_=level, bands={b: level for b in spec.pillars}, smile=flat, surface=spec)
    apply_values(root, underlying, seed, source="force", run_id="seed", reason="seed")


def live_run_rows(root: Path) -> list[dict[str, Any]]:
    """The live_run rows of a root's history as written (JSON objects, file order)."""
    lines = (root / "history" / "live_calibration.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["type"] == "live_run"]


def calibrate_capturing_surface_uncertainty(root: Path, underlying: str, snapshot: Path, rv: float) -> tuple[dict[str, Any], tuple[Any, ...]]:
    """`calreport calibrate` on an initialised root, with the arguments live._surface_uncertainty was called with
    captured: (the run's live_run row, those arguments) — what the uncertainty tests refit independently."""
    from calreport.calibration import live
    from calreport.commands.cli import main

    captured: dict[str, tuple[Any, ...]] = {}
    real = live._surface_uncertainty

    def spy(*args: Any) -> Any:
        captured["args"] = args
        return real(*args)

    live._surface_uncertainty = spy  # type: ignore[assignment]
    try:
        assert main(["--root", str(root), "calibrate", "--underlying", underlying, "--snapshot", str(snapshot), "--rv", str(rv)]) == 0
    finally:
        live._surface_uncertainty = real  # type: ignore[assignment]
    return live_run_rows(root)[0], captured["args"]
