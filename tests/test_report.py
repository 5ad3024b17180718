"""The dashboard shows exactly the files of record: data attributes == YAML after every kind of write,
"-" for anything missing, markup in data stays text, long histories are paged, and an invalid YAML
gives a banner instead of invented numbers."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from foundation_helpers import force_apply

from calreport import fmt
from calreport.commands import cli
from calreport.model import Multipliers
from calreport.report import render, views
from calreport.report.render import render_site
from calreport.store import applied as apply
from calreport.store.applied import read_applied
from calreport.store.history import append_row
from calreport.store.ids import new_run_id
from calreport.store.paths import Root

XSS = "<img src=x onerror=window.__xss=1>"
TEMPLATES = Path(render.__file__).parent / "templates"


class _Collector(HTMLParser):
    """Elements with their attributes and the id of the enclosing <section>."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str], str | None]] = []
        self._sections: list[str | None] = []
        self.script = ""
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "section":
            self._sections.append(a.get("id"))
        self._in_script = tag == "script"
        self.elements.append((tag, a, self._sections[-1] if self._sections else None))

    def handle_endtag(self, tag: str) -> None:
        if tag == "section" and self._sections:
            self._sections.pop()
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.script += data


def page(root: Root) -> str:
    return root.index_html.read_text(encoding="utf-8")


def elements(html: str, section: str, attr: str) -> list[dict[str, str]]:
    c = _Collector()
    c.feed(html)
    return [a for _t, a, s in c.elements if s == section and attr in a]


def applied_attrs(html: str) -> dict[tuple[str, str], str]:
    return {(a["data-underlying"], a["data-band"]): a["data-multiplier"] for a in elements(html, "current-applied", "data-multiplier")}


def yaml_values(root: Root) -> dict[tuple[str, str], str]:
    doc = read_applied(root)
    out = {}
    for name, e in doc.underlyings.items():
        out[(name, "global")] = f"{e.global_:.4f}"
        out.update({(name, b): f"{v:.4f}" for b, v in e.bands.items()})
    return out


def latest_card(html: str, underlying: str) -> dict[str, str]:
    (card,) = [a for a in elements(html, "latest-run", "data-status") if a["data-underlying"] == underlying]
    return card


def state_numbers(doc: dict) -> dict[tuple[str, str], str]:
    out = {}
    for name, e in doc["underlyings"].items():
        out[(name, "global")] = f"{e['global']:.4f}"
        out.update({(name, b): f"{v:.4f}" for b, v in e["bands"].items()})
    return out


