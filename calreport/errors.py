"""The one exception type the CLI turns into a one-line error, the exit codes, and `excerpt`.

Exit codes (documented in CALIBRATION_NOTES.md, "Refused inputs and exit codes"):

    0   ok
    1   refused or bad input: nothing was changed (one line on stderr names the file and the problem)
    2   usage: the command line itself is wrong (argparse)
    3   done, but the dashboard is stale: the files of record were written (stdout says what), site/
        could not be regenerated; `calreport render` retries it
    70  internal error: a bug (one line; CALREPORT_DEBUG=1 shows the traceback)
    130 interrupted (Ctrl-C)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_STALE_DASHBOARD = 3
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

EXCERPT_LIMIT = 100
MAX_PROBLEM_CHARS = 600


def excerpt(value: Any, limit: int = EXCERPT_LIMIT, *, plain: bool = False) -> str:
    """repr(value) cut to `limit` characters, for error messages that quote input (`plain`: a
    string is quoted as its text, without repr's quotes).

    Never builds the full repr of a big container (a YAML alias bomb, a 5000-digit integer): the
    repr is built piecewise and stops once `limit` is reached, so quoting input costs O(limit).
    """
    out = value[: limit + 1] if plain and isinstance(value, str) else _bounded_repr(value, limit + 1)
    out = " ".join(out.split())
    return out if len(out) <= limit else out[: max(limit - 3, 0)] + "..."


def _bounded_repr(value: Any, budget: int, _depth: int = 0) -> str:
    if _depth > 20:
        return "..."
    if isinstance(value, str):
        return repr(value[:budget]) if len(value) > budget else repr(value)
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return repr(value)
        except ValueError:  # beyond Python's int -> str digit limit
            return f"<integer of about {value.bit_length() * 30103 // 100000} digits>"
    if isinstance(value, (list, tuple, set, frozenset, dict)):
        opening, closing = ("{", "}") if isinstance(value, (dict, set, frozenset)) else ("(", ")") if isinstance(value, tuple) else ("[", "]")
        parts: list[str] = []
        used = 1
        items = value.items() if isinstance(value, dict) else value
        for item in items:
            if used >= budget:
                parts.append("...")
                break
            if isinstance(value, dict):
                k, v = item
                piece = f"{_bounded_repr(k, budget - used, _depth + 1)}: {_bounded_repr(v, budget - used, _depth + 1)}"
            else:
                piece = _bounded_repr(item, budget - used, _depth + 1)
            parts.append(piece)
            used += len(piece) + 2
        return opening + ", ".join(parts) + closing
    text = repr(value)
    return text[:budget]


class CalreportError(Exception):
    """A user-facing problem: bad input, a refused action, an unreadable file.

    The message names the file (when there is one) and the problem, on one line.
    """

    def __init__(self, problem: str, path: Path | str | None = None, exit_code: int = EXIT_REFUSED) -> None:
        problem = " ".join(str(problem).split())
        # a safety net: messages quote input through excerpt(); none should ever come near this
        self.problem = problem if len(problem) <= MAX_PROBLEM_CHARS else problem[: MAX_PROBLEM_CHARS - 3] + "..."
        self.path = None if path is None else str(path)
        self.exit_code = exit_code
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem


class RefusedError(CalreportError):
    """An action the user asked for that calreport will not do (e.g. force-apply with no live run)."""
