"""Celery tasks of the curation app (flags, exports). Thin: fetch by id -> call a service.

All run on the ``default`` queue. Every task is idempotent (a recompute converges to the
same flags; an export build claims its row and a done export is never rebuilt), so
``acks_late`` redelivers work a dead worker left unfinished.
"""

from __future__ import annotations

from celery import shared_task


@shared_task(name="quorum.flags_recompute", acks_late=True, max_retries=0)
def flags_recompute_task(*, project_id: int) -> dict:
    """Full pass: annotator quality and every flag of a project."""
    from curation.services import flags_recompute

    return flags_recompute(project_id=project_id)


@shared_task(name="quorum.flags_update_for_task", acks_late=True, max_retries=0)
def flags_update_for_task_task(*, task_id: int) -> dict:
    """Incremental pass for the prompt of one task (after a judgment)."""
    from curation.services import flags_update_for_task

    return flags_update_for_task(task_id=task_id)


@shared_task(name="quorum.export_build", acks_late=True, max_retries=0)
def export_build_task(*, export_id: int) -> dict:
    """Builds one dataset export version (files + datasheet) and freezes it."""
    from curation.services import export_build

    export = export_build(export_id=export_id)
    return {"export": export.pk, "version": export.version, "status": export.status}
