"""Celery tasks that score candidates with a reward model on the ``gpu`` queue.

Importing this module must not import torch: the web process imports it to enqueue.
"""

from __future__ import annotations

import logging

from celery import shared_task, signals

logger = logging.getLogger("quorum.workers")


@shared_task(
    name="quorum.score_prompts",
    acks_late=True,
    # A worker killed mid-batch (OOM, SIGKILL) leaves the message unacknowledged: it is
    # redelivered, and the idempotent writes make the second run finish the job once.
    reject_on_worker_lost=True,
    autoretry_for=(ConnectionError,),
    max_retries=3,
    retry_backoff=True,
)
def score_prompts_task(*, run_id: int, prompt_ids: list[int]) -> dict:
    from workers.scoring import score_prompts

    return score_prompts(run_id=run_id, prompt_ids=prompt_ids)


@signals.worker_ready.connect
def _resume_unfinished_runs(sender=None, **kwargs) -> None:
    """A starting ``gpu`` worker picks up batches lost with a crashed worker."""
    consuming = set(getattr(sender.app.amqp.queues, "consume_from", {}) or {}) if sender else set()
    if "gpu" not in consuming:
        return
    from workers.scoring import scoring_runs_resume

    try:
        batches = scoring_runs_resume()
    except Exception:  # the worker must start even if the database is briefly unreachable
        logger.exception("could not resume scoring runs")
        return
    if batches:
        logger.info("re-enqueued %d scoring batches of unfinished runs", batches)


@shared_task(name="quorum.score_adhoc")
def score_adhoc_task(*, reward_model_id: int, item: dict) -> dict:
    """Playground scoring on a gpu worker: one prompt, file paths (never bytes), every mode."""
    from workers.playground import score_item

    return score_item(reward_model_id=reward_model_id, item=item)
