"""Celery tasks that score candidates with a reward model on the ``gpu`` queue.

Importing this module must not import torch: the worker imports it at start, before forking.
"""

from __future__ import annotations

from config.celery import app
from workers.jobs import run_job


@app.task(
    name="quorum.score_prompts",
    acks_late=True,
    # A worker killed mid-batch (OOM, SIGKILL) leaves the message unacknowledged: it is
    # redelivered, and the idempotent writes make the second run finish the job once.
    reject_on_worker_lost=True,
    max_retries=0,
)
def score_prompts_task(*, run_id: int, prompt_ids: list[int], job_id: int | None = None) -> dict:
    from workers.scoring import score_prompts

    return run_job(job_id, lambda run: score_prompts(run_id=run_id, prompt_ids=prompt_ids))


@app.task(name="quorum.score_media_prefill", acks_late=True, max_retries=0)
def score_media_prefill_task(
    *, reward_model_id: int, prompt_ids: list[int], job_id: int | None = None
) -> dict:
    """Fills the media store for prompts whose media just arrived, so that their first scoring
    by this model version reads decoded media (the gpu queue, whose workers have the model's
    settings). Enqueued by ``workers.scoring.media_prefill_start`` (the project admin's
    "Prepare media for scoring")."""
    from workers.scoring import media_store_prefill

    return run_job(
        job_id,
        lambda run: media_store_prefill(reward_model_id=reward_model_id, prompt_ids=prompt_ids),
    )


@app.task(name="quorum.score_adhoc")
def score_adhoc_task(*, reward_model_id: int, item: dict) -> dict:
    """Playground scoring on a gpu worker: one prompt, file paths (never bytes), every mode."""
    from workers.scoring import score_item

    return score_item(reward_model_id=reward_model_id, item=item)


@app.task(name="quorum.train_demo_model", acks_late=True, max_retries=0)
def train_demo_model_task(
    *, seed: int, epochs: int, prompts_per_project: int | None = None, job_id: int | None = None
) -> dict:
    """Trains, registers and activates the demo reward model, reporting progress on the job."""
    from workers.demo_training import demo_model_train_and_register

    return run_job(
        job_id,
        lambda run: demo_model_train_and_register(
            seed=seed, epochs=epochs, prompts_per_project=prompts_per_project, run=run
        ),
    )


@app.task(name="quorum.train_reward_model", acks_late=True, max_retries=0)
def train_reward_model_task(
    *,
    export_id: int,
    base_reward_model_id: int,
    options: dict | None = None,
    job_id: int | None = None,
) -> dict:
    """Trains a reward model from an export, registers it and starts its scoring run; a retry
    resumes from the training checkpoints."""
    from workers.model_training import train_from_export

    return run_job(
        job_id,
        lambda run: train_from_export(
            export_id=export_id,
            base_reward_model_id=base_reward_model_id,
            options=options,
            run=run,
        ),
    )
