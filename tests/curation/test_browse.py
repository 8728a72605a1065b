"""The data browser: every prompt of a project, searched, filtered, sorted and paginated; a
prompt's page with its audit history."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from annotate.models import Candidate, Prompt, Task
from curation import services
from curation.models import Flag, PromptDecision, ReviewAction
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def _project(users, *, n_prompts: int = 6, blind: bool = True):
    project = make_project(name="browse", n_prompts=n_prompts, n_candidates=3, k=1, blind=blind)
    members(project, users)
    return project


def _shown(client, project, **params) -> list[str]:
    response = client.get(reverse("curation:browse", args=[project.pk]), params)
    assert response.status_code == 200
    return re.findall(r'<a data-row href="[^"]+">([^<]+)</a>', response.content.decode())


@pytest.fixture
def reviewer(client, users):
    client.force_login(users["reviewer"])
    return client


def test_it_lists_every_prompt_fifty_a_page(reviewer, users):
    project = _project(users, n_prompts=60)
    first = reviewer.get(reverse("curation:browse", args=[project.pk])).content.decode()
    assert "60 prompts." in first and "Page 1 of 2." in first
    first_page, second_page = _shown(reviewer, project), _shown(reviewer, project, page=2)
    assert len(first_page) == 50 and len(second_page) == 10
    assert set(first_page + second_page) == {f"p{i}" for i in range(60)}


def test_it_keeps_the_filters_in_the_page_links(reviewer, users):
    project = _project(users, n_prompts=60)
    body = reviewer.get(
        reverse("curation:browse", args=[project.pk]), {"q": "Question", "sort": "newest"}
    ).content.decode()
    assert 'href="?q=Question&amp;sort=newest&amp;page=2"' in body


def test_it_searches_text_and_external_ids(reviewer, users):
    project = _project(users)
    Prompt.objects.filter(project=project, external_id="p3").update(text="A red cube on a table")
    assert _shown(reviewer, project, q="red CUBE") == ["p3"]
    assert _shown(reviewer, project, q="p4") == ["p4"]


def test_it_searches_and_filters_by_model_only_where_not_blind(reviewer, users):
    project = _project(users, blind=False)
    Candidate.objects.filter(prompt__external_id="p2", model_name="model-b").update(
        model_name="gpt-special"
    )
    assert _shown(reviewer, project, q="special") == ["p2"]
    assert _shown(reviewer, project, model="gpt-special") == ["p2"]
    assert (
        "gpt-special</option>"
        in reviewer.get(reverse("curation:browse", args=[project.pk])).content.decode()
    )
    project.blind = True
    project.save(update_fields=["blind"])
    assert _shown(reviewer, project, q="special") == []
    assert len(_shown(reviewer, project, model="gpt-special")) == 6  # ignored, not leaked
    assert (
        "gpt-special"
        not in reviewer.get(reverse("curation:browse", args=[project.pk])).content.decode()
    )


def test_it_filters_by_status(reviewer, users):
    project = _project(users)
    prompts = {p.external_id: p for p in Prompt.objects.filter(project=project)}
    task = Task.objects.get(prompt=prompts["p1"])
    judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    Task.objects.filter(pk=task.pk).update(status="complete")
    services.review_discard_prompt(actor=users["reviewer"], prompt=prompts["p2"])
    services.review_set_ranking(
        actor=users["reviewer"], prompt=prompts["p1"], ranking=[[c] for c in slots(task)]
    )
    assert _shown(reviewer, project, status="complete") == ["p1"]
    assert _shown(reviewer, project, status="discarded") == ["p2"]
    assert _shown(reviewer, project, status="decided") == ["p1"]
    assert _shown(reviewer, project, status="open") == ["p0", "p3", "p4", "p5"]


def test_it_filters_by_open_flag_kind(reviewer, users):
    project = _project(users)
    p3, p4 = Prompt.objects.filter(project=project, external_id__in=["p3", "p4"]).order_by("id")
    Flag.objects.create(project=project, kind="cycle", key="prompt:3", prompt=p3, severity=0.5)
    Flag.objects.create(
        project=project, kind="low_agreement", key="prompt:4", prompt=p4, status="resolved"
    )
    assert _shown(reviewer, project, flag="cycle") == ["p3"]
    assert _shown(reviewer, project, flag="any") == ["p3"]
    assert _shown(reviewer, project, flag="low_agreement") == []


def test_it_filters_by_annotator(reviewer, users):
    project = _project(users)
    task = Task.objects.get(prompt__project=project, prompt__external_id="p5")
    judge_ranking(task, users["annotator2"], [[c] for c in slots(task)])
    body = reviewer.get(reverse("curation:browse", args=[project.pk])).content.decode()
    assert f'<option value="user:{users["annotator2"].pk}">ann2</option>' in body
    assert _shown(reviewer, project, evaluator=f"user:{users['annotator2'].pk}") == ["p5"]
    assert _shown(reviewer, project, evaluator=f"user:{users['annotator'].pk}") == []


def test_it_offers_the_annotators_who_judged_and_those_the_flags_pass_knows(reviewer, users):
    """The annotator choices: members who judged here (not those who did not, nor judgments
    elsewhere), and evaluators of the last flags pass (imported annotators, former members)."""
    from annotate.models import Judgment

    project = _project(users)
    task = Task.objects.get(prompt__project=project, prompt__external_id="p5")
    judge_ranking(task, users["annotator2"], [[c] for c in slots(task)])
    Judgment.objects.create(
        project=project,
        task=task,
        source=Judgment.Source.EXTERNAL,
        source_name="lab",
        external_annotator="rater-7",
        kind=Judgment.Kind.RANKING,
        ranking=[[c] for c in reversed(slots(task))],
        presented_order=slots(task),
        idempotency_key="ext-rater-7",
    )

    def options() -> list[str]:
        body = reviewer.get(reverse("curation:browse", args=[project.pk])).content.decode()
        return re.findall(r'<option value="((?:user|ext):[^"]+)"', body)

    assert options() == [f"user:{users['annotator2'].pk}"]
    services.flags_recompute(project_id=project.pk)
    assert sorted(options()) == sorted([f"user:{users['annotator2'].pk}", "ext:lab:rater-7"])


def test_model_names_lists_each_of_a_projects_models_once():
    from curation.selectors import model_names

    project = make_project(name="models", n_prompts=4, models=["zeta", "alpha", "mid", "alpha"])
    make_project(name="other", n_prompts=2, models=["beta", "omega"])
    Candidate.objects.filter(project=project, external_id="p0-c2").update(model_name="")
    assert model_names(project_id=project.pk) == ["", "alpha", "mid", "zeta"]
    assert model_names(project_id=0) == []


def test_it_sorts_by_judgments(reviewer, users):
    project = _project(users)
    for external_id, n in [("p4", 2), ("p1", 1)]:
        task = Task.objects.get(prompt__project=project, prompt__external_id=external_id)
        for user in [users["annotator"], users["annotator2"]][:n]:
            judge_ranking(task, user, [[c] for c in slots(task)])
    assert _shown(reviewer, project, sort="judgments")[:2] == ["p4", "p1"]


def _judge_agreeing_and_split(users, project) -> None:
    """p1: two annotators agree on every pair; p2: they reverse each other; p3: one vote."""
    for external_id, reverse_second in (("p1", False), ("p2", True)):
        task = Task.objects.get(prompt__project=project, prompt__external_id=external_id)
        order = slots(task)
        judge_ranking(task, users["annotator"], [[c] for c in order])
        second = order[::-1] if reverse_second else order
        judge_ranking(task, users["annotator2"], [[c] for c in second])
    task = Task.objects.get(prompt__project=project, prompt__external_id="p3")
    judge_ranking(task, users["annotator"], [[c] for c in slots(task)])


def test_it_filters_and_sorts_by_the_agreement_the_flags_pass_stored(reviewer, users):
    project = _project(users)
    _judge_agreeing_and_split(users, project)
    assert _shown(reviewer, project, agreement_below="0.5") == []  # nothing computed yet
    services.flags_recompute(project_id=project.pk)
    assert _shown(reviewer, project, agreement_below="0.5") == ["p2"]
    assert _shown(reviewer, project, agreement_below="1") == ["p2"]
    # Lowest first; prompts without a figure (one evaluator, or no judgment) last, by id.
    assert _shown(reviewer, project, sort="agreement") == ["p2", "p1", "p0", "p3", "p4", "p5"]
    body = reviewer.get(reverse("curation:browse", args=[project.pk])).content.decode()
    assert re.search(r">p1</a>.*?<td>1\.00</td>", body, re.S)
    assert re.search(r">p2</a>.*?<td>0\.00</td>", body, re.S)
    # Not a share: no bound, every prompt.
    assert len(_shown(reviewer, project, agreement_below="7")) == 6
    assert len(_shown(reviewer, project, agreement_below="x")) == 6


def test_a_submit_updates_its_prompts_stored_agreement(reviewer, users):
    project = _project(users)
    _judge_agreeing_and_split(users, project)
    services.flags_recompute(project_id=project.pk)
    task = Task.objects.get(prompt__project=project, prompt__external_id="p1")
    judge_ranking(task, users["reviewer"], [[c] for c in slots(task)[::-1]])
    services.flags_update_for_task(task_id=task.pk)  # what the per-submit job runs
    assert _shown(reviewer, project, agreement_below="0.5") == ["p1", "p2"]


def test_a_discarded_prompt_loses_its_stored_agreement(reviewer, users):
    project = _project(users)
    _judge_agreeing_and_split(users, project)
    services.flags_recompute(project_id=project.pk)
    p2 = Prompt.objects.get(project=project, external_id="p2")
    PromptDecision.objects.create(project=project, prompt=p2, discarded=True)
    services.flags_recompute(project_id=project.pk)
    assert _shown(reviewer, project, agreement_below="0.5") == []


def test_it_answers_unknown_filter_values_with_everything(reviewer, users):
    project = _project(users)
    assert len(_shown(reviewer, project, status="nope", flag="nope", sort="nope")) == 6


def test_it_costs_the_same_queries_for_a_bigger_project(
    reviewer, users, django_assert_max_num_queries
):
    small = _project(users, n_prompts=5)
    with django_assert_max_num_queries(12) as small_queries:
        reviewer.get(reverse("curation:browse", args=[small.pk]))
    big = make_project(name="browse-big", n_prompts=80, n_candidates=3, k=1)
    members(big, users)
    with django_assert_max_num_queries(len(small_queries.captured_queries)):
        reviewer.get(reverse("curation:browse", args=[big.pk]))


@pytest.mark.parametrize("user_key, status", [("annotator", 403), ("outsider", 404)])
def test_it_refuses_people_who_may_not_review(client, users, user_key, status):
    project = _project(users)
    client.force_login(users[user_key])
    assert client.get(reverse("curation:browse", args=[project.pk])).status_code == status


def test_it_sends_anonymous_visitors_to_the_login(client, users):
    project = _project(users)
    response = client.get(reverse("curation:browse", args=[project.pk]))
    assert response.status_code == 302 and "/accounts/login/" in response.url


def test_it_shows_a_prompts_audit_history_on_its_page(reviewer, users):
    project = _project(users)
    prompt = Prompt.objects.get(project=project, external_id="p0")
    services.review_discard_prompt(actor=users["reviewer"], prompt=prompt, note="duplicate")
    body = reviewer.get(reverse("curation:prompt", args=[project.pk, prompt.pk])).content.decode()
    section = " ".join(re.sub(r"<[^>]+>", " ", body.split('id="audit-title"')[1]).split())
    assert "Discard prompt" in section and "duplicate" in section
    assert "1 task open → discarded; 1 task discarded" in section


def _bulk(client, project, prompts, **data):
    return client.post(
        reverse("curation:browse_bulk", args=[project.pk]),
        {"prompt": [p.pk for p in prompts], **data},
        follow=True,
    )


def _prompts(project, *external_ids):
    return list(Prompt.objects.filter(project=project, external_id__in=external_ids).order_by("id"))


def test_it_discards_the_selected_prompts_one_action_each(reviewer, users):
    project = _project(users)
    chosen = _prompts(project, "p1", "p2")
    response = _bulk(reviewer, project, chosen, action="discard", back="/curation/")
    assert response.redirect_chain[-1][0] == "/curation/"
    assert "Discard: done on 2 prompts" in response.content.decode()
    actions = ReviewAction.objects.filter(project=project, kind="discard_prompt")
    assert sorted(a.prompt_id for a in actions) == [p.pk for p in chosen]
    assert set(
        PromptDecision.objects.filter(discarded=True).values_list("prompt_id", flat=True)
    ) == {p.pk for p in chosen}


def test_it_requests_more_judgments_on_the_selected_prompts(reviewer, users):
    project = _project(users)
    _bulk(reviewer, project, _prompts(project, "p3"), action="more", extra="2")
    task = Task.objects.get(prompt__project=project, prompt__external_id="p3")
    assert task.required_judgments == 3 and task.status == "open"  # k = 1, plus 2
    assert Task.objects.filter(project=project, required_judgments__isnull=False).count() == 1


def test_it_reports_the_prompts_it_skipped(reviewer, users):
    project = _project(users)
    p1, p2 = _prompts(project, "p1", "p2")
    services.review_discard_prompt(actor=users["reviewer"], prompt=p1)
    body = _bulk(reviewer, project, [p1, p2], action="discard").content.decode()
    assert "Skipped p1: this prompt is already discarded." in body
    assert "Discard: done on 1 prompt;" in body


def test_it_leaves_prompts_of_other_projects_alone(reviewer, users):
    project = _project(users)
    other = make_project(name="other", n_prompts=1)
    body = _bulk(reviewer, project, list(other.prompts.all()), action="discard").content.decode()
    assert "Select at least one prompt." in body
    assert not ReviewAction.objects.exists()


@pytest.mark.parametrize("user_key, status", [("annotator", 403), ("outsider", 404)])
def test_it_refuses_bulk_actions_from_people_who_may_not_review(client, users, user_key, status):
    project = _project(users)
    client.force_login(users[user_key])
    url = reverse("curation:browse_bulk", args=[project.pk])
    prompt = _prompts(project, "p0")[0]
    assert client.post(url, {"prompt": [prompt.pk], "action": "discard"}).status_code == status
    assert not ReviewAction.objects.exists()


def test_it_rejects_get_on_bulk_actions(reviewer, users):
    project = _project(users)
    assert reviewer.get(reverse("curation:browse_bulk", args=[project.pk])).status_code == 405


def test_it_marks_the_data_tab_on_a_prompts_page(reviewer, users):
    project = _project(users)
    prompt = Prompt.objects.get(project=project, external_id="p0")
    body = reviewer.get(reverse("curation:prompt", args=[project.pk, prompt.pk])).content.decode()
    assert f'href="{reverse("curation:browse", args=[project.pk])}" aria-current="page"' in body
