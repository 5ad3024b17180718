"""What the multiplier multiplies: the base sigma of each option under a sigma mode.

    sigma = base x m_band            (the smile multiplies smile(x) on top; this module only answers "base")

Modes (config `sigma_mode`, per underlying; absent = rv):
- `rv`:      base = RV_7d, the same for every option (the historical behaviour).
- `atm_iv`:  base = the ATM mark IV of the option's expiry; between and beside expiries with an ATM
             IV, interpolated linearly in total variance w(T) = sigma_atm^2 T (flat in vol outside
             the expiries covered), so an expiry without strikes on both sides still has a base.
- `mark_iv`: base = the option's own mark IV (Deribit's mark_iv, the inverted mark where absent):
             m then measures how far the engine sits from the screen, option by option.

Why modes: RV_7d from a week of hourly returns is noisy (measured: harvest RV 52.9 % vs a full
week's 43.2 % on the same snapshot), so an RV-based multiplier moves with RV noise. An IV base
anchors the level to the market and leaves m to measure the engine's own bias.

    mode_of(value) -> the mode ("rv" for None)
    atm_iv_at(T, atm_T, atm_iv) -> ATM IV per T (total-variance interpolation)
    atm_iv_grouped(group, F, K, iv, is_call) -> each quote's group ATM IV (auto runs: group = snapshot x expiry)
    base_sigma(mode, *, rv, T, atm_T, atm_iv, sigma_mark) -> base per option (NaN where the mode has none)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from calreport.calibration.atm import atm_iv_by_expiry
from calreport.calibration.desk import mark_sigma
from calreport.calibration.pricing import year_fraction
from calreport.market.quotes import QuoteArrays
from calreport.model import DEFAULT_SIGMA_MODE, SIGMA_MODES, SigmaMode  # noqa: F401 - the schema owns the names


def mode_of(value: str | None) -> str:
    """The sigma mode a record states; records without one (older versions) are rv."""
    return value or DEFAULT_SIGMA_MODE


def atm_iv_at(T: np.ndarray, atm_T: np.ndarray, atm_iv: np.ndarray) -> np.ndarray:
    """ATM IV at each maturity T (years): linear in total variance between the expiries' (T, IV),
    flat in vol outside them; NaN without any expiry or where T <= 0."""
    T = np.asarray(T, dtype=np.float64)
    at, iv = np.asarray(atm_T, dtype=np.float64), np.asarray(atm_iv, dtype=np.float64)
    ok = np.isfinite(at) & (at > 0) & np.isfinite(iv) & (iv > 0)
    at, iv = at[ok], iv[ok]
    if at.size == 0:
        return np.full(T.shape, np.nan)
    order = np.argsort(at)
    at, iv = at[order], iv[order]
    w = np.interp(T, at, iv * iv * at)  # total variance; np.interp is flat in w outside the range
    with np.errstate(divide="ignore", invalid="ignore"):
        inside = np.sqrt(w / T)
    flat = np.where(T < at[0], iv[0], iv[-1])  # flat in vol, not in total variance, beyond the ends
    out = np.where((T >= at[0]) & (T <= at[-1]), inside, flat)
    return np.where(T > 0, out, np.nan)


def atm_iv_grouped(group: np.ndarray, F: np.ndarray, K: np.ndarray, iv: np.ndarray, is_call: np.ndarray) -> np.ndarray:
    """Per quote, the ATM IV of its group: the OTM quotes' IV linear in x = ln(K/F), read at x = 0
    between the nearest strikes on either side (as atm.atm_iv_by_expiry does per expiry). NaN for
    a group without OTM strikes on both sides. Vectorised over any number of groups."""
    g = np.asarray(group, dtype=np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = np.log(np.asarray(K, dtype=np.float64) / np.asarray(F, dtype=np.float64))
    v = np.asarray(iv, dtype=np.float64)
    otm = np.where(np.asarray(is_call, dtype=bool), x >= 0, x < 0)
    ok = np.isfinite(x) & np.isfinite(v) & (v > 0) & otm
    out = np.full(g.shape, np.nan)
    if not ok.any():
        return out
    keys, inv = np.unique(g, return_inverse=True)
    idx = np.flatnonzero(ok)
    # nearest point at or left of 0 (largest x <= 0) and at or right of 0 (smallest x >= 0) per group
    left_x = np.full(keys.size, -np.inf)
    right_x = np.full(keys.size, np.inf)
    le, ge = idx[x[idx] <= 0], idx[x[idx] >= 0]
    np.maximum.at(left_x, inv[le], x[le])
    np.minimum.at(right_x, inv[ge], x[ge])
    left_v = np.full(keys.size, np.nan)
    right_v = np.full(keys.size, np.nan)
    at_left = le[x[le] == left_x[inv[le]]]
    at_right = ge[x[ge] == right_x[inv[ge]]]
    left_v[inv[at_left]] = v[at_left]
    right_v[inv[at_right]] = v[at_right]
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.where(right_x > left_x, (0.0 - left_x) / (right_x - left_x), 0.0)
    atm = left_v + w * (right_v - left_v)
    atm = np.where(np.isfinite(left_x) & np.isfinite(right_x), atm, np.nan)
    return atm[inv]


def base_sigma(
    mode: str,
    *,
    rv: float | None,
    T: np.ndarray,
    atm_T: np.ndarray | None = None,
    atm_iv: np.ndarray | None = None,
    sigma_mark: np.ndarray | None = None,
) -> np.ndarray:
    """The base sigma (annualised fraction) of each option under `mode`; NaN where the mode has none."""
    T = np.asarray(T, dtype=np.float64)
    if mode == "rv":
        return np.full(T.shape, np.nan if rv is None else float(rv))
    if mode == "atm_iv":
        if atm_T is None or atm_iv is None:
            return np.full(T.shape, np.nan)
        return atm_iv_at(T, atm_T, atm_iv)
    if mode == "mark_iv":
        if sigma_mark is None:
            return np.full(T.shape, np.nan)
        s = np.asarray(sigma_mark, dtype=np.float64)
        return np.where(np.isfinite(s) & (s > 0), s, np.nan)
    raise ValueError(f"unknown sigma mode {mode!r} (known: {', '.join(SIGMA_MODES)})")


def quote_base(mode: str, rv: float | None, q: QuoteArrays, T: np.ndarray, chain: QuoteArrays, chain_T: np.ndarray) -> np.ndarray:
    """The base sigma of the quotes `q` (times to expiry `T`) under `mode`, the ATM IV curve taken
    from the whole `chain`: the one rule a live run, its backtest score and `calreport price` share."""
    if mode == "rv":
        return base_sigma(mode, rv=rv, T=T)
    _, atm_T, atm_iv = atm_iv_by_expiry(chain, chain_T)
    smark = mark_sigma(q.mark_iv, q.mark_price, q.underlying_price, q.strike, T, q.is_call) if mode == "mark_iv" else None
    return base_sigma(mode, rv=rv, T=T, atm_T=atm_T, atm_iv=atm_iv, sigma_mark=smark)


@dataclass(frozen=True)
class BaseHold:
    """The base an engine holds between two calibrations, frozen at the decision's chain.

    Why: scoring the applied values at t + h with a base taken from the chain at t + h lets a variant
    see the chain it is scored on (a `mark_iv` variant then scores ~0 by construction). The engine
    only knows the chain it calibrated on, so the backtest scores with what this holds:
    - rv:      the RV_7d of the decision;
    - atm_iv:  the ATM IV of each expiry at the decision (per expiry date, so at t + h each held
               expiry sits at its shorter maturity; total-variance interpolation between them);
    - mark_iv: each instrument's mark IV at the decision (an instrument listed later has no base
               and is not scored, as the engine could not quote it from this calibration).
    """

    mode: str
    rv: float | None
    atm_expiry_ms: np.ndarray  # int64, ascending
    atm_iv: np.ndarray
    names: np.ndarray  # str, sorted unique instrument names (mark_iv)
    name_sigma: np.ndarray

    @classmethod
    def freeze(cls, mode: str, rv: float | None, chain: QuoteArrays, chain_T: np.ndarray) -> BaseHold:
        """Hold what `quote_base` would give from this chain (bit for bit at the decision time)."""
        empty_i, empty_f = np.zeros(0, dtype=np.int64), np.zeros(0)
        if mode == "rv":
            return cls(mode, rv, empty_i, empty_f, np.zeros(0, dtype=str), empty_f)
        exps, _, atm = atm_iv_by_expiry(chain, chain_T)
        names, sig = np.zeros(0, dtype=str), empty_f
        if mode == "mark_iv":
            s = mark_sigma(chain.mark_iv, chain.mark_price, chain.underlying_price, chain.strike, chain_T, chain.is_call)
            ok = np.isfinite(s) & (s > 0)
            inst = np.asarray(chain.instrument, dtype=object)[ok].astype(str)
            names, first = np.unique(inst, return_index=True)  # one base per instrument (its first quote)
            sig = s[ok][first]
        return cls(mode, rv, np.asarray(exps, dtype=np.int64), np.asarray(atm, dtype=np.float64), names, sig)

    def base(self, q: QuoteArrays, T: np.ndarray, now_ms: int) -> np.ndarray:
        """The held base of quotes `q` (times to expiry `T` at `now_ms`); NaN where nothing is held."""
        T = np.asarray(T, dtype=np.float64)
        if self.mode != "mark_iv":
            return self.at_maturity(T, now_ms)
        held = np.full(T.shape, np.nan)
        if self.names.size and len(q):
            inst = np.asarray(q.instrument, dtype=object).astype(str)
            j = np.clip(np.searchsorted(self.names, inst), 0, self.names.size - 1)
            hit = self.names[j] == inst
            held[hit] = self.name_sigma[j[hit]]
        return base_sigma("mark_iv", rv=self.rv, T=T, sigma_mark=held)

    def at_maturity(self, T: np.ndarray, now_ms: int) -> np.ndarray:
        """The held base at maturities `T` (years from `now_ms`) without an instrument: RV, or the held
        ATM curve; NaN under mark_iv (its base exists per listed instrument only)."""
        T = np.asarray(T, dtype=np.float64)
        if self.mode == "atm_iv":
            atm_T = year_fraction(self.atm_expiry_ms, now_ms) if self.atm_expiry_ms.size else np.zeros(0)
            return base_sigma("atm_iv", rv=self.rv, T=T, atm_T=atm_T, atm_iv=self.atm_iv)
        if self.mode == "rv":
            return base_sigma("rv", rv=self.rv, T=T)
        return np.full(T.shape, np.nan)
