"""The dashboard as a person sees it, at a phone's 390 px and a desktop's 1440 px, in Debian's Chromium.

- the request's acceptance check at both widths: a live run applied by the policy, then a newer one
  by Force-Apply from the confirm dialog (which fits the screen and lists the smile nodes that move),
  Refresh, "Latest Calibration Run" reads Smoothed = X and applied, "Current Applied Multipliers"
  reads Global = X and every band;
- the first screen of the demo (FIXED_ANCHOR, rendered at a fixed time): no horizontal scroll, the
  engine's state and one headline error before anything else, one flag summary per underlying, and
  a screenshot compared with tests/baselines/first-screen-<width>.png.

Screenshots are compared, not matched byte for byte: both images are blurred (2 px) in the browser
and the fraction of pixels whose RGB differs by more than DIFF_LEVEL must stay under DIFF_MAX, so a
font's hinting may move, a panel may not. Wall-clock texts (apply times, random run-id bits) are
masked. To regenerate the baselines after an intended change of the page:

    CALREPORT_UPDATE_BASELINES=1 PYTHONPATH=$PWD .venv/bin/python -m pytest -q tests/test_browser_screens.py

then look at the PNGs before committing them. A failed comparison leaves the new screenshot in
test-artifacts/.
"""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from browser_helpers import ARTIFACTS, launched, open_force_apply_dialog, require_chromium, wait_refreshed_after
from foundation_helpers import force_apply

from calreport.report.serve import make_server
from calreport.store import applied as apply
from calreport.store.applied import read_applied

pytestmark = pytest.mark.browser

BASELINES = Path(__file__).resolve().parent / "baselines"
WIDTHS = (390, 1440)
DIFF_LEVEL = 48  # summed |dR|+|dG|+|dB| after the blur above which a pixel counts as different
DIFF_MAX = 0.01  # at most 1 % of the pixels may differ
UPDATE = os.environ.get("CALREPORT_UPDATE_BASELINES") == "1"

sync_api = require_chromium()


@pytest.fixture(scope="module")
def browser():
    with launched(sync_api, ("--font-render-hinting=none", "--force-color-profile=srgb")) as b:
        yield b


def no_page_scroll(page) -> None:
    width = page.evaluate("document.documentElement.clientWidth")
    assert page.evaluate("document.documentElement.scrollWidth") <= width


def inside_viewport(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    vw = page.viewport_size["width"]
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= vw + 0.5, (selector, box, vw)


DIFF_JS = """async ([a, b, level]) => {
  const load = src => new Promise((ok, bad) => { const i = new Image(); i.onload = () => ok(i); i.onerror = bad; i.src = src; });
  const [ia, ib] = await Promise.all([load(a), load(b)]);
  if (ia.width !== ib.width || ia.height !== ib.height) { return 1; }
  const px = img => {
    const c = document.createElement("canvas"); c.width = img.width; c.height = img.height;
    const x = c.getContext("2d"); x.filter = "blur(2px)"; x.drawImage(img, 0, 0);
    return x.getImageData(0, 0, c.width, c.height).data;
  };
  const da = px(ia), db = px(ib);
  let n = 0;
  for (let i = 0; i < da.length; i += 4) {
    if (Math.abs(da[i] - db[i]) + Math.abs(da[i + 1] - db[i + 1]) + Math.abs(da[i + 2] - db[i + 2]) > level) { n++; }
  }
  return n / (da.length / 4);
}"""


def diff_fraction(browser, a: bytes, b: bytes) -> float:
    """Fraction of pixels that differ after a blur, computed by the browser's canvas (no image package needed)."""
    context = browser.new_context()
    try:
        page = context.new_page()
        urls = ["data:image/png;base64," + base64.b64encode(x).decode() for x in (a, b)]
        return float(page.evaluate(DIFF_JS, [urls[0], urls[1], DIFF_LEVEL]))
    finally:
        context.close()


def matches_baseline(browser, name: str, shot: bytes) -> None:
    path = BASELINES / name
    if UPDATE or not path.exists():
        if not UPDATE:
            pytest.fail(f"{path} is missing: run with CALREPORT_UPDATE_BASELINES=1 to create it")
        BASELINES.mkdir(exist_ok=True)
        path.write_bytes(shot)
        return
    frac = diff_fraction(browser, path.read_bytes(), shot)
    if frac > DIFF_MAX:
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / name).write_bytes(shot)
    assert frac <= DIFF_MAX, f"{name}: {frac:.2%} of pixels differ from the baseline (new screenshot in test-artifacts/)"


# --------------------------------------------------------------------------- the demo's first screen

RENDERED_AT = datetime(2025, 12, 13, 12, 30, tzinfo=UTC)  # FIXED_ANCHOR + 30 min: the demo's runs are hours old


