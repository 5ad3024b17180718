"""Shared fixtures: a fresh calibration root per test, one demo root per test run, test budgets.

The suite runs under pytest-xdist (`make test` uses two workers): every fixture writes under its own
tmp_path, and what is built once per run (the demo root) is built by the first worker that needs it
under a file lock in the run's shared temp directory; tests get their own copy.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from filelock import FileLock
from hypothesis import settings

import budget
from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.model import AutoRun, DataQuality, LiveRun, Multipliers
from calreport.store.history import append_row
from calreport.store.ids import new_run_id
from calreport.store.paths import Root

SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"

# Hypothesis: a small search by default, the full one with CALREPORT_LONG_TESTS=1 or
# --hypothesis-profile=long. Tests that set max_examples themselves scale it with budget.reps.
settings.register_profile("short", max_examples=15)
settings.register_profile("long", max_examples=300)
settings.load_profile("long" if budget.LONG else "short")


def pytest_configure(config: pytest.Config) -> None:
    """`--hypothesis-profile=long` also runs the long loops (the plugin loads the profile itself)."""
    if config.getoption("hypothesis_profile", None) == "long":
        budget.LONG = True


# The order tests start in (whole modules, so a module's fixtures are built once per worker).
# `--dist worksteal` gives each worker a contiguous half of the list and lets an idle worker take
# the tail of the other's queue, so the run ends when the last long test ends: long ones go first.
# The demo root is built once, under a lock, by the first worker that needs it: the module that
# builds it goes first and every other module that reads it right after, all in the first
# worker's half, so the second worker never waits for that lock. Then the long modules (measured
# on 2 cores, slowest first); the rest keep their usual order.
DEMO_FIRST = "test_sample_demo.py"  # its re-run test builds the run's demo root first thing
LONG_FIRST = (
    "test_backtest_scaleout.py", "test_harvest_parquet.py", "test_legacy.py", "test_backtest.py",
    "test_backtest_realdata.py", "test_uncertainty_surface.py", "test_backtest_frozen_realdata.py",
    "test_benchmarks_smoke.py", "test_reliability_concurrency.py", "test_reliability_crash.py",
    "test_harvest.py", "test_reliability_state_machine.py", "test_auto.py", "test_fuzz_inputs.py",
    "test_architecture.py", "test_cli.py", "test_apply.py", "test_reliability_fuzz.py", "test_serve.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The demo's builder, then the modules that read the demo root, then the long ones; stable otherwise."""
    readers = {item.path.name for item in items if "pristine_demo" in getattr(item, "fixturenames", ())}
    long_rank = {name: i for i, name in enumerate(LONG_FIRST)}

    def rank(item: pytest.Item) -> tuple[int, int]:
        name = item.path.name
        if name == DEMO_FIRST:
            return (0, 0)
        if name in readers:
            return (1, 0)
        return (2, long_rank.get(name, len(LONG_FIRST)))

    items.sort(key=rank)


def _listing(top: Path) -> list[tuple[str, int, int]]:
    """(path, size, mtime_ns) of every file under `top`: what a test must never change."""
    out = []
    for dirpath, _dirs, files in os.walk(top):
        for name in files:
            st = os.stat(os.path.join(dirpath, name))
            out.append((os.path.relpath(os.path.join(dirpath, name), top), st.st_size, st.st_mtime_ns))
    return sorted(out)


@pytest.fixture(scope="session", autouse=True)
def shared_data_is_never_written():
    """Real-data tests read ../shared/data through links; a compaction once followed a directory link
    and rewrote it. Any test run that adds, removes or rewrites a file there fails here."""
    if not SHARED_DATA.is_dir():
        yield
        return
    before = _listing(SHARED_DATA)
    yield
    assert _listing(SHARED_DATA) == before, "a test changed ../shared/data"


def _build_demo(path: Path) -> None:
    """The demo at its fixed anchor, plus the lines it logged (demo.log.json beside the root)."""
    from calreport.commands.demo import FIXED_ANCHOR, run_demo
    from calreport.commands.workspace import Workspace

    lines: list[str] = []
    assert run_demo(Workspace.open(Root(path / "demo")), log=lines.append, anchor_ms=FIXED_ANCHOR) == 0
    (path / "demo.log.json").write_text(json.dumps(lines))


class PristineDemo:
    """A demo root built once per test run; tests never write to it, they copy it."""

    def __init__(self, base: Path) -> None:
        self.root = Root(base / "demo")
        self.log: list[str] = json.loads((base / "demo.log.json").read_text())  # what run_demo printed

    def copy_to(self, dest: Path) -> Root:
        shutil.copytree(self.root.path, dest, symlinks=True)
        return Root(dest)


