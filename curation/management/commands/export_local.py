"""``export_local``: a copy of a built export whose JSONL paths are absolute, for a local run."""

from __future__ import annotations

from pathlib import Path

from django.core.management.base import BaseCommand, CommandError, CommandParser

from curation.exporting import copy_with_absolute_paths
from curation.management.commands._project import project_by_name_or_id
from curation.models import DatasetExport


class Command(BaseCommand):
    help = (
        "Copy a built export of PROJECT (the newest, or --export-version N) to DEST, with "
        "the media paths of every JSONL file absolute under DEST, so a trainer on this machine "
        "needs no base folder. Parquet, HF folders and the datasheet are copied unchanged."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project name (or id)")
        parser.add_argument("dest", type=Path, help="a new (or empty) folder")
        parser.add_argument("--export-version", type=int, help="default: the newest built one")

    def handle(self, *args: object, **opts: object) -> None:
        project = project_by_name_or_id(str(opts["project"]))
        exports = DatasetExport.objects.filter(project=project, status=DatasetExport.Status.DONE)
        if opts["export_version"] is not None:
            exports = exports.filter(version=opts["export_version"])
        export = exports.order_by("-version").first()
        if export is None or not export.path.is_dir():
            raise CommandError(f"{project.name}: no built export of that version")
        try:
            dest = copy_with_absolute_paths(export.path, Path(opts["dest"]))  # type: ignore[arg-type]
        except (FileExistsError, ValueError) as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(f"{project.name} v{export.version} copied to {dest}")
