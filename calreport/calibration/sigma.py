"""What the multiplier multiplies: the base sigma of each option under a sigma mode.

    sigma = base x m_band            (issue 12 adds x smile(x) on top; this module only answers "base")

Modes (config `sigma_mode`, per underlying; absent = rv):
- `rv`:      base = RV_7d, the same for every option (the historical behaviour).
- `atm_iv`:  base = the ATM mark IV of the option's expiry; between and beside expiries with an ATM
             IV, interpolated linearly in total variance w(T) = sigma_atm^2 T (flat in vol outside
             the expiries covered), so an expiry without strikes on both sides still has a base.
- `mark_iv`: base = the option's own mark IV (Deribit's mark_iv, the inverted mark where absent):
             m then measures how far the engine sits from the screen, option by option.

Why modes: RV_7d from a week of hourly returns is noisy (issue 11: harvest RV 52.9 % vs a full
week's 43.2 % on the same snapshot), so an RV-based multiplier moves with RV noise. An IV base
anchors the level to the market and leaves m to measure the engine's own bias.

    mode_of(value) -> the mode ("rv" for None)
    atm_iv_at(T, atm_T, atm_iv) -> ATM IV per T (total-variance interpolation)
    base_sigma(mode, *, rv, T, atm_T, atm_iv, sigma_mark) -> base per option (NaN where the mode has none)
"""

from __future__ import annotations

import numpy as np

from calreport.store.models import DEFAULT_SIGMA_MODE, SIGMA_MODES, SigmaMode  # noqa: F401 - the schema owns the names


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
