"""Zoom enlarges: a small image opens at the window's size, larger than on the page, and a
click on it doubles that (annotator page)."""

from __future__ import annotations

import pytest

from tests.browser.conftest import login, make_media_project, screenshot
from tests.factories import add_member, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_zooms_a_small_image_larger_than_the_page_shows_it(page):
    project = make_media_project(name="zoom", kind="image", n=4)  # 64 px images
    add_member(project, make_user("zoomer"))
    login(page, "zoomer", f"/projects/{project.pk}/annotate/")
    opener = page.locator("[data-task] [data-zoom-src]").nth(1)
    on_page = opener.locator("img").evaluate("i => i.clientWidth")
    opener.click()
    page.wait_for_selector("[data-zoom-dialog][open]")
    zoomed = page.locator("[data-zoom-img]")
    page.wait_for_function("() => document.querySelector('[data-zoom-img]').clientWidth > 64")
    first = zoomed.evaluate("i => i.clientWidth")
    assert first > on_page and first >= 500, (first, on_page)
    screenshot(page, "annotator-zoom")
    zoomed.click()
    assert zoomed.evaluate("i => i.clientWidth") == 2 * first
    zoomed.click()
    assert zoomed.evaluate("i => i.clientWidth") == first
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-zoom-dialog]:not([open])", state="attached")
