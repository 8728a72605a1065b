"""Train the next reward model from a dataset export, as a job on the ``gpu`` queue.

The admin panel (an action on exports), ``manage.py train_reward_model`` and
``POST /api/exports/{id}/train`` all call :func:`training_enqueue`. A ``gpu`` worker runs
:func:`train_from_export`: it reads the export the way a trainer does (``rankings/`` and
``rankings_multimodal/`` rows, media relative to the export folder), starts from a registered
multi-response reward model (the project's active one unless another is named), trains with the
paper's recipe (``workers.reward_model.fit``: LoRA + value head, resumable checkpoints under the
output folder), saves the merged layout, measures it on the export's held-out split, registers it
as a new :class:`~annotate.models.RewardModel` version and starts a scoring run with it.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from annotate.models import Project, RewardModel
from curation.models import DatasetExport
from workers import jobs
from workers.jobs import JobRun, job_enqueue
from workers.models import Job
from workers.scoring import scoring_run_start

HELD_OUT_SPLITS = ("test", "validation", "val", "dev")
# Prompts held out of "train" when the export has no held-out split (by a hash of the prompt).
FALLBACK_HOLD_OUT = 0.2


class TrainingError(ValueError):
    """The export or the base model cannot be trained from; the message says why."""


def training_options(raw: dict[str, Any] | None) -> dict[str, Any]:
    """Validated `FitConfig` overrides (epochs, lr, grad_accum, lora_r, loss...)."""
    from workers.reward_model import FitConfig

    known = {f.name: f for f in fields(FitConfig)}
    options = {}
    for name, value in (raw or {}).items():
        if name not in known:
            raise TrainingError(f"unknown training option {name!r} (known: {', '.join(known)})")
        default = getattr(FitConfig(), name)
        try:
            if isinstance(default, bool):
                value = (
                    value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                )
            elif isinstance(default, int):
                value = int(value)
            elif isinstance(default, float):
                value = float(value)
            elif isinstance(default, tuple):
                if isinstance(value, str):  # the CLI's "q_proj,v_proj"
                    value = [v.strip() for v in value.split(",") if v.strip()]
                if isinstance(value, bytes) or not all(isinstance(v, str) for v in value):
                    raise TypeError(value)
                value = tuple(value)
            elif isinstance(default, str) and not isinstance(value, str):
                raise TypeError(value)
        except (TypeError, ValueError, OverflowError):
            kind = "list of names" if isinstance(default, tuple) else type(default).__name__
            raise TrainingError(f"training option {name!r}: {value!r} is not a {kind}") from None
        options[name] = value
    problems = FitConfig(**options).problems()
    if problems:
        raise TrainingError("; ".join(problems))
    return options


def training_enqueue(
    *,
    export: DatasetExport,
    base: RewardModel | None = None,
    options: dict[str, Any] | None = None,
) -> Job:
    """Records the training job for `export` (one waiting per export and base model)."""
    if export.status != DatasetExport.Status.DONE:
        raise TrainingError(f"export v{export.version} is {export.status}, not done")
    project = Project.objects.select_related("active_reward_model").get(pk=export.project_id)
    base = base or project.active_reward_model
    if base is None:
        raise TrainingError(
            f"project {project.name!r} has no active reward model to start from; "
            "register one (admin: Reward models) or name a base model"
        )
    if base.backend != RewardModel.Backend.MULTI_RESPONSE:
        raise TrainingError(
            f"{base} is a {base.backend} model; training needs a multi-response one"
        )
    if not Path(base.path).is_dir():
        raise TrainingError(f"{base}: checkpoint folder {base.path} not found")
    kwargs = {
        "export_id": export.pk,
        "base_reward_model_id": base.pk,
        "options": training_options(options),
    }
    with transaction.atomic():
        return job_enqueue(
            name=jobs.TRAIN_REWARD_MODEL,
            kwargs=kwargs,
            dedupe_key=f"train_reward_model:{export.pk}:{base.pk}",
            max_attempts=2,
        )


# --- reading an export as a trainer does ------------------------------------------------------


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def _example(row: dict[str, Any], root: Path):  # noqa: ANN202
    from workers.reward_model import CandidateInput, PreferenceExample, ScoringItem

    kinds = row.get("response_kinds") or ["text"] * len(row["responses"])
    images = row.get("response_images") or [None] * len(kinds)
    videos = row.get("response_videos") or [None] * len(kinds)
    candidates = []
    for kind, text, image, video in zip(kinds, row["responses"], images, videos, strict=True):
        media = image if kind == "image" else video if kind == "video" else None
        candidates.append(
            CandidateInput(kind=kind, text=text or "", path=str(root / media) if media else None)
        )
    item = ScoringItem(
        prompt_text=row.get("prompt", ""),
        candidates=candidates,
        prompt_image=str(root / row["image"]) if row.get("image") else None,
        prompt_video=str(root / row["video"]) if row.get("video") else None,
    )
    return PreferenceExample(item=item, rankings=[int(r) for r in row["rankings"]])


def export_examples(folder: Path) -> tuple[list, list, str]:
    """(train examples, held-out examples, where the held-out ones come from)."""
    splits: dict[str, list] = {}
    for table in ("rankings", "rankings_multimodal"):
        directory = folder / table
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.jsonl")):
            splits.setdefault(path.stem, []).extend(_example(row, folder) for row in _rows(path))
    train = splits.get("train", [])
    for name in HELD_OUT_SPLITS:
        if splits.get(name):
            return train, splits[name], f"the export's {name!r} split"
    # The prompts with the smallest hashes of their text: deterministic, and one prompt text
    # never lands on both sides.
    texts = sorted(
        {e.item.prompt_text for e in train},
        key=lambda text: hashlib.sha256(text.encode()).hexdigest(),
    )
    chosen = set(texts[: math.ceil(FALLBACK_HOLD_OUT * len(texts))]) if len(texts) > 1 else set()
    held = [e for e in train if e.item.prompt_text in chosen]
    kept = [e for e in train if e.item.prompt_text not in chosen]
    if not held or not kept:
        return train, [], "none (the export has no held-out split and too few prompts to hold out)"
    return kept, held, f"{len(held)} prompts held out of 'train' by prompt hash (no test split)"


# --- the job ---------------------------------------------------------------------------------


def _version(base: RewardModel, export: DatasetExport) -> str:
    stamp = timezone.now().strftime("%Y%m%d%H%M%S")
    return f"p{export.project_id}-export{export.version}-{stamp}"[:100]


def train_from_export(
    *,
    export_id: int,
    base_reward_model_id: int,
    options: dict[str, Any] | None = None,
    run: JobRun | None = None,
) -> dict[str, Any]:
    """Trains, saves, evaluates, registers the new version and starts its scoring run."""
    from workers.reward_model import (
        FitConfig,
        fit,
        held_out_report,
        load_reward_model,
        save_reward_model,
    )

    def report(percent: int, phase: str) -> None:
        if run is not None:
            run.report(percent, phase)

    export = DatasetExport.objects.select_related("project").get(pk=export_id)
    base = RewardModel.objects.get(pk=base_reward_model_id)
    train_examples, held_out, held_out_source = export_examples(Path(export.path))
    if not train_examples:
        raise TrainingError(f"export v{export.version} has no training rows (rankings/train.jsonl)")
    config = FitConfig(**training_options(options))
    report(2, f"loading {base}")
    scorer = load_reward_model(base.path)
    before = held_out_report(scorer, held_out) if held_out else {}
    # A stable folder per (export, base): a retried job resumes from the last checkpoint.
    work = Path(settings.DATA_DIR) / "models" / f"p{export.project_id}"
    checkpoints = work / "checkpoints" / f"export{export.pk}-base{base.pk}"

    def on_step(step: int, total: int, loss: float) -> None:
        report(
            5 + int(85 * step / max(total, 1)), f"training: step {step} of {total}, loss {loss:.3f}"
        )

    result = fit(
        scorer.model, scorer.builder, train_examples, config, checkpoint_dir=checkpoints,
        on_step=on_step,
    )  # fmt: skip
    version = _version(base, export)
    out_dir = work / version
    report(92, "saving the merged checkpoint")
    save_reward_model(
        scorer.model,
        out_dir,
        tokenizer=scorer.builder.tokenizer,
        image_processor=scorer.builder.image_processor,
        merge_lora=True,
        limits=scorer.builder.limits(),
    )
    report(95, "evaluating on the held-out prompts")
    trained = load_reward_model(out_dir)  # what workers will load, not the in-memory model
    after = held_out_report(trained, held_out) if held_out else {}
    metrics = {
        "held_out": after,
        "held_out_before": before,
        "held_out_source": held_out_source,
        "trained_from": {
            "export": export.pk,
            "export_version": export.version,
            "project": export.project_id,
            "base_reward_model": base.pk,
            "train_prompts": len(train_examples),
            "held_out_prompts": len(held_out),
        },
        "training": {
            "config": {
                k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()
            },
            "steps": result["steps"],
            "skipped": result["skipped"],
            "first_loss": result["losses"][0] if result["losses"] else None,
            "last_loss": result["losses"][-1] if result["losses"] else None,
            "resumed_from": result["resumed_from"],
        },
    }
    model = RewardModel.objects.create(
        name=base.name,
        version=version,
        backend=RewardModel.Backend.MULTI_RESPONSE,
        path=str(out_dir),
        metrics=metrics,
    )
    with transaction.atomic():
        scoring = scoring_run_start(
            project=export.project,
            reward_model=model,
            reason=f"trained from export v{export.version}",
        )
    report(100, "done")
    return {
        "reward_model": model.pk,
        "version": version,
        "held_out": after,
        "scoring_run": scoring.pk if scoring else None,
    }


# --- comparing versions ----------------------------------------------------------------------


def reward_model_comparison(project) -> list[dict[str, Any]]:  # noqa: ANN001
    """Every reward model version that scored this project (and its active one), with its
    held-out figures per candidate kind, its agreement with the human consensus on the pairs
    humans judged (a score tie counts one half), and how many prompts it would flag for
    disagreeing with a clear human preference."""
    from annotate.models import ModelScore
    from curation import consensus as C
    from curation import selectors

    ids = set(
        ModelScore.objects.filter(candidate__project=project, score__isnull=False)
        .values_list("reward_model_id", flat=True)
        .distinct()
    )
    if project.active_reward_model_id:
        ids.add(project.active_reward_model_id)
    models = list(RewardModel.objects.filter(pk__in=ids).order_by("created_at", "pk"))
    data = selectors.project_data(project=project)
    consensuses = []
    for prompt_id, votes in data.votes_by_prompt().items():
        usable = selectors.usable_votes(data, votes)
        if usable:
            consensuses.append(
                C.prompt_consensus(prompt_id, usable, weights=data.weights, denoise=False)
            )
    rows = []
    for model in models:
        scores = dict(
            ModelScore.objects.filter(
                reward_model=model, candidate__project=project, score__isnull=False
            ).values_list("candidate_id", "score")
        )
        agree = pairs = 0.0
        flagged = 0
        for consensus in consensuses:
            for (x, y), pair in consensus.evidence.items():
                if pair.net == 0 or scores.get(x) is None or scores.get(y) is None:
                    continue
                pairs += 1
                diff = scores[x] - scores[y]
                agree += 0.5 if diff == 0 else float((diff > 0) == (pair.net > 0))
            if C.rm_conflicts(consensus, scores):
                flagged += 1
        held_out = (model.metrics or {}).get("held_out") or {}
        rows.append(
            {
                "model": model,
                "active": model.pk == project.active_reward_model_id,
                "scored": len(scores),
                "agreement": round(agree / pairs, 3) if pairs else None,
                "judged_pairs": int(pairs),
                "disagreement_prompts": flagged,
                "held_out": [
                    (kind, held_out[kind])
                    for kind in ("all", "text", "image", "video")
                    if kind in held_out
                ],
                "trained_from": (model.metrics or {}).get("trained_from"),
            }
        )
    return rows
