"""How long the long-running tests run: a short version by default, the full one on request.

`make test` runs every test; loops (kill storms, watcher storms) and hypothesis searches run a
short version there. `CALREPORT_LONG_TESTS=1 make test` (or `--hypothesis-profile=long`) runs the
full versions: the kill counts and example counts the reliability checks were written with.
"""

from __future__ import annotations

import os

LONG = os.environ.get("CALREPORT_LONG_TESTS", "").strip() not in ("", "0")  # conftest also sets it


def reps(short: int, long: int) -> int:
    """`short` repetitions in the default run, `long` in the long one."""
    return long if LONG else short
