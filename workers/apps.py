from django.apps import AppConfig


class WorkersConfig(AppConfig):
    name = "workers"
    verbose_name = "Workers"

    def ready(self) -> None:
        from django.conf import settings
        from PIL import Image

        # Every decode in this process (workers/media.py, the importer's checks) refuses images
        # past the configured pixel count instead of Pillow's default of ~89 megapixels.
        Image.MAX_IMAGE_PIXELS = settings.QUORUM_MAX_IMAGE_PIXELS