@pytest.fixture(scope="module")
def demo_site(pristine_demo, tmp_path_factory):
    """The demo at FIXED_ANCHOR, rendered at RENDERED_AT: every figure on it fixed but the wall-clock apply times."""
    from calreport.report.render import render_site

    root = pristine_demo.copy_to(tmp_path_factory.mktemp("screens") / "demo")
    render_site(root, now=RENDERED_AT)
    return root


WALL_CLOCK = ('#overview [data-field="applied-when"]', "#current-applied time", "#current-applied dd.mono", "#latest-run dd.mono")


@pytest.mark.parametrize("width", WIDTHS)


def test_the_first_screen_leads_with_the_engine_and_one_headline_error_and_fits_the_width(demo_site, browser, width):
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme="light", reduced_motion="reduce")
    page = context.new_page()
    try:
        page.goto(demo_site.index_html.as_uri())
        no_page_scroll(page)
        # the engine's state comes before every other panel; the flags are one summary per underlying
        order = page.evaluate("[...document.querySelectorAll('main > section, main > div > section')].map(s => s.id)")
        assert order.index("overview") < order.index("current-applied") < order.index("latest-run")
        summaries = page.locator("#flags details.flag-summary")
        assert sorted(summaries.evaluate_all("els => els.map(e => e.dataset.flagsFor)")) == ["BTC", "ETH"]
        assert summaries.evaluate_all("els => els.every(e => !e.open)")  # expandable, closed at first
        levels = summaries.evaluate_all("els => els.map(e => e.dataset.level)")
        rank = {"error": 0, "warn": 1, "info": 2}
        assert [rank[x] for x in levels] == sorted(rank[x] for x in levels)
        assert page.locator("#banners .banner").count() <= 2  # page-wide only (here: stale), not one per flag
        btc = page.locator('#overview .card[data-underlying="BTC"]')
        assert btc.locator('[data-field="applied"]').inner_text() == f"{read_applied(demo_site).underlyings['BTC'].global_:.4f}"
        assert btc.locator('[data-field="headline"]').inner_text().endswith(" vp")
        assert "OTM IV error" in page.locator("#overview").inner_text()
        assert not btc.locator('[data-field="mae"]').is_visible()  # the other figures are on demand
        btc.locator("details summary").click()
        assert btc.locator('[data-field="mae"]').is_visible()
        btc.locator("details summary").click()
        # every banner's text stays inside its box
        for box in page.locator("#banners .banner").all():
            outer = box.bounding_box()
            for part in box.locator("strong, .text").all():
                inner = part.bounding_box()
                assert inner["x"] + inner["width"] <= outer["x"] + outer["width"] + 0.5
        shot = page.screenshot(mask=[page.locator(s) for s in WALL_CLOCK], animations="disabled", caret="hide")
        matches_baseline(browser, f"first-screen-{width}.png", shot)
        # the compare view of a history row fits too
        page.locator("#live-history a[data-compare]").first.click()
        page.wait_for_selector("#compare")
        no_page_scroll(page)
        assert page.locator('#compare tr[data-section="level"]').count() == 1
        assert page.locator('#compare tr[data-section="smile"]').count() > 0
    finally:
        context.close()


# --------------------------------------------------------------------------- the request's acceptance check


def served_with_actions(root):
    from calreport.commands.dashboard import DashboardActions, parse_body

    return make_server(root, port=0, debounce=0.05, actions=DashboardActions(root), parse_body=parse_body)


def applied_card_text(page, underlying: str = "BTC") -> dict[str, str]:
    rows = page.locator(f'#current-applied [data-applied-underlying="{underlying}"] tbody tr').all()
    return {r.locator("td").nth(0).inner_text().strip(): r.locator("td").nth(1).inner_text().strip() for r in rows}


def latest_card(page, underlying: str = "BTC") -> dict[str, str]:
    card = page.locator(f'#latest-run .card[data-underlying="{underlying}"]')
    return {
        "smoothed": card.locator('[data-field="smoothed"]').inner_text().strip(),
        "status": card.locator("dt:text-is('Status') + dd").inner_text().strip(),
    }


