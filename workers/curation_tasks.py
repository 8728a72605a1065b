"""Celery tasks of the curation app (flags, exports). Thin: claim the job, call a service.

All run on the ``default`` queue. Every task is idempotent (a recompute converges to the
same flags; an export build claims its row and a done export is never rebuilt), so
``acks_late`` redelivers work a dead worker left unfinished, and the job claim turns a
duplicate delivery into a no-op.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from datetime import timedelta

from celery import signals

from config.celery import app
from workers import jobs
from workers.jobs import run_job

logger = logging.getLogger("quorum.jobs")

# What an export build imports where it uses it (pyarrow's Parquet and compute modules,
# networkx, krippendorff, scipy.stats): CPU that the first export of each worker process would
# pay inside its job. A worker imports them once it starts, in a background thread (it takes
# messages meanwhile; a task that needs a module first waits on the import lock, no longer than
# the import itself). ``datasets`` (with pandas) is not among them: an export writes its Hugging
# Face folders with pyarrow (`curation.exporting.write_hf_folder`).
WARM_MODULES = (
    "curation.services",
    "curation.task_flags",
    "curation.exporting",
    "curation.overruled",
    "curation.agreement",
    "curation.graph",
    "networkx",
    "krippendorff",
    "scipy.stats",
    "pyarrow",
    "pyarrow.compute",
    "pyarrow.parquet",
)


def warm_imports() -> None:
    for name in WARM_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # a missing optional library: the task that needs it says so
            logger.warning("warm-up: could not import %s", name, exc_info=True)


def warm_imports_soon() -> threading.Thread:
    thread = threading.Thread(target=warm_imports, name="quorum-warm-imports", daemon=True)
    thread.start()
    return thread


_pool = {"forks": False}


@signals.worker_init.connect
def _note_pool(sender=None, **kwargs) -> None:
    pool_cls = getattr(sender, "pool_cls", None)
    _pool["forks"] = "prefork" in getattr(pool_cls, "__module__", str(pool_cls))


def _consumes_default() -> bool:
    consumed = app.amqp.queues.consume_from  # -Q's queues; None: every queue
    return not consumed or "default" in consumed


@signals.worker_process_init.connect
def _warm_pool_process(**kwargs) -> None:
    """A prefork pool's child: it runs the tasks."""
    if _consumes_default():
        warm_imports_soon()


@signals.worker_ready.connect
def _warm_worker(**kwargs) -> None:
    """A solo or threads pool runs tasks in the worker's own process. A prefork parent does
    not, and forks more children later: no import thread there."""
    if not _pool["forks"] and _consumes_default():
        warm_imports_soon()


@app.task(name="quorum.flags_recompute", acks_late=True, max_retries=0)
def flags_recompute_task(*, project_id: int, job_id: int | None = None) -> dict:
    """Full pass: annotator quality and every flag of a project."""
    from curation.services import flags_recompute

    return run_job(job_id, lambda run: flags_recompute(project_id=project_id))


# The flag updates after judgments: no job row, nobody reads their result (ignore_result: no
# STARTED and SUCCESS records written to the result backend for each one).
#
# A hint is not run when it arrives: the worker schedules one pass over every recently marked
# task QUORUM_FLAGS_UPDATE_DELAY_MS later (an ETA message to itself) and drops the hints that
# arrive before that pass is due, which will take their tasks (their marks committed before
# they were published). The sweep's hints, and any while the delay is 0, run at once.
_gathering = {"due": 0.0}
_gathering_lock = threading.Lock()


@app.task(
    name="quorum.flags_update_dirty", bind=True, acks_late=True, max_retries=0, ignore_result=True
)
def flags_update_dirty_task(self, *, task_ids: list[int], at_once: bool = False) -> dict:
    """Gathers the hint into the next pass over recent marks, or runs one pass per project
    over every dirty task of the hinted tasks' projects (``at_once``)."""
    from django.conf import settings

    from curation.task_flags import flags_update_dirty

    delay = settings.QUORUM_FLAGS_UPDATE_DELAY_MS / 1000
    if at_once or delay <= 0 or self.request.is_eager:  # eager: no worker to schedule on
        return flags_update_dirty(task_ids=task_ids)
    now = time.monotonic()
    with _gathering_lock:
        # A quarter of the delay short of the due time: the pass may run on another worker
        # whose clock is a little ahead.
        if now < _gathering["due"] - delay / 4:
            return {"gathered": len(task_ids)}
        _gathering["due"] = now + delay
    try:
        jobs.flags_update_recent_schedule(delay)
    except Exception as exc:  # the broker refused: do not leave the hint to the sweep
        logger.warning("flag update pass not scheduled (%s); running it now", exc)
        with _gathering_lock:
            _gathering["due"] = 0.0
        return flags_update_dirty(task_ids=task_ids)
    return {"scheduled": delay}


@app.task(name="quorum.flags_update_recent", acks_late=True, max_retries=0, ignore_result=True)
def flags_update_recent_task() -> dict:
    """One pass per project over the tasks marked within QUORUM_JOB_REPUBLISH_SECONDS (older
    marks are the sweep's)."""
    from django.conf import settings
    from django.utils import timezone

    from curation.task_flags import flags_update_dirty

    since = timezone.now() - timedelta(seconds=settings.QUORUM_JOB_REPUBLISH_SECONDS)
    return flags_update_dirty(since=since)


@app.task(name="quorum.flags_update_for_task", acks_late=True, max_retries=0, ignore_result=True)
def flags_update_for_task_task(*, task_id: int, job_id: int | None = None) -> dict:
    """A hint for one task (published by an older version): updated at once, as
    ``quorum.flags_update_dirty`` does the sweep's hints."""
    from curation.task_flags import flags_update_dirty

    return run_job(job_id, lambda run: flags_update_dirty(task_ids=[task_id]))


@app.task(name="quorum.export_build", acks_late=True, max_retries=0)
def export_build_task(*, export_id: int, job_id: int | None = None) -> dict:
    """Builds one dataset export version (files + datasheet) and freezes it."""
    from curation.services import export_build

    def run(*, run):
        export = export_build(export_id=export_id, builder=run.token if run else "")
        return {"export": export.pk, "version": export.version, "status": export.status}

    return run_job(job_id, run)
