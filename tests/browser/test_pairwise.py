"""An annotator judges pairs on single keys, then changes the last judgment."""

from __future__ import annotations

import pytest

from annotate import queue
from annotate.models import Judgment, JudgmentRevision
from tests.browser.conftest import (
    letters,
    login,
    make_media_project,
    page_ids,
    screenshot,
    shown_order,
)
from tests.factories import add_member, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def _expected(choice: str, shown: dict[str, int], judgment: Judgment) -> str:
    """The stored outcome for a choice: "a" when the winner sits in task position 0."""
    if choice not in ("A", "B"):
        return choice
    first = queue.task_positions(judgment.task_id)[0]
    return "a" if page_ids(judgment)[first] == shown[choice] else "b"


def test_it_judges_pairs_with_single_keys(page):
    project = make_media_project(name="pairs", kind="image", n=2, mode="pairwise", n_prompts=3)
    user = make_user("pairs")
    add_member(project, user)
    login(page, "pairs", f"/projects/{project.pk}/annotate/")
    pressed: list[tuple[str, dict[str, int], str]] = []
    for key, choice in (("1", "A"), ("t", "tie"), ("x", "both_bad")):
        page.wait_for_selector("[data-task][data-mode=pairwise]")
        url = page.get_attribute("[data-task]", "data-submit-url")
        shown = letters(page)
        page.keyboard.press(key)
        assert page.get_attribute(f'[data-choice="{choice}"]', "aria-pressed") == "true"
        if choice == "A":
            screenshot(page, "pairwise")
        page.keyboard.press("Enter")
        page.wait_for_function(
            f"() => document.querySelector('[data-task]')?.dataset.submitUrl !== '{url}'"
        )
        pressed.append((url, shown, choice))
    page.wait_for_selector("text=No task for you right now")

    judgments = list(Judgment.objects.order_by("id"))
    assert len(judgments) == 3
    for judgment, (_url, shown, choice) in zip(judgments, pressed, strict=True):
        assert judgment.annotator == user
        assert judgment.kind == "pair"
        assert shown_order(judgment) == [shown["A"], shown["B"]]
        assert judgment.outcome == _expected(choice, shown, judgment)

    # Change the last judgment (both bad -> B) while its lease lasts.
    page.click("[data-edit-last]")
    page.wait_for_selector("text=Change your judgment")
    assert page.get_attribute('[data-choice="both_bad"]', "aria-pressed") == "true"
    page.keyboard.press("2")
    screenshot(page, "pairwise-change")
    page.keyboard.press("Enter")
    page.wait_for_selector("text=No task for you right now")
    last = Judgment.objects.order_by("id").last()
    assert last.outcome == _expected("B", pressed[-1][1], last)
    revision = JudgmentRevision.objects.get()
    assert (revision.judgment_id, revision.outcome) == (last.pk, "both_bad")
    assert Judgment.objects.count() == 3
