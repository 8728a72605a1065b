"""Celery tasks. Thin: claim the job, call a service, record the outcome.

Every task runs a :class:`workers.models.Job` row whose id comes in ``job_id`` (see
workers/jobs.py); arguments are ids, never payloads. Services start these tasks through
``workers.jobs`` by name and never import this module.
"""

from __future__ import annotations

import os
import socket
import time

from celery import signals

from config.celery import app
from workers.jobs import run_job


@app.task(name="quorum.ping", acks_late=False)
def ping(*, delay: float = 0.0) -> dict:
    """Liveness check for a worker; ``delay`` lets operators (and tests) hold it busy."""
    if delay:
        time.sleep(delay)
    return {"host": socket.gethostname(), "pid": os.getpid()}


@app.task(name="quorum.import_file", acks_late=True, max_retries=0)
def import_file_task(*, import_job_id: int, job_id: int | None = None) -> dict:
    """Runs an import job; the import itself is one transaction, so a re-run after a lost
    worker starts from a clean database."""
    from annotate.services import import_job_run

    def run(*, run):
        job = import_job_run(job_id=import_job_id, takeover=bool(run and run.is_retry))
        return {"import": job.pk, "status": job.status, "counts": job.counts}

    return run_job(job_id, run)


@signals.worker_ready.connect
def _start_job_sweep(sender=None, **kwargs) -> None:
    """Each worker sweeps jobs: publishes what failed to publish, retries dead runners' jobs."""
    from workers.jobs import sweeper_start

    sweeper_start()


# Task modules by area; importing them here registers their tasks when the worker
# autodiscovers ``workers.tasks``.
from workers import curation_tasks, scoring_tasks  # noqa: E402, F401
