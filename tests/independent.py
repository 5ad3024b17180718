"""Test-only helpers for the real-data checks of the desk measures: a deliberately plain re-implementation
(own instrument-name parser, scipy.stats.norm Black-76) and a safe way to give a tmp root the shared
harvest. Nothing here imports calreport's pricing, so agreement means something."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from scipy.stats import norm

from calreport.store.paths import Root

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}


def expiry_seconds(code: str) -> float:
    """'13DEC25' -> epoch seconds of 08:00 UTC that day (Deribit's expiry time)."""
    return datetime(2000 + int(code[-2:]), MONTHS[code[-5:-2]], int(code[:-5]), 8, tzinfo=UTC).timestamp()


def b76(F, K, t, s, call):  # type: ignore[no-untyped-def]
    """Undiscounted Black-76 in coin (price / F), vectorised with scipy.stats.norm."""
    v = s * np.sqrt(t)
    d1 = np.log(F / K) / v + 0.5 * v
    d2 = d1 - v
    return np.where(call, norm.cdf(d1) - K / F * norm.cdf(d2), K / F * norm.cdf(-d2) - norm.cdf(-d1))


def copy_compacted_harvest(compacted: Path, root: Root) -> None:
    """Put the compacted shared BTC harvest (conftest's compacted_btc_harvest) into `root`: copies,
    since the root may compact or rewrite its days."""
    shutil.copytree(compacted, root.harvest_dir("BTC"), dirs_exist_ok=True)


# --------------------------------------------------------------------------- the quoted surface's figures


def desk_iv_error(rows: list[dict], *, max_dte: float = 90.0) -> tuple[float, float, int]:
    """(OTM vega-weighted mean |sigma - mark_iv| in vp, vega-weighted mean (sigma - mark_iv) of <10-delta
    puts in vp, quotes) from `calreport price` rows: each strike on its out-of-the-money side, mark_iv > 0,
    mark >= 0.0005 coin, 1 <= DTE <= max_dte (and <= 90), |ln K/F| <= 0.5, vega at the market's IV."""
    F = np.array([r["forward"] for r in rows], dtype=float)
    K = np.array([r["strike"] for r in rows], dtype=float)
    T = np.array([r["T"] for r in rows], dtype=float)
    s = np.array([np.nan if r["sigma"] is None else r["sigma"] for r in rows], dtype=float)
    miv = np.array([np.nan if r["mark_iv"] is None else r["mark_iv"] for r in rows], dtype=float)
    mark = np.array([np.nan if r["mark_price"] is None else r["mark_price"] for r in rows], dtype=float)
    call = np.array([r["instrument_name"].endswith("-C") for r in rows])
    dte = T * 365.0
    with np.errstate(invalid="ignore", divide="ignore"):
        use = (np.where(call, K >= F, K < F) & (miv > 0) & (mark >= 0.0005) & (dte >= 1) & (dte <= min(max_dte, 90.0))
               & (np.abs(np.log(K / F)) <= 0.5) & np.isfinite(s))
        d1 = np.log(F / K) / (miv * np.sqrt(T)) + 0.5 * miv * np.sqrt(T)
    w = np.where(use, np.nan_to_num(norm.pdf(d1) * np.sqrt(T)), 0.0)
    err = float(np.sum(w * np.abs(np.nan_to_num(s - miv))) / w.sum() * 100.0)
    wing = use & ~call & (norm.cdf(d1) - 1 > -0.10)  # put delta N(d1) - 1 above -0.10
    gap = float(np.sum(w[wing] * (s[wing] - miv[wing])) / w[wing].sum() * 100.0) if wing.any() else float("nan")
    return err, gap, int(use.sum())


def static_arbitrage(rows: list[dict]) -> tuple[int, int, int]:
    """(butterflies, call spreads, calendars) of priced rows, recomputed with scipy Black-76 calls at each row's
    sigma: per (expiry, forward) along strikes (call price non-increasing, slope >= -1, convex); calendars on
    rows that share a K/F across maturities (the --grid rows: total variance sigma^2 T non-decreasing in T)."""
    by_smile: dict[tuple[str, float], list[tuple[float, float, float]]] = {}
    for r in rows:
        by_smile.setdefault((r["expiry"], r["forward"]), []).append((r["strike"], r["sigma"], r["T"]))
    fly = spread = 0
    tol = 1e-12
    for (_, F), pts in by_smile.items():  # per expiry (a handful; the grid: 80)
        pts = sorted(set(pts))
        K = np.array([p[0] for p in pts])
        c = b76(F, K, np.array([p[2] for p in pts]), np.array([p[1] for p in pts]), True)
        kf = K / F
        dc = np.diff(c)
        slope = dc / np.diff(kf)
        spread += int(np.sum((dc > tol) | (slope < -1 - 1e-9)))
        fly += int(np.sum(np.diff(slope) * 0.5 * (np.diff(kf)[1:] + np.diff(kf)[:-1]) < -tol))
    cal = 0
    by_kf: dict[float, list[tuple[float, float]]] = {}
    for r in rows:
        by_kf.setdefault(round(r["strike"] / r["forward"], 10), []).append((r["T"], r["sigma"] ** 2 * r["T"]))
    for pts in by_kf.values():  # per K/F column
        if len(pts) > 1:
            w = np.array([p[1] for p in sorted(pts)])
            cal += int(np.sum(np.diff(w) < -1e-12 * np.maximum(w[1:], 1.0)))
    return fly, spread, cal


def variance_days(now: datetime, expiry: datetime, weekend_weight: float) -> float:
    """Variance days between two UTC instants, walked day by day with datetime: a weekday second counts
    a = 7 / (5 + 2 w), a Saturday or Sunday second w x a (a week is 7 variance days)."""
    from datetime import timedelta

    a = 7.0 / (5.0 + 2.0 * weekend_weight)
    total, t = 0.0, now
    while t < expiry:  # one calendar day (or its remainder) at a time
        nxt = min(datetime(t.year, t.month, t.day, tzinfo=UTC) + timedelta(days=1), expiry)
        total += (nxt - t).total_seconds() / 86400.0 * (a * weekend_weight if t.weekday() >= 5 else a)
        t = nxt
    return total


def surface_sigma_ref(entry: dict, base: float, k: float, T_days: float, tau_days: float) -> float:
    """sigma of a schema-3 entry (the YAML's mapping) for one option, from scratch: scipy's PchipInterpolator per
    pillar, ATM total variance linear between pillars and flat-level outside, wings linear in total variance
    with the capped end slope, the two pillars' smiles blended with the ATM weight."""
    from scipy.interpolate import PchipInterpolator

    spec = entry["surface"]
    labels = list(spec["pillars"])
    days = np.array([spec["pillars"][b] for b in labels]) / 365.0
    lev = np.array([entry["bands"].get(b, entry["global"]) for b in labels])
    W = (base * lev) ** 2 * days
    W = np.maximum.accumulate(W)
    nodes = np.array(entry["smile"]["nodes"])
    curves = [np.array(entry["smile"]["bands"].get(b, entry["smile"]["global"])) for b in labels]
    tau = tau_days / 365.0
    if tau <= days[0]:
        pairs, watm = [(0, 1.0)], W[0] / days[0] * tau
    elif tau >= days[-1]:
        pairs, watm = [(len(days) - 1, 1.0)], W[-1] / days[-1] * tau
    else:
        i = int(np.searchsorted(days, tau, side="right")) - 1
        t = (tau - days[i]) / (days[i + 1] - days[i])
        pairs, watm = [(i, 1 - t), (i + 1, t)], W[i] + t * (W[i + 1] - W[i])
    x = k / np.sqrt(watm)
    s = 0.0
    for p, wgt in pairs:  # one or two pillars
        f = PchipInterpolator(nodes, curves[p])
        cap = spec["wing_slope_cap"] / np.sqrt(watm)
        if x < nodes[0]:
            du = min(max(2 * curves[p][0] * f.derivative()(nodes[0]), -cap), 0.0)
            sp = np.sqrt(curves[p][0] ** 2 + du * (x - nodes[0]))
        elif x > nodes[-1]:
            du = min(max(2 * curves[p][-1] * f.derivative()(nodes[-1]), 0.0), cap)
            sp = np.sqrt(curves[p][-1] ** 2 + du * (x - nodes[-1]))
        else:
            sp = float(f(x))
        s += wgt * sp
    return float(np.sqrt(watm * s * s / (T_days / 365.0)))
