import json

from django.core.management.base import BaseCommand, CommandError

from annotate.models import RewardModel
from curation.models import DatasetExport
from workers.jobs import publisher_flush
from workers.model_training import TrainingError, train_from_export, training_enqueue


class Command(BaseCommand):
    help = (
        "Train the next reward model from a dataset export with the paper's recipe (LoRA + "
        "value head), starting from the project's active reward model (or --base-model), "
        "register it as a new version with its held-out accuracy and start a scoring run. "
        "By default a gpu worker does it as a job; --now trains in this process."
    )

    def add_arguments(self, parser):
        parser.add_argument("export_id", type=int, help="id of a finished dataset export")
        parser.add_argument("--base-model", type=int, help="reward model id to start from")
        parser.add_argument(
            "--option",
            action="append",
            default=[],
            metavar="NAME=VALUE",
            help="training setting, repeatable: epochs, lr, grad_accum, batch_size, lora_r, "
            "loss (nway or plackett_luce), gradient_checkpointing, bf16, checkpoint_every, seed",
        )
        parser.add_argument("--now", action="store_true", help="train here instead of on a worker")

    def handle(self, *args, export_id: int, base_model: int | None, option, now: bool, **opts):
        export = DatasetExport.objects.filter(pk=export_id).select_related("project").first()
        if export is None:
            raise CommandError(f"no dataset export with id {export_id}")
        base = None
        if base_model is not None:
            base = RewardModel.objects.filter(pk=base_model).first()
            if base is None:
                raise CommandError(f"no reward model with id {base_model}")
        options = {}
        for entry in option:
            name, sep, value = entry.partition("=")
            if not sep:
                raise CommandError(f"--option {entry!r}: expected NAME=VALUE")
            options[name.strip()] = value.strip()
        try:
            job = training_enqueue(export=export, base=base, options=options)
        except TrainingError as exc:
            raise CommandError(str(exc)) from None
        if not now:
            publisher_flush(timeout=5)
            self.stdout.write(
                f"Training queued as job {job.pk} on the gpu queue; its progress shows in the "
                "admin (Jobs) and on the project's reward models page."
            )
            return
        job.delete()
        out = train_from_export(**job.kwargs)
        self.stdout.write(
            f"reward model {out['reward_model']} ({out['version']}) registered; held-out: "
            f"{json.dumps(out['held_out'])}; scoring run {out['scoring_run']} started"
        )
