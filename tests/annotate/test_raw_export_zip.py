"""The raw export's zip (`iter_export_zip`): compressed in a thread of its own while the rows
are read, the same bytes whatever the batch sizes, and no thread left behind by an error or by
a client that stops reading."""

from __future__ import annotations

import io
import json
import threading
import zipfile
from pathlib import Path

import pytest

from annotate import exporting
from annotate.models import Project, Prompt
from annotate.services import import_file
from tests.annotate.test_import import _quorum_rows
from tests.media_fixtures import write_quorum_media

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(tmp_path) -> Project:
    """Two prompts with image and video media, image and video candidates, a tie, a pair."""
    folder = tmp_path / "in"
    write_quorum_media(folder)
    path = folder / "demo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in _quorum_rows()) + "\n")
    return import_file(path=path, project_name="demo").project


def _zip_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "raw-export-zip"]


def _files(body: bytes) -> dict[str, bytes]:
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert archive.testzip() is None
    return {name: archive.read(name) for name in archive.namelist()}


@pytest.mark.parametrize("fmt", ["quorum", "seed"])
def test_it_writes_the_same_files_whatever_the_batch_sizes(project, monkeypatch, fmt):
    whole = _files(b"".join(exporting.iter_export_zip(project, fmt)))
    monkeypatch.setattr(exporting, "PROMPT_BATCH", 1)
    monkeypatch.setattr(exporting, "BATCH", 1)
    assert _files(b"".join(exporting.iter_export_zip(project, fmt))) == whole
    data = whole["data.jsonl"].decode()
    assert data == "".join(c.decode() for c in exporting.iter_export(project, fmt))
    if fmt == "quorum":  # the settings row and both prompts, each with its judgments
        rows = [json.loads(line) for line in data.splitlines()]
        assert len(rows) == 3 and all(r["judgments"] for r in rows[1:])
        assert len([n for n in whole if n.startswith("media/")]) == 4


def test_an_error_in_the_zip_thread_reaches_the_reader(project):
    prompt = Prompt.objects.filter(project=project).exclude(image="").first()
    Path(prompt.image.path).unlink()  # the media file the zip will try to add
    with pytest.raises(FileNotFoundError):
        b"".join(exporting.iter_export_zip(project))
    assert not _zip_threads()


def test_a_reader_that_stops_leaves_no_thread(project, monkeypatch):
    def rows(*args, **kwargs):  # far more than the reader takes: the writer is still busy
        for i in range(1000):
            yield (b"%d " % i) * 20_000

    monkeypatch.setattr(exporting, "iter_export", rows)
    stream = exporting.iter_export_zip(project)
    assert next(stream)
    assert _zip_threads()
    stream.close()
    assert not _zip_threads()
