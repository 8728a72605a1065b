from django.apps import AppConfig


class AnnotateConfig(AppConfig):
    name = "annotate"
    verbose_name = "Annotation"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from annotate.file_cleanup import project_media_remove

        post_delete.connect(
            project_media_remove, sender="annotate.Project", dispatch_uid="project_media_remove"
        )
