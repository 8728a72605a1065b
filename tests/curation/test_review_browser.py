"""A reviewer works a queue with the keyboard only: open, accept, undo, discard."""

from __future__ import annotations

import pytest

from curation.models import Flag, PromptDecision, ReviewAction
from curation.services import flags_recompute
from tests.browser.conftest import browser, live_server, login, page, screenshot  # noqa: F401
from tests.curation.builders import disputed_ranking_project, fast_passwords  # noqa: F401

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_works_a_review_queue_with_the_keyboard(page, users):  # noqa: F811
    project, _ = disputed_ranking_project(users, n_prompts=2)
    flags_recompute(project_id=project.pk)
    first, second = Flag.objects.filter(project=project, kind="low_agreement").order_by(
        "-severity", "id"
    )
    queue_url = f"/curation/projects/{project.pk}/review/low_agreement/"
    login(page, "rev", queue_url)

    page.keyboard.press("j")  # focus the first row
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/flags/{first.pk}/")
    page.wait_for_selector("text=Every judgment")
    screenshot(page, "review-item")

    page.keyboard.press("a")  # accept the consensus: on to the next flag of the queue
    page.wait_for_url(f"**/flags/{second.pk}/?done=*")
    accepted = ReviewAction.objects.get()
    assert accepted.kind == "accept_consensus" and accepted.actor == users["reviewer"]
    assert PromptDecision.objects.get(prompt=first.prompt).final_ranking

    page.keyboard.press("z")  # undo it
    page.wait_for_selector("text=Undone")
    accepted.refresh_from_db()
    assert accepted.undone_at is not None
    assert PromptDecision.objects.get(prompt=first.prompt).final_ranking is None

    page.keyboard.press("d")  # discard the prompt on screen; the undone flag is open again
    page.wait_for_url(f"**/flags/{first.pk}/?done=*")
    discarded = ReviewAction.objects.filter(undone_at__isnull=True).get()
    assert discarded.kind == "discard_prompt" and discarded.prompt_id == second.prompt_id


def test_it_focuses_the_rank_form_on_r_and_saves_a_ranking(page, users):  # noqa: F811
    project, _ = disputed_ranking_project(users, n_prompts=1)
    flags_recompute(project_id=project.pk)
    flag = Flag.objects.get(project=project, kind="low_agreement")
    login(page, "rev", f"/curation/projects/{project.pk}/flags/{flag.pk}/")
    page.keyboard.press("r")
    focused = page.evaluate("document.activeElement.name")
    assert focused.startswith("rank_")
    # Typing in the field must not trigger the single-key shortcuts.
    page.keyboard.press("Control+a")
    page.keyboard.type("4")
    assert ReviewAction.objects.count() == 0
    inputs = page.query_selector_all("input[name^=rank_]")
    for value, field in zip(["4", "3", "2", "1"], inputs, strict=True):
        field.fill(value)
    page.click("text=Save ranking")
    page.wait_for_url("**?done=*")
    decision = PromptDecision.objects.get(prompt=flag.prompt)
    assert len(decision.final_ranking) == 4
