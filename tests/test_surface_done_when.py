"""What the engine quotes after one `calreport calibrate` from a fresh root with the DEFAULT config, on the
three shared snapshots: the figures checked against tests/independent.py (scipy Black-76, own universe).

Sequence per snapshot: init, `calibrate --snapshot S --rv X` once (no force-apply, no config change), then
`price --snapshot S --rv X` and `price --grid`. RV fixed as in CALIBRATION_NOTES' worked numbers (BTC 0.43,
ETH 0.60). Skipped when the shared data is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from calreport.commands.cli import main
from independent import desk_iv_error, static_arbitrage

SNAP = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deribit-snapshots"
pytestmark = [pytest.mark.realdata, pytest.mark.skipif(not SNAP.is_dir(), reason="shared data absent")]
CASES = {"BTC 12-11": ("BTC", "BTC-2025-12-11T1936Z.json", 0.43), "ETH 12-11": ("ETH", "ETH-2025-12-11T1936Z.json", 0.60),
         "BTC 12-13": ("BTC", "BTC-2025-12-13T1543Z.json", 0.43)}


def _cli(capsys: pytest.CaptureFixture[str], root: Path, *args: str) -> tuple[str, str]:
    capsys.readouterr()
    assert main(["--root", str(root), *args]) == 0
    out = capsys.readouterr()
    return out.out, out.err


def _calibrate(capsys, root: Path, und: str, snap: str, rv: float) -> None:  # type: ignore[no-untyped-def]
    _cli(capsys, root, "calibrate", "--underlying", und, "--snapshot", str(SNAP / snap), "--rv", str(rv))


def _price(capsys, root: Path, und: str, snap: str, rv: float, *extra: str) -> tuple[list[dict], str]:  # type: ignore[no-untyped-def]
    out, err = _cli(capsys, root, "price", "--underlying", und, "--snapshot", str(SNAP / snap), "--rv", str(rv), *extra)
    return json.loads(out), err


@pytest.fixture(scope="module")
def quoted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Per snapshot, from its own fresh root: the priced rows, the grid rows, the summaries, the applied YAML."""
    capsys = _Capture()
    out: dict[str, dict] = {}
    for label, (und, snap, rv) in CASES.items():  # three snapshots
        root = tmp_path_factory.mktemp("root")
        _cli(capsys, root, "init")  # type: ignore[arg-type]
        _calibrate(capsys, root, und, snap, rv)
        rows, err = _price(capsys, root, und, snap, rv)
        grid, grid_err = _price(capsys, root, und, snap, rv, "--grid")
        out[label] = {"rows": rows, "summary": err, "grid": grid, "grid_summary": grid_err, "root": root,
                      "yaml": (root / "config" / "applied_multipliers.yaml").read_text()}
    return out


class _Capture:
    """capsys for a module-scoped fixture: stdout/stderr of main() through redirect."""

    def readouterr(self):  # type: ignore[no-untyped-def]
        out = self._out.getvalue() if hasattr(self, "_out") else ""
        err = self._err.getvalue() if hasattr(self, "_err") else ""
        import io
        import sys

        self._out, self._err = io.StringIO(), io.StringIO()
        self._out.buffer = _Bytes(self._out)  # type: ignore[attr-defined]
        sys.stdout, sys.stderr = self._out, self._err
        sys.stdout = _Stdout(self._out)  # type: ignore[assignment]
        return type("Out", (), {"out": out, "err": err})


class _Bytes:
    def __init__(self, s) -> None:  # type: ignore[no-untyped-def]
        self.s = s

    def write(self, b: bytes) -> int:
        return self.s.write(b.decode())

    def flush(self) -> None:
        pass


class _Stdout:
    def __init__(self, s) -> None:  # type: ignore[no-untyped-def]
        self.s, self.buffer = s, _Bytes(s)

    def write(self, t: str) -> int:
        return self.s.write(t)

    def flush(self) -> None:
        pass

    def getvalue(self) -> str:
        return self.s.getvalue()


