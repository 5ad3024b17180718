"""Test-only helpers for the real-data checks of the desk measures: a deliberately plain re-implementation
(own instrument-name parser, scipy.stats.norm Black-76) and a safe way to give a tmp root the shared
harvest. Nothing here imports calreport's pricing, so agreement means something."""

from __future__ import annotations

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


def link_shared_harvest(root: Root, underlying: str = "BTC") -> None:
    """Link the shared harvest's day files one by one into the root: a directory link would let a
    writer (compaction) rewrite ../shared itself; file links are replaced in the tmp root instead."""
    d = root.harvest_dir(underlying)
    d.mkdir(parents=True, exist_ok=True)
    for f in sorted((SHARED / "deribit-harvest-2025-12" / underlying).glob("*.jsonl.gz")):
        (d / f.name).symlink_to(f.resolve())
