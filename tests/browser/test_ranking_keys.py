"""The keyboard after the mouse: Enter submits after Clear or Undo was clicked, and the
"rank every candidate first" error goes once the ranking is complete."""

from __future__ import annotations

import pytest

from annotate.models import Judgment
from tests.browser.conftest import letters, login, shown_ranking
from tests.factories import add_member, make_project, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_submits_with_enter_after_clicking_clear_and_undo(page):
    project = make_project(name="keys", n_prompts=1, n_candidates=4, k=1)
    user = make_user("keys")
    add_member(project, user)
    login(page, "keys", f"/projects/{project.pk}/annotate/")
    page.wait_for_selector("[data-task][data-mode=ranking]")
    ids = letters(page)

    page.keyboard.press("KeyC")
    page.keyboard.press("Enter")  # incomplete: an error, nothing stored
    error = page.locator("[data-error]")
    assert "Rank every candidate first" in error.text_content()
    assert error.is_visible()

    page.click("[data-clear]")
    for key in ("KeyB", "KeyD", "KeyA", "KeyC"):
        page.keyboard.press(key)
    assert not error.is_visible()  # complete: the stale error is gone

    page.click("[data-undo]")  # C unplaced again
    page.keyboard.press("KeyC")
    page.keyboard.press("Enter")  # the clicked button must not take this Enter
    page.wait_for_selector("text=No task for you right now")
    judgment = Judgment.objects.get()
    assert shown_ranking(judgment) == [[ids["B"]], [ids["D"]], [ids["A"]], [ids["C"]]]
