"""`calreport backtest`: decisions equal `calreport calibrate`'s, use no later data, score like live
runs, and leave the root's records untouched."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from calreport.apply import new_entry
from calreport.calibration.backtest import (
    IN_SAMPLE,
    Market,
    Variant,
    hold_kind,
    run_backtest,
    summarize,
)
from calreport.calibration.live import evaluate_live, score_applied
from calreport.commands import backtest as backtest_cmd
from calreport.commands import usecases as actions
from calreport.commands.cli import main
from calreport.commands.workspace import Workspace
from calreport.market.harvest import (
    encode_rows,
    index_price_per_snapshot,
    load_harvest,
    rv_from_harvest,
)
from calreport.market.prices import CLOSES, prices_dir, rv_from_price_store
from calreport.market.quotes import QuoteArrays
from calreport.market.rv import RealisedVol, realised_vol
from calreport.market.sample import (
    MS_PER_DAY,
    MS_PER_HOUR,
    SampleMarket,
    write_harvest,
    write_json,
)
from calreport.model import (
    BacktestDecision,
    BacktestSummary,
    CalibrationConfig,
    default_entry,
)
from calreport.store import applied as applied_store
from calreport.store.config import load_config, load_config_file
from calreport.store.paths import Root
from calreport.timeutil import iso_ms

END = 1_765_540_800_000  # 2025-12-12T12:00Z
DECISION_HOURS = 6  # decisions at END - 6h ... END - 1h, hourly (each one fits the surface)
BT_CONFIG = "policy: {min_delta: 0.005}\n"  # config defaults except a policy that applies often


def _market() -> SampleMarket:
    return SampleMarket("BTC", END - 8 * MS_PER_DAY, END + MS_PER_DAY, seed=5)


@pytest.fixture(autouse=True)
def _one_blas_thread():  # type: ignore[no-untyped-def]
    """Many small fits in a row: one BLAS thread, as `calreport backtest` runs them (same results, less waiting)."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def harvest_src(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A root holding 8 days of hourly harvest (a full week of RV returns before every decision),
    every 20 minutes around the decisions (so an hour's close could leak a later snapshot)."""
    base = tmp_path_factory.mktemp("bt-harvest")
    root = Root(base / "root")
    actions.init(Workspace.open(root, renderer=None))
    m = _market()
    hourly = np.arange(END - 8 * MS_PER_DAY, END + 4 * MS_PER_HOUR + 1, MS_PER_HOUR, dtype=np.int64)
    dense = np.arange(END - 12 * MS_PER_HOUR, END + 4 * MS_PER_HOUR, 20 * 60_000, dtype=np.int64)  # 3 per hour near the decisions
    times = np.union1d(hourly, dense)
    write_harvest(root, m, times)
    return root.path


@pytest.fixture
def bt_root(harvest_src: Path, tmp_path: Path) -> Root:
    """A fresh copy of the harvest root (config defaults except a policy that applies often)."""
    import shutil

    dst = tmp_path / "root"
    shutil.copytree(harvest_src, dst)
    root = Root(dst)
    root.calibration_config.write_text(BT_CONFIG)
    return root


@pytest.fixture(scope="module")
def default_replay(harvest_src: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Market, CalibrationConfig, list[dict]]:
    """The bt_root market replayed once with bt_root's config (every decision fits the surface: two
    tests read the same replay instead of computing it twice)."""
    import shutil

    root = Root(tmp_path_factory.mktemp("bt-default") / "root")
    shutil.copytree(harvest_src, root.path)
    root.calibration_config.write_text(BT_CONFIG)
    cfg = load_config(root)
    market = _market_arrays(root)
    return market, cfg, _run(market, cfg)


def _decisions() -> list[int]:
    return [END - k * MS_PER_HOUR for k in range(DECISION_HOURS, 0, -1)]


def _market_arrays(root: Root) -> Market:
    frame = load_harvest(root, "BTC", 0, 1 << 62)
    t, p = index_price_per_snapshot(frame)
    return Market(frame.to_quotes(), t, p)


def _run(market: Market, cfg: CalibrationConfig, horizons: list[int] | None = None) -> list[dict]:
    variant = Variant("root", cfg, default_entry())
    res = run_backtest(
        market, underlying="BTC", decisions_ms=_decisions(), horizons_ms=horizons or [MS_PER_HOUR, 3 * MS_PER_HOUR],
        variants=[variant], make_entry=new_entry,
    )
    return [d.to_row() for d in res.decisions]


def _tree_digest(root: Root) -> dict[str, str]:
    out = {}
    for sub in ("config", "history", "site"):
        for p in sorted((root.path / sub).rglob("*")):
            if p.is_file():
                out[str(p.relative_to(root.path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# --------------------------------------------------------------------------- the same decisions as calibrate


@pytest.mark.parametrize("extra", ["", "sigma_mode: atm_iv\n", "smile: {enabled: false}\n"], ids=["default", "atm_iv", "flat"])
def test_each_backtest_decision_equals_calreport_calibrate_on_the_same_snapshots_in_sequence(
    bt_root: Root, tmp_path: Path, extra: str, request: pytest.FixtureRequest
) -> None:
    """Replaying the decision snapshots one by one through the real use case (history, EWMA, apply
    lock and all) gives the backtest's decisions, smoothed values and applied values, whatever the
    sigma model (the smile by default, the atm_iv sigma mode, the flat model)."""
    text = bt_root.calibration_config.read_text() + extra
    if "smile: {enabled: false}" in extra:  # the flat model converges in one apply on this market (the first takes the
        text = text.replace("min_delta: 0.005}", "min_delta: 0.001, min_delta_se: 0}")  # fit whole): a finer change rule keeps it applying
    bt_root.calibration_config.write_text(text)
    cfg = load_config(bt_root)
    if extra:
        rows = _run(_market_arrays(bt_root), cfg)
    else:  # the root's config as it is: the module's one replay of it
        _, shared_cfg, rows = request.getfixturevalue("default_replay")
        assert shared_cfg.settings_hash() == cfg.settings_hash()
    assert sum(r["decision"] == "apply" for r in rows) >= 2, [r.get("decision_reason") for r in rows]  # the replay covers applies, not only holds
    ws = Workspace.open(bt_root, renderer=None)
    m = _market()
    for r in rows:
        snap = write_json(tmp_path / "snaps" / f"{r['snapshot_ts'][:13]}.json", m.snapshot_payload(_ms(r["snapshot_ts"])))
        run = actions.run_live_calibration(ws, "BTC", snap)
        after = applied_store.read_applied(bt_root, cfg).entry("BTC")
        assert (run.status, run.decision, run.decision_reason) == (r["status"], r["decision"], r["decision_reason"])
        assert run.rv_returns == r["rv_returns"] and run.rv_7d == pytest.approx(r["rv_7d"], rel=1e-12)
        assert run.smoothed is not None and run.smoothed.global_ == r["smoothed"]["global"]
        assert run.smoothed.model_dump(by_alias=True, mode="json") == r["smoothed"]  # bands (and smile, when fitted)
        assert after.multipliers().model_dump(by_alias=True, mode="json") == r["applied_after"]


def _ms(ts: str) -> int:
    from calreport.timeutil import time_ms

    v = time_ms(ts)
    assert v is not None
    return v


def test_rv_follows_calibrate_when_only_part_of_the_harvest_recorded_deribits_index(tmp_path: Path) -> None:
    """rv_from_harvest uses Deribit's index only for a window in which every snapshot recorded it;
    the backtest's RV_7d follows that rule window by window, so it equals calibrate's on each side."""
    root = Root(tmp_path / "root")
    actions.init(Workspace.open(root, renderer=None))
    m = _market()
    cutoff = END - 8 * MS_PER_DAY + 20 * MS_PER_HOUR  # snapshots before this lack the index
    by_day: dict[str, list[bytes]] = {}
    for t in range(END - 8 * MS_PER_DAY, END + 1, MS_PER_HOUR):
        rows = m.book_summary(t)
        if t >= cutoff:
            for r in rows:
                r["index_price"] = round(m.spot(t) * 1.0004, 2)  # the index is not the forward: RV differs
        by_day.setdefault(iso_ms(t)[:10], []).append(encode_rows(rows, t))
    for day, chunks in by_day.items():
        path = root.harvest_dir("BTC") / f"{day}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(chunks))
    early, late = END - 10 * MS_PER_HOUR, END - MS_PER_HOUR
    ws = Workspace.open(root, renderer=None)
    out = backtest_cmd.run(ws, "BTC", start=iso_ms(early), end=iso_ms(late), every="9h", horizons="1h", out=tmp_path / "bt")
    rows = [r for r in out.decisions if r["rv_7d"] is not None]
    assert [r["decision_ts"] for r in rows] == [iso_ms(early), iso_ms(late)]
    for r in rows:
        expected = rv_from_harvest(root, "BTC", _ms(r["snapshot_ts"]))
        assert (r["rv_7d"], r["rv_returns"], r["rv_source"]) == (expected.rv, expected.n_returns, expected.source)
    assert [r["rv_source"] for r in rows] == ["harvest", "harvest index"]
    # one series over the whole harvest (the forward proxy: its first snapshots lack the index) would differ
    t, p = index_price_per_snapshot(load_harvest(root, "BTC", 0, 1 << 62))
    whole = realised_vol(t[t <= late], p[t <= late], late)
    assert rows[1]["rv_7d"] != whole.rv and rows[0]["rv_7d"] == realised_vol(t[t <= early], p[t <= early], early).rv


def test_rv_comes_from_the_price_store_first_as_calibrate_takes_it(bt_root: Root, tmp_path: Path) -> None:
    """With `calreport prices fetch` closes in the root, RV_7d at each decision is the store's (bars
    closed by the snapshot time), as resolve_rv gives calibrate, not the harvest's."""
    m = _market()
    store = prices_dir(bt_root, "BTC") / CLOSES
    store.parent.mkdir(parents=True, exist_ok=True)
    bars = range(END - 8 * MS_PER_DAY, END + 2 * MS_PER_HOUR, MS_PER_HOUR)
    store.write_text("".join(json.dumps({"t": t, "close": round(m.spot(t) * 1.001, 2), "instrument": "BTC-PERPETUAL"}) + "\n" for t in bars))
    out = backtest_cmd.run(Workspace.open(bt_root, renderer=None), "BTC", start=iso_ms(_decisions()[0]), end=iso_ms(_decisions()[2]),
                           every="1h", horizons="1h", out=tmp_path / "bt")
    rows = [r for r in out.decisions if r["variant"] == "root"]
    assert len(rows) == 3
    for r in rows:
        t = _ms(r["snapshot_ts"])
        stored = rv_from_price_store(bt_root, "BTC", t)
        assert stored is not None and (r["rv_7d"], r["rv_returns"], r["rv_source"]) == (stored.rv, stored.n_returns, stored.source)
        assert r["rv_7d"] != rv_from_harvest(bt_root, "BTC", t).rv


# --------------------------------------------------------------------------- time honesty


def _altered_after(market: Market, cut_ms: int, seed: int = 1) -> Market:
    """Every row harvested after `cut_ms` shuffled among themselves and its prices scaled at random."""
    q = market.quotes
    later = np.flatnonzero(q.creation_ms > cut_ms)
    rng = np.random.default_rng(seed)
    perm = later[rng.permutation(later.size)]
    cols = {k: getattr(q, k).copy() for k in ("mark_price", "mark_iv", "underlying_price", "bid", "ask", "open_interest")}
    for k, v in cols.items():
        v[later] = v[perm] * (rng.uniform(0.5, 1.5, later.size) if k != "open_interest" else 1.0)
    altered = QuoteArrays(**{**{k: getattr(q, k) for k in ("instrument", "expiry_ms", "strike", "is_call", "creation_ms", "valid_name")}, **cols})
    t, p = market.index_ms.copy(), market.index_price.copy()
    p[t > cut_ms] *= rng.uniform(0.8, 1.2, int((t > cut_ms).sum()))
    return Market(altered, t, p)


DECISION_FIELDS = ("snapshot_ts", "status", "reason", "decision", "decision_reason", "rv_7d", "rv_returns", "recommended",
                   "smoothed", "applied_before", "applied_after", "step")


def test_decisions_use_only_data_harvested_at_or_before_their_time(default_replay: tuple[Market, CalibrationConfig, list[dict]]) -> None:
    """Shuffling and rescaling everything harvested after a decision leaves that decision (and its
    in-sample score) unchanged; the decisions after the cut do change, so the alteration is real."""
    market, cfg, before = default_replay
    cut = _decisions()[2]  # three decisions at or before it, three after
    after = _run(_altered_after(market, cut), cfg)
    for a, b in zip(before, after):
        if _ms(a["decision_ts"]) <= cut:
            assert {k: a[k] for k in DECISION_FIELDS} == {k: b[k] for k in DECISION_FIELDS}
            assert a["scores"][IN_SAMPLE] == b["scores"][IN_SAMPLE]
    later = [(a, b) for a, b in zip(before, after) if _ms(a["decision_ts"]) > cut]
    assert any(a["recommended"] != b["recommended"] for a, b in later)
    assert any(a["scores"]["1h"] != b["scores"]["1h"] for a, b in zip(before, after) if _ms(a["decision_ts"]) <= cut)


# --------------------------------------------------------------------------- scoring


def test_the_score_of_the_applied_values_equals_what_a_live_run_measures_at_them() -> None:
    """score_applied prices like evaluate_live does at its tested values (same quotes, same sigma)."""
    m = _market()
    rows = m.book_summary(END)
    q = QuoteArrays.from_rows(rows)
    cfg = CalibrationConfig()
    applied = default_entry().model_copy(update={"global_": 0.93, "bands": {"7-30d": 1.05}})
    run = evaluate_live(
        q, underlying="BTC", now_ms=END, rv=RealisedVol(0.45, 0, "manual"), applied=applied,
        previous=(applied.multipliers(), "applied"), config=cfg, run_id="r", snapshot_file="s", detail_file="d",
    ).run
    score = score_applied(q, underlying="BTC", now_ms=END, rv=RealisedVol(0.45, 0, "manual"), applied=applied, config=cfg)
    assert score is not None
    assert score["all"].iv_error_vp == pytest.approx(run.iv_error_vp, rel=1e-12)
    assert score["all"].otm_vega_weighted_mae_pct == pytest.approx(run.otm_vega_weighted_mae_pct, rel=1e-12)
    assert score["all"].all_vega_weighted_mae_pct is not None and run.vega_weighted_mae_pct is not None
    assert set(score) == {"all", *cfg.band_names()}
    other = score_applied(q, underlying="BTC", now_ms=END, rv=RealisedVol(0.45, 0, "manual"), applied=default_entry(), config=cfg)
    assert other is not None and other["all"].iv_error_vp != score["all"].iv_error_vp


def test_summary_counts_applies_holds_by_rule_thin_rv_and_error_percentiles(bt_root: Root) -> None:
    cfg = load_config(bt_root)
    thin = cfg.model_copy(update={"fit": cfg.fit.model_copy(update={"min_rv_returns": 10_000})})
    market = _market_arrays(bt_root)
    variants = [Variant("root", cfg, default_entry()), Variant("thin", thin, default_entry())]
    res = run_backtest(market, underlying="BTC", decisions_ms=_decisions(), horizons_ms=[MS_PER_HOUR],
                       variants=variants, make_entry=new_entry)
    s = summarize(res, variants, DECISION_HOURS * MS_PER_HOUR)
    assert s["thin"]["applies"] == 0 and s["thin"]["thin_rv_share"] == 1.0
    assert s["thin"]["holds"] == {"Thin RV": DECISION_HOURS}
    assert s["root"]["thin_rv_share"] == 0.0 and s["root"]["applies"] >= 2
    assert s["root"]["applies_per_day"] == pytest.approx(s["root"]["applies"] * 24 / DECISION_HOURS)
    steps = [d.step for d in res.decisions if d.variant == "root" and d.step is not None]
    assert s["root"]["mean_abs_step"] == pytest.approx(float(np.mean(steps)))
    for d in (d for d in res.decisions if d.variant == "root" and d.step is not None):  # what the engine quotes moved
        labels = [b.name for b in CalibrationConfig().bands]
        level = lambda m, b: m.bands.get(b, m.global_)  # noqa: E731
        assert d.step == pytest.approx(max(abs(level(d.applied_after, b) - level(d.applied_before, b)) for b in labels))
    iv = [d.scores["1h"]["iv_error_vp"] for d in res.decisions if d.variant == "root"]
    st = s["root"]["horizons"]["1h"]["iv_error_vp"]
    assert (st["n"], st["mean"], st["median"], st["p90"]) == pytest.approx((len(iv), np.mean(iv), np.median(iv), np.percentile(iv, 90)))
    assert hold_kind("Change too small (global d=0.0010 < 0.03; bands: none)") == "Change too small"


def test_a_decision_without_a_fresh_snapshot_is_skipped_and_says_why(bt_root: Root) -> None:
    cfg = load_config(bt_root)
    market = _market_arrays(bt_root)
    late = END + 3 * MS_PER_DAY  # far past the harvest
    res = run_backtest(market, underlying="BTC", decisions_ms=[_decisions()[0], _decisions()[0] + 60_000, late],
                       horizons_ms=[MS_PER_HOUR], variants=[Variant("root", cfg, default_entry())], make_entry=new_entry)
    assert [d.skipped for d in res.decisions] == [None, "no new snapshot since the previous decision", "no snapshot within 30 min before"]


def test_progress_is_reported_once_per_decision_and_variant(bt_root: Root) -> None:
    cfg = load_config(bt_root)
    calls: list[tuple[int, int]] = []
    variants = [Variant("a", cfg, default_entry()), Variant("b", cfg, default_entry())]
    run_backtest(_market_arrays(bt_root), underlying="BTC", decisions_ms=_decisions()[:3], horizons_ms=[MS_PER_HOUR],
                 variants=variants, make_entry=new_entry, progress=lambda d, t: calls.append((d, t)))
    assert calls == [(k, 6) for k in range(1, 7)]


# --------------------------------------------------------------------------- the command


def test_calreport_backtest_writes_its_directory_and_leaves_yaml_history_and_site_byte_identical(
    bt_root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    actions.calibrate(Workspace.open(bt_root), "BTC", write_json(tmp_path / "s.json", _market().snapshot_payload(END - 12 * MS_PER_HOUR)))
    before = _tree_digest(bt_root)
    variant = tmp_path / "alpha1.yaml"
    variant.write_text("smoothing: {alpha: 1.0}\n")
    code = main(["--root", str(bt_root.path), "backtest", "--underlying", "BTC", "--from", iso_ms(_decisions()[0]),
                 "--to", iso_ms(_decisions()[-1]), "--every", "2h", "--horizons", "1h,3h", "--variant", f"alpha1={variant}"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert _tree_digest(bt_root) == before
    (d,) = list(bt_root.backtests_dir.iterdir())
    summary = BacktestSummary.model_validate_json((d / "summary.json").read_bytes())
    assert summary.horizons == ["0h", "1h", "3h"] and list(summary.variants) == ["root", "alpha1"]
    lines = (d / "decisions.jsonl").read_bytes().splitlines()
    assert len(lines) == 2 * 3 and all(BacktestDecision.model_validate_json(ln) for ln in lines)
    assert load_config_file(d / "variants" / "alpha1.yaml").settings_hash() == load_config_file(variant).settings_hash()
    assert load_config_file(d / "variants" / "root.yaml").settings_hash() == load_config(bt_root).settings_hash()
    assert "alpha1" in out and summary.id in out
    page = (d / "index.html").read_text()
    assert "<svg" in page and "alpha1" in page and 'href="../../site/index.html"' in page
    # `calreport render` then links it from the dashboard
    assert main(["--root", str(bt_root.path), "render"]) == 0
    assert f'href="backtests/{summary.id}.html"' in bt_root.index_html.read_text()
    assert 'href="../index.html"' in (bt_root.site_dir / "backtests" / f"{summary.id}.html").read_text()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--every", "soon"], "--every"),
        (["--horizons", "1h,x"], "--horizons"),
        (["--variant", "noequals"], "--variant"),
        (["--variant", "root=x.yaml"], "--variant"),
        (["--from", "yesterday"], "--from"),
        (["--rv", "-1"], "--rv"),
        (["--variant", "gone=/nonexistent/gone.yaml"], "gone.yaml"),
        (["--from", "2025-12-12T00:00:00Z", "--to", "2025-12-11T00:00:00Z"], "--to"),
    ],
)
def test_bad_arguments_are_one_line_and_write_nothing(bt_root: Root, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    code = main(["--root", str(bt_root.path), "backtest", "--underlying", "BTC", *args])
    _, err = capsys.readouterr()
    assert code != 0 and needle in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not bt_root.backtests_dir.exists()


def test_a_variant_file_with_an_unknown_setting_is_refused_naming_the_file(bt_root: Root, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {min_delat: 0.01}\n")
    code = main(["--root", str(bt_root.path), "backtest", "--underlying", "BTC", "--variant", f"typo={bad}"])
    _, err = capsys.readouterr()
    assert code != 0 and "bad.yaml" in err and "min_delat" in err and len(err.strip().splitlines()) == 1
    assert not bt_root.backtests_dir.exists()


def test_an_underlying_without_harvest_is_one_line_naming_the_directory(bt_root: Root, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["--root", str(bt_root.path), "backtest", "--underlying", "ETH"])
    _, err = capsys.readouterr()
    assert code != 0 and "no harvested ETH snapshots" in err and "harvest/ETH" in err and len(err.strip().splitlines()) == 1
    assert not bt_root.backtests_dir.exists()


def test_printed_table_has_one_row_per_variant_with_each_horizon() -> None:
    per = {"n": 3, "mean": 2.5, "median": 2.4, "p90": 3.1}
    horizon = {"iv_error_vp": per}
    variant = {"horizons": {"0h": horizon, "1h": horizon}, "holds": {"Thin RV": 2}, "applies": 1, "runs": 3,
               "applies_per_day": 1.5, "mean_abs_step": 0.02, "thin_rv_share": 2 / 3}
    s = BacktestSummary(id="x", underlying="BTC", created="c", start="s", end="e", every="1h", horizons=["0h", "1h"],
                        max_staleness_minutes=30, variants={"root": variant, "b": variant})
    lines = backtest_cmd.table_lines(s)
    assert len(lines) == 3 and lines[1].startswith("root") and "2.50/2.40/3.10 (n=3)" in lines[1] and "Thin RV 2" in lines[2]
    assert json.dumps(s.model_dump(mode="json"))


def test_the_printed_table_says_why_decisions_were_skipped() -> None:
    """A window without fresh snapshots printed '0/0 ... holds none' and nothing else: the reason was only in summary.json."""
    horizon = {"iv_error_vp": {"n": 0}}
    variant = {"horizons": {"0h": horizon}, "holds": {}, "applies": 0, "runs": 0, "decisions": 7, "applies_per_day": 0.0,
               "mean_abs_step": None, "thin_rv_share": None, "skipped": {"no snapshot within 30 min before": 7}}
    s = BacktestSummary(id="x", underlying="BTC", created="c", start="s", end="e", every="1h", horizons=["0h"],
                        max_staleness_minutes=30, variants={"root": variant, "b": dict(variant)})
    assert backtest_cmd.table_lines(s)[-1] == "skipped: 7 of 7 decisions: no snapshot within 30 min before 7"
    s.variants["b"] = {**variant, "skipped": {}, "runs": 7}
    assert backtest_cmd.table_lines(s)[-1] == "skipped (root): 7 of 7 decisions: no snapshot within 30 min before 7"
    s.variants["root"] = s.variants["b"]
    assert not backtest_cmd.table_lines(s)[-1].startswith("skipped")
