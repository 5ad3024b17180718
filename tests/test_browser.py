"""The request's acceptance check, in Debian's Chromium driven by Playwright: after a live run is
applied (by policy, then by force-apply in the background), Refresh shows "Latest Calibration Run"
smoothed X applied and "Current Applied Multipliers" equal to the YAML; an insane auto run shows
failed with its reason; markup in a reason is text and runs nothing."""

from __future__ import annotations

import threading

import pytest
from browser_helpers import ARTIFACTS, launched, open_force_apply_dialog, require_chromium, wait_refreshed_after
from foundation_helpers import force_apply

from calreport.report.serve import make_server
from calreport.store import applied as apply
from calreport.store.applied import read_applied

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=window.__xss=1>"
UNREALISTIC = "Unrealistic auto-calibration: multiplier or MAE outside sane range"

sync_api = require_chromium()


@pytest.fixture(scope="module")
def browser():
    with launched(sync_api) as b:
        yield b


def applied_in_page(page) -> dict[tuple[str, str], str]:
    return {
        (el.get_attribute("data-underlying"), el.get_attribute("data-band")): el.get_attribute("data-multiplier")
        for el in page.locator("#current-applied [data-multiplier]").all()
    }


def applied_in_yaml(root) -> dict[tuple[str, str], str]:
    out = {}
    for name, e in read_applied(root).underlyings.items():
        out[(name, "global")] = f"{e.global_:.4f}"
        out.update({(name, b): f"{v:.4f}" for b, v in e.bands.items()})
    return out


def test_refresh_after_policy_and_force_apply_shows_the_yaml(root, rows, browser):
    first = rows.live(smoothed=1.0400, decision="apply", decision_reason="change 4.0% >= 3.0%")
    apply.apply_values(root, "BTC", first.smoothed, source="policy", run_id=first.run_id, reason="Policy: change 4.0% >= 3.0%")
    bad = rows.auto(multiplier=0.5, mae=4668684.92, status="failed", reason=UNREALISTIC)
    markup = rows.auto(multiplier=1.1, mae=20.0, status="ok", reason=XSS)
    rows.live("ETH", smoothed=0.98, decision_reason=XSS)

    server, stop = make_server(root, port=0, debounce=0.05)
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(server.url)
        card = page.locator('#latest-run [data-underlying="BTC"]')
        assert card.get_attribute("data-smoothed") == "1.0400"
        assert card.get_attribute("data-status") == "applied"
        assert applied_in_page(page) == applied_in_yaml(root)

        # a new live run, force-applied from "another terminal" while the page is open
        second = rows.live(smoothed=1.0833, recommended=1.0488, bands={"0-7d": 1.05, "7-30d": 1.09})
        t = threading.Thread(target=force_apply, args=(root, "BTC"))
        t.start()
        t.join()
        page.click("#refresh")
        page.wait_for_selector('body[data-refresh-count="1"]', timeout=15000)  # the JS refresh ran

        card = page.locator('#latest-run [data-underlying="BTC"]')
        assert card.get_attribute("data-run-id") == second.run_id
        assert card.get_attribute("data-smoothed") == "1.0833"
        assert card.get_attribute("data-status") == "applied"
        assert card.get_attribute("data-reason") == "Forced by user"
        yaml_now = applied_in_yaml(root)
        assert yaml_now[("BTC", "global")] == "1.0833"
        assert applied_in_page(page) == yaml_now  # global and every band
        assert page.locator(f'#live-history tr[data-run-id="{first.run_id}"]').get_attribute("data-status") == "superseded"

        row = page.locator(f'#auto-history tr[data-run-id="{bad.run_id}"]')
        assert row.get_attribute("data-status") == "failed"
        assert row.get_attribute("data-multiplier") == "0.5000"
        assert UNREALISTIC in row.inner_text() and "4,668,684.92%" in row.inner_text()

        assert XSS in page.locator(f'#auto-history tr[data-run-id="{markup.run_id}"]').inner_text()
        assert page.locator("img").count() == 0
        assert page.evaluate("typeof window.__xss") == "undefined"
        assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-browser-test.png"), full_page=True)
    finally:
        context.close()
        stop()


def test_status_filter_hides_other_statuses_client_side(root, rows, browser):
    rows.auto(multiplier=0.5, mae=4668684.92, status="failed", reason=UNREALISTIC)
    rows.auto(multiplier=1.1, status="ok")
    from calreport.report.render import render_site

    render_site(root)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(root.index_html.as_uri())
        page.click('#auto-history button[data-filter="failed"]')
        visible = page.locator("#auto-history tbody tr:visible")
        assert visible.count() == 1 and visible.get_attribute("data-status") == "failed"
    finally:
        context.close()


