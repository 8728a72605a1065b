"""Admin: list pages free of N+1 queries, the import page runs the import service."""

from __future__ import annotations

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate.models import ImportJob, Judgment, Project
from annotate.services import import_file

pytestmark = pytest.mark.django_db

MODELS = [
    "project",
    "membership",
    "prompt",
    "candidate",
    "task",
    "assignment",
    "judgment",
    "importjob",
    "apitoken",
    "rewardmodel",
    "modelscore",
]


def _load_votes(tmp_path, n: int, name: str) -> Project:
    rows = [
        {"model_a": f"m{i % 4}", "model_b": "z", "winner": "model_a", "tstamp": i} for i in range(n)
    ]
    path = tmp_path / f"{name}.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return import_file(path=path).project


def _query_count(client, url: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, url
    return len(ctx.captured_queries)


@pytest.mark.parametrize("model", MODELS)
def test_it_lists_without_n_plus_one_queries(model, client, users, tmp_path):
    from annotate.models import Assignment, Membership, ModelScore, RewardModel

    client.force_login(users["staff"])
    url = reverse(f"admin:annotate_{model}_changelist")

    def grow(n: int, tag: str) -> None:
        project = _load_votes(tmp_path, n, f"votes-{tag}")
        rm = RewardModel.objects.create(
            name=f"rm-{tag}", version="1", backend="multi_response", path="/x"
        )
        for i, task in enumerate(project.tasks.all()[:n]):
            user = users["annotator"] if i % 2 else users["annotator2"]
            Membership.objects.get_or_create(project=project, user=user)
            from django.utils import timezone

            Assignment.objects.create(task=task, annotator=user, leased_until=timezone.now())
            ModelScore.objects.create(candidate=task.candidates.first(), reward_model=rm, score=0.5)
        ImportJob.objects.create(source_file="/tmp/x", project=project, created_by=users["staff"])
        from annotate.services import api_token_create

        api_token_create(user=users["staff"], name=tag)

    grow(2, "small")
    small = _query_count(client, url)
    grow(12, "large")
    large = _query_count(client, url)
    assert large == small, f"{model}: {small} queries for few rows, {large} for more"


def test_it_imports_an_uploaded_file(client, users):
    client.force_login(users["staff"])
    body = "\n".join(
        json.dumps({"model_a": "a", "model_b": "b", "winner": "tie", "tstamp": i}) for i in range(4)
    )
    response = client.post(
        reverse("admin:annotate_project_import"),
        {
            "file": SimpleUploadedFile("admin-votes.jsonl", body.encode()),
            "project_name": "from-admin",
        },
    )
    job = ImportJob.objects.get()
    assert response.status_code == 302 and response.url.endswith(f"/{job.pk}/change/")
    assert job.status == "done"
    assert Judgment.objects.filter(project__name="from-admin").count() == 4
    page = client.get(response.url).content.decode()
    assert "<progress" in page and "100%" in page


def test_it_shows_problems_of_a_rejected_upload(client, users):
    client.force_login(users["staff"])
    body = json.dumps({"model_a": "a", "model_b": "b", "winner": "?"})
    response = client.post(
        reverse("admin:annotate_project_import"),
        {"file": SimpleUploadedFile("bad.jsonl", body.encode())},
        follow=True,
    )
    page = response.content.decode()
    assert "Import rejected" in page and "line 1, field &#x27;winner&#x27;" in page
    assert Project.objects.count() == 0


def test_it_refuses_the_import_page_to_non_staff(client, users):
    client.force_login(users["annotator"])
    response = client.get(reverse("admin:annotate_project_import"))
    assert response.status_code == 302 and "/admin/login/" in response.url


def test_it_shows_and_filters_expired_leases(client, users):
    from datetime import timedelta

    from django.utils import timezone

    from annotate.models import Assignment
    from tests.factories import make_project

    project = make_project(n_prompts=2)
    first, second = project.tasks.all()
    Assignment.objects.create(
        task=first, annotator=users["annotator"], leased_until=timezone.now() - timedelta(minutes=1)
    )
    Assignment.objects.create(
        task=second,
        annotator=users["annotator"],
        leased_until=timezone.now() + timedelta(minutes=9),
    )
    client.force_login(users["staff"])
    url = reverse("admin:annotate_assignment_changelist")
    assert client.get(url).content.decode().count("lease expired") == 1
    expired = client.get(url, {"lease": "expired"}).context["cl"].result_list
    assert [a.task_id for a in expired] == [first.pk]
    live = client.get(url, {"lease": "live"}).context["cl"].result_list
    assert [a.task_id for a in live] == [second.pk]
