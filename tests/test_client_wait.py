"""The Python client waits for an import or an export with the status endpoint's ``?wait=``
(through Django's own WSGI app here): the end is seen when the server sees it, in one request,
not at the client's next poll; against a server that answers at once it pauses between polls."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest
from django.core.wsgi import get_wsgi_application

from annotate import services
from annotate.models import ImportJob, Membership
from annotate.services import api_token_create
from curation.models import DatasetExport
from tests.factories import make_project

# The client is a package of its own (``pip install ./client``); the tests use the source.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "client"))
from quorum_client import Quorum  # noqa: E402

pytestmark = pytest.mark.django_db(transaction=True)  # a wait inside a transaction answers at once


@pytest.fixture
def client_of(users):
    def make(user: str, **kwargs) -> tuple[Quorum, list[httpx.Request]]:
        _token, key = api_token_create(user=users[user])
        requests: list[httpx.Request] = []
        app = httpx.WSGITransport(app=get_wsgi_application())

        class Recording(httpx.BaseTransport):
            def handle_request(self, request: httpx.Request) -> httpx.Response:
                requests.append(request)
                return app.handle_request(request)

        return Quorum("http://testserver", key, transport=Recording(), **kwargs), requests

    return make


def _finish_after(monkeypatch, polls: int, model, status: str) -> list[float]:
    """Naps (the server's, between its polls of the row, and the client's): at the
    ``polls``-th the row's status is stored as a worker would."""
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == polls:
            model.objects.update(status=status)

    monkeypatch.setattr(services.time, "sleep", nap)  # the time module: client and server
    return naps


def test_it_sees_an_export_finish_in_one_held_request(client_of, users, monkeypatch):
    project = make_project(name="waits")
    Membership.objects.create(project=project, user=users["admin"], role="admin")
    export = DatasetExport.objects.create(
        project=project, version=1, status=DatasetExport.Status.RUNNING
    )
    naps = _finish_after(monkeypatch, 3, DatasetExport, DatasetExport.Status.DONE)
    quorum, requests = client_of("admin", poll_interval=5)
    done = quorum.wait_for_export(export.pk, timeout=60)
    assert done.status == "done"
    assert len(requests) == 1 and float(requests[0].url.params["wait"]) == 5
    assert len(naps) == 3  # the server's polls only; the client never paused


def test_it_sees_an_import_finish_in_one_held_request(client_of, users, monkeypatch):
    job = ImportJob.objects.create(
        source_file="/nowhere.jsonl", status=ImportJob.Status.RUNNING, created_by=users["staff"]
    )
    naps = _finish_after(monkeypatch, 2, ImportJob, ImportJob.Status.DONE)
    quorum, requests = client_of("staff", poll_interval=2)
    done = quorum.wait_for_import(job.pk, timeout=60)
    assert done.status == "done"
    assert len(requests) == 1 and float(requests[0].url.params["wait"]) == 2
    assert len(naps) == 2


def test_against_a_server_without_wait_it_pauses_between_polls(monkeypatch):
    answers = iter(["running", "running", "done"])

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=_export_json(next(answers)))

    naps: list[float] = []
    monkeypatch.setattr("quorum_client.client.time.sleep", naps.append)
    quorum = Quorum("http://old", "key", poll_interval=0.5, transport=httpx.MockTransport(handler))
    assert quorum.wait_for_export(7, timeout=60).status == "done"
    assert len(naps) == 2 and all(0.4 < n <= 0.5 for n in naps)


def _export_json(status: str) -> dict:
    return {
        "id": 7,
        "project_id": 1,
        "version": 1,
        "status": status,
        "progress": 0,
        "phase": "",
        "options": {},
        "counts": {},
        "error": "",
        "created_at": "2026-12-06T00:00:00Z",
        "started_at": None,
        "finished_at": None,
        "datasheet": {},
        "files": [],
    }
