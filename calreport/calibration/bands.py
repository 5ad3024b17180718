"""The one home of the band rule: which multiplier an option of a given DTE gets.

An option of DTE d belongs to the first configured band with min_dte <= d < max_dte. It gets
that band's multiplier when the values carry one for the band, else the global multiplier (also
outside every band). The engine, the live calibration and the policy all use these functions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from calreport.model import DEFAULT_MULTIPLIER, AppliedEntry, Band, Multipliers

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


class BandLookup:
    """The band rule as one lookup over the sorted band edges (the engine's hot path).

    The sorted distinct edges cut the DTE axis into intervals; each interval's band is the first
    configured band containing it (the same first-match rule as band_index), -1 outside every band.
    The interval of a DTE is searchsorted(edges, dte, side="right"), computed as the count of edges
    <= dte: a few byte-wide comparisons over the array beat a binary search per option ~10x.
    `slot` maps -1 to len(bands), the slot of the global value.
    """

    def __init__(self, bands: Sequence[Band]) -> None:
        self.n_bands = len(bands)
        edges = sorted({float(e) for b in bands for e in (b.min_dte, b.max_dte)})
        self.edges = np.asarray(edges, dtype=np.float64)
        left = np.array(edges[:-1], dtype=np.float64)  # each inner interval's left edge (inclusive)
        inner = band_index(left, bands) if left.size else np.zeros(0, dtype=np.int64)
        self.band_of_interval = np.concatenate([[-1], inner, [-1]]).astype(np.int64)
        self.slot_of_interval = np.where(self.band_of_interval < 0, self.n_bands, self.band_of_interval).astype(np.intp)

    def interval(self, dte: np.ndarray) -> np.ndarray:
        """searchsorted(edges, dte, side='right') (NaN -> 0: outside every band)."""
        dte = np.asarray(dte, dtype=np.float64)
        if self.edges.size > 250:  # byte counters would overflow: the plain binary search
            return np.where(np.isnan(dte), 0, np.searchsorted(self.edges, dte, side="right"))
        out = np.zeros(dte.shape, dtype=np.uint8)
        for e in self.edges:  # per edge (a handful), each a vectorised comparison
            out += dte >= e
        return out

    def index(self, dte: np.ndarray) -> np.ndarray:
        """band_index(dte, bands): the first band with min <= dte < max, -1 outside (NaN: -1)."""
        return self.band_of_interval[self.interval(dte)]

    def slot(self, dte: np.ndarray) -> np.ndarray:
        """index() with -1 mapped to len(bands): an index into per-band tables with the global last."""
        return self.slot_of_interval[self.interval(dte)]
