"""REST API: GET /api/projects/{id}/raw-export, the raw export (`export_project`) as a zip.

The zip holds the bytes `export_project` writes (its data file and the media it names) and
imports back through POST /api/imports into the same prompts, candidates and judgments.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate.exporting import export_project
from annotate.models import Candidate, Judgment, Project, Prompt
from annotate.services import api_token_create, import_file
from tests.annotate.test_import import ARENA, _judgments_as_records, _quorum_rows
from tests.factories import add_member
from tests.media_fixtures import write_quorum_media

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tmp_path, users) -> Project:
    """Two prompts with image and video media, image and video candidates, a tie, a pair."""
    folder = tmp_path / "in"
    write_quorum_media(folder)
    rows = _quorum_rows()
    rows[1]["metadata"] = {"topic": "clips"}
    rows[1]["judgments"][0].update(duration_ms=1234, rationale="moves")
    path = folder / "demo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    project = import_file(path=path, project_name="demo").project
    add_member(project, users["reviewer"], role="reviewer")
    add_member(project, users["admin"], role="admin")
    add_member(project, users["annotator"])
    return project


def _auth(user) -> dict:
    _token, key = api_token_create(user=user)
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def _download(client, user, project: Project, query: str = "") -> zipfile.ZipFile:
    response = client.get(f"/api/projects/{project.pk}/raw-export{query}", **_auth(user))
    assert response.status_code == 200, response.content
    assert response.streaming and response["Content-Type"] == "application/zip"
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.mark.parametrize("fmt", ["quorum", "seed", "arena"])
def test_the_zip_holds_the_files_export_project_writes(client, users, project, tmp_path, fmt):
    if fmt == "arena":
        project = import_file(path=ARENA, project_name="arena").project
    archive = _download(client, users["staff"], project, f"?format={fmt}")
    export_project(project, tmp_path / "cli", format=fmt)
    expected = _files(tmp_path / "cli")
    assert {n: archive.read(n) for n in archive.namelist()} == expected
    data = "data.json" if fmt == "arena" else "data.jsonl"
    assert archive.namelist()[0] == data and expected[data]
    if fmt == "quorum":  # media: both prompt media and the image and video candidates
        assert len([n for n in expected if n.startswith("media/")]) == 4


def _prompts(project: Project) -> dict:
    return {
        p.external_id: (
            p.text,
            p.metadata,
            p.image.read() if p.image else None,
            p.video.read() if p.video else None,
        )
        for p in Prompt.objects.filter(project=project)
    }


def _candidates(project: Project) -> dict:
    return {
        c.external_id: (
            c.prompt.external_id,
            c.model_name,
            c.kind,
            c.text,
            c.metadata,
            c.media.read() if c.media else None,
        )
        for c in Candidate.objects.filter(project=project)
    }


def _judgment_sources(project: Project) -> list:
    return sorted(
        Judgment.objects.filter(project=project).values_list(
            "external_annotator", "source_name", "idempotency_key"
        )
    )


def test_the_download_imports_back_into_the_same_rows(client, users, project):
    response = client.get(f"/api/projects/{project.pk}/raw-export", **_auth(users["reviewer"]))
    body = b"".join(response.streaming_content)
    upload = SimpleUploadedFile("back.zip", body, content_type="application/zip")
    created = client.post(
        "/api/imports", {"file": upload, "project_name": "back"}, **_auth(users["staff"])
    )
    assert created.status_code == 201, created.content
    assert created.json()["status"] == "done"
    back = Project.objects.get(name="back")
    assert (back.mode, back.candidates_per_task, back.annotators_per_task) == (
        project.mode,
        project.candidates_per_task,
        project.annotators_per_task,
    )
    assert _prompts(back) == _prompts(project) and len(_prompts(project)) == 2
    assert _candidates(back) == _candidates(project) and len(_candidates(project)) == 5
    records = _judgments_as_records(project)
    assert _judgments_as_records(back) == records and len(records) == 3
    # Same annotators and sources; each key is the original's (namespaced by the new project).
    pairs = list(zip(_judgment_sources(back), _judgment_sources(project), strict=True))
    assert all(b[:2] == o[:2] and b[2].endswith(":" + o[2]) for b, o in pairs) and pairs


@pytest.mark.parametrize("who", ["reviewer", "admin", "staff"])
def test_reviewers_admins_and_staff_download_it(client, users, project, who):
    assert "data.jsonl" in _download(client, users[who], project).namelist()


@pytest.mark.parametrize("who", ["annotator", "outsider"])
def test_annotators_and_outsiders_are_refused(client, users, project, who):
    response = client.get(f"/api/projects/{project.pk}/raw-export", **_auth(users[who]))
    assert response.status_code == 403


def test_it_needs_a_token_and_a_known_format(client, users, project):
    url = f"/api/projects/{project.pk}/raw-export"
    assert client.get(url).status_code == 401
    assert client.get(url + "?format=csv", **_auth(users["staff"])).status_code == 422
    assert client.get("/api/projects/999999/raw-export", **_auth(users["staff"])).status_code == 404


def test_the_schema_documents_it_as_a_zip(client):
    schema = client.get("/api/openapi.json").json()
    get = schema["paths"]["/api/projects/{project_id}/raw-export"]["get"]
    assert "application/zip" in get["responses"]["200"]["content"]
    (param,) = [p for p in get["parameters"] if p["name"] == "format"]
    assert "arena" in json.dumps(param)
