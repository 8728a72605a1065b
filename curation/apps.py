from django.apps import AppConfig


class CurationConfig(AppConfig):
    name = "curation"
    verbose_name = "Curation"

    def ready(self) -> None:
        from django.db.models.signals import post_delete

        from curation.file_cleanup import project_files_remove

        post_delete.connect(
            project_files_remove, sender="annotate.Project", dispatch_uid="curation_files_remove"
        )
