"""The Quorum format's raw export reads the next batch of prompts (its queries, in a thread
with its own database connection) while this batch's rows are built: the same bytes as read in
the caller's thread, errors raised in the caller, no thread or connection left behind.

Outside a transaction only (another connection does not see a transaction's rows): these tests
commit their rows (``transaction=True``)."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection

from annotate import exporting
from annotate.models import Project
from annotate.services import import_file
from tests.annotate.test_import import _quorum_rows
from tests.media_fixtures import write_quorum_media

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def project(tmp_path) -> Project:
    """Seven prompts (two with media, a tie and a pair; five text ones), each judged."""
    folder = tmp_path / "in"
    write_quorum_media(folder)
    rows = _quorum_rows()
    for i in range(5):
        rows.append(
            {
                "id": f"x{i}",
                "prompt": f'prompt {i} \u2028 "quoted" \x01',
                "candidates": [
                    {"id": f"x{i}-a", "model": "m-a", "text": "first"},
                    {"id": f"x{i}-b", "model": "m-b", "text": "second \u00e9"},
                ],
                "judgments": [
                    {"annotator": "ann", "ranking": [[f"x{i}-b"], [f"x{i}-a"]]},
                ],
            }
        )
    path = folder / "demo.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return import_file(path=path, project_name="demo").project


def _readers() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "raw-export-read"]


def _in_caller(items, depth=1):
    yield from items


def test_read_ahead_writes_the_bytes_read_in_the_callers_thread(project, monkeypatch):
    monkeypatch.setattr(exporting, "PROMPT_BATCH", 2)
    started = []
    real = exporting._ReadAhead

    def spy(items, depth):
        started.append(depth)
        return real(items, depth)

    monkeypatch.setattr(exporting, "_ReadAhead", spy)
    ahead = b"".join(exporting.iter_export(project))
    assert started  # read by the thread: no transaction here
    monkeypatch.setattr(exporting, "_prefetched", _in_caller)
    assert ahead == b"".join(exporting.iter_export(project))
    lines = ahead.decode().splitlines()
    assert len(lines) == 8 and all(json.loads(line)["judgments"] for line in lines[1:])
    assert not _readers()


def test_inside_a_transaction_the_callers_thread_reads(project, monkeypatch):
    from django.db import transaction

    monkeypatch.setattr(
        exporting, "_ReadAhead", lambda *a: pytest.fail("a thread read in a transaction")
    )
    with transaction.atomic():
        assert b"".join(exporting.iter_export(project))


def test_an_error_in_the_reader_reaches_the_caller(project, monkeypatch):
    def batches(project):
        yield from ()
        raise RuntimeError("the database went away")

    monkeypatch.setattr(exporting, "_quorum_batches", batches)
    with pytest.raises(RuntimeError, match="went away"):
        b"".join(exporting.iter_export(project))
    assert not _readers()


def test_a_caller_that_stops_leaves_no_reader_and_no_connection(project, monkeypatch):
    monkeypatch.setattr(exporting, "PROMPT_BATCH", 1)
    closed = []
    real_close_all = exporting.connections.close_all

    def close_all():
        closed.append(threading.current_thread().name)
        real_close_all()

    monkeypatch.setattr(exporting.connections, "close_all", close_all)
    read = []
    real_batches = exporting._quorum_batches

    def batches(project):
        for batch in real_batches(project):
            read.append(batch)
            yield batch

    monkeypatch.setattr(exporting, "_quorum_batches", batches)
    stream = exporting.iter_export(project)
    assert next(stream)  # the settings row
    assert next(stream)  # the first prompt: the reader is ahead of it
    assert _readers()
    stream.close()
    assert not _readers()
    assert len(read) < 7  # it stopped reading: seven prompts, a batch each
    assert closed == ["raw-export-read"]  # the reader's own connection, not the caller's
    assert connection.connection is None or connection.is_usable()
