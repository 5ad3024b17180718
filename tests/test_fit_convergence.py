"""A surface fit that stopped at its step cap still descending says so: the solver reports it, the run records
`surface_fit_capped` and carries the FIT_NOT_CONVERGED flag; a converged fit (the shared snapshots under the
default config) carries neither."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from calreport.calibration import surface_fit
from calreport.calibration.lm import Model, minimise
from calreport.commands.cli import main
from tests.foundation_helpers import live_run_rows

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots" / "BTC-2025-12-11T1936Z.json"


def _quadratic(scale: np.ndarray):  # type: ignore[no-untyped-def]
    """f(p) = 0.5 sum scale p^2 with an exact model: LM with small damping converges in a few steps."""
    def value(p: np.ndarray) -> float:
        return 0.5 * float(np.sum(scale * p * p))

    def model(p: np.ndarray) -> Model:
        return Model(scale * p, np.diag(scale), scale.copy())

    return value, model


def test_the_solver_reports_a_descent_cut_short_by_the_step_cap_and_not_a_converged_one() -> None:
    value, model = _quadratic(np.array([1.0, 100.0]))
    kw = dict(value=value, model=model, step_tol=1e-9, rel_tol=1e-12, mu_range=(1e-9, 1e10), hold_bounds=False)
    lo, hi, p0 = np.full(2, -10.0), np.full(2, 10.0), np.array([3.0, -2.0])
    done = minimise(p0, lo, hi, max_steps=200, **kw)  # type: ignore[arg-type]
    assert not done.capped and done.steps < 200 and np.allclose(done.p, 0.0, atol=1e-6)
    cut = minimise(p0, lo, hi, max_steps=1, **kw)  # type: ignore[arg-type]
    assert cut.capped and cut.steps == 1 and value(cut.p) < value(p0)


def _live_row(root: Path) -> dict:  # type: ignore[type-arg]
    assert main(["--root", str(root), "init"]) == 0
    assert main(["--root", str(root), "calibrate", "--underlying", "BTC", "--snapshot", str(SNAP), "--rv", "0.43"]) == 0
    return live_run_rows(root)[0]


@pytest.mark.realdata
@pytest.mark.skipif(not SNAP.is_file(), reason="shared data absent")
def test_a_surface_fit_stopped_at_its_step_cap_is_flagged_and_a_converged_one_is_not(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok = _live_row(tmp_path / "default")
    assert ok["surface_fit_capped"] is False
    assert "FIT_NOT_CONVERGED" not in [f["code"] for f in ok.get("flags") or []]
    monkeypatch.setattr(surface_fit, "MAX_STEPS", 2)  # the same fit, cut short
    cut = _live_row(tmp_path / "capped")
    assert cut["surface_fit_capped"] is True
    flag = next(f for f in cut["flags"] if f["code"] == "FIT_NOT_CONVERGED")
    assert "step cap" in flag["message"] and "not a converged optimum" in flag["message"]
