"""A live run records how well its *recommended* calibration fits (bands and smile included), beside
the errors at the tested one; checked on a shared real snapshot against a plain re-implementation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm

from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import RunDetail
from calreport.store.paths import Root
from tests.independent import SHARED, b76, expiry_seconds

SNAP = SHARED / "deribit-snapshots" / "BTC-2025-12-13T1543Z.json"
RV = 0.43


def _smile(x: np.ndarray, nodes: list[float], values: list[float]) -> np.ndarray:
    return np.interp(x, nodes, values)  # linear between nodes, flat beyond the ends


@pytest.mark.skipif(not SNAP.is_file(), reason="../shared/data is absent")
def test_a_live_run_records_the_errors_at_its_recommended_calibration_smile_included(tmp_path: Path) -> None:
    root = Root(tmp_path / "r")
    actions.init(Workspace.open(root, renderer=None))
    cfg = root.calibration_config  # the step model, re-implemented below (the surface: test_surface_done_when.py)
    cfg.write_text(cfg.read_text().replace("surface: {enabled: true", "surface: {enabled: false"))
    run = actions.run_live_calibration(Workspace.open(root, renderer=None), "BTC", SNAP, rv=RV)
    rec = run.recommended
    assert rec is not None and rec.smile is not None  # the smile is on by default
    assert run.fit_vega_weighted_mae_pct is not None
    assert run.fit_otm_vega_weighted_mae_pct is not None and run.fit_iv_error_vp is not None
    # the recommended calibration is not the tested one (1.0 flat), so its errors differ
    assert run.fit_vega_weighted_mae_pct != pytest.approx(run.vega_weighted_mae_pct, rel=1e-6)

    detail = RunDetail.model_validate_json(root.run_detail(run.run_id).read_text())
    rows = json.loads(SNAP.read_text())["result"]
    deribit_iv = {r["instrument_name"]: r["mark_iv"] for r in rows}
    now_s = max(r["creation_timestamp"] for r in rows) / 1000.0
    qs = detail.quotes  # the quotes the run used (its filters); priced here from scratch
    F = np.array([q.forward for q in qs])
    K = np.array([q.strike for q in qs])
    mark = np.array([q.mark for q in qs])
    call = np.array([q.type == "C" for q in qs])
    t = np.array([(expiry_seconds(q.instrument.split("-")[1]) - now_s) / (365 * 86400.0) for q in qs])
    m = np.array([rec.bands.get(q.band, rec.global_) if q.band else rec.global_ for q in qs])
    atm = RV * m
    x = np.log(K / F) / (atm * np.sqrt(t))
    curves = [rec.smile.bands.get(q.band, rec.smile.global_) if q.band else rec.smile.global_ for q in qs]
    sigma = np.array([atm[i] * _smile(x[i : i + 1], rec.smile.nodes, curves[i])[0] for i in range(len(qs))])
    syn = b76(F, K, t, sigma, call)

    # all quotes, on the run's own vega weights (those of the tested vMAE, so the two compare)
    w = np.array([q.vega for q in qs])
    rel = np.abs(syn - mark) / mark * 100.0
    assert run.fit_vega_weighted_mae_pct == pytest.approx(float((rel * w).sum() / w.sum()), rel=1e-6)

    # OTM quotes (each strike once), vega at Deribit's mark IV, errors in price and in vol points
    smark = np.array([deribit_iv[q.instrument] / 100.0 for q in qs])
    assert np.all(smark > 0)
    d1 = np.log(F / K) / (smark * np.sqrt(t)) + 0.5 * smark * np.sqrt(t)
    vega = np.sqrt(t) * norm.pdf(d1)
    otm = np.where(call, K >= F, K < F) & (mark > 0) & (vega > 0)
    wo = vega[otm]
    assert run.fit_otm_vega_weighted_mae_pct == pytest.approx(float((rel[otm] * wo).sum() / wo.sum()), rel=1e-6)
    iv_err = np.abs(sigma[otm] - smark[otm]) * 100.0
    assert run.fit_iv_error_vp == pytest.approx(float((iv_err * wo).sum() / wo.sum()), rel=1e-6)
