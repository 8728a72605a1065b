"""An annotator ranks four images by drag and drop, with a tie, and zooms an image."""

from __future__ import annotations

import pytest

from annotate.models import Judgment
from tests.browser.conftest import letters, login, make_media_project, screenshot, shown_ranking
from tests.factories import add_member, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _drag(page, candidate_id: int, target: str) -> None:
    page.drag_and_drop(f'.cand-head[data-drag-id="{candidate_id}"]', target)


def test_it_ranks_images_with_a_tie_by_drag_and_drop(page):
    project = make_media_project(
        name="image-ranking",
        kind="image",
        n=4,
        prompt_image=True,
        instructions="Prefer the **cleanest** colour.",
    )
    user = make_user("img")
    add_member(project, user)
    login(page, "img", f"/projects/{project.pk}/annotate/")
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-candidate] img')].every(i => i.complete && i.naturalWidth === 64)"
    )
    ids = letters(page)

    _drag(page, ids["C"], "[data-rank-list] [data-gap-end]")
    _drag(page, ids["A"], '[data-rank-list] .rank-group[data-group="0"]')  # onto C: a tie
    _drag(page, ids["B"], "[data-rank-list] [data-gap-end]")
    _drag(page, ids["D"], "[data-rank-list] [data-gap-end]")
    _drag(page, ids["D"], '[data-rank-list] .rank-gap[data-before-group="1"]')  # D before B
    groups = page.eval_on_selector_all(
        "[data-rank-list] .rank-group",
        "gs => gs.map(g => [...g.querySelectorAll('.chip')].map(c => c.textContent))",
    )
    assert groups == [["C", "A"], ["D"], ["B"]]
    assert page.text_content(f'[data-candidate-id="{ids["A"]}"] [data-rank-badge]') == "tied 1st"
    screenshot(page, "ranking-images")

    page.click(f'[data-candidate-id="{ids["B"]}"] [data-zoom-src]')
    page.wait_for_selector("[data-zoom-dialog][open]")
    screenshot(page, "ranking-images-zoom")
    page.keyboard.press("Escape")
    page.wait_for_selector("[data-zoom-dialog]:not([open])", state="attached")

    page.keyboard.press("i")
    page.wait_for_selector("#instructions-dialog[open] strong:text('cleanest')")
    page.keyboard.press("Escape")
    page.keyboard.press("?")
    page.wait_for_selector("#help-dialog[open]")
    screenshot(page, "ranking-images-help")
    page.keyboard.press("Escape")

    page.fill("[data-rationale]", "A and C are equally clean")
    page.click("[data-submit]")
    page.wait_for_selector("text=No task for you right now")
    judgment = Judgment.objects.get()
    assert shown_ranking(judgment) == [[ids["C"], ids["A"]], [ids["D"]], [ids["B"]]]
    assert judgment.rationale == "A and C are equally clean"
    assert judgment.annotator == user
