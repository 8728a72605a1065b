"""``import_job_wait``'s poll (a plain cursor query): it reads the status another connection
committed, stops at the first poll that finds the job finished, and treats a deleted row as the
end of the wait."""

from __future__ import annotations

import pytest

from annotate import services
from annotate.models import ImportJob

pytestmark = pytest.mark.django_db(transaction=True)  # the wait returns at once in one


@pytest.fixture
def job():
    return ImportJob.objects.create(source_file="/nowhere.jsonl", status=ImportJob.Status.RUNNING)


@pytest.mark.parametrize("status", [s for s, _ in ImportJob.Status.choices])
def test_it_reads_each_stored_status(job, status):
    ImportJob.objects.filter(pk=job.pk).update(status=status)
    assert services._row_status(ImportJob, job.pk) == status


def test_it_reads_none_for_a_missing_job(job):
    ImportJob.objects.filter(pk=job.pk).delete()
    assert services._row_status(ImportJob, job.pk) is None


def _finish_after(monkeypatch, polls: int, status: str) -> list[float]:
    """``time.sleep`` in the wait loop: records each nap and, at the ``polls``-th, stores
    ``status`` for every job (as a worker would), so the next poll is the one to see it."""
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        if len(naps) == polls:
            ImportJob.objects.update(status=status)

    monkeypatch.setattr(services.time, "sleep", nap)
    return naps


@pytest.mark.parametrize("status", [ImportJob.Status.DONE, ImportJob.Status.FAILED])
def test_it_stops_at_the_first_poll_that_finds_the_job_finished(job, monkeypatch, status):
    naps = _finish_after(monkeypatch, 3, status)
    waited = services.import_job_wait(job=job, seconds=10)
    assert len(naps) == 3
    assert waited.status == status


def test_it_keeps_polling_a_running_job(job, monkeypatch):
    naps = _finish_after(monkeypatch, 40, ImportJob.Status.DONE)
    services.import_job_wait(job=job, seconds=10)
    assert len(naps) == 40


def test_a_deleted_job_ends_the_wait(job, monkeypatch):
    naps: list[float] = []

    def nap(seconds: float) -> None:
        naps.append(seconds)
        ImportJob.objects.filter(pk=job.pk).delete()

    monkeypatch.setattr(services.time, "sleep", nap)
    waited = services.import_job_wait(job=job, seconds=10)
    assert len(naps) == 1
    assert waited.status == ImportJob.Status.RUNNING  # as it was: nothing left to read
