"""The status page and the API docs in a real headless Chromium (Debian's), served by gunicorn as deployed.

Playwright drives the system browser (`executable_path`), so nothing is downloaded. The
screenshot docs/operations.md shows is taken here when asked for (see SCREENSHOT_SETTING).
"""

import os
from pathlib import Path

import pytest

from testbed.data.records import cart_item, order, profile
from testbed.servers.chromium import FLAGS, chromium_path
from testbed.servers.gunicorn import GunicornServer, request

# Where the status page's screenshot goes: a temporary file, unless asked for deliberately (docs/testing.md):
# FITKART_SCREENSHOT=docs/status-page.png .venv/bin/pytest tests/test_status_browser.py -k status_page
SCREENSHOT_SETTING = "FITKART_SCREENSHOT"


@pytest.fixture
def browser():
    """A headless Chromium (Debian's, installed first when missing)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=FLAGS)
        yield chromium
        chromium.close()


class Console:
    """Every console error and uncaught page error of a page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        page.on("pageerror", lambda error: self.errors.append(str(error)))


@pytest.fixture
def served(own_database, decimal_mode):
    """gunicorn as deployed on a database server of the test's own (the test stops it)."""
    server, mongo = own_database
    app = GunicornServer(f"{server.base_uri}/own", decimal_mode, workers=2).start()
    yield app, server, mongo
    app.stop()


def test_status_page_in_chromium(browser, served, tmp_path):
    """Loads, shows the written counts and a reject with its payload, then the unreachable banner."""
    app, server, _ = served
    for _ in range(3):
        assert request(f"{app.url}/api/sync/cart_items", cart_item())[0] == 200
    assert request(f"{app.url}/api/sync/orders", order())[0] == 200
    bad = profile(email=["not", "an", "email"])
    assert request(f"{app.url}/api/sync/profile", bad)[0] == 422

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    console = Console(page)
    page.goto(f"{app.url}/")
    assert page.locator("#db-state").inner_text() == "up"
    assert page.locator('tr[data-collection="cart_items"] .count').inner_text() == "3"
    assert page.locator('tr[data-collection="orders"] .count').inner_text() == "1"
    assert page.locator('tr[data-collection="profiles"] .count').inner_text() == "0"
    rejects = page.locator("#rejects")
    assert "/api/sync/profile" in rejects.inner_text()
    screenshot = Path(os.environ.get(SCREENSHOT_SETTING) or tmp_path / "status-page.png")
    page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG")

    rejects.get_by_role("link", name="payload").first.click()
    page.wait_for_selector("#payload")
    assert bad["user_id"] in page.locator("#payload").inner_text()
    assert "email" in page.locator("#errors").inner_text()

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    phone_console = Console(phone)
    phone.goto(f"{app.url}/")
    # Readable on a phone: the page itself does not scroll sideways (wide tables scroll in their box).
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390

    page.goto(f"{app.url}/")
    server.stop()
    # No reload by the test: the page refreshes itself and shows the banner.
    page.wait_for_selector("#unreachable", timeout=30_000)
    assert "Database unreachable" in page.locator("#unreachable").inner_text()
    assert page.locator("#db-state").inner_text() == "down"
    assert console.errors == [] and phone_console.errors == []


def test_api_docs_in_chromium(browser, served):
    """Swagger UI renders every table's operations from the server's own files, without errors."""
    app, _, _ = served
    page = browser.new_page()
    console = Console(page)
    page.goto(f"{app.url}/api/docs")
    page.wait_for_selector(".opblock-tag", timeout=20_000)
    tags = page.locator(".opblock-tag").all_inner_texts()
    for table in ("profiles", "products", "orders", "cart_items", "wishlist_items", "user_roles", "batch"):
        assert any(tag.startswith(table) for tag in tags), tags
    assert console.errors == []
