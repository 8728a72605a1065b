"""A stale spooled upload (a request whose client went away) and a stale upload folder are pruned
when a worker starts, not only when the next upload comes; a file being written now stays."""

import os
import time
from pathlib import Path

import pytest
from celery import signals

from annotate.project_setup import STALE_UPLOAD_SECONDS
from workers.apps import prune_uploads_on_worker_start

pytestmark = pytest.mark.django_db


def test_the_prune_is_connected_to_worker_ready():
    assert prune_uploads_on_worker_start in signals.worker_ready._live_receivers(None)


def test_worker_start_prunes_stale_spool_files_and_uploads_only(settings, tmp_path):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    settings.DATA_DIR = tmp_path / "data"
    spool = Path(settings.FILE_UPLOAD_TEMP_DIR)
    spool.mkdir()
    stale, fresh = spool / "abc.upload.jsonl", spool / "def.upload.jsonl"
    stale.write_text("{}\n")
    fresh.write_text("{}\n")  # a request still receiving it
    old_upload, new_upload = (settings.DATA_DIR / "uploads" / n for n in ("old", "new"))
    for folder in (old_upload, new_upload):
        folder.mkdir(parents=True)
        (folder / "tasks.jsonl").write_text("{}\n")
    old = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(old_upload, (old, old))

    prune_uploads_on_worker_start(sender=None)

    assert not stale.exists() and fresh.exists()
    assert not old_upload.exists() and new_upload.exists()


def test_a_failing_prune_does_not_stop_the_worker(monkeypatch):
    def broken(**kwargs):
        raise RuntimeError("database not reachable")

    monkeypatch.setattr("annotate.project_setup.uploads_prune", broken)
    prune_uploads_on_worker_start(sender=None)  # logs, does not raise
