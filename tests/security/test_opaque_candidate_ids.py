"""Blind mode: the ids an annotator's page gives candidates carry no import order."""

from __future__ import annotations

import json
import re

import pytest
from django.urls import reverse

from annotate.models import Assignment, Candidate, Judgment, Project
from annotate.services import import_file
from tests.annotate.conftest import new_key
from tests.factories import add_member, make_user

pytestmark = pytest.mark.django_db

MODELS = ["m0", "m1", "m2", "m3"]
CARD = re.compile(r'data-candidate data-candidate-id="(\d+)"')


@pytest.fixture
def blind_project(tmp_path) -> Project:
    """Eight prompts whose candidates are listed m0, m1, m2, m3 in the file (so in the database)."""
    rows = [
        {"project": {"blind": True, "annotators_per_task": 2, "rubric_dimensions": ["accuracy"]}}
    ]
    for p in range(8):
        rows.append(
            {
                "id": f"q{p}",
                "prompt": f"Question {p}",
                "candidates": [
                    {"id": f"q{p}-{m}", "model": m, "text": f"Answer {i} to {p}"}
                    for i, m in enumerate(MODELS)
                ],
            }
        )
    path = tmp_path / "blind.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return import_file(path=path, project_name="blind-ids").project


def _page(client, user, project) -> tuple[str, list[int]]:
    client.force_login(user)
    html = client.get(reverse("annotate_work", args=[project.pk])).content.decode()
    return html, [int(i) for i in CARD.findall(html)]


def _models_by_page_id(ids: list[int], assignment: Assignment) -> list[str]:
    """The models of the shown candidates, in the order of their page ids."""
    shown = dict(zip(ids, assignment.presented_order, strict=True))
    names = dict(Candidate.objects.values_list("pk", "model_name"))
    return [names[shown[i]] for i in sorted(ids)]


def test_neither_the_page_ids_nor_the_dom_order_recover_the_models(client, blind_project):
    by_id = by_dom = 0
    names = dict(Candidate.objects.values_list("pk", "model_name"))
    for p in range(8):
        user = make_user(f"ann{p}")
        add_member(blind_project, user)
        _, ids = _page(client, user, blind_project)
        assignment = Assignment.objects.get(annotator=user)
        assert not set(ids) & set(names)
        by_id += _models_by_page_id(ids, assignment) == MODELS
        by_dom += [names[pk] for pk in assignment.presented_order] == MODELS
    # Database ids as page ids: 8 of 8 (every task lists m0..m3 in id order).
    assert by_id < 8 and by_dom < 8


def test_the_same_candidate_has_another_id_in_another_assignment(client, blind_project):
    first, second = make_user("first"), make_user("second")
    for user in (first, second):
        add_member(blind_project, user)
    _, ids_first = _page(client, first, blind_project)
    _, ids_second = _page(client, second, blind_project)
    a, b = Assignment.objects.get(annotator=first), Assignment.objects.get(annotator=second)
    assert a.task_id == b.task_id  # k = 2: both get the first task
    assert not set(ids_first) & set(ids_second)


def test_a_submit_in_page_ids_stores_database_ids_and_the_edit_page_shows_page_ids(
    client, blind_project
):
    user = make_user("ann")
    add_member(blind_project, user)
    html, ids = _page(client, user, blind_project)
    assignment = Assignment.objects.get(annotator=user)
    assert not set(ids) & set(assignment.presented_order)
    url = re.search(r'data-submit-url="([^"]+)"', html).group(1)
    body = {
        "idempotency_key": new_key(),
        "ranking": [[ids[2]], [ids[0], ids[3]], [ids[1]]],
        "ratings": {"accuracy": {str(ids[1]): 4}},
    }
    response = client.post(url, data=json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    judgment = Judgment.objects.get()
    order = assignment.presented_order
    assert [sorted(g) for g in judgment.ranking] == [
        [order[2]],
        sorted([order[0], order[3]]),
        [order[1]],
    ]
    assert judgment.ratings == {"accuracy": {str(order[1]): 4}}
    edit = client.get(response.json()["edit_url"]).content.decode()
    initial = json.loads(re.search(r'id="initial-verdict"[^>]*>(.*?)</script>', edit, re.S)[1])
    assert sorted(x for group in initial["ranking"] for x in group) == sorted(ids)
    assert initial["ratings"] == {"accuracy": {str(ids[1]): 4}}
