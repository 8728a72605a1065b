"""Deleting a project deletes its media, exports and fit cache once the deletion commits; a
rolled-back deletion and other projects' files keep theirs."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.conf import settings
from django.db import transaction

from curation.selectors import joint_fit_cache
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def _files(project_id: int) -> list[Path]:
    media = Path(settings.MEDIA_ROOT) / f"p{project_id}" / "ab" / "abcdef.png"
    export = Path(settings.DATA_DIR) / "exports" / str(project_id) / "v1" / "datasheet.json"
    fit = joint_fit_cache(project_id)
    for path in (media, export, fit):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    return [media, export, fit]


def test_deleting_a_project_deletes_its_files_only(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.DATA_DIR = tmp_path / "data"
    settings.MEDIA_ROOT = tmp_path / "media"
    doomed, kept = make_project(n_prompts=1), make_project(n_prompts=1)
    doomed_pk = doomed.pk
    doomed_files, kept_files = _files(doomed_pk), _files(kept.pk)
    with django_capture_on_commit_callbacks(execute=True):
        doomed.delete()
    assert [p.exists() for p in doomed_files] == [False, False, False]
    # The folders themselves, not only the files in them.
    assert not (Path(settings.MEDIA_ROOT) / f"p{doomed_pk}").exists()
    assert not (Path(settings.DATA_DIR) / "exports" / str(doomed_pk)).exists()
    assert [p.exists() for p in kept_files] == [True, True, True]


def test_a_rolled_back_deletion_keeps_the_files(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.DATA_DIR = tmp_path / "data"
    settings.MEDIA_ROOT = tmp_path / "media"
    project = make_project(n_prompts=1)
    files = _files(project.pk)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        try:
            with transaction.atomic():
                project.delete()
                raise RuntimeError("changed my mind")
        except RuntimeError:
            pass
    assert callbacks == []
    assert [p.exists() for p in files] == [True, True, True]
