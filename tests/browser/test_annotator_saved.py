"""After a submit, and after changing the last judgment, the annotator page says it saved."""

from __future__ import annotations

import pytest

from annotate.models import Judgment
from tests.browser.conftest import letters, login, make_media_project, screenshot, shown_ranking
from tests.factories import add_member, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_says_saved_after_a_submit_and_after_a_change(page):
    project = make_media_project(name="saved", kind="text", n=3)
    add_member(project, make_user("saver"))
    login(page, "saver", f"/projects/{project.pk}/annotate/")
    for key in "abc":
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=No task for you right now")
    assert page.inner_text("[data-saved-note]") == "Saved."

    page.click("[data-edit-last]")
    page.wait_for_selector("text=Changing your last judgment")
    ids = letters(page)
    page.click("[data-task] [data-clear]")  # the stored ranking is preloaded
    for key in "cba":
        page.keyboard.press(key)
    page.keyboard.press("Enter")
    page.wait_for_selector("text=No task for you right now")  # the next fragment is in
    assert page.inner_text("[data-saved-note]") == "Your change is saved."
    assert page.is_visible("[data-saved-note]")
    screenshot(page, "annotator-change-saved")
    judgment = Judgment.objects.get()
    assert shown_ranking(judgment) == [[ids["C"]], [ids["B"]], [ids["A"]]]
