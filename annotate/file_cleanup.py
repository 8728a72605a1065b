"""Files a deleted project leaves behind are deleted with it, once the deletion commits.

A project's media live under ``MEDIA_ROOT/p<id>/`` (``services._store_media``); nothing else
refers to them once its rows are gone. Curation's files (exports, the joint-fit cache) are
removed by ``curation.file_cleanup`` the same way. Trained reward models stay: other projects
may use them.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from django.core.files.storage import default_storage
from django.db import transaction

logger = logging.getLogger(__name__)


def remove_after_commit(paths: list[Path]) -> None:
    """Deletes these files or folders when the current transaction commits (never if it rolls
    back); a path that cannot be deleted is logged, not raised."""

    def remove() -> None:
        for path in paths:
            try:
                if path.is_dir():
                    shutil.rmtree(path)
                elif path.exists():
                    path.unlink()
            except OSError as exc:
                logger.warning("could not delete %s of a deleted project: %s", path, exc)

    transaction.on_commit(remove)


def project_media_remove(sender, instance, **kwargs) -> None:  # noqa: ANN001 - signal receiver
    """``post_delete`` of a project: its media folder goes when the deletion commits."""
    try:
        folder = Path(default_storage.path(f"p{instance.pk}"))
    except NotImplementedError:  # a remote storage: it keeps its own life cycle
        return
    remove_after_commit([folder])
