"""Stateful property test over live runs, policy applies, force-apply, auto runs, rollback, re-render
and hand-broken files.

Invariant after every step: the YAML == the state document (site/api/calibration/state.json) ==
the dashboard's #current-applied data attributes == the engine's view == the last apply event of
each underlying == the model; auto runs never change the YAML.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path

import hypothesis.strategies as st
from budget import reps
from hypothesis import HealthCheck, settings
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from calreport.commands import usecases as actions
from calreport.commands.workspace import Workspace
from calreport.engine import AppliedMultipliersWatcher
from calreport.errors import CalreportError, RefusedError
from calreport.model import (
    AppliedDocument,
    AutoRun,
    DataQuality,
    LiveRun,
    Multipliers,
)
from calreport.store.applied import apply_values, read_applied
from calreport.store.config import load_config
from calreport.store.files import atomic_write
from calreport.store.history import append_row
from calreport.store.ids import new_run_id
from calreport.store.paths import Root
from calreport.store.query import HistoryQuery
from calreport.store.state import state_document

UNDERLYINGS = ("BTC", "ETH")
BANDS = ("0-7d", "7-30d", "30-90d")
MIDPOINTS = {"0-7d": 3.0, "7-30d": 15.0, "30-90d": 45.0}

multipliers = st.floats(min_value=0.5, max_value=2.0, allow_nan=False).map(lambda x: round(x, 4)).filter(lambda x: x > 0)
band_values = st.dictionaries(st.sampled_from(BANDS), multipliers, max_size=3)
BROKEN_YAML = [
    "schema_version: 1\nunderlyings:\n  BTC: {global: 1.1, global: 1.2}\n",
    "schema_version: 1\nunderlyings:\n  BTC: !!python/object:os.system {global: 1.1}\n",
    "schema_version: 1\nunderlyings:\n  BTC: {global: .nan}\n",
    "schema_version: 1\nunderlyings:\n  BTC: {global: '1e-3'}\n",
    "schema_version: 1\nunderlyings:\n  BTC: {global: 1.1, bands: {weekly: 1.2}}\n",
    "schema_version: 1\nunderlyings:\n  BTC:\n    global: 1.1\n    bands: {0-7d: 1.0",  # truncated mid-file
    "schema_version: 1\nunderlyings:\n  BTC: {globl: 1.1}\n",
]


class CurrentApplied(HTMLParser):
    """Collects (underlying, band) -> data-multiplier inside <section id="current-applied">."""

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0  # >0 while inside the section
        self.found = False
        self.values: dict[tuple[str, str], str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if self.depth:
            if tag == "section":
                self.depth += 1
            if "data-underlying" in a and "data-band" in a and "data-multiplier" in a:
                self.values[(a["data-underlying"] or "", a["data-band"] or "")] = a["data-multiplier"] or ""
        elif tag == "section" and a.get("id") == "current-applied":
            self.depth, self.found = 1, True

    def handle_endtag(self, tag: str) -> None:
        if self.depth and tag == "section":
            self.depth -= 1


def dashboard_applied(index_html: Path) -> dict[tuple[str, str], str] | None:
    """The dashboard's applied values, or None while the page has no #current-applied section."""
    if not index_html.exists():
        return None
    parser = CurrentApplied()
    parser.feed(index_html.read_text(encoding="utf-8"))
    return parser.values if parser.found else None


def expected_attributes(doc: AppliedDocument) -> dict[tuple[str, str], str]:
    out = {}
    for u, e in doc.underlyings.items():
        out[(u, "global")] = f"{e.global_:.4f}"
        for label, v in e.bands.items():
            out[(u, label)] = f"{v:.4f}"
    return out


class CalibrationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="calreport-sm-"))
        self.root = Root(self.tmp / "root")
        actions.init(Workspace.open(self.root))
        self.engine = AppliedMultipliersWatcher(self.root, check_interval_s=0.05).start()
        # model: what each underlying's YAML entry must hold (None = initial default)
        self.model: dict[str, tuple[float, dict[str, float], str | None, str] | None] = {u: None for u in UNDERLYINGS}
        self.events: dict[str, list[tuple[str, Multipliers]]] = {u: [] for u in UNDERLYINGS}
        self.live: dict[str, list[LiveRun]] = {u: [] for u in UNDERLYINGS}
        self.auto_ids: list[str] = []

    def teardown(self) -> None:
        self.engine.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)

    @initialize()
    def nothing(self) -> None:
        """Hypothesis needs a rule to start from; the root is built in __init__."""

    # ------------------------------------------------------------------ helpers

    def _record(self, u: str, run_id: str, values: Multipliers, source: str) -> None:
        r = values.rounded(4)
        bands = {b: r.bands[b] for b in BANDS if b in r.bands}
        self.model[u] = (r.global_, bands, run_id, source)  # type: ignore[assignment]
        self.events[u].append((run_id, r))

    def _already_applied(self, u: str, values: Multipliers) -> bool:
        """Would writing `values` leave the YAML entry's numbers as they are (refused: "already applied")?"""
        r = values.rounded(4)
        g, bands = (self.model[u][0], self.model[u][1]) if self.model[u] else (1.0, {})
        return r.global_ == g and {b: r.bands[b] for b in BANDS if b in r.bands} == bands

    # ------------------------------------------------------------------ rules

    @rule(u=st.sampled_from(UNDERLYINGS), g=multipliers, bands=band_values, status=st.sampled_from(["ok", "degraded", "failed"]))
    def live_run(self, u: str, g: float, bands: dict[str, float], status: str) -> None:
        run = LiveRun(
            schema_version=1, run_id=new_run_id(), ts="2025-12-11T10:16:00Z", underlying=u,
            smoothed=Multipliers(global_=g, bands=bands), recommended=Multipliers(global_=g), status=status,
            reason="test", decision="hold", decision_reason="test",
        )
        append_row(self.root.live_history, run)
        self.live[u].append(run)
        actions.rerender(Workspace.open(self.root))

    @precondition(lambda self: any(self.live.values()))
    @rule(data=st.data())
    def policy_apply(self, data: st.DataObject) -> None:
        u = data.draw(st.sampled_from([u for u in UNDERLYINGS if self.live[u]]))
        run = self.live[u][-1]
        apply_values(self.root, u, run.smoothed, source="policy", run_id=run.run_id, reason="Policy: test")
        self._record(u, run.run_id, run.smoothed, "policy")
        actions.rerender(Workspace.open(self.root))

    @rule(u=st.sampled_from(UNDERLYINGS), allow=st.booleans())
    def force_apply(self, u: str, allow: bool) -> None:
        latest = self.live[u][-1] if self.live[u] else None
        if latest is None or (latest.status == "failed" and not allow) or self._already_applied(u, latest.smoothed):
            before = self.root.applied.read_bytes()
            try:
                actions.force_apply(Workspace.open(self.root), u, allow_unrealistic=allow)
            except RefusedError:
                assert self.root.applied.read_bytes() == before
                return
            raise AssertionError("force-apply should have been refused")
        ev = actions.force_apply(Workspace.open(self.root), u, allow_unrealistic=allow)
        assert ev.run_id == latest.run_id and ev.source == "force"
        self._record(u, latest.run_id, latest.smoothed, "force")

    @rule(u=st.sampled_from(UNDERLYINGS), m=st.floats(min_value=0.1, max_value=6.0), status=st.sampled_from(["ok", "failed"]))
    def auto_run(self, u: str, m: float, status: str) -> None:
        before = self.root.applied.read_bytes()
        run = AutoRun(
            schema_version=1, run_id=new_run_id(), ts="2025-12-11T10:20:00Z", underlying=u, dte_min=3, dte_max=10,
            lookback="14d", multiplier=m, mae_pct=12.0, samples=100, data_quality=DataQuality(status="ok"),
            status=status, reason="test",
        )
        append_row(self.root.auto_history, run)
        self.auto_ids.append(run.run_id)
        actions.rerender(Workspace.open(self.root))
        assert self.root.applied.read_bytes() == before, "an auto run changed the applied YAML"

    @rule(u=st.sampled_from(UNDERLYINGS), data=st.data())
    def rollback(self, u: str, data: st.DataObject) -> None:
        kinds = ["default", "unknown"] + (["applied"] if self.events[u] else []) + (["auto"] if self.auto_ids else [])
        kind = data.draw(st.sampled_from(kinds))
        current = self.model[u][2] if self.model[u] else None
        to: str | None = None
        target = None
        if kind == "default":
            target = next((e for e in reversed(self.events[u]) if e[0] != current), None)
        elif kind == "applied":
            to = data.draw(st.sampled_from([e[0] for e in self.events[u]]))
            target = next(e for e in reversed(self.events[u]) if e[0] == to)
        elif kind == "auto":
            to = data.draw(st.sampled_from(self.auto_ids))
        else:
            to = "no-such-run"
        before = self.root.applied.read_bytes()
        if target is None or self._already_applied(u, target[1]):
            try:
                actions.rollback(Workspace.open(self.root), u, to=to)
            except RefusedError:
                assert self.root.applied.read_bytes() == before
                return
            raise AssertionError(f"rollback {kind} should have been refused")
        ev = actions.rollback(Workspace.open(self.root), u, to=to)
        assert ev.source == "rollback" and ev.run_id == target[0]
        self._record(u, target[0], target[1], "rollback")

    @rule()
    def rerender(self) -> None:
        actions.rerender(Workspace.open(self.root))

    @rule(text=st.sampled_from(BROKEN_YAML))
    def hand_break_then_restore(self, text: str) -> None:
        """A broken file is refused by apply, never loaded by the engine, and survives untouched."""
        good = self.root.applied.read_bytes()
        version = self.engine.version
        atomic_write(self.root.applied, text.encode())
        deadline = time.monotonic() + 2
        while self.engine.last_error is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert self.engine.last_error is not None, "the engine did not notice the broken file"
        assert self.engine.version == version
        if self.live["BTC"]:
            try:
                actions.force_apply(Workspace.open(self.root), "BTC", allow_unrealistic=True)
            except CalreportError as exc:
                assert "\n" not in exc.one_line()
            else:
                raise AssertionError("force-apply overwrote a broken YAML")
        assert self.root.applied.read_bytes() == text.encode()
        atomic_write(self.root.applied, good)
        self.engine.refresh()
        assert self.engine.last_error is None

    # ------------------------------------------------------------------ the invariant

    @invariant()
    def every_view_agrees(self) -> None:
        doc = read_applied(self.root)
        events = HistoryQuery.file_order(self.root, "apply")
        for u in UNDERLYINGS:
            entry = doc.underlyings.get(u)
            want = self.model[u]
            if want is None:
                assert entry is None or entry.source == "init"
                assert not [e for e in events if e.underlying == u]
                continue
            assert entry is not None
            assert (entry.global_, entry.bands, entry.run_id, entry.source) == want
            last = [e for e in events if e.underlying == u][-1]
            assert (last.applied.global_, last.applied.bands, last.run_id, last.source) == want
            assert last.ts == entry.updated_at
        state = json.loads(self.root.state_json.read_text())
        assert state["underlyings"] == state_document(doc).to_json_dict()["underlyings"]
        html = dashboard_applied(self.root.index_html)
        if html is not None:
            want_attrs = expected_attributes(doc)
            assert {k: v for k, v in html.items() if k[0] in doc.underlyings} == want_attrs
            assert all(v == "1.0000" and b == "global" for (u, b), v in html.items() if u not in doc.underlyings)
        deadline = time.monotonic() + 3
        while self.engine.snapshot().document != doc and time.monotonic() < deadline:
            time.sleep(0.002)
        assert self.engine.snapshot().document == doc, "the engine's view lags or differs"
        for u in UNDERLYINGS:
            e = doc.entry(u)
            for band, dte in MIDPOINTS.items():
                assert self.engine.multiplier_for(u, dte) == e.bands.get(band, e.global_)
        assert load_config(self.root).band_names() == list(BANDS)


CalibrationMachine.TestCase.settings = settings(
    max_examples=reps(10, 100),  # the long run (CALREPORT_LONG_TESTS=1) searches 100 sequences
    stateful_step_count=20,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
test_calibration_state_machine = CalibrationMachine.TestCase
