"""Celery tasks. Thin: fetch by id -> call a service. Arguments are ids, never payloads."""

from __future__ import annotations

import os
import socket
import time

from celery import shared_task


@shared_task(name="quorum.ping", acks_late=False)
def ping(*, delay: float = 0.0) -> dict:
    """Liveness check for a worker; ``delay`` lets operators (and tests) hold it busy."""
    if delay:
        time.sleep(delay)
    return {"host": socket.gethostname(), "pid": os.getpid()}


@shared_task(name="quorum.import_file", acks_late=True, max_retries=0)
def import_file_task(*, job_id: int) -> dict:
    """Runs an import job. Idempotent: a job already done (or running) is not run again,
    and a re-run of the same file creates nothing new."""
    from annotate.services import import_job_run

    job = import_job_run(job_id=job_id)
    return {"job": job.pk, "status": job.status, "counts": job.counts}


# Task modules by area; importing them here registers their tasks when the worker
# autodiscovers ``workers.tasks``.
from workers import curation_tasks, scoring_tasks  # noqa: E402, F401