@pytest.mark.parametrize("width", WIDTHS)
def test_policy_then_force_apply_then_refresh_shows_smoothed_x_applied_and_global_x_at(root, rows, browser, width):
    first = rows.live(smoothed=1.0400, bands={"0-7d": 1.0200, "7-30d": 1.0300}, decision="apply")
    apply.apply_values(root, "BTC", first.smoothed, source="policy", run_id=first.run_id, reason="Policy: change 4.0% >= 3.0%")
    server, stop = served_with_actions(root)
    context = browser.new_context(viewport={"width": width, "height": 800})
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(server.url)
        no_page_scroll(page)
        assert latest_card(page) == {"smoothed": "1.0400", "status": "applied"}
        assert applied_card_text(page) == {"global": "1.0400", "0-7d": "1.0200", "7-30d": "1.0300"}

        held = rows.live(smoothed=1.0833, recommended=1.0488, bands={"0-7d": 1.0500, "7-30d": 1.0900},
                         decision="hold", decision_reason="Sample size too small (47 < 50)")
        # the server re-renders on the new row; the page's button is for the run it shows (the first one,
        # applied already, has none), so the refresh comes after that render
        deadline = time.monotonic() + 15
        while held.run_id not in root.index_html.read_text():
            assert time.monotonic() < deadline, "the server did not re-render after the new run"
            page.wait_for_timeout(50)
        count = int(page.get_attribute("body", "data-refresh-count") or 0)
        page.click("#refresh")
        wait_refreshed_after(page, count)  # a poll may refresh too
        dialog = open_force_apply_dialog(page, "BTC")
        for part in ("#action-dialog", "#action-dialog h3", "#action-dialog table.changes", '#action-dialog input[data-role="note"]'):
            inside_viewport(page, part)  # the dialog, its title, its band table and the note fit the width
        assert dialog.locator('tr[data-band="global"]').get_attribute("data-new") == "1.0833"
        assert dialog.locator('input[data-role="note"]').input_value() == ""  # optional: left empty, not sent
        dialog.locator('button[data-role="confirm"]').click()
        page.wait_for_selector('body[data-action-result="done"]', timeout=15000)
        count = int(page.get_attribute("body", "data-refresh-count") or 0)
        page.click("#refresh")
        wait_refreshed_after(page, count)  # a poll may refresh too

        assert latest_card(page) == {"smoothed": "1.0833", "status": "applied"}
        assert applied_card_text(page) == {"global": "1.0833", "0-7d": "1.0500", "7-30d": "1.0900"}
        entry = read_applied(root).underlyings["BTC"]
        assert entry.global_ == 1.0833 and entry.run_id == held.run_id and entry.source == "force"
        no_page_scroll(page)
        assert not problems, problems
    finally:
        context.close()
        stop()


def test_the_confirm_dialog_lists_the_smile_nodes_that_change(demo_root, browser):
    """The demo's latest ETH run is held with a smile that differs from the applied one."""
    server, stop = served_with_actions(demo_root)
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    try:
        page.goto(server.url)
        dialog = open_force_apply_dialog(page, "ETH")
        nodes = dialog.locator("table.smile-changes tr[data-node]")
        assert nodes.count() > 0
        assert all(tr.get_attribute("data-old") != tr.get_attribute("data-new") for tr in nodes.all())
        inside_viewport(page, "#action-dialog table.smile-changes")
        dialog.locator('button[data-role="cancel"]').click()
    finally:
        context.close()
        stop()


def test_under_serve_the_page_polls_the_state_and_refreshes_when_it_changed(root, rows, browser):
    text = root.calibration_config.read_text()
    root.calibration_config.write_text(text.replace("poll_seconds: 30.0,", "poll_seconds: 0.3,"))
    rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    server, stop = make_server(root, port=0, debounce=0.05)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(server.url)
        assert applied_card_text(page)["global"] == "1.0000"
        force_apply(root, "BTC")  # from another terminal; nobody clicks Refresh
        page.wait_for_selector("body[data-poll-updates]", timeout=15000)
        assert applied_card_text(page) == {"global": "1.0833", "0-7d": "1.0500"}
        assert "Updated" in page.locator("#refresh-note").inner_text()
    finally:
        context.close()
        stop()


def test_the_confirm_dialog_names_a_change_of_the_surface_block(root, rows, browser):
    """A step-model run force-applied over a surface entry with the same levels: the band and smile tables
    show no change, the surface table says the engine leaves the surface for the step model."""
    from calreport.model import Multipliers, SurfaceSpec

    spec = SurfaceSpec(pillars={"0-7d": 1.75, "7-30d": 16.4957, "30-90d": 55.9808}, weekend_weight=0.35, wing_slope_cap=1.8)
    apply.apply_values(root, "BTC", Multipliers(global_=1.0833, bands={"0-7d": 1.05}, surface=spec), source="force", run_id=None, reason="x")
    rows.live(smoothed=1.0833, bands={"0-7d": 1.05})
    server, stop = served_with_actions(root)
    context = browser.new_context(viewport={"width": 390, "height": 800})
    page = context.new_page()
    try:
        page.goto(server.url)
        dialog = open_force_apply_dialog(page, "BTC")
        row = dialog.locator('table.surface-changes tr[data-what="surface"]')
        assert (row.get_attribute("data-old"), row.get_attribute("data-new")) == ("pillars-pchip-1", "none (step model)")
        inside_viewport(page, "#action-dialog table.surface-changes")
        dialog.locator('button[data-role="cancel"]').click()
    finally:
        context.close()
        stop()
