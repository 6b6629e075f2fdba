"""Real-browser journeys: Playwright (from PyPI) drives Debian's Chromium, headless, against
pytest-django's live server.

Chromium is looked up at CHROMIUM_PATH (default /usr/bin/chromium); `.ci/run` installs it.
Without it the journeys skip on a laptop and fail in CI. Screenshots of key steps land in
test-artifacts/browser/<journey>/ (not committed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

# Playwright's sync API runs an event loop in this thread; the live server and the ORM calls
# of the test body are ordinary synchronous code, which Django would otherwise refuse.
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path(os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium"))
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR", ROOT / "test-artifacts")) / "browser"
PASSWORD = "secret-pass-123"  # tests.factories.UserFactory's password


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    if not CHROMIUM.exists():
        message = f"browser journeys need Chromium at {CHROMIUM} (apt-get install chromium)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox"]
        )
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser, live_server, settings):
    """A fresh browser context per test, English UI, Berlin time, base URL = live server."""
    settings.ALLOWED_HOSTS = ["*"]
    context = browser.new_context(
        base_url=live_server.url,
        locale="en-GB",
        timezone_id="Europe/Berlin",
        viewport={"width": 1400, "height": 1000},
        accept_downloads=True,
    )
    context.set_default_timeout(15_000)
    browser_page = context.new_page()
    yield browser_page
    context.close()


class Journey:
    """Screenshots numbered in step order under test-artifacts/browser/<name>/."""

    def __init__(self, page, name: str) -> None:
        self.page = page
        self.directory = ARTIFACTS / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.steps = 0

    def shot(self, step: str) -> Path:
        self.steps += 1
        slug = re.sub(r"[^a-z0-9]+", "-", step.lower()).strip("-")
        path = self.directory / f"{self.steps:02d}-{slug}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def login(self, username: str, password: str = PASSWORD) -> None:
        self.page.goto("/admin/login/?next=/admin/")
        self.page.fill("#id_username", username)
        self.page.fill("#id_password", password)
        self.page.click("input[type=submit]")
        self.page.wait_for_url(re.compile(r"/admin/$"))

    def logout(self) -> None:
        self.page.context.clear_cookies()


@pytest.fixture
def journey(page, request) -> Journey:
    return Journey(page, request.node.name.removeprefix("test_"))
