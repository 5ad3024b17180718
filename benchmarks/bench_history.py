"""Reading history backwards past one very long line (a hand-pasted 50 MB line once cost ~21 s per apply).

Every apply scans history/live_calibration.jsonl from the end (store/history.iter_lines_reversed).
A hand-made or corrupt line of tens of MB used to cost time quadratic in its length (the pending
line was rebuilt for every 64 KB block: one 50 MB line made each apply take ~21 s). Baseline:
reading the same file forwards, line by line, in the same run; the target is that the backwards
scan costs at most a few times that.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from benchmarks import Figure, best_time

NAME = "history"


def _scan_back(path: Path) -> int:
    from calreport.store.history import iter_lines_reversed

    return sum(len(line) for line in iter_lines_reversed(path))


def _scan_forward(path: Path) -> int:
    from calreport.store.history import iter_lines

    return sum(len(line) for _, line in iter_lines(path))


def run(quick: bool = False) -> list[Figure]:
    mb = 4 if quick else 50
    with tempfile.TemporaryDirectory(prefix="calreport-bench-history-") as tmp:
        path = Path(tmp) / "live_calibration.jsonl"
        path.write_bytes(b'{"type":"apply"}\n{"type":"note","x":"' + b"x" * (mb << 20) + b'"}\n{"type":"live_run"}\n')
        assert _scan_back(path) + 3 == _scan_forward(path)  # the same lines either way (forwards keeps the newlines)
        back = best_time(lambda: _scan_back(path), repeat=3)
        forward = best_time(lambda: _scan_forward(path), repeat=3)
    return [
        Figure(
            name=f"history scanned backwards past one {mb} MB line", value=back, unit="s",
            baseline=forward, baseline_label="forward line-by-line read of the same file",
            ratio=back / forward, target="<= 5x the forward read", met=back <= 5 * forward,
            notes=["iter_lines_reversed keeps a long line's pieces in a list and joins them once: linear in the bytes read"],
        )
    ]
