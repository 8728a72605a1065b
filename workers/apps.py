import logging

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def prune_uploads_on_worker_start(sender=None, **kwargs) -> None:
    """Deletes stale uploads when a worker starts: the upload folders of set-ups left half way and
    files left in ``FILE_UPLOAD_TEMP_DIR`` by a request whose client or process went away
    (otherwise pruned only when the next upload comes). Only files past the age threshold go, so
    an upload being written now stays."""
    from annotate.project_setup import uploads_prune

    try:
        deleted = uploads_prune()
    except Exception:  # a database not reachable yet: the next upload prunes anyway
        logger.exception("pruning stale uploads at worker start failed")
        return
    if deleted:
        logger.info("pruned %d stale upload(s) at worker start", deleted)


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        from celery import signals
        from django.conf import settings
        from PIL import Image

        # Every decode in this process (workers/media.py, the importer's checks) refuses images
        # past the configured pixel count instead of Pillow's default of ~89 megapixels.
        Image.MAX_IMAGE_PIXELS = settings.QUORUM_MAX_IMAGE_PIXELS
        signals.worker_ready.connect(
            prune_uploads_on_worker_start, weak=False, dispatch_uid="quorum-prune-uploads"
        )