@pytest.mark.parametrize("label", list(CASES))
def test_one_calibrate_quotes_within_1vp_with_the_put_wing_within_3vp(quoted: dict, label: str) -> None:
    err, gap, n = desk_iv_error(quoted[label]["rows"])
    assert n > 100
    assert err <= 1.0, f"{label}: OTM vega-weighted IV error {err:.2f} vp"
    assert -3.0 <= gap <= 3.0, f"{label}: <10-delta put gap {gap:+.2f} vp"
    assert "surface:" in quoted[label]["yaml"] and "schema_version: 3" in quoted[label]["yaml"]


@pytest.mark.parametrize("label", list(CASES))
def test_no_butterfly_call_spread_or_calendar_on_listed_strikes_or_the_grid(quoted: dict, label: str) -> None:
    q = quoted[label]
    assert static_arbitrage(q["rows"])[:2] == (0, 0)  # listed strikes, recomputed independently
    assert static_arbitrage(q["grid"]) == (0, 0, 0)  # the dense grid, with calendars at fixed K/F
    assert len(q["grid"]) == 301 * 80
    for text in (q["summary"], q["grid_summary"]):  # the engine's own summary agrees (listed calendars included)
        assert "listed 0 butterflies, 0 call spreads, 0 calendars; grid 0 butterflies, 0 call spreads, 0 calendars; no violation" in text


@pytest.mark.parametrize("label", list(CASES))
def test_sigma_is_continuous_across_every_band_edge(quoted: dict, label: str) -> None:
    from calreport.commands.workspace import Workspace
    from calreport.engine import EngineView
    from calreport.store.applied import read_applied

    ws = Workspace.open(quoted[label]["root"])
    view = EngineView.from_document(read_applied(ws.root, ws.config), ws.config)
    und, _, rv = CASES[label]
    kf = np.geomspace(0.3, 3.0, 301)
    now = 1_765_400_000_000.0
    worst = 0.0
    for b in ws.config.bands:  # a handful of edges
        for edge in (b.min_dte, b.max_dte):
            if edge <= 0:
                continue
            s = [view.sigma(und, kf, np.ones(kf.size), np.full(kf.size, (edge + e) / 365.0), rv, now) for e in (-1e-6, 1e-6)]
            worst = max(worst, float(np.max(np.abs(s[1] - s[0]))) * 100.0)
    assert worst <= 0.05, f"{label}: largest sigma jump at a band edge {worst:.4f} vp"


def test_front_expiries_under_seven_days_within_2vp_on_btc_12_13(quoted: dict) -> None:
    err, _, n = desk_iv_error(quoted["BTC 12-13"]["rows"], max_dte=7.0)
    assert n > 20
    assert err <= 2.0, f"BTC 12-13 expiries < 7 days: {err:.2f} vp"


def test_btc_12_11_then_12_13_beats_the_flat_model_before_and_converges_after(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    und, s1, rv = CASES["BTC 12-11"]
    s2 = CASES["BTC 12-13"][1]
    flat = tmp_path / "flat"
    main(["--root", str(flat), "init"])
    cfg = flat / "config" / "calibration.yaml"
    cfg.write_text(cfg.read_text().replace("smile:\n  enabled: true", "smile:\n  enabled: false"))  # the flat model (smile off)
    _calibrate(capsys, flat, und, s1, rv)
    flat_err = desk_iv_error(_price(capsys, flat, und, s2, rv)[0])[0]
    root = tmp_path / "surface"
    main(["--root", str(root), "init"])
    _calibrate(capsys, root, und, s1, rv)
    before = desk_iv_error(_price(capsys, root, und, s2, rv)[0])[0]
    assert before <= 0.6 * flat_err, f"before the second run {before:.2f} vp vs flat {flat_err:.2f} vp"
    _calibrate(capsys, root, und, s2, rv)
    after = desk_iv_error(_price(capsys, root, und, s2, rv)[0])[0]
    assert after <= 1.0, f"after the second run {after:.2f} vp"
