"""An uploaded import file is saved once: an upload Django spooled to a temporary file is renamed
into the uploads folder (not written a second time); otherwise, or across file systems, copied."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile, TemporaryUploadedFile

from annotate.models import ImportJob, Judgment
from annotate.services import api_token_create, upload_save

BODY = (
    "\n".join(
        json.dumps({"model_a": "m1", "model_b": "m2", "winner": w, "tstamp": i, "pad": "é" * 300})
        for i, w in enumerate(["model_a", "model_b", "tie"] * 40)
    ).encode()
    + b"\n"
)


@pytest.fixture
def folders(settings, tmp_path):
    settings.DATA_DIR = str(tmp_path / "data")
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    Path(settings.FILE_UPLOAD_TEMP_DIR).mkdir()
    return tmp_path


def _spooled(body: bytes = BODY) -> TemporaryUploadedFile:
    upload = TemporaryUploadedFile("votes.jsonl", "application/jsonl", len(body), None)
    upload.write(body[:-10])
    upload.write(body[-10:])  # left in the write buffer: upload_save flushes it before the rename
    return upload


def test_it_moves_a_spooled_upload_into_place(folders, settings):
    upload = _spooled()
    spooled = Path(upload.temporary_file_path())
    inode = spooled.stat().st_ino
    target = upload_save(uploaded_file=upload)
    assert target.parent.parent == Path(settings.DATA_DIR) / "uploads"
    assert target.name == "votes.jsonl"
    assert target.read_bytes() == BODY
    assert target.stat().st_ino == inode  # the same file, renamed: not written again
    assert not spooled.exists()
    assert stat.S_IMODE(target.stat().st_mode) == settings.FILE_UPLOAD_PERMISSIONS
    upload.close()  # the request's own close finds the file gone and says nothing
    assert target.read_bytes() == BODY


def test_it_copies_a_spooled_upload_across_file_systems(folders, monkeypatch):
    upload = _spooled()
    spooled = Path(upload.temporary_file_path())

    def cross_device(src, dst):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "replace", cross_device)
    target = upload_save(uploaded_file=upload)
    assert target.read_bytes() == BODY
    assert target.stat().st_ino != spooled.stat().st_ino
    upload.close()
    assert not spooled.exists()  # the temporary file goes with the request, as before
    assert target.read_bytes() == BODY


def test_it_writes_an_upload_held_in_memory(folders):
    target = upload_save(uploaded_file=SimpleUploadedFile("votes.jsonl", BODY))
    assert target.read_bytes() == BODY


@pytest.mark.django_db
def test_it_imports_a_spooled_upload_through_the_api(client, folders, settings, django_user_model):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # the body below is spooled to a file
    staff = django_user_model.objects.create_user("staff", password="x", is_staff=True)
    _token, key = api_token_create(user=staff, name="test")
    response = client.post(
        "/api/imports",
        {"file": SimpleUploadedFile("votes.jsonl", BODY), "project_name": "spooled"},
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "done"
    assert Judgment.objects.filter(project__name="spooled").count() == 120
    job = ImportJob.objects.get()
    assert job.original_name == "votes.jsonl"
    assert not Path(job.source_file).exists()  # discarded once imported
    assert list(Path(settings.FILE_UPLOAD_TEMP_DIR).iterdir()) == []  # nothing left behind