def assert_everything_matches_yaml(root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    html = page(root)
    want = yaml_values(root)
    assert applied_attrs(html) == want
    state = json.loads(root.state_json.read_text())
    assert state_numbers(state) == want
    assert state["underlyings"] == json.loads(json.dumps(read_applied(root).model_dump(by_alias=True, mode="json")["underlyings"]))
    assert cli.main(["--root", str(root.path), "status", "--json"]) == 0
    assert state_numbers(json.loads(capsys.readouterr().out)) == want


# --------------------------------------------------------------------------- formatting


def test_dashboard_numbers_use_the_shared_formatters_with_one_missing_mark(root, rows):
    """views formats through calreport.fmt: 4 decimals for multipliers, thousands separators, "-"."""
    rows.live(smoothed=None, recommended=1.08333, mae_pct=4668684.92, rv_7d=None, samples=2305)
    render_site(root)
    html = page(root)
    card = latest_card(html, "BTC")
    assert card["data-smoothed"] == views.MISSING == fmt.MISSING == "-"
    assert card["data-recommended"] == "1.0833"
    assert "4,668,684.92%" in html and "2,305" in html
    assert "2025-12-11 10:01 UTC" in html
    assert not re.search(r">\s*(none|None|nan)\s*<", html)


# --------------------------------------------------------------------------- applied == YAML


def test_force_apply_shows_smoothed_as_applied_and_current_global_equal_to_yaml(root, rows, capsys):
    run = rows.live(smoothed=1.0833, bands={"0-7d": 1.05, "7-30d": 1.09})
    force_apply(root, "BTC")
    render_site(root)
    html = page(root)
    card = latest_card(html, "BTC")
    assert card["data-run-id"] == run.run_id
    assert card["data-smoothed"] == "1.0833"
    assert card["data-recommended"] == "1.0488"
    assert card["data-status"] == "applied"
    assert card["data-reason"] == "Forced by user"
    assert applied_attrs(html)[("BTC", "global")] == "1.0833"
    assert applied_attrs(html)[("BTC", "7-30d")] == "1.0900"
    assert_everything_matches_yaml(root, capsys)


def test_policy_apply_then_rollback_like_apply_keep_page_state_and_yaml_equal(root, rows, capsys):
    first = rows.live(smoothed=1.0400, decision="apply", decision_reason="change 4.0% >= 3.0%")
    apply.apply_values(root, "BTC", first.smoothed, source="policy", run_id=first.run_id, reason="policy: apply")
    render_site(root)
    assert latest_card(page(root), "BTC")["data-status"] == "applied"
    assert_everything_matches_yaml(root, capsys)

    second = rows.live(smoothed=1.1200, bands={"0-7d": 1.2})
    force_apply(root, "BTC")
    render_site(root)
    html = page(root)
    assert latest_card(html, "BTC")["data-status"] == "applied"
    statuses = {a["data-run-id"]: a["data-status"] for a in elements(html, "live-history", "data-status")}
    assert statuses == {first.run_id: "superseded", second.run_id: "applied"}
    assert_everything_matches_yaml(root, capsys)

    # a rollback re-applies the first run's values as a new apply event
    apply.apply_values(root, "BTC", first.smoothed, source="rollback", run_id=first.run_id, reason="Rollback to earlier run")
    render_site(root)
    html = page(root)
    card = latest_card(html, "BTC")
    assert card["data-run-id"] == second.run_id and card["data-status"] == "rolled-back"  # labelled as what undid it
    assert card["data-reason"].startswith(f"Rolled back: run {first.run_id}'s values re-applied at")
    assert applied_attrs(html)[("BTC", "global")] == "1.0400"
    assert ("BTC", "0-7d") not in applied_attrs(html)  # the rollback's values have no bands
    assert_everything_matches_yaml(root, capsys)


def test_previous_value_comes_from_the_apply_event(root, rows):
    rows.live(smoothed=1.0833)
    force_apply(root, "BTC")
    render_site(root)
    html = page(root)
    row = re.search(r'data-underlying="BTC" data-band="global" data-multiplier="1.0833">(.*?)</tr>', html, re.S)
    assert row and "1.0000" in row.group(1)  # previous value (the init default)


def test_underlying_missing_from_yaml_is_one_point_zero_default_never_applied(root):
    root.calibration_config.write_text(
        root.calibration_config.read_text().replace("underlyings: [BTC, ETH]\n# DTE", "underlyings: [BTC, ETH, SOL]\n# DTE", 1)
    )
    render_site(root)
    html = page(root)
    assert applied_attrs(html)[("SOL", "global")] == "1.0000"
    sol = re.search(r'data-applied-underlying="SOL">(.*?)</div>', html, re.S)
    assert sol and "default, never applied" in sol.group(1)
    assert "SOL" not in json.loads(root.state_json.read_text())["underlyings"]  # state == YAML, nothing invented


def test_auto_runs_never_appear_as_applied(root, rows):
    rows.auto(multiplier=1.3, status="ok")
    render_site(root)
    assert applied_attrs(page(root))[("BTC", "global")] == "1.0000"


# --------------------------------------------------------------------------- auto history, escaping


def test_insane_auto_run_shows_failed_with_its_reason_as_text(root, rows):
    bad = rows.auto(multiplier=0.5, mae=4668684.92, status="failed", reason=XSS)
    good = rows.auto(multiplier=1.12, mae=18.5, status="ok")
    render_site(root)
    html = page(root)
    trs = {a["data-run-id"]: a for a in elements(html, "auto-history", "data-run-id")}
    assert trs[bad.run_id]["data-status"] == "failed" and trs[bad.run_id]["data-multiplier"] == "0.5000"
    assert trs[good.run_id]["data-status"] == "ok"
    assert list(trs) == [good.run_id, bad.run_id]  # newest first
    assert "4,668,684.92%" in html
    assert "&lt;img src=x onerror=window.__xss=1&gt;" in html
    assert "<img" not in html


def test_markup_and_quotes_in_every_text_field_stay_inert(root, rows):
    evil = '"><script>window.__xss=1</script><b x="'
    rows.live(reason=evil, decision_reason=evil, status="failed", rv_source=evil, atm_source=evil)
    rows.auto(reason=evil, lookback=evil)
    render_site(root)
    html = page(root)
    c = _Collector()
    c.feed(html)
    assert [t for t, _a, _s in c.elements if t == "script"] == ["script"]  # only our own
    assert not [t for t, _a, _s in c.elements if t == "b"]
    assert latest_card(html, "BTC")["data-reason"] == evil  # round-trips as an attribute value


def test_templates_never_mark_data_safe_and_quote_every_attribute():
    env = render.env()
    assert env.autoescape is True
    for path in TEMPLATES.glob("*.j2"):
        text = path.read_text()
        assert "|safe" not in text.replace(" ", ""), path.name
        assert "Markup" not in text, path.name
        assert not re.search(r"=\{\{", text), f"{path.name}: unquoted attribute"
        assert not re.search(r'href="\{\{ *[a-z_.]*(reason|run_id|underlying)', text), path.name


def test_page_script_hash_matches_the_csp(root):
    html = page(root)
    c = _Collector()
    c.feed(html)
    import base64
    import hashlib

    digest = base64.b64encode(hashlib.sha256(c.script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in render.csp()
    (meta,) = [a for t, a, _s in c.elements if t == "meta" and a.get("http-equiv") == "Content-Security-Policy"]
    assert f"script-src 'sha256-{digest}'" in meta["content"]  # the <meta> CSP for file:// viewing


# --------------------------------------------------------------------------- old and partial rows


def test_rows_from_an_older_version_render_with_dashes(root):
    rid = new_run_id()
    append_row(root.live_history, {"schema_version": 1, "type": "live_run", "run_id": rid, "ts": "2025-12-01T00:00:00Z", "underlying": "BTC"})
    append_row(root.auto_history, {"schema_version": 1, "type": "auto_run", "run_id": "old-auto", "underlying": "BTC"})
    render_site(root)
    html = page(root)
    card = latest_card(html, "BTC")
    assert card["data-run-id"] == rid and card["data-smoothed"] == "-" and card["data-recommended"] == "-"
    assert card["data-status"] == "held"
    (auto,) = elements(html, "auto-history", "data-run-id")
    assert auto["data-multiplier"] == "-" and auto["data-status"] == "unknown"
    row = re.search(r'data-run-id="old-auto".*?</tr>', html, re.S).group(0)
    assert row.count(">-<") >= 7


def test_unreadable_history_lines_are_reported_not_fatal(root, rows):
    rows.live()
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","run_id":"torn","smoo')
    render_site(root)
    html = page(root)
    assert "1 unreadable line(s) skipped" in html
    assert root.live_history.read_bytes().endswith(b'"smoo')  # never rewritten


def test_run_detail_file_feeds_the_quote_table_and_iv_chart(root, rows):
    run = rows.live()
    detail = {
        "run_id": run.run_id, "underlying": "BTC", "ts": run.ts,
        "quotes": [
            {"instrument": "BTC-19DEC25-90000-C", "dte": 8.0, "strike": 90000, "type": "C", "mark": 0.0312,
             "synthetic": 0.0298, "diff_pct": -4.49, "vega": 0.9},
        ],
        "expiries": [
            {"expiry": "19DEC25", "dte": 8.0, "samples": 40, "atm_mark_iv": 0.419, "synthetic_iv": 0.4003},
            {"expiry": "26DEC25", "dte": 15.0, "samples": 30, "atm_mark_iv": 0.431, "synthetic_iv": 0.4003},
        ],
    }
    root.runs_dir.mkdir(parents=True, exist_ok=True)
    root.run_detail(run.run_id).write_text(json.dumps(detail))
    render_site(root)
    html = page(root)
    assert "BTC-19DEC25-90000-C" in html and "-4.5%" in html
    assert 'id="chart-iv-BTC"' in html and "41.9%" in html


# --------------------------------------------------------------------------- paging


def _set_dashboard(root: Root, max_rows: int, page_size: int) -> None:
    text = root.calibration_config.read_text()
    text = re.sub(r"dashboard: \{max_rows: \d+, page_size: \d+", f"dashboard: {{max_rows: {max_rows}, page_size: {page_size}", text)
    root.calibration_config.write_text(text)


def test_long_history_shows_newest_n_of_m_and_pages_the_rest(root, rows):
    _set_dashboard(root, max_rows=5, page_size=4)
    made = [rows.auto(multiplier=1.0 + i / 100) for i in range(11)]
    res = render_site(root)
    html = page(root)
    assert "showing 5 of 11" in html
    shown = [a["data-run-id"] for a in elements(html, "auto-history", "data-run-id")]
    assert shown == [r.run_id for r in reversed(made[-5:])]
    pages = root.site_dir / "history"
    assert sorted(p.name for p in pages.glob("auto-*.html")) == ["auto-1.html", "auto-2.html", "auto-3.html"]
    assert 'href="history/auto-3.html"' in html
    last = (pages / "auto-3.html").read_text()
    assert re.findall(r'data-run-id="([^"]+)"', last) == [r.run_id for r in reversed(made[8:])]
    first = (pages / "auto-1.html").read_text()
    assert re.findall(r'data-run-id="([^"]+)"', first) == [r.run_id for r in reversed(made[:4])]
    assert res.pages_total == 3 and res.pages_written == 3

    rows.auto(multiplier=1.5)  # an append changes only the last page
    res = render_site(root)
    assert res.pages_total == 3 and res.pages_written == 1
    assert "showing 5 of 12" in page(root)


def test_live_pages_are_rewritten_when_a_derived_status_changes(root, rows):
    _set_dashboard(root, max_rows=2, page_size=2)
    runs = [rows.live(smoothed=1.0 + i / 50) for i in range(5)]
    apply.apply_values(root, "BTC", runs[0].smoothed, source="policy", run_id=runs[0].run_id, reason="policy")
    render_site(root)
    p1 = root.site_dir / "history" / "live-1.html"
    assert re.search(rf'data-run-id="{runs[0].run_id}" data-underlying="BTC" data-status="applied"', p1.read_text())
    apply.apply_values(root, "BTC", runs[4].smoothed, source="force", run_id=runs[4].run_id, reason="Forced by user")
    res = render_site(root)
    assert re.search(rf'data-run-id="{runs[0].run_id}" data-underlying="BTC" data-status="superseded"', p1.read_text())
    assert res.pages_written == 2  # page 1 (superseded) and page 3 (applied); page 2 unchanged


def test_short_history_has_no_pages(root, rows):
    rows.auto()
    render_site(root)
    assert "showing 1 of 1" in page(root)
    assert not list((root.site_dir / "history").glob("*.html")) if (root.site_dir / "history").exists() else True


# --------------------------------------------------------------------------- invalid files


def test_invalid_yaml_renders_a_banner_no_numbers_and_keeps_the_last_state_json(root, rows):
    rows.live()
    force_apply(root, "BTC")
    render_site(root)
    good_state = root.state_json.read_bytes()
    root.applied.write_text(root.applied.read_text().replace("global: 1.0833", "global: banana"))
    res = render_site(root)
    html = page(root)
    assert not res.state_written
    assert root.state_json.read_bytes() == good_state
    assert applied_attrs(html) == {}
    assert 'data-error="yaml-invalid"' in html
    assert "Applied multipliers file is invalid" in html and "applied_multipliers.yaml" in html
    assert "still holds the last good state" in html
    assert latest_card(html, "BTC")["data-status"] == "unknown"
    assert "1.0833" not in re.search(r'<section id="current-applied".*?</section>', html, re.S).group(0)


def test_invalid_settings_file_renders_a_banner(root):
    root.calibration_config.write_text("dashboard: {max_rowz: 3}\n")
    res = render_site(root)
    html = page(root)
    assert "Settings file is invalid" in html and "max_rowz" in html
    assert applied_attrs(html) == {} and not res.state_written


def test_warning_banner_for_failed_latest_run_high_mae_and_thin_rv(root, rows):
    rows.live(status="failed", reason="Unrealistic: multiplier outside sane range", mae_pct=55.0, rv_returns=30)
    render_site(root)
    banners = re.search(r'<div id="banners".*?</div>\n</div>|<div id="banners".*?</div>', page(root), re.S).group(0)
    text = page(root)
    assert "BTC: latest live run failed" in text
    assert "BTC: high pricing error" in text
    assert "RV_7d from too little history" in text
    assert banners


def test_rendered_files_are_replaced_atomically_no_temp_files_left(root, rows):
    rows.live()
    render_site(root)
    leftovers = [p for p in root.site_dir.rglob("*") if p.name.startswith(".") or p.name.endswith(".tmp")]
    assert leftovers == []


def test_history_cache_reads_only_appends_and_equals_read_history(root, rows):
    from calreport.store.history import read_history
    from calreport.store.query import HistoryCache

    cache = HistoryCache()

    def same() -> None:
        want, got = read_history(root.live_history), cache.read(root.live_history)
        assert [r.run_id for r in got.refs] == [r.run_id for r in want.rows]
        assert (got.skipped, got.skipped_lines) == (want.skipped, want.skipped_lines)

    same()
    rows.live()
    same()
    with open(root.live_history, "ab") as fh:
        fh.write(b'{"type":"live_run","run_id":"torn","smoo')  # torn tail: skipped, not cached
    same()
    rows.live()  # append_line starts a fresh line after the torn one
    same()
    rows.live()
    same()
    root.live_history.write_bytes(b"")  # a replaced/truncated file is re-read from the start
    same()
    rows.live()
    same()


def test_applied_step_line_shows_the_value_in_force_when_applies_come_after_the_snapshots():
    """Runs sit at their snapshot time, applies at their own later time (a replayed snapshot, a
    force-apply): the applied value at t is the YAML value after the last apply at or before t, so
    before the first apply the line holds what that apply replaced instead of starting late."""
    from calreport.model import ApplyEvent, LiveRun
    from calreport.report import charts

    def m(x: float) -> Multipliers:
        return Multipliers.model_validate({"global": x})

    runs = [
        LiveRun(type="live_run", ts=f"2025-12-11T{h:02d}:00:00Z", underlying="BTC", recommended=m(r), smoothed=m(s))
        for h, r, s in ((8, 1.04, 1.01), (10, 1.10, 1.04))
    ]
    late = [ApplyEvent(type="apply", ts="2025-12-11T12:00:00Z", underlying="BTC", previous=m(1.0), applied=m(1.04))]
    chart = charts.multiplier_chart("BTC", runs, late)
    y_one = next(t.pos for t in chart.y_ticks if t.label == "1.00")
    applied = next(s for s in chart.series if s.name == "applied")
    assert applied.path.startswith(f"M{charts.LEFT:.1f},{y_one}H")  # 1.0 from the first run on
    assert chart.x_ticks[-1].label == "12-11 10:00"  # one clock: an apply written later does not widen the window
    assert chart.headers[-1] == "Applied at that time"
    assert [row[-1] for row in chart.rows] == ["1.0000", "1.0000"]  # newest first

    between = [ApplyEvent(type="apply", ts="2025-12-11T09:00:00Z", underlying="BTC", previous=m(1.0), applied=m(1.01))]
    chart = charts.multiplier_chart("BTC", runs, between)
    assert [row[-1] for row in chart.rows] == ["1.0100", "1.0000"]


def test_auto_chart_places_runs_at_their_window_end_in_time_order():
    """A backfill (--as-of last week, run today) is drawn at last week, not at the time it ran."""
    from calreport.model import AutoRun
    from calreport.report import charts

    def run(as_of: str | None, m: float, status: str = "ok") -> AutoRun:
        return AutoRun(type="auto_run", ts="2025-12-13T12:00:00Z", as_of=as_of, underlying="BTC", multiplier=m, status=status)

    chart = charts.auto_chart("BTC", [run("2025-12-13T12:00:00Z", 1.01), run("2025-12-06T12:00:00Z", 0.5, "failed"), run(None, 0.99)])
    assert chart.headers[0] == "Window end"
    assert [row[0] for row in chart.rows] == ["2025-12-13 12:00 UTC", "2025-12-13 12:00 UTC", "2025-12-06 12:00 UTC"]
    assert [t.label for t in chart.x_ticks][0] == "12-06"  # the backfill widens the axis to its week
    assert len(chart.markers) == 1 and float(chart.markers[0].x) == charts.LEFT


def test_importing_every_calreport_module_opens_no_template_data_or_source_file():
    """Templates are rendered, sources hashed and history read on first use, never at import time
    (a fresh interpreter imports every module under an audit hook that records each open)."""
    import subprocess
    import sys

    code = r"""
import pkgutil, sys, importlib
opened = []
def hook(event, args):
    if event == "open" and isinstance(args[0], (str, bytes)):
        opened.append((str(args[0]), str(args[1])))
sys.addaudithook(hook)
import calreport
for m in pkgutil.walk_packages(calreport.__path__, "calreport."):
    if not m.name.endswith("__main__"):  # `python -m calreport` runs the CLI: a program, not a module
        importlib.import_module(m.name)
libs = (sys.prefix, sys.base_prefix)  # installed packages (numpy reads its own metadata)
bad = [(p, mode) for p, mode in opened if not p.startswith(libs) and
       p.endswith((".j2", ".jsonl", ".yaml", ".json", ".index")) or (p.endswith(".py") and "b" in mode)]
print(len(opened), bad)
sys.exit(1 if bad else 0)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TEMPLATES.parents[2], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]


def test_policy_panel_describes_the_rules_the_policy_applies(root, rows):
    """Smoothing starts from the previous live run's smoothed value (calibration.live.previous_smoothed),
    and min_delta is an absolute multiplier difference (apply.decide), as the panel says."""
    from calreport.apply import decide
    from calreport.model import AppliedEntry, LiveRun, PolicyConfig

    render_site(root)
    panel = re.search(r'<section id="update-policy".*?</section>', page(root), re.S).group(0)
    assert "(1 - alpha) x the previous smoothed value" in panel and "x applied" not in panel
    # the policy caps a large step and applies it (calreport.apply); it never holds for it
    assert "capped at this step and applied" in panel and "held for review" not in panel
    assert "Min RV returns" in panel and "Min change in SE" in panel
    assert re.search(r"Min change</td><td class=\"num\">0.03</td>", panel)
    # +0.04 on an applied 2.0 is a 2% move: held if min_delta were relative (3%), applied as it is absolute
    run = LiveRun(smoothed=Multipliers(global_=2.04), samples=500, vega_sum=100.0, status="ok")
    assert decide(run, AppliedEntry(global_=2.0), PolicyConfig(min_delta=0.03))[0] == "apply"


# --------------------------------------------------------------------------- compiled history rows

_ODD_TEXT = ["", " ", "<b>x</b> & 'q' \"dq\"", "100% {0} {x} %s", "a\x00b", "\x01 0\x02", "ünï — ok", "-"]


@pytest.mark.parametrize("kind", ["live", "auto"])
def test_compiled_history_rows_equal_the_row_macro_rendered_row_by_row(kind):
    """A history page's rows are render.CompiledRow(row); the dashboard's tables call the macro per row.
    Both must give the same bytes for every shape of row (empty fields switch the macro's branches)
    and every value (escaping, NUL, % and braces in the text)."""
    cls, macro = (views.LiveRow, "live_row") if kind == "live" else (views.AutoRow, "auto_row")
    compiled = render.CompiledRow(macro)
    module = render.env().get_template("_macros.html.j2").module
    n = len(cls._fields)
    for i in range(3 * len(_ODD_TEXT)):
        row = cls._make(_ODD_TEXT[(i * 7 + k * 3) % len(_ODD_TEXT)] for k in range(n))
        assert compiled(row) == str(getattr(module, macro)(row)), row
    plain = cls._make(f"v{k}" for k in range(n))
    assert compiled(plain) == str(getattr(module, macro)(plain))


def test_a_history_page_cut_short_is_written_again(root, rows):
    cfg = root.calibration_config
    cfg.write_text(cfg.read_text().replace("max_rows: 50", "max_rows: 2").replace("page_size: 500", "page_size: 3"))
    for _ in range(7):
        rows.auto()
    first = render_site(root)
    assert first.pages_written == 3
    page_file = root.site_dir / "history" / "auto-2.html"
    whole = page_file.read_bytes()
    page_file.write_bytes(whole[: len(whole) // 2])  # a page written without fsync, cut by a power loss
    again = render_site(root)
    assert again.pages_written == 1 and page_file.read_bytes() == whole
