"""REST API: GET /api/projects/{id}/judgments (the Python client's fetch of judgments)."""

from __future__ import annotations

import json

import pytest

from annotate.services import api_token_create, import_file
from tests.factories import add_member

pytestmark = pytest.mark.django_db

ROWS = [
    {
        "id": "q1",
        "prompt": "Which is right?",
        "candidates": [
            {"id": "q1-a", "model": "m-a", "text": "A"},
            {"id": "q1-b", "model": "m-b", "text": "B"},
            {"id": "q1-c", "model": "m-c", "text": "C"},
        ],
        "judgments": [
            {
                "annotator": "expert-1",
                "ranking": [["q1-b"], ["q1-a", "q1-c"]],
                "presented_order": ["q1-c", "q1-b", "q1-a"],
                "rationale": "b is right",
                "duration_ms": 4200,
            }
        ],
    },
    {
        "id": "q2",
        "prompt": "Which is nicer?",
        "candidates": [
            {"id": "q2-a", "model": "m-a", "text": "A"},
            {"id": "q2-b", "model": "m-b", "text": "B"},
        ],
        "judgments": [
            {"annotator": "expert-1", "pair": ["q2-b", "q2-a"], "outcome": "a"},
            {"annotator": "expert-2", "pair": ["q2-a", "q2-b"], "outcome": "tie"},
        ],
    },
]


@pytest.fixture
def project(tmp_path, users):
    path = tmp_path / "judged.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    project = import_file(path=path, project_name="judged").project
    add_member(project, users["reviewer"], role="reviewer")
    add_member(project, users["annotator"])
    return project


def _get(client, user, url: str):
    _token, key = api_token_create(user=user)
    return client.get(url, HTTP_AUTHORIZATION=f"Bearer {key}")


def test_it_lists_a_ranking_by_candidate_external_ids(client, users, project):
    body = _get(client, users["reviewer"], f"/api/projects/{project.pk}/judgments").json()
    first = body["results"][0]
    assert body["count"] == 3
    assert first["prompt_external_id"] == "q1" and first["kind"] == "ranking"
    assert first["ranking"] == [["q1-b"], ["q1-a", "q1-c"]]
    assert first["presented_order"] == ["q1-c", "q1-b", "q1-a"]
    assert first["annotator"] == "expert-1" and first["source"] == "external"
    assert (first["rationale"], first["duration_ms"]) == ("b is right", 4200)


def test_it_gives_a_pairs_outcome_against_the_tasks_slot_order(client, users, project):
    url = f"/api/projects/{project.pk}/judgments?prompt=q2"
    results = _get(client, users["reviewer"], url).json()["results"]
    winners = set()
    for judgment in results:
        assert judgment["ranking"] is None and len(judgment["candidates"]) == 2
        if judgment["outcome"] in ("a", "b"):
            winners.add(judgment["candidates"]["ab".index(judgment["outcome"])])
    assert [j["annotator"] for j in results] == ["expert-1", "expert-2"]
    assert winners == {"q2-b"}


def test_it_pages_with_next_links(client, users, project):
    url = f"/api/projects/{project.pk}/judgments?limit=2"
    body = _get(client, users["reviewer"], url).json()
    assert len(body["results"]) == 2 and body["next"].endswith("limit=2&offset=2")


def test_it_costs_a_fixed_number_of_queries_per_page(
    client, users, project, django_assert_max_num_queries
):
    _token, key = api_token_create(user=users["reviewer"])
    with django_assert_max_num_queries(8):
        client.get(f"/api/projects/{project.pk}/judgments", HTTP_AUTHORIZATION=f"Bearer {key}")


def test_it_refuses_annotators(client, users, project):
    response = _get(client, users["annotator"], f"/api/projects/{project.pk}/judgments")
    assert response.status_code == 403
