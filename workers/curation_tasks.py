"""Celery tasks of the curation app (flags, exports). Thin: claim the job, call a service.

All run on the ``default`` queue. Every task is idempotent (a recompute converges to the
same flags; an export build claims its row and a done export is never rebuilt), so
``acks_late`` redelivers work a dead worker left unfinished, and the job claim turns a
duplicate delivery into a no-op.
"""

from __future__ import annotations

from config.celery import app
from workers.jobs import run_job


@app.task(name="quorum.flags_recompute", acks_late=True, max_retries=0)
def flags_recompute_task(*, project_id: int, job_id: int | None = None) -> dict:
    """Full pass: annotator quality and every flag of a project."""
    from curation.services import flags_recompute

    return run_job(job_id, lambda run: flags_recompute(project_id=project_id))


@app.task(name="quorum.flags_update_for_task", acks_late=True, max_retries=0)
def flags_update_for_task_task(*, task_id: int, job_id: int | None = None) -> dict:
    """Incremental pass for the prompt of one task (after a judgment); clears its dirty mark."""
    from curation.services import flags_update_for_task

    return run_job(job_id, lambda run: flags_update_for_task(task_id=task_id))


@app.task(name="quorum.export_build", acks_late=True, max_retries=0)
def export_build_task(*, export_id: int, job_id: int | None = None) -> dict:
    """Builds one dataset export version (files + datasheet) and freezes it."""
    from curation.services import export_build

    def run(*, run):
        export = export_build(export_id=export_id, builder=run.token if run else "")
        return {"export": export.pk, "version": export.version, "status": export.status}

    return run_job(job_id, run)
