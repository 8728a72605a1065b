from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotate.exporting import export_project
from annotate.models import Project


class Command(BaseCommand):
    help = "Export a project's raw judgments (as stored) in an import format, with its media."

    def add_arguments(self, parser):
        parser.add_argument("project")
        parser.add_argument("out_dir", type=Path)
        parser.add_argument("--format", choices=["quorum", "seed", "arena"], default="quorum")

    def handle(self, *args, project: str, out_dir: Path, format: str, **opts):
        found = Project.objects.filter(name=project).first()
        if found is None:
            raise CommandError(f"no project named {project!r}")
        path = export_project(found, out_dir, format=format)
        self.stdout.write(self.style.SUCCESS(f"Wrote {path}"))
