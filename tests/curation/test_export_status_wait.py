"""``GET /api/exports/{id}?wait=<s>``: the status answers once the export is done, failed or
cancelled (or after ``wait`` seconds, at most 10), polling the row's status on the server, so
a client needs no polling loop of its own (and its polls take no CPU from the build)."""

from __future__ import annotations

import pytest

from annotate import services
from annotate.models import Membership
from annotate.services import api_token_create
from curation.models import DatasetExport
from tests.factories import make_project

pytestmark = pytest.mark.django_db(transaction=True)  # a wait inside a transaction answers at once


@pytest.fixture
def export(users) -> DatasetExport:
    project = make_project(name="waits")
    Membership.objects.create(project=project, user=users["admin"], role="admin")
    return DatasetExport.objects.create(
        project=project, version=1, status=DatasetExport.Status.RUNNING
    )


@pytest.fixture
def auth(users) -> dict:
    _token, key = api_token_create(user=users["admin"])
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


def _finish_after(monkeypatch, polls: int, status: str) -> list[float]:
    """The wait loop's naps: at the ``polls``-th the export's status is stored as a worker
    would, so the next poll is the one to see it."""
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == polls:
            DatasetExport.objects.update(status=status)

    monkeypatch.setattr(services.time, "sleep", nap)
    return naps


@pytest.mark.parametrize(
    "status",
    [DatasetExport.Status.DONE, DatasetExport.Status.FAILED, DatasetExport.Status.CANCELLED],
)
def test_it_answers_at_the_first_poll_that_finds_the_export_finished(
    client, export, auth, monkeypatch, status
):
    naps = _finish_after(monkeypatch, 3, status)
    response = client.get(f"/api/exports/{export.pk}", {"wait": 10}, **auth)
    assert response.status_code == 200
    assert response.json()["status"] == status
    assert len(naps) == 3


def test_without_wait_it_answers_at_once(client, export, auth, monkeypatch):
    naps = _finish_after(monkeypatch, 1, DatasetExport.Status.DONE)
    response = client.get(f"/api/exports/{export.pk}", **auth)
    assert response.json()["status"] == DatasetExport.Status.RUNNING
    assert naps == []


def test_it_keeps_waiting_while_the_export_runs(client, export, auth, monkeypatch):
    naps = _finish_after(monkeypatch, 30, DatasetExport.Status.DONE)
    response = client.get(f"/api/exports/{export.pk}", {"wait": 10}, **auth)
    assert response.json()["status"] == DatasetExport.Status.DONE
    assert len(naps) == 30


def test_a_wait_is_refused_like_the_status_to_non_admins(client, export, users, monkeypatch):
    naps = _finish_after(monkeypatch, 1, DatasetExport.Status.DONE)
    _token, key = api_token_create(user=users["outsider"])
    response = client.get(
        f"/api/exports/{export.pk}", {"wait": 10}, HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code in (403, 404)
    assert naps == []
