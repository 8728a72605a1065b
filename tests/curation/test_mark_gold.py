"""A reviewer marks a prompt gold: its tasks take the final ranking (else the consensus) as
their gold answer; undo puts back what was there; the history says it in letters."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotate.models import Task
from curation import services
from curation.models import ReviewAction
from curation.services import ReviewError
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
    slots,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def disputed(users):
    return disputed_ranking_project(users, n_prompts=2)


def _task(project) -> Task:
    return Task.objects.filter(project=project).order_by("id").first()


def test_it_makes_the_consensus_the_gold_answer_and_undo_removes_it(users, disputed):
    project, _ = disputed
    task = _task(project)
    a, b, c, d = slots(task)  # three of four annotators rank a > b > (c, d)
    action = services.review_mark_gold(actor=users["reviewer"], prompt=task.prompt)
    task.refresh_from_db()
    assert task.is_gold and task.gold_ranking[:2] == [[a], [b]]
    assert sorted(c for g in task.gold_ranking for c in g) == sorted([a, b, c, d])
    assert action.kind == "mark_gold" and action.before["tasks"][str(task.pk)] == {
        "is_gold": False,
        "gold_ranking": None,
    }
    services.review_action_undo(actor=users["reviewer"], action=action)
    task.refresh_from_db()
    assert not task.is_gold and task.gold_ranking is None


def test_it_prefers_the_reviewers_final_ranking(users, disputed):
    project, _ = disputed
    task = _task(project)
    a, b, c, d = slots(task)
    services.review_set_ranking(
        actor=users["reviewer"], prompt=task.prompt, ranking=[[d], [c], [b, a]]
    )
    services.review_mark_gold(actor=users["reviewer"], prompt=task.prompt)
    task.refresh_from_db()
    assert task.gold_ranking == [[d], [c], [b, a]]


def test_it_refuses_a_prompt_without_a_ranking_of_every_candidate(users):
    from tests.factories import make_project

    project = make_project(n_prompts=1)
    with pytest.raises(ReviewError, match="set the final ranking first"):
        services.review_mark_gold(actor=users["reviewer"], prompt=project.prompts.get())
    assert not Task.objects.filter(is_gold=True).exists()


def test_it_refuses_a_discarded_prompt(users, disputed):
    project, _ = disputed
    prompt = _task(project).prompt
    services.review_discard_prompt(actor=users["reviewer"], prompt=prompt)
    with pytest.raises(ReviewError, match="discarded"):
        services.review_mark_gold(actor=users["reviewer"], prompt=prompt)


def test_it_marks_gold_from_the_item_page_and_stays_there(client, users, disputed):
    project, _ = disputed
    task = _task(project)
    client.force_login(users["reviewer"])
    url = reverse("curation:prompt_action", args=[project.pk, task.prompt_id, "gold"])
    response = client.post(url)
    action = ReviewAction.objects.get()
    assert response.url == (
        reverse("curation:prompt", args=[project.pk, task.prompt_id]) + f"?done={action.pk}"
    )
    history = client.get(reverse("curation:history", args=[project.pk])).content.decode()
    text = " ".join(re.sub(r"<[^>]+>", " ", history).split())
    task.refresh_from_db()
    letter = dict(zip(slots(task), "ABCD", strict=True))  # letters follow storage order
    gold = " &gt; ".join(" = ".join(letter[c] for c in group) for group in task.gold_ranking)
    assert f"not gold → 1 task gold: {gold}" in text
    assert gold.startswith("A &gt; B")


def test_it_refuses_gold_from_an_annotator(client, users, disputed):
    project, _ = disputed
    task = _task(project)
    client.force_login(users["annotator"])
    url = reverse("curation:prompt_action", args=[project.pk, task.prompt_id, "gold"])
    assert client.post(url).status_code == 403
    assert not Task.objects.filter(is_gold=True).exists()


def test_it_marks_the_selected_prompts_gold_from_the_data_browser(client, users, disputed):
    project, _ = disputed
    client.force_login(users["reviewer"])
    prompts = list(project.prompts.order_by("id"))
    body = client.post(
        reverse("curation:browse_bulk", args=[project.pk]),
        {"prompt": [p.pk for p in prompts], "action": "gold"},
        follow=True,
    ).content.decode()
    assert "Mark gold (final ranking, else consensus): done on 2 prompts" in body
    assert Task.objects.filter(project=project, is_gold=True).count() == 2
