"""A deleted project's exports and joint-fit cache are deleted with it, once the deletion
commits (see ``annotate.file_cleanup``)."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

from annotate.file_cleanup import remove_after_commit


def project_files_remove(sender, instance, **kwargs) -> None:  # noqa: ANN001 - signal receiver
    # Imported here: curation.selectors pulls numpy and networkx, which start-up must not.
    from curation.selectors import joint_fit_cache

    remove_after_commit(
        [Path(settings.DATA_DIR) / "exports" / str(instance.pk), joint_fit_cache(instance.pk)]
    )
