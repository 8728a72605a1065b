"""Reviewer pages and actions: who may use them, what each action records, and undo."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotate.models import Task
from annotate.services import JudgmentInvalid
from curation import services
from curation.models import AnnotatorQuality, Flag, PromptDecision, ReviewAction
from curation.services import ReviewError, flags_recompute
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def disputed(users):
    project, people = disputed_ranking_project(users)
    flags_recompute(project_id=project.pk)
    return project, people


def _first_task(project) -> Task:
    return Task.objects.filter(project=project).order_by("id").first()


def _low_agreement_flag(project) -> Flag:
    return (
        Flag.objects.filter(project=project, kind="low_agreement", status="open")
        .order_by("id")
        .first()
    )


# --------------------------------------------------------------------------- permissions


PAGES = ["queue", "flag", "prompt", "history"]


def _url(name: str, project, flag: Flag) -> str:
    return {
        "queue": reverse("curation:queue", args=[project.pk]),
        "flag": reverse("curation:flag", args=[project.pk, flag.pk]),
        "prompt": reverse("curation:prompt", args=[project.pk, flag.prompt_id]),
        "history": reverse("curation:history", args=[project.pk]),
    }[name]


@pytest.mark.parametrize("page", PAGES)
def test_it_sends_anonymous_visitors_to_the_login(client, disputed, page):
    project, _ = disputed
    response = client.get(_url(page, project, _low_agreement_flag(project)))
    assert response.status_code == 302
    assert response.url.startswith(reverse("login"))


@pytest.mark.parametrize("page", PAGES)
def test_it_forbids_annotators_of_the_project(client, users, disputed, page):
    project, _ = disputed
    client.force_login(users["annotator"])
    assert client.get(_url(page, project, _low_agreement_flag(project))).status_code == 403


@pytest.mark.parametrize("page", PAGES)
def test_it_hides_the_project_from_a_reviewer_of_another_project(client, users, disputed, page):
    project, _ = disputed
    client.force_login(users["outsider"])
    assert client.get(_url(page, project, _low_agreement_flag(project))).status_code == 404


@pytest.mark.parametrize("role", ["reviewer", "admin", "staff"])
@pytest.mark.parametrize("page", PAGES)
def test_it_shows_review_pages_to_reviewers_admins_and_staff(client, users, disputed, page, role):
    project, _ = disputed
    client.force_login(users[role])
    assert client.get(_url(page, project, _low_agreement_flag(project))).status_code == 200


@pytest.mark.parametrize("user_key, status", [("annotator", 403), ("outsider", 404)])
def test_it_refuses_actions_from_non_reviewers(client, users, disputed, user_key, status):
    project, _ = disputed
    flag = _low_agreement_flag(project)
    client.force_login(users[user_key])
    url = reverse("curation:prompt_action", args=[project.pk, flag.prompt_id, "discard"])
    assert client.post(url).status_code == status
    assert not ReviewAction.objects.exists()
    assert Task.objects.filter(project=project, status="discarded").count() == 0


def test_it_refuses_actions_from_anonymous_visitors(client, disputed):
    project, _ = disputed
    flag = _low_agreement_flag(project)
    url = reverse("curation:prompt_action", args=[project.pk, flag.prompt_id, "accept"])
    assert client.post(url).status_code == 302
    assert not ReviewAction.objects.exists()


def test_it_rejects_get_on_actions(client, users, disputed):
    project, _ = disputed
    flag = _low_agreement_flag(project)
    client.force_login(users["reviewer"])
    url = reverse("curation:prompt_action", args=[project.pk, flag.prompt_id, "accept"])
    assert client.get(url).status_code == 405


# --------------------------------------------------------------------------- pages


def test_it_sorts_a_queue_by_severity(client, users, disputed):
    project, _ = disputed
    Flag.objects.filter(project=project, kind="low_agreement").update(severity=0.1)
    worst = _low_agreement_flag(project)
    Flag.objects.filter(pk=worst.pk).update(severity=0.9)
    client.force_login(users["reviewer"])
    response = client.get(reverse("curation:queue_kind", args=[project.pk, "low_agreement"]))
    flags = list(response.context["page"].object_list)
    assert flags[0].pk == worst.pk
    assert [f.severity for f in flags] == sorted((f.severity for f in flags), reverse=True)


def test_it_bounds_the_queries_of_a_queue_page(
    client, users, disputed, django_assert_max_num_queries
):
    project, _ = disputed
    client.force_login(users["reviewer"])
    with django_assert_max_num_queries(12):
        client.get(reverse("curation:queue_kind", args=[project.pk, "low_agreement"]))


def test_it_shows_judgments_consensus_and_model_ranking_on_an_item(client, users, disputed):
    from tests.curation.builders import score

    project, people = disputed
    task = _first_task(project)
    a, b, c, d = slots(task)
    score(project, {a: 3.0, b: 2.0, c: 1.0, d: 0.0})
    flag = Flag.objects.get(project=project, kind="low_agreement", prompt=task.prompt)
    client.force_login(users["reviewer"])
    response = client.get(reverse("curation:flag", args=[project.pk, flag.pk]))
    item = response.context["item"]
    assert len(item.judgments) == 4
    # The denoised export's ranking (the joint model's strengths, with the kept fit): on
    # three prompts it trusts people[2] (a > b > d > c) most, so D comes before C there too.
    assert item.consensus_letters == "A > B > D > C"
    assert item.model_letters == "A > B > C > D"
    html = response.content.decode()
    assert people[3].username in html
    assert 'data-key="a"' in html  # keyboard: accept consensus


def test_it_shows_candidate_media(client, users, disputed):
    from django.core.files.base import ContentFile

    from annotate.models import Candidate
    from tests.media_fixtures import png_bytes

    project, _ = disputed
    task = _first_task(project)
    cand = Candidate.objects.get(pk=slots(task)[0])
    cand.kind = "image"
    cand.media.save("cand.png", ContentFile(png_bytes()), save=True)
    client.force_login(users["reviewer"])
    html = client.get(
        reverse("curation:prompt", args=[project.pk, task.prompt_id])
    ).content.decode()
    assert f'src="{cand.media.url}"' in html


# --------------------------------------------------------------------------- actions


def test_it_accepts_the_consensus_and_records_who_when_before_after(client, users, disputed):
    project, _ = disputed
    flag = _low_agreement_flag(project)
    client.force_login(users["reviewer"])
    url = reverse("curation:prompt_action", args=[project.pk, flag.prompt_id, "accept"])
    response = client.post(url, {"flag": flag.pk})
    assert response.status_code == 302
    action = ReviewAction.objects.get()
    assert action.kind == "accept_consensus" and action.actor == users["reviewer"]
    assert action.created_at is not None
    a, b, c, d = slots(Task.objects.get(prompt_id=flag.prompt_id))
    assert action.before["decision"] == {"final_ranking": None, "discarded": False}
    # What the page shows: the denoised export's ranking (see the item test above).
    assert action.after["decision"]["final_ranking"] == [[a], [b], [d], [c]]
    decision = PromptDecision.objects.get(prompt_id=flag.prompt_id)
    assert decision.final_ranking == [[a], [b], [d], [c]]
    flag.refresh_from_db()
    assert flag.status == "resolved" and flag.resolved_by == action
    # Working a queue: on to the next open flag of the same kind, with undo offered.
    assert f"done={action.pk}" in response.url
    assert (
        reverse("curation:flag", args=[project.pk, _low_agreement_flag(project).pk]) in response.url
    )


def test_it_sets_a_final_ranking_from_the_rank_form(client, users, disputed):
    project, _ = disputed
    task = _first_task(project)
    a, b, c, d = slots(task)
    client.force_login(users["reviewer"])
    url = reverse("curation:prompt_action", args=[project.pk, task.prompt_id, "rank"])
    client.post(url, {f"rank_{a}": 2, f"rank_{b}": 1, f"rank_{c}": 3, f"rank_{d}": 3})
    assert PromptDecision.objects.get(prompt_id=task.prompt_id).final_ranking == [[b], [a], [c, d]]
    assert ReviewAction.objects.get().kind == "set_ranking"


def test_it_rejects_a_ranking_that_misses_a_candidate(users, disputed):
    project, _ = disputed
    task = _first_task(project)
    a, b, c, _d = slots(task)
    with pytest.raises(JudgmentInvalid):
        services.review_set_ranking(
            actor=users["reviewer"], prompt=task.prompt, ranking=[[a], [b], [c]]
        )
    assert not ReviewAction.objects.exists()
    assert not PromptDecision.objects.filter(final_ranking__isnull=False).exists()


def test_it_discards_a_prompt_and_undo_restores_its_tasks(users, disputed):
    project, _ = disputed
    task = _first_task(project)
    before_status = task.status
    action = services.review_discard_prompt(actor=users["reviewer"], prompt=task.prompt)
    task.refresh_from_db()
    assert task.status == "discarded"
    assert PromptDecision.objects.get(prompt=task.prompt).discarded
    services.review_action_undo(actor=users["admin"], action=action)
    task.refresh_from_db()
    assert task.status == before_status
    assert not PromptDecision.objects.get(prompt=task.prompt).discarded
    action.refresh_from_db()
    assert action.undone_by == users["admin"] and action.undone_at is not None


def test_it_requests_more_judgments_by_reopening_the_tasks(client, users, disputed):
    project, _ = disputed
    task = _first_task(project)
    Task.objects.filter(pk=task.pk).update(status="complete")
    client.force_login(users["reviewer"])
    client.post(
        reverse("curation:prompt_action", args=[project.pk, task.prompt_id, "more"]), {"extra": "2"}
    )
    task.refresh_from_db()
    assert task.status == "open"
    assert task.required_judgments == 4 + 2  # four judgments stored, two more wanted
    action = ReviewAction.objects.get()
    assert action.before["tasks"][str(task.pk)] == {
        "status": "complete",
        "required_judgments": None,
    }
    services.review_action_undo(actor=users["reviewer"], action=action)
    task.refresh_from_db()
    assert task.required_judgments is None and task.status == "complete"


def test_it_marks_an_annotator_unreliable_and_undo_unmarks(client, users, disputed):
    project, people = disputed
    evaluator = f"user:{people[3].pk}"
    flag = Flag.objects.get(project=project, kind="unreliable_annotator")
    client.force_login(users["reviewer"])
    client.post(
        reverse("curation:mark_unreliable", args=[project.pk]),
        {"evaluator": evaluator, "flag": flag.pk},
    )
    assert AnnotatorQuality.objects.get(project=project, evaluator=evaluator).marked_unreliable
    flag.refresh_from_db()
    assert flag.status == "resolved"
    action = ReviewAction.objects.get()
    services.review_action_undo(actor=users["reviewer"], action=action)
    assert not AnnotatorQuality.objects.get(project=project, evaluator=evaluator).marked_unreliable
    flag.refresh_from_db()
    assert flag.status == "open" and flag.resolved_by is None


def test_it_refuses_to_mark_someone_without_judgments(users, disputed):
    project, _ = disputed
    with pytest.raises(ReviewError):
        services.review_mark_unreliable(
            actor=users["reviewer"], project=project, evaluator="user:999999"
        )


def test_it_reopens_the_flags_an_undone_action_resolved(users, disputed):
    project, _ = disputed
    flag = _low_agreement_flag(project)
    action = services.review_accept_consensus(
        actor=users["reviewer"], prompt=flag.prompt, flag=flag
    )
    flag.refresh_from_db()
    assert flag.status == "resolved"
    services.review_action_undo(actor=users["reviewer"], action=action)
    flag.refresh_from_db()
    assert flag.status == "open"
    assert PromptDecision.objects.get(prompt=flag.prompt).final_ranking is None


def test_it_undoes_newest_first_on_a_prompt(users, disputed):
    project, _ = disputed
    prompt = _first_task(project).prompt
    first = services.review_accept_consensus(actor=users["reviewer"], prompt=prompt)
    second = services.review_discard_prompt(actor=users["reviewer"], prompt=prompt)
    with pytest.raises(ReviewError, match=f"#{second.pk}"):
        services.review_action_undo(actor=users["reviewer"], action=first)
    services.review_action_undo(actor=users["reviewer"], action=second)
    services.review_action_undo(actor=users["reviewer"], action=first)
    assert PromptDecision.objects.get(prompt=prompt).final_ranking is None


def test_it_refuses_to_undo_twice(users, disputed):
    project, _ = disputed
    action = services.review_accept_consensus(
        actor=users["reviewer"], prompt=_first_task(project).prompt
    )
    services.review_action_undo(actor=users["reviewer"], action=action)
    with pytest.raises(ReviewError):
        services.review_action_undo(actor=users["reviewer"], action=action)


def test_it_keeps_every_action_in_the_trail(client, users, disputed):
    project, _ = disputed
    prompt = _first_task(project).prompt
    accepted = services.review_accept_consensus(actor=users["reviewer"], prompt=prompt)
    services.review_action_undo(actor=users["admin"], action=accepted)
    services.review_discard_prompt(actor=users["admin"], prompt=prompt)
    assert ReviewAction.objects.filter(project=project).count() == 2
    client.force_login(users["reviewer"])
    html = client.get(reverse("curation:history", args=[project.pk])).content.decode()
    assert "Accept consensus" in html and "Discard prompt" in html
    assert f"undone by {users['admin'].username}" in html


def test_it_undoes_from_the_page_and_returns(client, users, disputed):
    project, _ = disputed
    prompt = _first_task(project).prompt
    action = services.review_discard_prompt(actor=users["reviewer"], prompt=prompt)
    client.force_login(users["reviewer"])
    back = reverse("curation:prompt", args=[project.pk, prompt.pk])
    response = client.post(reverse("curation:undo", args=[project.pk, action.pk]), {"back": back})
    assert response.status_code == 302 and response.url == back
    action.refresh_from_db()
    assert action.undone_at is not None


def test_it_refuses_an_undo_from_an_annotator(client, users, disputed):
    project, _ = disputed
    action = services.review_discard_prompt(
        actor=users["reviewer"], prompt=_first_task(project).prompt
    )
    client.force_login(users["annotator"])
    assert client.post(reverse("curation:undo", args=[project.pk, action.pk])).status_code == 403
    action.refresh_from_db()
    assert action.undone_at is None


def test_it_dismisses_a_flag_without_touching_anything_else(users, disputed):
    project, _ = disputed
    flag = _low_agreement_flag(project)
    services.review_dismiss_flag(actor=users["reviewer"], flag=flag)
    flag.refresh_from_db()
    assert flag.status == "resolved"
    assert not PromptDecision.objects.exists()


def test_it_refuses_a_flag_of_another_project(users, disputed):
    project, _ = disputed
    other = Flag.objects.create(project=make_project(name="other"), kind="cycle", key="prompt:0")
    with pytest.raises(ReviewError):
        services.review_accept_consensus(
            actor=users["reviewer"], prompt=_first_task(project).prompt, flag=other
        )


def test_it_never_redirects_off_site_after_an_undo(client, users, disputed):
    project, _ = disputed
    action = services.review_discard_prompt(
        actor=users["reviewer"], prompt=_first_task(project).prompt
    )
    client.force_login(users["reviewer"])
    response = client.post(
        reverse("curation:undo", args=[project.pk, action.pk]), {"back": "//evil.example/x"}
    )
    assert response.url == reverse("curation:history", args=[project.pk])


@pytest.mark.parametrize("evaluator", ["nonsense", "user:abc", "ext:only-one-part", "user:999999"])
def test_it_answers_404_for_an_unknown_annotator(client, users, disputed, evaluator):
    project, _ = disputed
    client.force_login(users["reviewer"])
    url = reverse("curation:evaluator", args=[project.pk])
    assert client.get(url, {"evaluator": evaluator}).status_code == 404


def test_it_shows_an_annotator_page_with_their_figures(client, users, disputed):
    project, people = disputed
    client.force_login(users["reviewer"])
    url = reverse("curation:evaluator", args=[project.pk])
    response = client.get(url, {"evaluator": f"user:{people[3].pk}"})
    assert response.status_code == 200
    assert response.context["item"].quality.n_judgments == 3
    assert len(response.context["item"].recent) == 3
