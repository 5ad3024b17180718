"""Injected I/O errors (ENOSPC, EIO) at os.write / os.fsync / os.replace inside calreport.store.files.

Whatever call fails, the apply fails cleanly: one-line CalreportError, the old YAML stays byte for
byte, no apply event is recorded, no temp file is left, and the engine keeps the old values.
"""

from __future__ import annotations

import errno
import os
from collections import Counter

import pytest

from calreport.engine import AppliedMultipliersWatcher
from calreport.errors import CalreportError
from calreport.model import Multipliers
from calreport.store import files as fsutil
from calreport.store.applied import apply_values
from calreport.store.query import HistoryQuery

OPS = ("write", "fsync", "replace")


class FaultyOs:
    """`os` for calreport.store.files only: fails the n-th call of `op` (and, if persistent, every later one)."""

    def __init__(self, op: str | None = None, nth: int = 0, err: int = errno.EIO, persistent: bool = False) -> None:
        self.op, self.nth, self.err, self.persistent = op, nth, err, persistent
        self.calls: Counter[str] = Counter()
        self.failed = 0

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        real = getattr(os, name)
        if name not in OPS:
            return real

        def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
            self.calls[name] += 1
            n = self.calls[name]
            if name == self.op and (n == self.nth or (self.persistent and n > self.nth)):
                self.failed += 1
                raise OSError(self.err, os.strerror(self.err))
            return real(*args, **kwargs)

        return wrapped


def _apply(root, g: float = 1.2):
    return apply_values(root, "BTC", Multipliers(global_=g, bands={"0-7d": g}), source="force", run_id="new", reason="t")


def _calls_of_one_apply(root, monkeypatch) -> Counter[str]:
    counter = FaultyOs()
    monkeypatch.setattr(fsutil, "os", counter)
    _apply(root, 1.05)
    monkeypatch.setattr(fsutil, "os", os)
    return counter.calls


# Known gaps in apply.py / fsutil.py (foundation), reported to the lead; strict so a fix flips them:
KNOWN_GAPS: dict[tuple[str, int, bool], str] = {}  # the gaps found here were fixed in apply.py/fsutil.py


def _cases():
    # one successful apply makes: writes (YAML temp, history line), fsyncs (temp, dir, history), 1 replace
    for op, n_max in (("write", 2), ("fsync", 3), ("replace", 1)):
        for nth in range(1, n_max + 1):
            for err in (errno.ENOSPC, errno.EIO):
                for persistent in (False, True):
                    gap = KNOWN_GAPS.get((op, nth, persistent))
                    marks = [pytest.mark.xfail(strict=True, reason=gap)] if gap else []
                    yield pytest.param(
                        op, nth, err, persistent, marks=marks,
                        id=f"{op}#{nth}-{errno.errorcode[err]}-{'persistent' if persistent else 'once'}",
                    )


@pytest.mark.parametrize("op, nth, err, persistent", list(_cases()))
def test_failed_io_leaves_old_yaml_no_event_no_temp_file_and_engine_unchanged(root, monkeypatch, op, nth, err, persistent):
    assert _calls_of_one_apply(root, monkeypatch) == Counter({"write": 2, "fsync": 3, "replace": 1})
    old_yaml = root.applied.read_bytes()
    old_events = HistoryQuery.file_order(root, "apply")
    with AppliedMultipliersWatcher(root, check_interval_s=0.02) as engine:
        before = engine.snapshot()
        faulty = FaultyOs(op, nth, err, persistent)
        monkeypatch.setattr(fsutil, "os", faulty)
        with pytest.raises(CalreportError) as info:
            _apply(root)
        monkeypatch.setattr(fsutil, "os", os)
        assert faulty.failed >= 1
        message = info.value.one_line()
        assert "\n" not in message and message.startswith(str(root.path))
        assert root.applied.read_bytes() == old_yaml
        assert HistoryQuery.file_order(root, "apply") == old_events
        assert list(root.config_dir.glob("*.tmp")) == [] and list(root.history_dir.glob("*.tmp")) == []
        engine.refresh()
        assert engine.multiplier_for("BTC", 3) == 1.05 and engine.snapshot().document == before.document
    # and the next apply, with a healthy disk, works
    _apply(root, 1.3)
    assert HistoryQuery.file_order(root, "apply")[-1].applied.global_ == 1.3
