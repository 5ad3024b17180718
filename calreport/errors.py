"""The one exception type the CLI turns into a one-line error and a non-zero exit."""

from __future__ import annotations

from pathlib import Path


class CalreportError(Exception):
    """A user-facing problem: bad input, a refused action, an unreadable file.

    The message names the file (when there is one) and the problem, on one line.
    """

    def __init__(self, problem: str, path: Path | str | None = None, exit_code: int = 1) -> None:
        self.problem = " ".join(str(problem).split())
        self.path = None if path is None else str(path)
        self.exit_code = exit_code
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.path}: {self.problem}" if self.path else self.problem


class RefusedError(CalreportError):
    """An action the user asked for that calreport will not do (e.g. force-apply with no live run)."""
