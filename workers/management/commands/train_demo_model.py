from django.core.management.base import BaseCommand, CommandError

from workers.demo_training import (
    DemoWorldMissing,
    demo_model_train_and_register,
    demo_training_enqueue,
)
from workers.jobs import publisher_flush


class Command(BaseCommand):
    help = (
        "Train the demo's small multi-response reward model on demo worlds of other seeds "
        "(CPU, a few minutes), report held-out accuracy, register it, make it the demo "
        "projects' active model and start scoring runs. Skips training when it exists. "
        "With --background a worker does all of it as a job (make demo)."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--seed", type=int, default=0, help="the make_demo seed held out for evaluation"
        )
        parser.add_argument("--epochs", type=int, default=4)
        parser.add_argument("--force", action="store_true", help="train again even if registered")
        parser.add_argument(
            "--prompts-per-project",
            type=int,
            default=None,
            help="training prompts per project and seed (default: the whole demo world)",
        )
        parser.add_argument(
            "--background",
            action="store_true",
            help="record a job for a worker and return at once (progress on the home page)",
        )

    def handle(self, *args, seed: int, epochs: int, force: bool, background: bool, **opts):
        per_project = opts["prompts_per_project"]
        if background:
            job = demo_training_enqueue(seed=seed, epochs=epochs, prompts_per_project=per_project)
            publisher_flush(timeout=5)
            self.stdout.write(
                f"Demo reward model: training queued as job {job.pk}; a worker trains it "
                "(about four minutes) and the home page shows its progress."
            )
            return
        try:
            out = demo_model_train_and_register(
                seed=seed,
                epochs=epochs,
                prompts_per_project=per_project,
                force=force,
                log=self.stdout.write,
            )
        except DemoWorldMissing as exc:
            raise CommandError(str(exc)) from None
        held_out = out["held_out"]
        self.stdout.write(
            f"demo model {out['reward_model']}: held-out top-1 accuracy "
            f"{held_out.get('top1_accuracy')} (chance {held_out.get('chance')}), "
            f"Kendall tau {held_out.get('kendall_tau')} on {held_out.get('prompts')} prompts"
        )
        for name, row in held_out.get("per_project", {}).items():
            self.stdout.write(
                f"  {name}: top-1 {row['top1_accuracy']} (chance {row['chance']}), tau {row['kendall_tau']}"
            )
        for run in out["runs"]:
            self.stdout.write(
                f"  scoring {run['project']}: {run['prompts']} prompts queued on the gpu queue"
            )
        publisher_flush(timeout=5)