def test_file_page_refresh_reloads_and_works_without_javascript(root, rows, browser):
    rows.live(smoothed=1.0833)
    force_apply(root, "BTC")
    from calreport.report.render import render_site

    render_site(root)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(root.index_html.as_uri())
        page.evaluate("window.__marker = 1")
        with page.expect_navigation():
            page.click("#refresh")
        assert page.evaluate("typeof window.__marker") == "undefined"  # a real reload on file://
    finally:
        context.close()
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    try:
        page.goto(root.index_html.as_uri())
        assert page.locator('#current-applied [data-underlying="BTC"][data-band="global"]').get_attribute("data-multiplier") == "1.0833"
        assert "1.0833" in page.locator("#current-applied").inner_text()
    finally:
        context.close()


# --------------------------------------------------------------------------- dashboard actions


def latest_card_text(page, underlying: str = "BTC") -> dict[str, str]:
    """What a person reads on the Latest Calibration Run card: Smoothed, Status, and each band's smoothed."""
    card = page.locator(f'#latest-run .card[data-underlying="{underlying}"]')
    out = {
        "smoothed": card.locator('[data-field="smoothed"]').inner_text().strip(),
        "status": card.locator("dt:text-is('Status') + dd").inner_text().strip(),
        "run_id": card.locator("dt:text-is('Run id') + dd").inner_text().strip(),
    }
    for tr in card.locator("tbody tr[data-band]").all():
        out["band " + tr.locator("td").nth(0).inner_text().strip()] = tr.locator("td").nth(2).inner_text().strip()
    return out


def applied_card_text(page, underlying: str = "BTC") -> dict[str, str]:
    """Current Applied Multipliers as read from the page's text: band -> multiplier (global included)."""
    rows = page.locator(f'#current-applied [data-applied-underlying="{underlying}"] tbody tr').all()
    return {r.locator("td").nth(0).inner_text().strip(): r.locator("td").nth(1).inner_text().strip() for r in rows}


def served_with_actions(root):
    from calreport.commands.dashboard import DashboardActions, parse_body

    return make_server(root, port=0, debounce=0.05, actions=DashboardActions(root), parse_body=parse_body)


def test_force_apply_then_roll_back_from_the_served_page(root, rows, browser):
    """The request's acceptance check, literally: Force-Apply Latest, confirm, Refresh, read Smoothed = X,
    Status applied, Global = X and every band; then Roll back and read the earlier values."""
    first = rows.live(smoothed=1.0400, bands={"0-7d": 1.0200, "7-30d": 1.0300}, decision="apply")
    apply.apply_values(root, "BTC", first.smoothed, source="policy", run_id=first.run_id, reason="Policy: change 4.0% >= 3.0%")
    held = rows.live(smoothed=1.0833, recommended=1.0488, bands={"0-7d": 1.0500, "7-30d": 1.0900},
                     decision="hold", decision_reason="Sample size too small (47 < 50)")
    server, stop = served_with_actions(root)
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    try:
        page.goto(server.url)
        before = latest_card_text(page)
        assert before["smoothed"] == "1.0833" and before["status"] == "held" and before["run_id"] == held.run_id
        assert applied_card_text(page) == {"global": "1.0400", "0-7d": "1.0200", "7-30d": "1.0300"}
        assert page.locator("#latest-run [data-cli]:visible").count() == 0  # buttons in place of the CLI

        dialog = open_force_apply_dialog(page, "BTC")
        text = dialog.inner_text()
        assert held.run_id in text and "Realism: ok" in text
        shown = {tr.get_attribute("data-band"): (tr.get_attribute("data-old"), tr.get_attribute("data-new"))
                 for tr in dialog.locator("tr[data-band]").all()}
        assert shown == {"global": ("1.0400", "1.0833"), "0-7d": ("1.0200", "1.0500"), "7-30d": ("1.0300", "1.0900")}
        dialog.locator('button[data-role="confirm"]').click()
        page.wait_for_selector('body[data-action-result="done"]', timeout=15000)
        count = int(page.get_attribute("body", "data-refresh-count") or 0)
        page.click("#refresh")
        wait_refreshed_after(page, count)  # a poll may refresh too

        after = latest_card_text(page)
        assert after["smoothed"] == "1.0833" and after["status"] == "applied" and after["run_id"] == held.run_id
        assert after["band 0-7d"] == "1.0500" and after["band 7-30d"] == "1.0900"
        assert applied_card_text(page) == {"global": "1.0833", "0-7d": "1.0500", "7-30d": "1.0900"}
        assert applied_in_page(page) == applied_in_yaml(root)
        entry = read_applied(root).underlyings["BTC"]
        assert entry.source == "force" and entry.reason == "Forced by user (dashboard)" and entry.run_id == held.run_id

        # Roll back to the policy-applied run, from its row in the apply log
        page.click("#current-applied details summary")
        page.click(f'#current-applied button[data-action="rollback"][data-run="{first.run_id}"]')
        dialog = page.locator('#action-dialog[data-step="confirm"]')
        dialog.wait_for(timeout=10000)
        assert dialog.locator('tr[data-band="global"]').get_attribute("data-new") == "1.0400"
        page.evaluate("document.body.removeAttribute('data-action-result')")
        dialog.locator('button[data-role="confirm"]').click()
        page.wait_for_selector('body[data-action-result="done"]', timeout=15000)
        count = int(page.get_attribute("body", "data-refresh-count") or 0)
        page.click("#refresh")
        wait_refreshed_after(page, count)  # a poll may refresh too
        assert applied_card_text(page) == {"global": "1.0400", "0-7d": "1.0200", "7-30d": "1.0300"}
        assert applied_in_page(page) == applied_in_yaml(root)
        entry = read_applied(root).underlyings["BTC"]
        assert entry.source == "rollback" and entry.run_id == first.run_id and entry.reason.endswith("(dashboard)")
        assert latest_card_text(page)["status"] != "applied"  # the held run is no longer what the YAML holds

        assert not [p for p in problems if "Content Security Policy" in p or "Refused" in p], problems
        for f in root.site_dir.rglob("*"):
            if f.is_file():
                assert server.token.encode() not in f.read_bytes(), f  # never on disk
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "dashboard-actions-test.png"), full_page=True)
    finally:
        context.close()
        stop()


