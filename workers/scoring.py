"""Reward-model scoring of stored candidates: runs, batches, idempotent score rows, priorities.

The web process calls :func:`scoring_run_start` (no torch import). The ``gpu`` workers call
:func:`score_prompts`, which loads the model once per worker process (never at import time,
so CUDA is never touched before a fork) and writes one ``ModelScore`` per candidate and
model version: a batch that is redelivered after a crash finds its rows and writes nothing twice.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from annotate.models import (
    Candidate,
    ModelScore,
    Project,
    Prompt,
    RewardModel,
    Task,
    TaskCandidate,
)
from annotate.services import flags_recompute_job
from workers import jobs
from workers.jobs import jobs_enqueue_many
from workers.models import ScoringRun

logger = logging.getLogger("quorum.workers")

PROMPTS_PER_BATCH = 16


# --- pure helpers -------------------------------------------------------------------------


def uncertainty_priority(scores: Sequence[float]) -> float:
    """How much a human judgment of these candidates would tell us, in [0, 1].

    The mean of the normalised entropy of softmax(scores) and exp(-margin) between the top two:
    both are high when the model cannot separate the candidates.
    """
    if len(scores) < 2:
        return 0.0
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    probs = [w / total for w in weights]
    entropy = -sum(p * math.log(p) for p in probs if p > 0) / math.log(len(scores))
    first, second = sorted(scores, reverse=True)[:2]
    return 0.5 * entropy + 0.5 * math.exp(-(first - second))


# --- web side -------------------------------------------------------------------------------


def scoring_run_start(
    *,
    project: Project,
    reward_model: RewardModel | None = None,
    prompt_ids: Sequence[int] | None = None,
    reason: str = "admin",
    created_by=None,
) -> ScoringRun | None:
    """Records a scoring run and its batches as jobs on the ``gpu`` queue (published after
    commit). Uses the project's active reward model when none is given; None without one.
    """
    reward_model = reward_model or project.active_reward_model
    if reward_model is None:
        return None
    if prompt_ids is None:
        prompt_ids = list(
            Prompt.objects.filter(project=project).order_by("id").values_list("id", flat=True)
        )
    prompt_ids = list(prompt_ids)
    with transaction.atomic():  # the run and its batch jobs commit together
        return _scoring_run_record(
            project=project,
            reward_model=reward_model,
            prompt_ids=prompt_ids,
            reason=reason,
            created_by=created_by,
        )


def _scoring_run_record(*, project, reward_model, prompt_ids, reason, created_by) -> ScoringRun:
    run = ScoringRun.objects.create(
        project=project,
        reward_model=reward_model,
        total_prompts=len(prompt_ids),
        prompt_ids=prompt_ids,
        reason=reason,
        created_by=created_by,
        status=ScoringRun.Status.RUNNING if prompt_ids else ScoringRun.Status.DONE,
    )
    batches = [
        prompt_ids[i : i + PROMPTS_PER_BATCH] for i in range(0, len(prompt_ids), PROMPTS_PER_BATCH)
    ]
    jobs_enqueue_many(
        name=jobs.SCORE_PROMPTS,
        kwargs_list=[{"run_id": run.pk, "prompt_ids": batch} for batch in batches],
    )
    return run


def scoring_batch_give_up(*, job, reason: str, cancelled: bool = False) -> None:
    """A batch whose worker died on every attempt: its candidates get an error score, so the
    run finishes and says what happened instead of running for ever."""
    run = ScoringRun.objects.filter(pk=job.kwargs.get("run_id")).select_related("reward_model")
    run = run.first()
    if run is None:
        return
    prompt_ids = job.kwargs.get("prompt_ids", [])
    with transaction.atomic():
        ScoringRun.objects.select_for_update().get(pk=run.pk)
        done = set(
            ModelScore.objects.filter(
                reward_model=run.reward_model, candidate__prompt_id__in=prompt_ids
            ).values_list("candidate_id", flat=True)
        )
        missing = Candidate.objects.filter(prompt_id__in=prompt_ids).exclude(pk__in=done)
        rows = [
            ModelScore(candidate_id=cid, reward_model=run.reward_model, error=reason[:500])
            for cid in missing.values_list("pk", flat=True)
        ]
        fresh = len({p for p in missing.values_list("prompt_id", flat=True)})
        ModelScore.objects.bulk_create(rows, ignore_conflicts=True)
        ScoringRun.objects.filter(pk=run.pk).update(
            done_prompts=F("done_prompts") + fresh,
            failed_candidates=F("failed_candidates") + len(rows),
        )
        ScoringRun.objects.filter(
            pk=run.pk, status=ScoringRun.Status.RUNNING, done_prompts__gte=F("total_prompts")
        ).update(status=ScoringRun.Status.DONE, finished_at=timezone.now())


def checkpoint_problems(path: str, backend: str) -> list[str]:
    """Cheap checks of a checkpoint directory without importing torch (admin validation)."""
    root = Path(path)
    if not root.is_dir():
        return [f"{path}: directory not found"]
    if backend == RewardModel.Backend.MULTI_RESPONSE:
        needed = ["reward_model_config.json", "value_head.pt", "config.json"]
    else:
        needed = ["config.json"]
    return [f"{root / name}: missing" for name in needed if not (root / name).exists()]


# --- worker side ----------------------------------------------------------------------------

_scorers: dict[tuple[int, str], Any] = {}
_scorers_lock = threading.Lock()


def media_store_dir() -> Path:
    """Where the workers keep decoded media resized for each model (shared by every worker and
    scoring run on the data dir; deleting it only costs decoding again)."""
    return Path(settings.DATA_DIR) / "cache" / "media"


def media_store_bytes() -> int:
    """The media store's bound, ``QUORUM_MEDIA_STORE_MB`` (default 4096; 0 turns it off): past
    it, the entries used longest ago are deleted."""
    return settings.QUORUM_MEDIA_STORE_MB * 2**20


def decode_processes() -> int:
    """Processes decoding media beside a gpu worker's prefetch threads,
    ``QUORUM_DECODE_PROCESSES`` (default 0: the threads decode)."""
    return settings.QUORUM_DECODE_PROCESSES


def row_build_processes() -> int:
    """Processes building scoring rows (media, template, tokens, pixel patches) beside a gpu
    worker's model instead of its prefetch threads, ``QUORUM_ROW_BUILD_PROCESSES`` (default 0:
    the threads build them); per loaded model version."""
    return settings.QUORUM_ROW_BUILD_PROCESSES


def scorer_for(reward_model: RewardModel) -> Any:
    """The loaded scorer for a model version, loaded once per worker process."""
    from workers.media import DECODE_POOL
    from workers.reward_model.media_cache import MEDIA_STORE

    key = (reward_model.pk, reward_model.path)
    MEDIA_STORE.configure(media_store_dir(), media_store_bytes())
    DECODE_POOL.configure(decode_processes())
    with _scorers_lock:
        scorer = _scorers.get(key)
        if scorer is None:
            from workers.reward_model import load_reward_model

            logger.info("loading reward model %s from %s", reward_model, reward_model.path)
            scorer = _scorers[key] = load_reward_model(reward_model.path)
        row_pool = getattr(scorer, "row_pool", None)  # the classifier baseline has none
        if row_pool is not None:
            row_pool.configure(row_build_processes())
        return scorer


def _media_path(field_file) -> str | None:
    if not field_file:
        return None
    return str(Path(settings.MEDIA_ROOT) / field_file.name)


# Prompts per pre-fill job: decoding only, so more per job than a scoring batch.
PROMPTS_PER_PREFILL = 4 * PROMPTS_PER_BATCH


def media_prefill_start(
    *, project: Project, reward_model: RewardModel | None = None
) -> tuple[RewardModel, int] | None:
    """Enqueues ``quorum.score_media_prefill`` jobs (the ``gpu`` queue) for every prompt of
    `project` with media (a picture or clip prompt, or media candidates), for `reward_model`
    (the project's active one by default), so that its first scoring run reads them decoded
    from the media store. Returns the model and the number of prompts, or `None` without a
    model; the jobs are published after commit.

    A first scoring run decodes each file, which costs more CPU than a small model's forward
    pass (bench/README.md, "Worker scoring, first run"); this moves that work to a moment the
    staff choose (after an import, before scoring), it does not remove it.
    """
    reward_model = reward_model or project.active_reward_model
    if reward_model is None:
        return None
    media = Candidate.objects.filter(project=project).exclude(kind="text").exclude(media="")
    prompt_ids = list(
        Prompt.objects.filter(project=project)
        .filter(
            ~Q(image="") | ~Q(video="") | Q(pk__in=media.values("prompt_id")),
        )
        .order_by("id")
        .values_list("id", flat=True)
    )
    with transaction.atomic():
        jobs_enqueue_many(
            name=jobs.SCORE_MEDIA_PREFILL,
            kwargs_list=[
                {
                    "reward_model_id": reward_model.pk,
                    "prompt_ids": prompt_ids[i : i + PROMPTS_PER_PREFILL],
                }
                for i in range(0, len(prompt_ids), PROMPTS_PER_PREFILL)
            ],
        )
    return reward_model, len(prompt_ids)


def media_store_prefill(*, reward_model_id: int, prompt_ids: Sequence[int]) -> dict[str, int]:
    """Decode the media of `prompt_ids` for a model version into the media store, so that
    their first scoring reads them from it (a background job on the ``gpu`` queue, run after
    media arrive: it moves the decoding there, it does not remove it). Prompts whose media
    are stored already cost a read each. Returns ``{"prompts", "files", "failed"}``.
    """
    from workers.reward_model import CandidateInput, ScoringItem

    reward_model = RewardModel.objects.get(pk=reward_model_id)
    prompts = Prompt.objects.filter(pk__in=prompt_ids).prefetch_related("candidates")
    items = []
    for prompt in prompts.order_by("id"):
        media = [c for c in prompt.candidates.all() if c.kind != "text" and c.media]
        if not media and not prompt.image and not prompt.video:
            continue
        items.append(
            ScoringItem(
                prompt_text=prompt.text,
                candidates=[
                    CandidateInput(kind=c.kind, path=_media_path(c.media))
                    for c in sorted(media, key=lambda c: c.pk)
                ]
                or [CandidateInput(text="-")],
                prompt_image=_media_path(prompt.image),
                prompt_video=_media_path(prompt.video),
            )
        )
    builder = scorer_for(reward_model).builder
    files = failed = 0
    for item in items:
        encoded = builder.encode_item(item)
        files += sum(1 for c in item.candidates if c.kind != "text")
        files += (item.prompt_image is not None) + (item.prompt_video is not None)
        failed += sum(1 for e in encoded.candidate_errors if e) + (encoded.error is not None)
    return {"prompts": len(items), "files": files, "failed": failed}


def score_prompts(*, run_id: int, prompt_ids: Sequence[int]) -> dict[str, int]:
    """Scores every not-yet-scored candidate of the given prompts; safe to run twice."""
    from workers.reward_model import CandidateInput, ScoringItem

    run = ScoringRun.objects.select_related("reward_model", "project").get(pk=run_id)
    reward_model = run.reward_model
    prompts = list(
        Prompt.objects.filter(pk__in=prompt_ids).prefetch_related("candidates").order_by("id")
    )
    already = set(
        ModelScore.objects.filter(
            reward_model=reward_model, candidate__prompt_id__in=prompt_ids
        ).values_list("candidate_id", flat=True)
    )
    todo = [p for p in prompts if any(c.pk not in already for c in p.candidates.all())]
    rows: list[ModelScore] = []
    items: list[ScoringItem] = []
    item_candidates: list[list[int]] = []
    for prompt in todo:
        candidates = {c.pk: c for c in prompt.candidates.all()}
        scorable = []
        for c in candidates.values():
            if c.kind != "text" and not c.media:
                rows.append(
                    ModelScore(
                        candidate=c,
                        reward_model=reward_model,
                        error="no content to score (the source gave none)",
                    )
                )
            elif c.kind == "text" and not c.text:
                rows.append(ModelScore(candidate=c, reward_model=reward_model, error="empty text"))
            else:
                scorable.append(c.pk)
        # One item per prompt: its scores are always comparable. A prompt with more candidates
        # than the model packs together (8), or whose row is too long, is scored in isolation
        # by the scorer, and each score row records that layout.
        for group in [sorted(scorable)] if scorable else []:
            inputs = [
                CandidateInput(
                    kind=candidates[cid].kind,
                    text=candidates[cid].text,
                    path=_media_path(candidates[cid].media),
                )
                for cid in group
            ]
            items.append(
                ScoringItem(
                    prompt_text=prompt.text,
                    candidates=inputs,
                    prompt_image=_media_path(prompt.image),
                    prompt_video=_media_path(prompt.video),
                )
            )
            item_candidates.append(group)
    if items:
        results = scorer_for(reward_model).score(items, mode="packed")
        for group, result in zip(item_candidates, results, strict=True):
            for index, cid in enumerate(group):
                score = result.scores[index]
                error = result.error or result.errors[index]
                if score is None or (isinstance(score, float) and math.isnan(score)):
                    rows.append(
                        ModelScore(
                            candidate_id=cid, reward_model=reward_model, error=error or "not scored"
                        )
                    )
                else:
                    rows.append(
                        ModelScore(
                            candidate_id=cid,
                            reward_model=reward_model,
                            score=float(score),
                            layout=getattr(result, "layout", ""),
                            note=getattr(result, "note", "")[:500],
                        )
                    )
    delay = float(os.environ.get("QUORUM_SCORING_DELAY", "0") or 0)
    if delay:  # fault-injection knob for tests: widens the window for a crash mid-batch
        time.sleep(delay)
    with transaction.atomic():
        # Re-read under the run's lock after the slow part: another worker may have scored
        # some of these prompts meanwhile (a redelivered or resumed batch). Write only the rest.
        ScoringRun.objects.select_for_update().get(pk=run.pk)
        now_done = set(
            ModelScore.objects.filter(
                reward_model=reward_model, candidate__prompt_id__in=[p.pk for p in todo]
            ).values_list("candidate_id", flat=True)
        )
        rows = [r for r in rows if r.candidate_id not in now_done]
        fresh_prompts = {
            p.pk for p in todo if not any(c.pk in now_done for c in p.candidates.all())
        }
        failed = sum(1 for r in rows if r.score is None)
        ModelScore.objects.bulk_create(rows, ignore_conflicts=True, batch_size=1000)
        ScoringRun.objects.filter(pk=run.pk).update(
            done_prompts=F("done_prompts") + len(fresh_prompts),
            scored_candidates=F("scored_candidates") + len(rows) - failed,
            failed_candidates=F("failed_candidates") + failed,
        )
        finished = ScoringRun.objects.filter(
            pk=run.pk, status=ScoringRun.Status.RUNNING, done_prompts__gte=F("total_prompts")
        ).update(status=ScoringRun.Status.DONE, finished_at=timezone.now())
        if finished and run.project.active_reward_model_id == reward_model.pk:
            # The model's opinion is new evidence: recompute the reward-model-vs-consensus flags.
            flags_recompute_job(project_id=run.project_id)
        if (
            run.project.prioritize_uncertain
            and run.project.active_reward_model_id == reward_model.pk
        ):
            task_priorities_update(
                project=run.project, reward_model=reward_model, prompt_ids=[p.pk for p in todo]
            )
    return {"prompts": len(fresh_prompts), "scores": len(rows), "failed": failed}


def task_priorities_update(
    *, project: Project, reward_model: RewardModel, prompt_ids: Sequence[int]
) -> int:
    """Sets Task.priority from the model's uncertainty over each task's candidates."""
    tasks = list(Task.objects.filter(project=project, prompt_id__in=prompt_ids))
    if not tasks:
        return 0
    slots: dict[int, list[int]] = {}
    for task_id, cand_id in TaskCandidate.objects.filter(task__in=tasks).values_list(
        "task_id", "candidate_id"
    ):
        slots.setdefault(task_id, []).append(cand_id)
    scores = dict(
        ModelScore.objects.filter(
            reward_model=reward_model, candidate__prompt_id__in=prompt_ids, score__isnull=False
        ).values_list("candidate_id", "score")
    )
    changed = []
    for task in tasks:
        values = [scores[c] for c in slots.get(task.pk, []) if c in scores]
        if len(values) >= 2:
            task.priority = round(uncertainty_priority(values), 6)
            changed.append(task)
    Task.objects.bulk_update(changed, ["priority"], batch_size=1000)
    return len(changed)


def model_ranking(
    *, candidate_ids: Sequence[int], reward_model: RewardModel | None
) -> list[tuple[int, float]]:
    """(candidate id, score) best first, for the candidates the model scored."""
    if reward_model is None:
        return []
    scores = ModelScore.objects.filter(
        reward_model=reward_model, candidate_id__in=candidate_ids, score__isnull=False
    ).values_list("candidate_id", "score")
    return sorted(scores, key=lambda row: -row[1])


# --- ad-hoc scoring (the playground) --------------------------------------------------------

PLAYGROUND_MODES = ("packed", "isolated")


def score_item(*, reward_model_id: int, item: dict[str, Any]) -> dict[str, Any]:
    """Scores one prompt (JSON-able dict of text and file paths) in every mode."""
    from workers.reward_model import CandidateInput, ScoringItem

    reward_model = RewardModel.objects.get(pk=reward_model_id)
    scorer = scorer_for(reward_model)
    scoring_item = ScoringItem(
        prompt_text=item.get("prompt_text", ""),
        prompt_image=item.get("prompt_image"),
        prompt_video=item.get("prompt_video"),
        candidates=[
            CandidateInput(kind=c.get("kind", "text"), text=c.get("text", ""), path=c.get("path"))
            for c in item["candidates"]
        ],
    )
    out: dict[str, Any] = {"scores": {}, "errors": [None] * len(item["candidates"])}
    for mode in PLAYGROUND_MODES:
        (result,) = scorer.score([scoring_item], mode=mode)
        out["scores"][mode] = list(result.scores)
        for i, err in enumerate(result.errors):
            out["errors"][i] = out["errors"][i] or result.error or err
    return out
