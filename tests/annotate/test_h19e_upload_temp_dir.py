"""Django spools large uploads under DATA_DIR (``FILE_UPLOAD_TEMP_DIR``, created at start), not in
the system's temporary folder: with a data folder on another file system than /tmp an import
upload is still renamed into DATA_DIR/uploads (``upload_save``), not copied.

The settings are read by a fresh interpreter with ``QUORUM_DATA_DIR`` on another path than the
system's temporary folder (on /dev/shm where that is another file system, as here), which takes
a multipart request through Django's own upload handlers and ``upload_save``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

UPLOAD = r"""
import json, os
import django

django.setup()
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import RequestFactory, override_settings

from annotate.services import upload_save

body = b'{"model_a": "m1", "model_b": "m2", "winner": "tie"}\n' * 400
with override_settings(FILE_UPLOAD_MAX_MEMORY_SIZE=1024):  # spooled, as a large upload is
    request = RequestFactory().post("/imports", {"file": SimpleUploadedFile("votes.jsonl", body)})
    upload = request.FILES["file"]
    spooled_path = upload.temporary_file_path()
    spooled = os.stat(spooled_path)
    target = upload_save(uploaded_file=upload)
    upload.close()
saved = os.stat(target)
print(json.dumps({
    "data_dir": str(settings.DATA_DIR),
    "temp_dir": settings.FILE_UPLOAD_TEMP_DIR,
    "spooled_path": spooled_path,
    "target": str(target),
    "same_file": [spooled.st_dev, spooled.st_ino] == [saved.st_dev, saved.st_ino],
    "same_bytes": open(target, "rb").read() == body,
    "left": os.listdir(settings.FILE_UPLOAD_TEMP_DIR),
}))
"""


@pytest.fixture
def data_dir(tmp_path):
    """A data folder off the system's temporary folder: on /dev/shm where that is another file
    system than it, else under the checkout's var/."""
    system_tmp = Path(tempfile.gettempdir()).resolve()
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shm.stat().st_dev != system_tmp.stat().st_dev:
        parent = shm
    else:
        parent = ROOT / "var"
        parent.mkdir(exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="quorum-h19e-upload-", dir=parent)).resolve()
    yield folder / "data"
    shutil.rmtree(folder, ignore_errors=True)


def test_a_spooled_upload_is_renamed_into_a_data_dir_off_tmp(data_dir):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"QUORUM_DATA_DIR": str(data_dir), "DJANGO_SETTINGS_MODULE": "config.settings"})
    done = subprocess.run(
        [sys.executable, "-c", UPLOAD],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])

    assert Path(got["data_dir"]) == data_dir
    assert Path(got["temp_dir"]) == data_dir / "tmp" / "uploads"  # created at start
    assert Path(got["spooled_path"]).parent == data_dir / "tmp" / "uploads"
    assert Path(got["target"]).parent.parent == data_dir / "uploads"
    assert got["same_file"]  # renamed: the spooled file itself (same device and inode)
    assert got["same_bytes"]
    assert got["left"] == []  # nothing left behind in the spool folder
