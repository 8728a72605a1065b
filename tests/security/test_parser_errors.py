"""Hostile input gives a line-and-field error (a 4xx on the web), never a traceback or a 500."""

from __future__ import annotations

import io
import json
import zipfile

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate import queue
from annotate.importing import ImportRejected
from annotate.models import ImportJob, Project
from annotate.services import api_token_create, import_file
from tests.annotate.conftest import new_key
from tests.factories import add_member, make_project, make_user
from tests.media_fixtures import png_bytes, write

pytestmark = pytest.mark.django_db

ROW = {
    "id": "q1",
    "prompt": "Which?",
    "candidates": [
        {"id": "a", "model": "m1", "text": "x"},
        {"id": "b", "model": "m2", "text": "y"},
    ],
}


def _problems(path) -> list[str]:
    with pytest.raises(ImportRejected) as info:
        import_file(path=path, project_name="hostile")
    assert not Project.objects.filter(name="hostile").exists()
    return [str(p) for p in info.value.problems]


# --- the importer -----------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [100, 100_000])
def test_it_rejects_deeply_nested_json_naming_the_line(depth, tmp_path):
    nested = "[" * depth + "]" * depth
    path = tmp_path / "deep.jsonl"
    path.write_text(json.dumps(ROW) + "\n" + '{"id": "q2", "metadata": ' + nested + "}\n")
    (problem,) = _problems(path)
    assert problem.startswith("line 2") and "nested deeper than" in problem


def test_it_rejects_a_zip_entry_that_does_not_inflate_to_its_header(tmp_path):
    path = tmp_path / "corrupt.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.jsonl", json.dumps(ROW) * 50 + "\n")
    raw = bytearray(path.read_bytes())
    start = raw.index(b"data.jsonl") + len(b"data.jsonl")  # the local entry's compressed bytes
    raw[start + 10 : start + 30] = b"\xff" * 20
    path.write_bytes(bytes(raw))
    (problem,) = _problems(path)
    assert "data.jsonl" in problem and "corrupt zip" in problem


def test_it_rejects_a_corrupt_zip_media_entry_naming_the_field(tmp_path):
    path = tmp_path / "media.zip"
    row = dict(ROW, candidates=[{"id": "a", "model": "m1", "image": "a.png"}, ROW["candidates"][1]])
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.jsonl", json.dumps(row) + "\n")
        zf.writestr("a.png", png_bytes(size=64) * 4)
    raw = bytearray(path.read_bytes())
    start = raw.index(b"a.png") + len(b"a.png")
    raw[start + 10 : start + 40] = b"\x00" * 30
    path.write_bytes(bytes(raw))
    (problem,) = _problems(path)
    assert problem.startswith("line 1, field 'candidates[0].image'")


