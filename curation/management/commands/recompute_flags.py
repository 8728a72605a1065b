"""``recompute_flags``: the full flag pass for a project, here and now."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandParser

from curation.management.commands._project import project_by_name_or_id
from curation.services import flags_recompute


class Command(BaseCommand):
    help = (
        "Recompute annotator figures and every flag of PROJECT (what quorum.flags_recompute does)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project name (or id)")

    def handle(self, *args: object, **opts: object) -> None:
        project = project_by_name_or_id(str(opts["project"]))
        result = flags_recompute(project_id=project.pk)
        self.stdout.write(self.style.SUCCESS(f"Flags of {project.name!r}: " + json.dumps(result)))