@pytest.fixture(scope="session")
def pristine_demo(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> PristineDemo:
    """`calreport demo` at FIXED_ANCHOR, built once per test run (the slowest fixture of the suite).

    Under xdist the workers share the run's temp directory: the first one builds it under a lock.
    """
    if worker_id == "master":
        base = tmp_path_factory.mktemp("pristine-demo")
        _build_demo(base)
        return PristineDemo(base)
    base = tmp_path_factory.getbasetemp().parent / "pristine-demo"
    with FileLock(str(base) + ".lock"):
        if not (base / "demo.log.json").exists():
            shutil.rmtree(base, ignore_errors=True)
            _build_demo(base)
    return PristineDemo(base)


@pytest.fixture(scope="session")
def compacted_btc_harvest(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The shared BTC harvest (../shared/data) compacted once per test run: its closed days as
    Parquet files and .errors.json sidecars, for the real-data tests whose point is not the file
    format (reading the gzip logs, or compacting them, costs each of them seconds). Tests copy the
    files into their own root (independent.copy_compacted_harvest); the directory itself is never written.
    The formats give the same rows: test_harvest and test_harvest_parquet check that on this harvest."""
    from calreport.market.compact import compact_closed_days

    src = SHARED_DATA / "deribit-harvest-2025-12" / "BTC"
    if not src.is_dir():
        pytest.skip("../shared/data is absent")
    base = tmp_path_factory.getbasetemp()
    if worker_id != "master":
        base = base.parent
    out = Root(base / "compacted-shared-harvest")
    with FileLock(str(out.path) + ".lock"):
        done = out.path / "done"
        if not done.exists():
            shutil.rmtree(out.path, ignore_errors=True)
            days = out.harvest_dir("BTC")
            days.mkdir(parents=True)
            for f in sorted(src.glob("*.jsonl.gz")):  # copies: ../shared is never a compaction's target
                shutil.copyfile(f, days / f.name)
            compact_closed_days(out, "BTC", 4_102_444_800_000)  # as of 2100: every day is closed
            assert not [*days.glob("*.jsonl"), *days.glob("*.jsonl.gz")], sorted(p.name for p in days.iterdir())
            done.write_text("")
    return out.harvest_dir("BTC")


@pytest.fixture(scope="session")
def calreport_process(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """`python -m calreport ARGS` in a process of its own, forked from one that imported the CLI once
    (tests/cli_fork.py): for tests that need the process boundary (a timeout on a hang), not start-up."""
    from cli_fork import CalreportForks

    forks = CalreportForks(tmp_path_factory.mktemp("calreport-forks"))
    yield forks.run
    forks.close()


@pytest.fixture
def demo_root(pristine_demo: PristineDemo, tmp_path: Path) -> Root:
    """A demo root (`calreport demo` at FIXED_ANCHOR) of this test's own, to read or change."""
    return pristine_demo.copy_to(tmp_path / "demo")


@pytest.fixture
def root(tmp_path: Path) -> Root:
    """A root created by `calreport init` (default config, applied YAML at 1.0, empty history, a site)."""
    r = Root(tmp_path / "root")
    actions.init(Workspace.open(r))
    return r


class RowFactory:
    """Writes history rows directly (as calibrate/auto would), so dashboard tests need neither."""

    def __init__(self, root: Root) -> None:
        self.root = root
        self._minute = 0

    def _ts(self, ts: str | None) -> str:
        if ts:
            return ts
        self._minute += 1
        return f"2025-12-11T{10 + self._minute // 60:02d}:{self._minute % 60:02d}:00Z"

    def live(
        self,
        underlying: str = "BTC",
        *,
        smoothed: float | None = 1.0833,
        recommended: float | None = 1.0488,
        bands: dict[str, float] | None = None,
        status: str = "ok",
        reason: str = "Calibration within thresholds",
        decision: str = "hold",
        decision_reason: str = "Sample size too small (47 < 50)",
        ts: str | None = None,
        **extra: object,
    ) -> LiveRun:
        fields: dict[str, object] = dict(
            schema_version=1,
            run_id=new_run_id(),
            ts=self._ts(ts),
            underlying=underlying,
            multiplier_tested=0.9266,
            rv_7d=0.432,
            atm_iv=0.419,
            recommended=Multipliers(global_=recommended, bands=bands or {}),
            smoothed=Multipliers(global_=smoothed, bands=bands or {}),
            mae_pct=15.74,
            vega_weighted_mae_pct=12.82,
            samples=47,
            status=status,
            reason=reason,
            decision=decision,
            decision_reason=decision_reason,
        )
        fields.update(extra)
        run = LiveRun(**fields)
        append_row(self.root.live_history, run)
        return run

    def auto(
        self,
        underlying: str = "BTC",
        *,
        multiplier: float | None = 1.12,
        mae: float | None = 18.5,
        status: str = "ok",
        reason: str = "Calibration within thresholds",
        ts: str | None = None,
        **extra: object,
    ) -> AutoRun:
        fields: dict[str, object] = dict(
            schema_version=1,
            run_id=new_run_id(),
            ts=self._ts(ts),
            underlying=underlying,
            dte_min=3,
            dte_max=10,
            lookback="14d",
            multiplier=multiplier,
            mae_pct=mae,
            vega_weighted_mae_pct=11.0 if mae is not None and mae < 400 else None,
            samples=2305,
            data_quality=DataQuality(status="ok", issues=[]),
            status=status,
            reason=reason,
        )
        fields.update(extra)
        run = AutoRun(**fields)
        append_row(self.root.auto_history, run)
        return run


@pytest.fixture
def rows(root: Root) -> RowFactory:
    return RowFactory(root)
