from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from annotate.models import Project, RewardModel
from workers.scoring import scoring_run_start

NAME = "demo-multi-response"


class Command(BaseCommand):
    help = (
        "Train the demo's small multi-response reward model on demo worlds of other seeds "
        "(CPU, a few minutes), report held-out accuracy, register it, make it the demo "
        "projects' active model and start scoring runs. Skips training when it exists."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--seed", type=int, default=0, help="the make_demo seed held out for evaluation"
        )
        parser.add_argument("--epochs", type=int, default=4)
        parser.add_argument("--force", action="store_true", help="train again even if registered")

    def handle(self, *args, seed: int, epochs: int, force: bool, **opts):
        from workers.demo_model import train_demo_model

        demo_dir = Path(settings.QUORUM_DEMO_DIR)
        eval_dir = demo_dir / "small"
        if not (eval_dir / "ground_truth.json").exists():
            raise CommandError(
                f"{eval_dir}: no demo world; run `manage.py make_demo --seed {seed}` first"
            )
        version = f"seed{seed}-e{epochs}"
        out_dir = demo_dir / "reward-model" / version
        model = RewardModel.objects.filter(name=NAME, version=version).first()
        if model is None or force or not out_dir.is_dir():
            self.stdout.write("Training the demo reward model on CPU (a few minutes)...")
            metrics = train_demo_model(
                out_dir=out_dir,
                work_dir=demo_dir / "training",
                eval_world_dir=eval_dir,
                epochs=epochs,
            )
            model, _ = RewardModel.objects.update_or_create(
                name=NAME,
                version=version,
                defaults={
                    "backend": RewardModel.Backend.MULTI_RESPONSE,
                    "path": str(out_dir),
                    "metrics": metrics,
                },
            )
        held_out = model.metrics.get("held_out", {})
        self.stdout.write(
            f"{model}: held-out top-1 accuracy {held_out.get('top1_accuracy')} (chance {held_out.get('chance')}), "
            f"Kendall tau {held_out.get('kendall_tau')} on {held_out.get('prompts')} prompts"
        )
        for name, row in held_out.get("per_project", {}).items():
            self.stdout.write(
                f"  {name}: top-1 {row['top1_accuracy']} (chance {row['chance']}), tau {row['kendall_tau']}"
            )
        for project in Project.objects.filter(name__startswith="Demo: ").exclude(
            name__contains="MR2Bench"
        ):
            if project.active_reward_model_id != model.pk:
                project.active_reward_model = model
                project.save(update_fields=["active_reward_model"])
                run = scoring_run_start(project=project, reason="demo")
                self.stdout.write(
                    f"  scoring {project.name}: {run.total_prompts} prompts queued on the gpu queue"
                )
