"""Number formatting for every surface (CLI lines, dashboard, commit messages): one missing-value
mark, one precision per kind of figure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime

from calreport.timeutil import parse_time

MISSING = "-"  # the one mark for a value that is absent or not finite, on every surface


def finite(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(float(x))


# The common case of finite() is tested first, inline, where a history page formats 100,000 values:
# `type(x) is float and x - x == 0.0` (inf - inf and nan - nan are nan); a call to a helper costs as
# much as the test. A format spec with a nested field ({x:.{nd}f}) is parsed on every call: the
# default precision has its own literal spec.


def mult(x: float | None) -> str:
    """Multipliers always with 4 decimals, as in the YAML."""
    if type(x) is float and x - x == 0.0:
        return f"{x:.4f}"
    return f"{float(x):.4f}" if finite(x) else MISSING  # type: ignore[arg-type]


def se(x: float | None) -> str:
    """A multiplier's standard error shown beside it ('±0.0156'); '' when there is none (older rows)."""
    if type(x) is float and x - x == 0.0:
        return f"\u00b1{x:.4f}"
    return f"\u00b1{float(x):.4f}" if finite(x) else ""  # type: ignore[arg-type]


def interval(ci: list[float] | tuple[float, float] | None) -> str:
    """A 95 % interval of a multiplier: '0.9167-0.9778'; '' when there is none."""
    if not ci or len(ci) != 2 or not (finite(ci[0]) and finite(ci[1])):
        return ""
    return f"{float(ci[0]):.4f}-{float(ci[1]):.4f}"


def span(hours: float | None) -> str:
    """A length of time given in hours: '45 min', '2.1 h', '3.4 d'."""
    if not (type(hours) is float and hours - hours == 0.0 or finite(hours)):
        return MISSING
    h = float(hours)  # type: ignore[arg-type]
    if h < 1:
        return f"{h * 60:.0f} min"
    return f"{h:.1f} h" if h < 48 else f"{h / 24:.1f} d"


def pct(x: float | None, nd: int = 2) -> str:
    """A value already in percent (MAE 15.74 -> '15.74%'), with thousands separators."""
    if type(x) is float and x - x == 0.0:
        return f"{x:,.2f}%" if nd == 2 else f"{x:,.{nd}f}%"
    return f"{float(x):,.{nd}f}%" if finite(x) else MISSING  # type: ignore[arg-type]


def vol(x: float | None, nd: int = 1) -> str:
    """A vol stored as a fraction (0.432 -> '43.2%')."""
    if type(x) is float and x - x == 0.0:
        return f"{x * 100:,.1f}%" if nd == 1 else f"{x * 100:,.{nd}f}%"
    return f"{float(x) * 100:,.{nd}f}%" if finite(x) else MISSING  # type: ignore[arg-type]


def vp(x: float | None, nd: int = 2) -> str:
    """Vol points (already x100): 1.234 -> '1.23 vp'."""
    return f"{float(x):,.{nd}f} vp" if finite(x) else MISSING  # type: ignore[arg-type]


def num(x: float | None, nd: int = 2) -> str:
    return f"{float(x):,.{nd}f}" if finite(x) else MISSING  # type: ignore[arg-type]


def integer(x: int | float | None) -> str:
    if type(x) is int:
        return f"{x:,}"
    return f"{int(x):,}" if finite(x) else MISSING  # type: ignore[arg-type]


def limit(x: float) -> str:
    """A configured threshold as the user wrote it (0.03, 25, 1e-06)."""
    return f"{x:g}"


def time(ts: str | None) -> str:
    """'2025-12-11T10:16:00Z' -> '2025-12-11 10:16 UTC'; unparseable text is shown as it is."""
    if not ts:
        return MISSING
    if type(ts) is str and ts[-1:] == "Z" and len(ts) >= 17 and ts[4:5] == ts[7:8] == "-" and ts[10:11] == "T" and ts[13:14] == ":" and "1" <= ts[0] <= "9" and ts[11:13] < "24":
        # the files' own form (a history page formats 100,000): once the string parses, its digits
        # are the fields (YYYY-MM-DDTHH:MM, a four-digit year, an hour that does not roll over)
        try:
            datetime.fromisoformat(ts)
        except ValueError:
            pass
        else:
            return f"{ts[:10]} {ts[11:16]} UTC"
    try:
        dt = parse_time(ts)
    except ValueError:
        return str(ts)[:40]
    if dt.year < 1000:  # strftime's %Y, whatever the platform pads with
        return dt.strftime("%Y-%m-%d %H:%M UTC")
    return f"{dt.year}-{dt.month:02d}-{dt.day:02d} {dt.hour:02d}:{dt.minute:02d} UTC"  # a history page formats 100,000


def text(x: object) -> str:
    if x is None:
        return MISSING
    t = x.strip() if type(x) is str else str(x).strip()
    return t if t else MISSING


def multipliers(global_: float | None, bands: Mapping[str, float] | None = None) -> str:
    """'1.0142 (bands: 0-7d 0.9000, 7-30d 1.0500)' or the missing mark."""
    if not finite(global_):
        return MISSING
    listed = ", ".join(f"{k} {mult(v)}" for k, v in (bands or {}).items())
    return mult(global_) + (f" (bands: {listed})" if listed else "")


def node(x: float) -> str:
    """A smile node of normalised moneyness, as reasons, YAML comments and the dashboard name it: x=-1.50."""
    return f"x={x:.2f}" if x != 0 else "x=0.00"