def test_it_rejects_a_jsonl_file_with_a_zip_appended(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("data.jsonl", json.dumps(dict(ROW, id="from-the-zip")) + "\n")
    path = tmp_path / "polyglot.jsonl"
    path.write_bytes(json.dumps(ROW).encode() + b"\n" + buffer.getvalue())
    (problem,) = _problems(path)
    assert "polyglot.jsonl" in problem and "zip" in problem


def test_it_rejects_a_zip_named_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "rows.zip"
    path.write_text(json.dumps(ROW) + "\n")
    (problem,) = _problems(path)
    assert "rows.zip: not a zip file" in problem


def test_it_names_no_server_path_for_a_missing_media_file(tmp_path):
    row = dict(
        ROW, candidates=[{"id": "a", "model": "m1", "image": "gone.png"}, ROW["candidates"][1]]
    )
    write(tmp_path / "in" / "rows.jsonl", (json.dumps(row) + "\n").encode())
    (problem,) = _problems(tmp_path / "in" / "rows.jsonl")
    assert "field 'candidates[0].image'" in problem
    assert str(tmp_path) not in problem and "/" not in problem.split("missing file", 1)[1]


# --- the web doors ----------------------------------------------------------------------------


@pytest.fixture
def staff_key():
    return api_token_create(user=make_user("boss", staff=True))[1]


def test_the_api_answers_422_with_the_problems_for_a_rejected_import(client, staff_key):
    nested = "[" * 100_000 + "]" * 100_000
    response = client.post(
        "/api/imports",
        {"file": SimpleUploadedFile("deep.jsonl", ('{"id": ' + nested + "}\n").encode())},
        HTTP_AUTHORIZATION=f"Bearer {staff_key}",
    )
    assert response.status_code == 422
    body = response.json()
    assert body["status"] == "failed"
    assert body["errors"] and body["errors"][0].startswith("line 1")
    assert all("/" not in e.split(":", 1)[0] for e in body["errors"])


def test_the_api_names_no_server_path_in_an_import_error(client, staff_key, settings):
    response = client.post(
        "/api/imports",
        {"file": SimpleUploadedFile("rows.zip", b"PK\x03\x04 but nothing else")},
        HTTP_AUTHORIZATION=f"Bearer {staff_key}",
    )
    assert response.status_code == 422
    text = json.dumps(response.json())
    assert str(settings.DATA_DIR) not in text and "uploads" not in text


WRONG_SHAPES = [
    "[" * 100_000 + "]" * 100_000,
    '{"ranking": ' + "[" * 100_000 + "]" * 100_000 + "}",
    {"ranking": "12"},
    {"ranking": [["a"]]},
    {"ranking": [[{"id": 1}]]},
    {"ranking": [[1.5]]},
    {"ranking": 7},
    {"rationale": ["x"]},
    {"rationale": {"x": 1}},
    {"ratings": "good"},
    {"ratings": [1, 2]},
    {"ratings": {"accuracy": {"deep": 1}}},
    {"duration_ms": "slow"},
    {"duration_ms": [1]},
    {"idempotency_key": {"k": 1}},
    {"idempotency_key": 12},
    {"choice": ["a"]},
]


def test_a_submit_body_of_the_wrong_shape_is_a_400(client):
    project = make_project(name="shapes", n_prompts=1)
    project.rubric_dimensions = ["accuracy"]
    project.save(update_fields=["rubric_dimensions"])
    ann = make_user("ann-shapes")
    add_member(project, ann, "annotator")
    assignment = queue.assignment_next(project=project, annotator=ann)
    client.force_login(ann)
    url = reverse("annotate_submit", args=[project.pk, assignment.pk])
    for body in WRONG_SHAPES:
        if isinstance(body, dict):
            body = json.dumps({"idempotency_key": new_key(), **body})
        response = client.post(url, data=body, content_type="application/json")
        assert response.status_code == 400, (body[:80], response.content)
        assert response.json()["field"]


def test_an_import_failure_inside_the_worker_names_no_server_path(tmp_path, monkeypatch):
    from annotate import services

    def explode(**kwargs):
        raise OSError(2, "No such file or directory", str(tmp_path / "secret" / "place"))

    monkeypatch.setattr(services, "import_file", explode)
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(ROW) + "\n")
    job = services.import_job_create(path=path, project_name="x")
    assert job.status == ImportJob.Status.FAILED
    assert str(tmp_path) not in " ".join(job.errors)


def test_a_revise_or_skip_body_of_the_wrong_shape_is_a_400(client):
    project = make_project(name="shapes-revise", n_prompts=2)
    project.rubric_dimensions = ["accuracy"]
    project.save(update_fields=["rubric_dimensions"])
    ann = make_user("ann-revise")
    add_member(project, ann, "annotator")
    assignment = queue.assignment_next(project=project, annotator=ann)
    client.force_login(ann)
    submit = reverse("annotate_submit", args=[project.pk, assignment.pk])
    body = {"idempotency_key": new_key(), "ranking": [[c] for c in assignment.presented_order]}
    saved = client.post(submit, data=json.dumps(body), content_type="application/json")
    assert saved.status_code == 201, saved.content
    revise = reverse("annotate_revise", args=[project.pk, saved.json()["judgment_id"]])
    for body in [*WRONG_SHAPES, {"edit_key": ["k"]}, {"edit_key": {"k": 1}}]:
        if isinstance(body, dict):
            body = json.dumps({"edit_key": new_key(), **body})
        response = client.post(revise, data=body, content_type="application/json")
        assert response.status_code == 400, (body[:80], response.content)
        assert response.json()["field"]
    following = queue.assignment_next(project=project, annotator=ann)
    skip = reverse("annotate_skip", args=[project.pk, following.pk])
    nested = "[" * 100_000 + "]" * 100_000
    for body in [nested, '{"reason": ' + nested + "}", {"reason": ["x"]}, {"reason": {"x": 1}}]:
        body = body if isinstance(body, str) else json.dumps(body)
        response = client.post(skip, data=body, content_type="application/json")
        assert response.status_code == 400, (body[:80], response.content)
