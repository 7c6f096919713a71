"""What the browser tests do on the admin's pages: log in, and read a field of a change page."""

import re

from playwright.sync_api import Page, expect

REQUESTS = "/admin/analyses/assemblyanalysisrequest/"


def log_in(page: Page) -> None:
    page.goto("/admin/")
    expect(page).to_have_url(re.compile(r"/admin/login/"))
    page.fill("#id_username", "admin")
    page.fill("#id_password", "admin-password")
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_be_visible()
    expect(page.locator("#content h1")).to_have_text("Site administration")


def field(page: Page, name: str):
    """A read-only field's value on a change page."""
    return page.locator(f".field-{name} .readonly")
