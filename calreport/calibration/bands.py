"""The one home of the band rule: which multiplier an option of a given DTE gets.

An option of DTE d belongs to the first configured band with min_dte <= d < max_dte. It gets
that band's multiplier when the values carry one for the band, else the global multiplier (also
outside every band). The engine, the live calibration and the policy all use these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calreport.store.models import DEFAULT_MULTIPLIER, AppliedEntry, Band, Multipliers

BandValues = AppliedEntry | Multipliers


def _global(values: BandValues) -> float:
    return float(values.global_) if values.global_ is not None else DEFAULT_MULTIPLIER


def band_index(dte: np.ndarray, bands: Sequence[Band]) -> np.ndarray:
    """Index of the first band with min <= dte < max, -1 outside every band."""
    idx = np.full(np.shape(dte), -1, dtype=np.int64)
    for i in reversed(range(len(bands))):  # per band (a handful); the first matching band wins
        b = bands[i]
        idx[(dte >= b.min_dte) & (dte < b.max_dte)] = i
    return idx


def multipliers_for_dte(dte: np.ndarray | Sequence[float], values: BandValues, bands: Sequence[Band]) -> np.ndarray:
    """Per-option multiplier: the band's value where the values have one for the DTE's band, else global."""
    dte = np.asarray(dte, dtype=np.float64)
    out = np.full(dte.shape, _global(values))
    for b in reversed(bands):  # first matching band with a value wins
        if b.name in values.bands:
            out[(dte >= b.min_dte) & (dte < b.max_dte)] = float(values.bands[b.name])
    return out


def multiplier_at(dte: float, values: BandValues, bands: Sequence[Band]) -> float:
    """multipliers_for_dte for one DTE."""
    return float(multipliers_for_dte(np.array([dte], dtype=np.float64), values, bands)[0])


def band_value(values: BandValues, label: str) -> float:
    """What a band label means for these values: its own multiplier if present, else global."""
    return float(values.bands.get(label, _global(values)))
