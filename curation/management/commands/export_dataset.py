"""``export_dataset``: build a new, immutable dataset export version of a project."""

from __future__ import annotations

import json

from django.core.management.base import BaseCommand, CommandError, CommandParser

from curation.exporting import ExportOptions, ExportOptionsInvalid, parse_splits
from curation.management.commands._project import project_by_name_or_id
from curation.models import DatasetExport
from curation.services import export_build, export_create


class Command(BaseCommand):
    help = (
        "Build a dataset export (pairs JSONL, seed-format rankings, 4-response variants, "
        "Parquet, HF datasets folder, datasheet) as a new version of PROJECT. Runs here and "
        "waits, or with --enqueue hands it to a Celery worker."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("project", help="project name (or id)")
        parser.add_argument(
            "--no-denoise",
            action="store_true",
            help="weighted majority vote, no feedback-arc removal",
        )
        parser.add_argument(
            "--rm-evaluator",
            action="store_true",
            help="use the active reward model as an evaluator",
        )
        parser.add_argument(
            "--model-prior",
            action="store_true",
            help="rank with the model-strength prior (strong human consensus still holds)",
        )
        parser.add_argument(
            "--min-agreement", type=float, help="drop prompts with agreement below this (0-1)"
        )
        parser.add_argument(
            "--split", default="train=1.0", help="splits by prompt, e.g. train=0.8,test=0.2"
        )
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--no-decisions", action="store_true", help="ignore reviewer decisions")
        parser.add_argument(
            "--no-media", action="store_true", help="do not copy media into the export"
        )
        parser.add_argument(
            "--variants", type=int, default=3, help="4-response variants per prompt"
        )
        parser.add_argument(
            "--enqueue", action="store_true", help="build in a Celery worker; return at once"
        )

    def handle(self, *args: object, **opts: object) -> None:
        project = project_by_name_or_id(str(opts["project"]))
        try:
            options = ExportOptions.from_dict(
                {
                    "denoise": not opts["no_denoise"],
                    "rm_evaluator": bool(opts["rm_evaluator"]),
                    "model_prior": bool(opts["model_prior"]),
                    "min_agreement": opts["min_agreement"],
                    "use_decisions": not opts["no_decisions"],
                    "splits": parse_splits(str(opts["split"])),
                    "seed": opts["seed"],
                    "include_media": not opts["no_media"],
                    "variants_per_prompt": opts["variants"],
                }
            )
        except ExportOptionsInvalid as exc:
            raise CommandError(f"--{exc.field.replace('_', '-')}: {exc}") from None
        if options.rm_evaluator and project.active_reward_model is None:
            self.stderr.write(
                "warning: the project has no active reward model; --rm-evaluator has no effect"
            )
        export = export_create(project=project, options=options, enqueue=bool(opts["enqueue"]))
        if opts["enqueue"]:
            self.stdout.write(f"Export {project.name} v{export.version} (id {export.pk}) queued.")
            return
        export = export_build(export_id=export.pk)
        if export.status != DatasetExport.Status.DONE:
            raise CommandError(f"export v{export.version} failed: {export.error}")
        c = export.counts
        self.stdout.write(
            self.style.SUCCESS(
                f"Export {project.name} v{export.version}: {c['prompts_exported']} prompts, "
                f"{c['pairs']} pairs, {c['rankings']} rankings, {c['rankings_4']} 4-response variants"
            )
        )
        self.stdout.write(f"Files: {export.path}")
        self.stdout.write("Dropped: " + json.dumps(export.datasheet["dropped"]))
