"""A stale spooled upload (a request whose client went away) and a stale upload folder are pruned
by the workers' job sweep, not only when the next upload comes; a file being written now stays,
and the sweep prunes at most every ``UPLOADS_PRUNE_SECONDS``."""

import os
import time
from pathlib import Path

import pytest

from annotate.project_setup import STALE_UPLOAD_SECONDS
from workers import jobs

pytestmark = pytest.mark.django_db


def _aged(path: Path) -> None:
    old = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(path, (old, old))


def test_the_sweep_prunes_stale_spool_files_and_uploads_only(settings, tmp_path):
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
    _aged(stale)
    _aged(old_upload)

    jobs._Sweeper(10).uploads_prune()

    assert not stale.exists() and fresh.exists()
    assert not old_upload.exists() and new_upload.exists()


def test_the_sweep_prunes_at_most_every_period(settings, tmp_path, monkeypatch):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    settings.DATA_DIR = tmp_path / "data"
    spool = Path(settings.FILE_UPLOAD_TEMP_DIR)
    spool.mkdir()
    sweeper = jobs._Sweeper(10)
    sweeper.uploads_prune()  # the first sweep prunes
    later = spool / "later.upload.jsonl"
    later.write_text("{}\n")
    _aged(later)
    sweeper.uploads_prune()  # within the period: not again
    assert later.exists()
    clock = time.monotonic()
    monkeypatch.setattr(jobs.time, "monotonic", lambda: clock + jobs.UPLOADS_PRUNE_SECONDS + 1)
    sweeper.uploads_prune()
    assert not later.exists()


def test_a_sweep_pass_prunes_and_a_failing_prune_is_logged(settings, tmp_path, monkeypatch, caplog):
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    calls = []

    def broken(**kwargs):
        calls.append(1)
        raise RuntimeError("disk gone")

    monkeypatch.setattr("annotate.project_setup.uploads_prune", broken)
    monkeypatch.setattr(jobs, "close_old_connections", lambda: None)
    monkeypatch.setattr(jobs.connection, "close", lambda: None)
    sweeper = jobs._Sweeper(0.01)
    waits = iter([False, True])  # one pass, then stop
    monkeypatch.setattr(sweeper.stop, "wait", lambda timeout: next(waits))
    sweeper._run()  # the pass logs the failure and does not raise
    assert calls == [1]
    assert "job sweep failed" in caplog.text
