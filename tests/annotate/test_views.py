"""The annotator pages and their JSON endpoints, through the test client."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotate import selectors
from annotate.models import Assignment, Judgment, JudgmentRevision, Prompt, Task
from tests.annotate.conftest import new_key, post_json

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


def _page(client, project):
    return client.get(reverse("annotate_work", args=[project.pk]))


def _lease(client, project) -> Assignment:
    response = client.get(reverse("annotate_work", args=[project.pk]), **FETCH)
    assert response.status_code == 200
    return Assignment.objects.filter(task__project=project).latest("updated_at")


def _submit(client, project, assignment, **body):
    body.setdefault("idempotency_key", new_key())
    if project.mode == "ranking":
        body.setdefault("ranking", [[c] for c in assignment.presented_order])
    return post_json(client, reverse("annotate_submit", args=[project.pk, assignment.pk]), body)


@pytest.fixture
def ann(client, users):
    client.force_login(users["annotator"])
    return client


def test_it_shows_the_candidates_under_letters_in_the_presented_order(ann, ranking_project):
    response = _page(ann, ranking_project)
    assert response.status_code == 200
    assignment = Assignment.objects.get()
    html = response.content.decode()
    shown = [int(i) for i in re.findall(r'data-candidate-id="(\d+)" data-letter="[A-H]"', html)]
    tokens = selectors.candidate_tokens(
        assignment_id=assignment.pk, candidate_ids=assignment.presented_order
    )
    assert shown == [tokens[c] for c in assignment.presented_order]
    assert re.findall(r'data-letter="([A-H])"', html) == ["A", "B", "C", "D"]
    assert 'aria-live="polite"' in html


def test_it_shows_pairwise_choices_on_single_keys(ann, pair_project):
    html = _page(ann, pair_project).content.decode()
    for choice, key in (("A", "1"), ("B", "2"), ("tie", "3"), ("both_bad", "4")):
        assert re.search(rf'data-choice="{choice}"[^>]*><kbd>{key}</kbd>', html)


def test_it_resumes_the_same_task_on_reload(ann, ranking_project):
    _page(ann, ranking_project)
    _page(ann, ranking_project)
    assert Assignment.objects.count() == 1


def test_it_serves_the_fragment_to_the_page_and_the_whole_page_otherwise(ann, ranking_project):
    url = reverse("annotate_work", args=[ranking_project.pk])
    fragment = ann.get(url, **FETCH).content.decode()
    page = ann.get(url).content.decode()
    assert fragment.lstrip().startswith("<section") and "<html" not in fragment
    assert "<html" in page and "data-annotate-root" in page


def test_it_stores_a_posted_judgment_once(ann, ranking_project):
    a = _lease(ann, ranking_project)
    key = new_key()
    first = _submit(ann, ranking_project, a, idempotency_key=key, duration_ms=3100)
    again = _submit(ann, ranking_project, a, idempotency_key=key, duration_ms=3100)
    assert (first.status_code, again.status_code) == (201, 200)
    assert first.json()["judgment_id"] == again.json()["judgment_id"]
    assert first.json()["next_url"] == reverse("annotate_work", args=[ranking_project.pk])
    j = Judgment.objects.get()
    assert (j.duration_ms, j.idempotency_key) == (3100, key)
    assert Task.objects.get(pk=a.task_id).judgment_count == 1


def test_it_answers_400_naming_the_field(ann, ranking_project):
    a = _lease(ann, ranking_project)
    response = _submit(ann, ranking_project, a, ranking=[[a.presented_order[0]]])
    assert response.status_code == 400
    assert response.json()["field"] == "ranking"
    assert "missing" in response.json()["error"]
    assert not Judgment.objects.exists()


def test_it_answers_400_for_a_body_that_is_not_json(ann, ranking_project):
    a = _lease(ann, ranking_project)
    response = ann.post(
        reverse("annotate_submit", args=[ranking_project.pk, a.pk]),
        data="ranking=1",
        content_type="application/json",
    )
    assert (response.status_code, response.json()["field"]) == (400, "body")


def test_it_answers_409_when_the_lease_was_lost(ann, ranking_project, users, client):
    ranking_project.annotators_per_task = 1
    ranking_project.save()
    a = _lease(ann, ranking_project)
    Assignment.objects.filter(pk=a.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    Task.objects.filter(pk=a.task_id).update(judgment_count=1)  # someone else judged it
    response = _submit(ann, ranking_project, a)
    assert (response.status_code, response.json()["code"]) == (409, "lease_lost")
    assert not Judgment.objects.exists()


def test_it_refuses_get_on_submit(ann, ranking_project):
    a = _lease(ann, ranking_project)
    response = ann.get(reverse("annotate_submit", args=[ranking_project.pk, a.pk]))
    assert response.status_code == 405


def test_it_skips_with_a_reason(ann, ranking_project):
    a = _lease(ann, ranking_project)
    url = reverse("annotate_skip", args=[ranking_project.pk, a.pk])
    assert post_json(ann, url, {"reason": ""}).status_code == 400
    response = post_json(ann, url, {"reason": "Media does not load"})
    assert response.status_code == 200
    a.refresh_from_db()
    assert (a.status, a.skip_reason) == ("skipped", "Media does not load")
    assert _lease(ann, ranking_project).task_id != a.task_id


def test_it_changes_the_last_judgment(ann, ranking_project):
    a = _lease(ann, ranking_project)
    saved = _submit(ann, ranking_project, a).json()
    edit = ann.get(saved["edit_url"], **FETCH)
    assert edit.status_code == 200
    assert 'id="initial-verdict"' in edit.content.decode()
    assert "Change your ranking" in edit.content.decode()
    changed = [list(reversed(a.presented_order))]
    url = reverse("annotate_revise", args=[ranking_project.pk, saved["judgment_id"]])
    response = post_json(ann, url, {"edit_key": new_key(), "ranking": changed})
    assert response.status_code == 201
    assert Judgment.objects.get().ranking == changed
    assert JudgmentRevision.objects.get().ranking == [[c] for c in a.presented_order]


def test_it_answers_409_for_a_change_after_the_lease(ann, ranking_project):
    a = _lease(ann, ranking_project)
    saved = _submit(ann, ranking_project, a).json()
    Assignment.objects.filter(pk=a.pk).update(leased_until=timezone.now() - timedelta(seconds=1))
    edit = ann.get(saved["edit_url"], **FETCH)
    assert edit.status_code == 409
    url = reverse("annotate_revise", args=[ranking_project.pk, saved["judgment_id"]])
    response = post_json(ann, url, {"edit_key": new_key(), "ranking": [a.presented_order]})
    assert (response.status_code, response.json()["code"]) == (409, "edit_window_closed")


def test_it_shows_progress_and_a_link_to_change_the_last_judgment(ann, ranking_project):
    a = _lease(ann, ranking_project)
    saved = _submit(ann, ranking_project, a).json()
    html = ann.get(reverse("annotate_work", args=[ranking_project.pk]), **FETCH).content.decode()
    assert re.search(r"data-done-today>1<", html)
    assert re.search(r"data-remaining>2<", html)
    assert f'href="{saved["edit_url"]}"' in html


def test_it_says_when_nothing_is_left(ann, ranking_project):
    Task.objects.update(status=Task.Status.COMPLETE)
    html = ann.get(reverse("annotate_work", args=[ranking_project.pk]), **FETCH).content.decode()
    assert "No task for you right now" in html
    assert not Assignment.objects.exists()


def test_it_renders_markdown_and_strips_html_injection(ann, ranking_project):
    ranking_project.instructions = "Rank by **accuracy**.<script>alert('i')</script>"
    ranking_project.save()
    Prompt.objects.update(text="What is `2+2`? <img src=x onerror=alert(1)>")
    task = Task.objects.order_by("id").first()
    evil = task.candidates.first()
    evil.text = (
        "**Four**<script>alert(2)</script> [link](javascript:alert(3)) "
        '<a href="https://example.org" onclick="alert(4)">ok</a> <iframe src="//x"></iframe>'
    )
    evil.save()
    html = _page(ann, ranking_project).content.decode()
    assert "<strong>Four</strong>" in html
    assert "<code>2+2</code>" in html
    assert "<strong>accuracy</strong>" in html
    for bad in ("<script>alert", "onerror", "javascript:", "onclick", "<iframe", '<img src="x"'):
        assert bad not in html, bad
    assert 'rel="noopener noreferrer nofollow"' in html


def test_it_shows_rubric_ratings_when_the_project_has_dimensions(ann, ranking_project):
    ranking_project.rubric_dimensions = ["accuracy", "clarity"]
    ranking_project.save()
    html = _page(ann, ranking_project).content.decode()
    assert html.count('data-dimension="accuracy"') == 4
    assert html.count('data-dimension="clarity"') == 4


def test_it_shows_the_instructions_page(ann, ranking_project):
    ranking_project.instructions = "# Be *kind*"
    ranking_project.save()
    response = ann.get(reverse("annotate_instructions", args=[ranking_project.pk]))
    assert response.status_code == 200
    assert "<h1>Be <em>kind</em></h1>" in response.content.decode()


def test_it_lists_the_users_projects_with_a_link_to_annotate(ann, ranking_project, users):
    html = ann.get(reverse("home")).content.decode()
    assert reverse("annotate_work", args=[ranking_project.pk]) in html
    assert "elsewhere" not in html


def _queries(call) -> list[str]:
    """SQL a request runs, less the savepoints the test's own transaction adds around
    ``atomic()`` blocks (in production those are a BEGIN/COMMIT, not statements)."""
    with CaptureQueriesContext(connection) as ctx:
        call()
    return [q["sql"] for q in ctx.captured_queries if "SAVEPOINT" not in q["sql"]]


def test_it_leases_the_next_task_in_at_most_10_queries(ann, ranking_project):
    url = reverse("annotate_work", args=[ranking_project.pk])
    leasing = _queries(lambda: ann.get(url, **FETCH))
    resuming = _queries(lambda: ann.get(url, **FETCH))
    assert Assignment.objects.count() == 1
    assert len(leasing) <= 10, leasing
    assert len(resuming) <= 6, resuming


def test_it_submits_in_at_most_10_queries(ann, ranking_project):
    a = _lease(ann, ranking_project)
    submitting = _queries(lambda: _submit(ann, ranking_project, a))
    assert Judgment.objects.count() == 1
    assert len(submitting) <= 10, submitting


def test_it_caps_the_remaining_count_it_shows(ann, ranking_project, monkeypatch):
    from annotate import queue

    monkeypatch.setattr(queue, "REMAINING_CAP", 2)
    html = ann.get(reverse("annotate_work", args=[ranking_project.pk]), **FETCH).content.decode()
    assert re.search(r"data-remaining>2\+<", html)


def test_it_does_not_mark_gold_tasks(ann, ranking_project):
    Task.objects.update(is_gold=True, gold_ranking=[[1], [2], [3], [4]])
    ranking_project.gold_rate = 1.0
    ranking_project.save()
    response = _page(ann, ranking_project)
    assert Assignment.objects.get().task.is_gold
    assert "gold" not in response.content.decode().lower()


def _score_with_model(project):
    from annotate.models import ModelScore, RewardModel

    rm = RewardModel.objects.create(name="rm", version="1", backend="multi_response", path="/x")
    for i, cand in enumerate(project.candidates.order_by("id")):
        ModelScore.objects.create(candidate=cand, reward_model=rm, score=float(i))
    project.active_reward_model = rm
    project.save()
    return rm


def test_it_hides_the_model_ranking_from_annotators_by_default(ann, ranking_project):
    _score_with_model(ranking_project)
    assert "data-model-ranking" not in _page(ann, ranking_project).content.decode()


def test_it_shows_the_model_ranking_when_the_project_allows_it(ann, ranking_project):
    _score_with_model(ranking_project)
    ranking_project.annotators_see_model_ranking = True
    ranking_project.save()
    html = _page(ann, ranking_project).content.decode()
    # scores grow with candidate id: the model's best is the highest id, under its letter
    assignment = Assignment.objects.get()
    pks = {
        token: pk
        for pk, token in selectors.candidate_tokens(
            assignment_id=assignment.pk, candidate_ids=assignment.presented_order
        ).items()
    }
    letters = {
        pks[int(c)]: letter
        for c, letter in re.findall(r'data-candidate-id="(\d+)" data-letter="([A-H])"', html)
    }
    expected = " > ".join(letters[c] for c in sorted(letters, reverse=True))
    assert f"Reward model's ranking: {expected}</p>" in html


def test_it_links_reviewers_to_the_review_queue_and_annotators_only_to_work(
    client, users, ranking_project
):
    client.force_login(users["reviewer"])
    html = client.get(reverse("home")).content.decode()
    assert reverse("curation:queue", args=[ranking_project.pk]) in html
    assert reverse("curation:dashboard", args=[ranking_project.pk]) not in html
    client.force_login(users["annotator"])
    html = client.get(reverse("home")).content.decode()
    assert reverse("curation:queue", args=[ranking_project.pk]) not in html
    assert reverse("annotate_work", args=[ranking_project.pk]) in html
