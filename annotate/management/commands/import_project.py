from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from annotate.importing import FORMATS, ImportRejected
from annotate.models import Project
from annotate.services import import_file


class Command(BaseCommand):
    help = (
        "Import a JSONL/JSON file (media in a folder beside it) or a .zip into a project. "
        "Formats: quorum (Quorum JSONL), seed (prompt/responses/rankings), arena (pairwise votes). "
        "Re-importing the same file creates nothing new."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)
        parser.add_argument("--project", help="project name (default: the file's stem)")
        parser.add_argument(
            "--format", choices=FORMATS, help="detected from the first row if omitted"
        )
        parser.add_argument(
            "--source", help="name of the judgments' external source (default: file stem)"
        )

    def handle(
        self, *args, file: Path, project: str | None, format: str | None, source: str | None, **opts
    ):
        existing = Project.objects.filter(name=project).first() if project else None
        try:
            result = import_file(
                path=file,
                project=existing,
                project_name=project,
                format=format,
                source_name=source,
            )
        except ImportRejected as exc:
            raise CommandError(f"{file}: {exc}") from None
        counts = ", ".join(f"{v} {k}" for k, v in result.counts.items())
        self.stdout.write(
            self.style.SUCCESS(
                f"Imported {file} ({result.format}) into {result.project.name!r}: {counts}"
            )
        )
