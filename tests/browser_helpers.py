"""What the browser tests share: Debian's Chromium driven through Playwright (never a downloaded browser),
the refusal to skip it under CI, and the wait for the page's own refresh count."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ("--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync")
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def require_chromium() -> Any:
    """Playwright's sync API, or a module-level skip when Chromium is absent (an error under CI: there the
    browser tests must run)."""
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            raise RuntimeError(f"{CHROMIUM} is missing but CI is set: the browser test must run in CI")
        pytest.skip(f"{CHROMIUM} not installed", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api")


@contextmanager
def launched(sync_api: Any, extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """A headless Chromium for one module's tests."""
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=[*ARGS, *extra_args])
        try:
            yield b
        finally:
            b.close()


def wait_refreshed_after(page: Any, count: int, timeout_s: float = 15.0) -> None:
    """Wait until the page's refresh count passes `count` (the click's refresh, or a poll's that came
    first: under serve the page also refreshes when it sees the applied values change)."""
    deadline = time.monotonic() + timeout_s
    while int(page.get_attribute("body", "data-refresh-count") or 0) <= count:
        assert time.monotonic() < deadline, f"the page did not refresh past {count} within {timeout_s} s"
        page.wait_for_timeout(50)


def open_force_apply_dialog(page: Any, underlying: str | None = None) -> Any:
    """Click the Latest Calibration Run card's Force-Apply (of `underlying`, or the only one) and wait for the
    dialog's confirm step; returns the dialog's locator."""
    which = f'[data-for="{underlying}"]' if underlying else ""
    page.click(f'#latest-run button[data-action="force-apply"]{which}')
    dialog = page.locator('#action-dialog[data-step="confirm"]')
    dialog.wait_for(timeout=10000)
    return dialog
