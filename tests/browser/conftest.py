"""The admin in a real browser: Debian's headless Chromium, driven by Playwright, against pytest-django's live server.

Playwright's own browser download needs the internet, so it never runs: `scripts/bootstrap.sh` installs Debian's
`chromium` and the dev extras install `playwright`, and the browser is launched from its path.
"""

import os
import re
from collections.abc import Generator, Iterator
from pathlib import Path

import pluggy
import pytest
from django.db import connections

# The real stack (served deployments, Slurm, the ENA stub) for the flow-backed tests, as tests/e2e has it.
from tests.stack import flows_server, flows_server_env, gated_stub  # noqa: F401

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
# Where a failing test leaves its screenshot (gitignored); CI may point it at its own output directory.
RESULTS_DIR = Path(os.environ.get("TEST_RESULTS_DIR", ROOT / "test-results"))
TIMEOUT_MS = 15_000


def _missing() -> str | None:
    if not CHROMIUM.exists():
        return f"{CHROMIUM} is missing: scripts/bootstrap.sh installs Debian's chromium (make test runs it)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed: scripts/bootstrap.sh installs the dev extras (make test runs it)"
    return None


@pytest.fixture(scope="session")
def live_server(request: pytest.FixtureRequest, django_db_setup) -> Iterator:
    """pytest-django's live server, started with plain HTTP allowed, and stopped before the test database is dropped.

    Its SecurityMiddleware reads SECURE_SSL_REDIRECT once, when the server starts (before any test's `settings`),
    and production settings would send the browser to HTTPS.
    """
    from django.test.utils import override_settings
    from pytest_django.live_server_helper import LiveServer

    address = (
        request.config.getvalue("liveserver") or os.getenv("DJANGO_LIVE_TEST_SERVER_ADDRESS") or "localhost"
    )
    with override_settings(SECURE_SSL_REDIRECT=False):
        server = LiveServer(address)
    yield server
    server.stop()


@pytest.fixture
def page(live_server, settings, monkeypatch) -> Iterator:
    """A fresh browser page whose relative URLs go to the live server."""
    if reason := _missing():
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    # Playwright's sync API keeps an asyncio loop running in this thread, and Django refuses ORM calls from a thread
    # with a running loop. The test body is still plain sequential code, so the check is lifted for this test only.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    # The live server speaks plain HTTP; production settings would mark the cookies HTTPS-only.
    settings.SESSION_COOKIE_SECURE = False
    settings.CSRF_COOKIE_SECURE = False
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            context = browser.new_context(base_url=live_server.url)
            context.set_default_timeout(TIMEOUT_MS)
            yield context.new_page()
        finally:
            # While the loop runs, Django keys its connections by asyncio context, not by thread: the test body's
            # connection is not the one pytest-django closes, and would keep the test database from being dropped.
            connections.close_all()
            browser.close()


def save_screenshot(page, nodeid: str) -> Path:
    """The page as the failing test left it, in RESULTS_DIR, named after the test."""
    directory = RESULTS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', nodeid)}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo
) -> Generator[None, pluggy.Result[pytest.TestReport], None]:
    outcome = yield
    report = outcome.get_result()
    page = getattr(item, "funcargs", {}).get("page")
    if report.when != "call" or not report.failed or page is None:
        return
    try:
        path = save_screenshot(page, item.nodeid)
    except Exception as exc:  # a crashed page: the failure itself still matters more than its picture
        report.sections.append(("screenshot", f"none: {exc}"))
    else:
        report.sections.append(("screenshot", str(path)))