def test_failed_realism_run_is_refused_and_overridden_only_after_a_second_confirmation(root, rows, browser):
    bad = rows.live(smoothed=1.5581, recommended=3.0, status="failed", reason="Unrealistic: recommended on the fit bound")
    before = root.applied.read_bytes(), root.live_history.read_bytes()
    server, stop = served_with_actions(root)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(server.url)
        dialog = open_force_apply_dialog(page)
        assert "failed realism" in dialog.inner_text() and "Realism: failed" in dialog.inner_text()
        dialog.locator('button[data-role="confirm"]').click()
        refused = page.locator('#action-dialog[data-step="refused"]')
        refused.wait_for(timeout=10000)
        assert "failed realism" in refused.inner_text() and "--allow-unrealistic" in refused.inner_text()
        assert (root.applied.read_bytes(), root.live_history.read_bytes()) == before  # refused: nothing changed
        refused.locator('button[data-role="override"]').click()
        second = page.locator('#action-dialog[data-step="override"]')
        second.wait_for(timeout=10000)
        assert (root.applied.read_bytes(), root.live_history.read_bytes()) == before  # one click is not enough
        second.locator('button[data-role="confirm-override"]').click()
        page.wait_for_selector('body[data-action-result="done"]', timeout=15000)
        entry = read_applied(root).underlyings["BTC"]
        assert entry.global_ == 1.5581 and entry.run_id == bad.run_id and entry.source == "force"
    finally:
        context.close()
        stop()


def test_static_and_read_only_pages_show_the_cli_command_not_buttons(root, rows, browser):
    run = rows.live(smoothed=1.0833)
    force_apply(root, "BTC")
    rows.live(smoothed=1.10)
    force_apply(root, "BTC")  # the current apply: its row offers no rollback (it would change nothing)
    rows.live(smoothed=1.12)  # not applied yet: force-apply is offered
    from calreport.report.render import render_site

    render_site(root)
    context = browser.new_context()
    page = context.new_page()
    try:
        page.goto(root.index_html.as_uri())
        assert page.locator("button[data-action]:visible").count() == 0
        cli = page.locator("#latest-run [data-cli] code").inner_text()
        assert cli == f"calreport --root {root.path} force-apply --underlying BTC"
        assert page.locator("#latest-run button[data-copy]:visible").count() == 1
        page.click("#current-applied details summary")
        assert f"rollback --underlying BTC --to {run.run_id}" in page.locator("#current-applied [data-cli] code").first.inner_text()
        server, stop = make_server(root, port=0, debounce=0.05)  # no actions handed over: --read-only
        try:
            page.goto(server.url)
            assert page.locator("button[data-action]:visible").count() == 0
            assert page.locator("#latest-run [data-cli]:visible").count() == 1
            assert page.locator('meta[name="calreport-token"]').count() == 0
        finally:
            stop()
    finally:
        context.close()
