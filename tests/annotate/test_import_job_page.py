"""An import says what it imported in words, counts the rows of any file, and its job page
follows a background import."""

from __future__ import annotations

import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate.models import ImportJob
from annotate.services import import_job_create

pytestmark = pytest.mark.django_db

VOTES = [{"model_a": f"m{i}", "model_b": "base", "winner": "model_a"} for i in range(6)]


def test_it_says_what_an_upload_imported(client, users):
    client.force_login(users["staff"])
    response = client.post(
        reverse("admin:annotate_project_import"),
        {"file": SimpleUploadedFile("votes.json", json.dumps(VOTES).encode())},
        follow=True,
    )
    body = response.content.decode()
    assert "6 prompts, 12 candidates, 6 tasks and 6 judgments imported." in body
    assert "6 / 6 rows" in body
    assert "&#x27;prompts&#x27;" not in body and "{'prompts'" not in body


def test_it_says_when_a_reimport_adds_nothing(client, users, tmp_path):
    path = tmp_path / "votes.jsonl"
    path.write_text("\n".join(json.dumps(v | {"tstamp": i}) for i, v in enumerate(VOTES)))
    first = import_job_create(path=path, project_name="again")
    again = import_job_create(path=path, project=first.project)
    client.force_login(users["staff"])
    body = client.get(reverse("admin:annotate_importjob_change", args=[again.pk])).content
    assert b"Nothing new imported; 6 judgments were already there." in body


@pytest.mark.parametrize("inside_zip", [False, True])
def test_it_counts_the_rows_of_a_json_array(tmp_path, inside_zip):
    path = tmp_path / "votes.json"
    path.write_text(json.dumps(VOTES))
    if inside_zip:
        archive = tmp_path / "votes.zip"
        with zipfile.ZipFile(archive, "w") as zf:
            zf.write(path, "votes.json")
        path = archive
    job = import_job_create(path=path, project_name="array")
    assert job.status == "done"
    assert (job.total_rows, job.processed_rows) == (6, 6)


def test_it_refreshes_the_page_of_a_running_import(client, users, tmp_path):
    path = tmp_path / "votes.json"
    path.write_text(json.dumps(VOTES))
    job = ImportJob.objects.create(source_file=str(path), original_name="votes.json")
    client.force_login(users["staff"])
    url = reverse("admin:annotate_importjob_change", args=[job.pk])
    body = client.get(url).content.decode()
    assert 'data-live-region="import-job"' in body and "<span data-live hidden>" in body
    assert "curation/live.js" in body
    ImportJob.objects.filter(pk=job.pk).update(status="done")
    assert "<span data-live hidden>" not in client.get(url).content.decode()


def test_it_makes_the_importer_admin_of_the_project_it_creates(client, users):
    from annotate.models import Membership

    client.force_login(users["staff"])
    client.post(
        reverse("admin:annotate_project_import"),
        {"file": SimpleUploadedFile("fresh.json", json.dumps(VOTES).encode())},
        follow=True,
    )
    job = ImportJob.objects.get()
    assert job.status == ImportJob.Status.DONE, job.errors
    membership = Membership.objects.get(project=job.project)
    assert (membership.user, membership.role) == (users["staff"], Membership.Role.ADMIN)

    # Importing more into the existing project changes nobody's role.
    client.post(
        reverse("admin:annotate_project_import"),
        {
            "file": SimpleUploadedFile("fresh.json", json.dumps(VOTES).encode()),
            "project": job.project.pk,
        },
        follow=True,
    )
    assert Membership.objects.filter(project=job.project).count() == 1


def _progress_writes(ctx) -> int:
    return sum(
        1
        for q in ctx.captured_queries
        if q["sql"].startswith('UPDATE "annotate_importjob" SET "processed_rows"')
    )


@pytest.mark.parametrize("every, writes", [(0.0, 3), (3600.0, 1)])
def test_it_records_parsing_progress_at_most_so_often(tmp_path, monkeypatch, every, writes):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import annotate.services as services

    monkeypatch.setattr(services, "PROGRESS_WRITE_SECONDS", every)
    path = tmp_path / "votes.jsonl"
    votes = [{"model_a": f"m{i}", "model_b": "base", "winner": "model_a"} for i in range(2500)]
    path.write_text("\n".join(json.dumps(v) for v in votes))

    with CaptureQueriesContext(connection) as ctx:
        job = import_job_create(path=path, project_name="progress", run_async=False)

    # The parser reports rows 1,000, 2,000 and 2,500: all three, or only the last one.
    assert _progress_writes(ctx) == writes
    job.refresh_from_db()
    assert (job.status, job.processed_rows, job.total_rows) == ("done", 2500, 2500)
