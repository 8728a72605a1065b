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

from celery import signals

from config.celery import app
from workers.jobs import run_job

logger = logging.getLogger("quorum.jobs")

# What an export build imports where it uses it (``datasets`` with pandas, pyarrow's Parquet
# and compute modules, networkx, krippendorff, scipy.stats): about 0.9 s of CPU that the first
# export of each worker process paid inside its job. A worker imports them once it starts,
# in a background thread (it takes messages meanwhile; a task that needs a module first waits
# on the import lock, no longer than the import itself).
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
    "datasets",
    "datasets.arrow_writer",
    "datasets.table",
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
@app.task(name="quorum.flags_update_dirty", acks_late=True, max_retries=0, ignore_result=True)
def flags_update_dirty_task(*, task_ids: list[int]) -> dict:
    """One pass per project over every dirty task of the hinted tasks' projects."""
    from curation.task_flags import flags_update_dirty

    return flags_update_dirty(task_ids=task_ids)


@app.task(name="quorum.flags_update_for_task", acks_late=True, max_retries=0, ignore_result=True)
def flags_update_for_task_task(*, task_id: int, job_id: int | None = None) -> dict:
    """A hint for one task (published by an older version): answered as
    ``quorum.flags_update_dirty`` answers it."""
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
