"""The demo reward model as a background job: train, register, activate, score.

``make demo`` records this job (``manage.py train_demo_model --background``) and starts
serving at once; the worker trains the small model (about four minutes on CPU), reporting its
progress on the job (shown on the home page to staff and in the admin), registers it, makes
it the demo projects' active model and starts their scoring runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction

from annotate.models import Project, RewardModel
from workers import jobs
from workers.jobs import JobRun, job_enqueue
from workers.models import Job
from workers.scoring import scoring_run_start

NAME = "demo-multi-response"


class DemoWorldMissing(RuntimeError):
    pass


def demo_model_version(*, seed: int, epochs: int, prompts_per_project: int | None = None) -> str:
    suffix = f"-p{prompts_per_project}" if prompts_per_project else ""
    return f"seed{seed}-e{epochs}{suffix}"


def demo_model_train_and_register(
    *,
    seed: int,
    epochs: int,
    prompts_per_project: int | None = None,
    force: bool = False,
    run: JobRun | None = None,
    log=None,
) -> dict[str, Any]:
    """Trains the demo model unless registered, then activates it on the demo projects and
    queues their scoring runs. Returns the model's id, its held-out metrics and the runs."""
    from workers.demo_model import train_demo_model
    from workers.reward_model.media_cache import MediaStore
    from workers.scoring import media_store_bytes, media_store_dir

    demo_dir = Path(settings.QUORUM_DEMO_DIR)
    eval_dir = demo_dir / "small"
    if not (eval_dir / "ground_truth.json").exists():
        raise DemoWorldMissing(
            f"{eval_dir}: no demo world; run `manage.py make_demo --seed {seed}` first"
        )
    version = demo_model_version(seed=seed, epochs=epochs, prompts_per_project=prompts_per_project)
    out_dir = demo_dir / "reward-model" / version
    model = RewardModel.objects.filter(name=NAME, version=version).first()
    if model is None or force or not out_dir.is_dir():
        if log:
            log("Training the demo reward model on CPU (a few minutes)...")
        metrics = train_demo_model(
            out_dir=out_dir,
            work_dir=demo_dir / "training",
            eval_world_dir=eval_dir,
            epochs=epochs,
            prompts_per_project=prompts_per_project,
            on_progress=run.report if run else None,
            # The held-out world is the demo projects' media: decoded once, for both.
            media_store=MediaStore(media_store_dir(), max_bytes=media_store_bytes()),
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
    runs = []
    with transaction.atomic():
        for project in Project.objects.filter(name__startswith="Demo: ").exclude(
            name__contains="MR2Bench"
        ):
            if project.active_reward_model_id != model.pk:
                project.active_reward_model = model
                project.save(update_fields=["active_reward_model"])
                scoring = scoring_run_start(project=project, reason="demo")
                runs.append({"project": project.name, "prompts": scoring.total_prompts})
    return {"reward_model": model.pk, "held_out": model.metrics.get("held_out", {}), "runs": runs}


def demo_training_enqueue(*, seed: int, epochs: int, prompts_per_project: int | None = None) -> Job:
    """Records the training job (at most one waiting)."""
    with transaction.atomic():
        return job_enqueue(
            name=jobs.TRAIN_DEMO_MODEL,
            kwargs={"seed": seed, "epochs": epochs, "prompts_per_project": prompts_per_project},
            dedupe_key=f"train_demo_model:{seed}:{epochs}",
            max_attempts=2,
        )
