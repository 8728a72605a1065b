"""A reviewer finds a prompt in the data browser with the keyboard and opens its page."""

from __future__ import annotations

import pytest

from annotate.models import Prompt
from tests.browser.conftest import login, screenshot
from tests.curation.builders import members
from tests.factories import make_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_searches_and_opens_a_prompt_with_the_keyboard(page, users):
    project = make_project(name="browse-keys", n_prompts=12, n_candidates=3, k=1, blind=False)
    members(project, users)
    target = Prompt.objects.get(project=project, external_id="p7")
    Prompt.objects.filter(pk=target.pk).update(text="Which answer names the capital of Peru?")
    url = f"/curation/projects/{project.pk}/data/"
    login(page, "rev", url)
    assert page.locator("a[data-row]").count() == 12
    screenshot(page, "data-browser")

    page.keyboard.press("/")  # focus the search box
    page.keyboard.type("peru")
    page.keyboard.press("Enter")
    page.wait_for_url("**/data/?q=peru*")
    assert page.locator("a[data-row]").all_inner_texts() == ["p7"]

    page.keyboard.press("j")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/prompts/{target.pk}/")
    page.wait_for_selector("text=History of this prompt")
    assert "capital of Peru" in page.inner_text("main")


def test_it_discards_every_prompt_of_a_filtered_page_at_once(page, users):
    from curation.models import PromptDecision

    project = make_project(name="browse-bulk", n_prompts=5, n_candidates=2, k=1)
    members(project, users)
    Prompt.objects.filter(project=project, external_id__in=["p1", "p3"]).update(text="duplicate")
    login(page, "rev", f"/curation/projects/{project.pk}/data/?q=duplicate")
    page.check("[data-select-all]")
    assert page.eval_on_selector_all("input[name=prompt]", "b => b.map(x => x.checked)") == [
        True,
        True,
    ]
    page.select_option("select[name=action]", "discard")
    page.click("text=Apply to selected")
    page.wait_for_selector("text=Discard: done on 2 prompts")
    assert page.url.endswith("/data/?q=duplicate")
    assert page.locator("tbody td:has-text('discarded')").count() == 2
    discarded = PromptDecision.objects.filter(discarded=True).values_list("prompt__external_id")
    assert sorted(x for (x,) in discarded) == ["p1", "p3"]
