"""Every admin list fits a 1400-pixel-wide window: no column is cut off behind a horizontal scroll."""

import pytest
from django.contrib.admin import site
from django.urls import reverse
from playwright.sync_api import Page

from tests.browser.admin_pages import log_in
from tests.workflows.test_admin_query_counts import make_rows

WIDTH = 1400


@pytest.mark.django_db(transaction=True)
def test_every_changelist_fits_1400_pixels(page: Page, superuser):
    make_rows(3)
    page.set_viewport_size({"width": WIDTH, "height": 900})
    log_in(page)
    too_wide = {}
    for model in sorted(site._registry, key=lambda m: m._meta.label_lower):
        page.goto(reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist"))
        # The admin scrolls a list that does not fit inside its own box: its last columns are then out of sight.
        widths = page.evaluate(
            "() => [document.documentElement.scrollWidth,"
            " ...(el => el ? [el.scrollWidth, el.clientWidth] : [0, 0])(document.querySelector('#changelist .results'))]"
        )
        page_width, list_width, shown_width = widths
        if page_width > WIDTH or list_width > shown_width:
            too_wide[model._meta.label_lower] = (page_width, list_width, shown_width)
    assert (
        page.evaluate("getComputedStyle(document.querySelector('#result_list td')).overflowWrap")
        == "anywhere"
    )
    assert not too_wide, f"lists wider than their window at {WIDTH} px (page, list, shown): {too_wide}"
