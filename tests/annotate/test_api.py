"""REST API: token auth, import through the same service, permissions, OpenAPI schema."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate.models import ImportJob, Judgment, Project
from annotate.services import api_token_create
from tests.factories import add_member, make_project

pytestmark = pytest.mark.django_db

VOTES = "\n".join(
    json.dumps({"model_a": "m1", "model_b": "m2", "winner": w, "tstamp": i})
    for i, w in enumerate(["model_a", "model_b", "tie"])
)


def _auth(user) -> dict:
    _token, key = api_token_create(user=user, name="test")
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def _upload(body: str = VOTES, name: str = "votes.jsonl") -> SimpleUploadedFile:
    return SimpleUploadedFile(name, body.encode(), content_type="application/jsonl")


def test_it_publishes_an_openapi_schema(client):
    schema = client.get("/api/openapi.json").json()
    assert "/api/imports" in schema["paths"]
    assert schema["components"]["securitySchemes"]


def test_it_rejects_requests_without_a_token(client):
    assert client.get("/api/projects").status_code == 401


def test_it_rejects_a_wrong_token(client):
    assert client.get("/api/projects", HTTP_AUTHORIZATION="Bearer qrm_nope").status_code == 401


def test_it_lists_only_the_users_projects(client, users):
    mine = make_project(name="mine")
    make_project(name="theirs")
    add_member(mine, users["annotator"])
    body = client.get("/api/projects", **_auth(users["annotator"])).json()
    assert [p["name"] for p in body["results"]] == ["mine"]
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)


def test_it_imports_into_a_new_project_for_staff(client, users):
    response = client.post(
        "/api/imports",
        {"file": _upload(), "project_name": "api-votes"},
        **_auth(users["staff"]),
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "done" and body["counts"]["judgments"] == 3
    assert Judgment.objects.filter(project__name="api-votes").count() == 3
    status = client.get(f"/api/imports/{body['id']}", **_auth(users["staff"])).json()
    assert status["progress_percent"] == 100


def test_it_refuses_new_projects_for_non_staff(client, users):
    response = client.post("/api/imports", {"file": _upload()}, **_auth(users["annotator"]))
    assert response.status_code == 403
    assert Project.objects.count() == 0


def test_it_imports_into_a_project_for_its_admin(client, users):
    project = make_project(name="pairs", mode="pairwise", n_prompts=0)
    add_member(project, users["admin"], role="admin")
    response = client.post(
        f"/api/projects/{project.pk}/imports", {"file": _upload()}, **_auth(users["admin"])
    )
    assert response.status_code == 201
    assert Judgment.objects.filter(project=project).count() == 3


def test_it_refuses_imports_from_annotators(client, users):
    project = make_project(name="pairs", mode="pairwise", n_prompts=0)
    add_member(project, users["annotator"])
    response = client.post(
        f"/api/projects/{project.pk}/imports", {"file": _upload()}, **_auth(users["annotator"])
    )
    assert response.status_code == 403
    assert ImportJob.objects.count() == 0


def test_it_reports_problems_by_line_and_field(client, users):
    bad = VOTES + "\n" + json.dumps({"model_a": "x", "model_b": "y", "winner": "nobody"})
    response = client.post("/api/imports", {"file": _upload(bad)}, **_auth(users["staff"]))
    body = response.json()
    assert body["status"] == "failed"
    assert any("line 4" in e and "'winner'" in e for e in body["errors"])
    assert Judgment.objects.count() == 0


def test_it_rejects_an_unknown_format(client, users):
    response = client.post(
        "/api/imports", {"file": _upload(), "format": "csv"}, **_auth(users["staff"])
    )
    assert response.status_code == 422
    assert "format" in response.json()["detail"]


def test_it_hides_other_users_import_jobs(client, users):
    job = ImportJob.objects.create(source_file="/tmp/x", created_by=users["staff"])
    response = client.get(f"/api/imports/{job.pk}", **_auth(users["annotator"]))
    assert response.status_code == 404


def _scored_project(users):
    from annotate.models import ModelScore, RewardModel

    project = make_project(name="scored", n_prompts=2, n_candidates=2)
    rm = RewardModel.objects.create(name="rm", version="1", backend="multi_response", path="/x")
    for i, cand in enumerate(project.candidates.order_by("id")):
        ModelScore.objects.create(candidate=cand, reward_model=rm, score=float(i))
    project.active_reward_model = rm
    project.save()
    add_member(project, users["reviewer"], role="reviewer")
    add_member(project, users["annotator"])
    add_member(project, users["admin"], role="admin")
    return project, rm


def test_it_lists_model_scores_to_reviewers(client, users):
    project, _rm = _scored_project(users)
    rows = client.get(f"/api/projects/{project.pk}/scores", **_auth(users["reviewer"])).json()[
        "results"
    ]
    assert [r["candidate"] for r in rows] == ["p0-c0", "p0-c1", "p1-c0", "p1-c1"]
    assert [r["score"] for r in rows] == [0.0, 1.0, 2.0, 3.0]


def test_it_hides_model_scores_from_annotators(client, users):
    project, _rm = _scored_project(users)
    assert (
        client.get(f"/api/projects/{project.pk}/scores", **_auth(users["annotator"])).status_code
        == 403
    )


def test_it_starts_a_scoring_run_for_a_project_admin(
    client, users, django_capture_on_commit_callbacks
):
    from workers.models import ScoringRun

    project, rm = _scored_project(users)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.post(
            f"/api/projects/{project.pk}/scoring-runs",
            {},
            content_type="application/json",
            **_auth(users["admin"]),
        )
    assert response.status_code == 201, response.content
    run = ScoringRun.objects.get()
    assert run.reward_model == rm and run.total_prompts == 2 and len(callbacks) == 1
    status = client.get(f"/api/scoring-runs/{run.pk}", **_auth(users["reviewer"])).json()
    assert status["status"] == "running" and status["progress_percent"] == 0


def test_it_refuses_scoring_runs_to_reviewers(client, users):
    project, _rm = _scored_project(users)
    response = client.post(
        f"/api/projects/{project.pk}/scoring-runs",
        {},
        content_type="application/json",
        **_auth(users["reviewer"]),
    )
    assert response.status_code == 403
