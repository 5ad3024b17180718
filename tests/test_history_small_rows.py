"""Auto rows stay small (their detail goes to history/runs/<run_id>.json), old fat rows still load
and render, a history page validates each row once, and the latest-run card shows the errors at
the tested and at the recommended calibration side by side."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from calreport.model import (
    AutoRun,
    AutoRunDetail,
    DataQuality,
    DeltaBucket,
    HistoryRow,
    Smile,
    SmileFitStats,
    UncertaintyEntry,
)
from calreport.report.render import render_site
from calreport.store import history
from calreport.store.history import append_auto_run, append_row, dumps_row, read_history
from calreport.store.ids import new_run_id
from calreport.store.paths import Root

DETAIL = dict(
    by_delta_bucket={"all": {"atm": DeltaBucket(samples=265, market_iv_pct=39.9, synthetic_iv_pct=41.2, gap_vp=1.26, price_error_pct=7.1)}},
    uncertainty={"global": UncertaintyEntry(se=0.0123, se_expiry=0.01, se_rv=0.007, ci95=[0.98, 1.03], expiries=8, draws=400)},
    smile=Smile(nodes=[-1.0, 0.0, 1.0], global_=[1.2, 1.0, 1.1]),
    smile_multiplier=1.0311,
    smile_fit=SmileFitStats(source="fitted", samples=412, quotes_per_node=[40, 300, 72], objective=1.9, iv_error_vp=1.7),
)


def _auto(**extra: object) -> AutoRun:
    return AutoRun(
        schema_version=1, run_id=new_run_id(), ts="2025-12-13T16:00:05Z", as_of="2025-12-13T16:00:00Z", underlying="BTC",
        dte_min=3, dte_max=10, lookback="14d", multiplier=1.0422, mae_pct=18.5, vega_weighted_mae_pct=11.0, samples=2305,
        data_quality=DataQuality(status="ok"), status="ok", reason="Calibration within thresholds", multiplier_se=0.0123,
        **extra,  # type: ignore[arg-type]
    )


def test_an_auto_run_row_carries_no_detail_and_its_detail_file_has_it(root: Root) -> None:
    run = _auto(**DETAIL)
    written = append_auto_run(root, run)
    line = json.loads(root.auto_history.read_text(encoding="utf-8"))
    assert not set(AutoRun.DETAIL_FIELDS) & set(line)  # not even as nulls
    assert line["detail_file"] == f"history/runs/{run.run_id}.json" == written.detail_file
    assert line["multiplier"] == 1.0422 and line["multiplier_se"] == 0.0123  # what the tables show stays
    detail = AutoRunDetail.model_validate_json((root.path / line["detail_file"]).read_bytes())
    assert detail.run_id == run.run_id
    for name in AutoRun.DETAIL_FIELDS:
        assert getattr(detail, name) == getattr(run, name), name
    assert len(dumps_row(written)) < len(dumps_row(run)) - 300


def test_an_old_fat_auto_row_still_loads_and_renders(root: Root) -> None:
    old = _auto(**DETAIL)
    append_row(root.auto_history, old)  # as auto-calibrate wrote it before: everything inline
    got = read_history(root.auto_history)
    assert got.skipped == 0 and got.rows[0].by_delta_bucket == old.by_delta_bucket and got.rows[0].smile == old.smile
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    assert f'data-run-id="{old.run_id}"' in html and "1.0422" in html


def _count_validations(monkeypatch) -> Counter[str]:  # type: ignore[no-untyped-def]
    seen: Counter[str] = Counter()
    real_line, real_row, inside = history.parse_line, history.parse_row, []

    def counting_line(line, *args):  # type: ignore[no-untyped-def]
        inside.append(line)
        try:
            row: HistoryRow = real_line(line, *args)
        finally:
            inside.pop()
        seen[row.run_id or ""] += 1
        return row

    def counting_row(data):  # type: ignore[no-untyped-def]
        row: HistoryRow = real_row(data)
        if not inside:  # parse_line's own fallback is the same validation, counted once
            seen[row.run_id or ""] += 1
        return row

    monkeypatch.setattr(history, "parse_line", counting_line)
    monkeypatch.setattr(history, "parse_row", counting_row)
    return seen


def _set_pages(root: Root, max_rows: int, page_size: int) -> None:
    cfg = root.calibration_config
    cfg.write_text(cfg.read_text().replace("max_rows: 50", f"max_rows: {max_rows}").replace("page_size: 500", f"page_size: {page_size}"))


def test_a_history_page_validates_each_of_its_rows_once(root: Root, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from calreport.report import views

    _set_pages(root, max_rows=3, page_size=4)
    monkeypatch.setattr(views, "CHART_POINTS", 2)  # the chart's points are among the table's 3 rows
    ids = [append_auto_run(root, _auto(**DETAIL)).run_id for _ in range(10)]
    seen = _count_validations(monkeypatch)
    render_site(root)  # cold: no index cache, every page written
    assert len(list((root.site_dir / "history").glob("auto-*.html"))) == 3
    shown = {i for i in ids if root.index_html.read_text(encoding="utf-8").count(f'data-run-id="{i}"')}
    for rid in ids:  # the index's scan validated every row; the pages took those rows as they were
        assert seen[rid] == (2 if rid in shown else 1), rid  # the dashboard's own few rows are read again
    # warm: the rows come from the persisted index; a page that must be written validates its rows once
    for p in (root.site_dir / "history").glob("auto-*.html"):
        p.unlink()
    seen.clear()
    render_site(root)
    older = [i for i in ids if i not in shown]
    assert older and all(seen[i] == 1 for i in older)


def test_the_latest_run_card_shows_errors_at_tested_and_at_recommended(root: Root, rows) -> None:  # type: ignore[no-untyped-def]
    rows.live("BTC", vega_weighted_mae_pct=12.82, otm_vega_weighted_mae_pct=18.1, iv_error_vp=3.31,
              fit_vega_weighted_mae_pct=6.25, fit_otm_vega_weighted_mae_pct=7.5, fit_iv_error_vp=1.42)
    rows.live("ETH", vega_weighted_mae_pct=9.0, iv_error_vp=2.0)  # an older row: no fit_* fields
    render_site(root)
    html = root.index_html.read_text(encoding="utf-8")
    latest = html[html.index('<section id="latest-run"') :]
    latest = latest[: latest.index("</section>")]
    cards = {m.group(1): m.group(0) for m in re.finditer(r'<div class="card" data-underlying="(\w+)".*?</dl>', latest, re.S)}

    def field(u: str, name: str) -> str:
        m = re.search(rf'data-field="{name}">([^<]*)<', cards[u])
        assert m, (u, name)
        return m.group(1)

    assert "at tested 0.9266" in cards["BTC"] and "at recommended" in cards["BTC"]
    assert (field("BTC", "vmae"), field("BTC", "fit-vmae")) == ("12.82%", "6.25%")
    assert (field("BTC", "otm-vmae"), field("BTC", "fit-otm-vmae")) == ("18.10%", "7.50%")
    assert (field("BTC", "iv-error"), field("BTC", "fit-iv-error")) == ("3.31", "1.42")
    assert (field("ETH", "fit-vmae"), field("ETH", "fit-iv-error")) == ("-", "-")
    assert "sigma = base x level x smile" in cards["BTC"] and "base x multiplier)" not in latest


def test_detail_file_path_is_beside_the_live_runs_details(root: Root) -> None:
    row = append_auto_run(root, _auto(**DETAIL))
    assert (root.path / (row.detail_file or "")).parent == root.runs_dir
    assert Path(row.detail_file or "").name == f"{row.run_id}.json"
