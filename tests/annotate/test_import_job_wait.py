"""``import_job_wait`` (the import status endpoint's ``?wait=``): the job once another process
or thread finished it, the job as it is when told not to wait, and never past its cap."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from annotate import services
from annotate.models import ImportJob
from tests.factories import write_pair_rows

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def job(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_pair_rows(path, 3)
    return ImportJob.objects.create(project_name="waited", source_file=str(path), total_rows=3)


def _run_later(job_id: int, delay: float) -> threading.Thread:
    def run():
        time.sleep(delay)
        try:
            services.import_job_run(job_id=job_id)  # its own connection, as a worker's
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_it_returns_the_job_once_another_connection_finished_it(job):
    runner = _run_later(job.pk, 0.3)
    try:
        waited = services.import_job_wait(job=job, seconds=30)
    finally:
        runner.join()

    assert waited.status == ImportJob.Status.DONE
    assert (waited.counts["prompts"], waited.counts["tasks"]) == (3, 3)
    assert waited.finished_at is not None


def test_without_a_wait_it_returns_the_job_as_it_is(job):
    runner = _run_later(job.pk, 0.3)
    try:
        for seconds in (None, 0, -1, "soon", float("nan")):
            assert services.import_job_wait(job=job, seconds=seconds).status == "pending"
    finally:
        runner.join()


def test_it_waits_no_longer_than_its_cap(job, monkeypatch):
    monkeypatch.setattr(services, "IMPORT_WAIT_MAX_SECONDS", 0.2)

    waited = services.import_job_wait(job=job, seconds=3600)  # nobody runs it

    assert waited.status == ImportJob.Status.PENDING


def test_the_status_endpoint_waits_for_the_job_when_asked(client, users, job):
    from annotate.services import api_token_create

    _token, key = api_token_create(user=users["staff"], name="test")
    auth = {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    at_once = client.get(f"/api/imports/{job.pk}", **auth).json()
    runner = _run_later(job.pk, 0.3)
    try:
        waited = client.get(f"/api/imports/{job.pk}?wait=30", **auth).json()
    finally:
        runner.join()

    assert at_once["status"] == ImportJob.Status.PENDING
    assert waited["status"] == ImportJob.Status.DONE
    assert waited["counts"]["prompts"] == 3
