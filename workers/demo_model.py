"""Train the demo's small multi-response reward model on demo worlds (CPU, a few minutes).

Training prompts come from demo worlds of other seeds than the one ``make_demo`` imports, so
the imported demo prompts are held out; each training example ranks a prompt's candidates by
their hidden ground-truth quality, and the loss is the N-way cross-entropy against the best
one. Pure: torch, transformers and the demo-world generator, no Django.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from annotate.demo_world import generate_world, load_ground_truth, write_world
from workers.media import MediaError
from workers.reward_model import (
    CandidateInput,
    PreferenceExample,
    RewardHeadConfig,
    ScoringItem,
    train,
)

logger = logging.getLogger("quorum.workers")

# Small pixel budgets keep CPU training fast; shapes and colours stay visible. Pictures reach
# the tiny vision tower at 84 x 84 (the size text-to-image pictures reached it when the demo drew
# them at 96 px): drawn at 384 px and read at 112 x 112, its held-out probes fell from 0.94 to
# 0.52 on count and 0.56 to 0.34 on shape; at 84 x 84 they are back (bench/README.md).
LIMITS = {
    "image_max_pixels": 84 * 84,
    "video_max_pixels": 56 * 56,
    "max_frames": 4,
    "max_length": 2048,
}


@dataclass
class EvalReport:
    prompts: int
    top1_accuracy: float
    chance: float
    kendall_tau: float
    per_project: dict[str, dict[str, float]]


def examples_from_world(
    world_dir: Path, *, projects: list[str] | None = None
) -> list[tuple[str, PreferenceExample]]:
    """(project name, example) per prompt, ranked by hidden quality (1 = best, ties shared)."""
    truth = load_ground_truth(world_dir)
    out: list[tuple[str, PreferenceExample]] = []
    for name, project_truth in truth.projects.items():
        if projects and name not in projects:
            continue
        rows = [
            json.loads(line) for line in (world_dir / project_truth.file).read_text().splitlines()
        ]
        for row in rows:
            if "candidates" not in row:
                continue
            quality = [project_truth.candidates[c["id"]]["quality"] for c in row["candidates"]]
            ranks = [1 + sum(q2 > q for q2 in quality) for q in quality]
            item = ScoringItem(
                prompt_text=row.get("prompt", ""),
                prompt_image=str(world_dir / row["image"]) if row.get("image") else None,
                prompt_video=str(world_dir / row["video"]) if row.get("video") else None,
                candidates=[
                    CandidateInput(
                        kind=c.get("kind", "text"),
                        text=c.get("text", ""),
                        path=str(world_dir / c[c["kind"]])
                        if c.get("kind") in ("image", "video")
                        else None,
                    )
                    for c in row["candidates"]
                ],
            )
            out.append((name, PreferenceExample(item=item, rankings=ranks)))
    return out


def evaluate(scorer, examples: list[tuple[str, PreferenceExample]]) -> EvalReport:
    """Top-1 accuracy (the model's best is a truly best candidate) and mean Kendall tau."""
    results = scorer.score([ex.item for _, ex in examples], mode="packed")
    per: dict[str, list[tuple[float, float, float]]] = {}
    for (name, ex), result in zip(examples, results, strict=True):
        scores = [s if s is not None else -np.inf for s in result.scores]
        top = int(np.argmax(scores))
        hit = 1.0 if ex.rankings[top] == 1 else 0.0
        tau = kendalltau([-r for r in ex.rankings], scores).statistic
        per.setdefault(name, []).append(
            (hit, 0.0 if np.isnan(tau) else float(tau), 1.0 / len(ex.rankings))
        )
    all_rows = [r for rows in per.values() for r in rows]
    return EvalReport(
        prompts=len(all_rows),
        top1_accuracy=round(float(np.mean([r[0] for r in all_rows])), 3),
        chance=round(float(np.mean([r[2] for r in all_rows])), 3),
        kendall_tau=round(float(np.mean([r[1] for r in all_rows])), 3),
        per_project={
            name: {
                "prompts": len(rows),
                "top1_accuracy": round(float(np.mean([r[0] for r in rows])), 3),
                "chance": round(float(np.mean([r[2] for r in rows])), 3),
                "kendall_tau": round(float(np.mean([r[1] for r in rows])), 3),
            }
            for name, rows in per.items()
        },
    )


LABELS = ("colour", "shape", "count", "direction")


def media_labels(
    world_dir: Path, *, projects: list[str] | None = None
) -> list[tuple[str, str, dict[str, str]]]:
    """(kind, path, renderer labels) of every image/video candidate of a demo world.

    The demo renderer records what it drew (colour, shape, count; a video's direction) in the
    world's ground truth; these are the labels the vision tower is pre-trained on.
    """
    truth = load_ground_truth(world_dir)
    out = []
    for name, project_truth in truth.projects.items():
        if projects and name not in projects:
            continue
        rows = [
            json.loads(line) for line in (world_dir / project_truth.file).read_text().splitlines()
        ]
        for row in rows:
            for c in row.get("candidates", []):
                drawn = project_truth.candidates.get(c["id"], {}).get("drawn")
                if c.get("kind") in ("image", "video") and drawn:
                    labels = {k: str(v) for k, v in drawn.items() if k in LABELS}
                    out.append((c["kind"], str(world_dir / c[c["kind"]]), labels))
    return out


def pretrain_vision(
    scorer,  # noqa: ANN001 - a RewardScorer
    train_media: list[tuple[str, str, dict[str, str]]],
    held_out_media: list[tuple[str, str, dict[str, str]]],
    *,
    epochs: int = 10,
    lr: float = 5e-4,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> dict[str, float]:
    """Supervised pre-training of the tiny vision tower on the renderer's own labels.

    A linear probe per label (colour, shape, count, direction) reads the mean of an image's or
    video's merged visual features; the tower, its merger and the probes train with
    cross-entropy (a small learning rate: at 2e-3 the tower memorised the training pictures
    and the probes stayed near chance on held-out ones). Returns the held-out probe accuracy
    per label.
    """
    import torch
    from torch import nn

    backbone = scorer.model.backbone
    builder = scorer.builder
    values = {name: sorted({m[2][name] for m in train_media if name in m[2]}) for name in LABELS}
    values = {name: v for name, v in values.items() if v}
    torch.manual_seed(seed)
    probes = nn.ModuleDict(
        {name: nn.Linear(scorer.model.hidden_size, len(v)) for name, v in values.items()}
    )

    def encoded(media):  # noqa: ANN001, ANN202
        out = []
        for kind, path, labels in media:
            try:
                visual = (
                    builder.encode_image(path) if kind == "image" else builder.encode_video(path)
                )
            except (MediaError, OSError, ValueError) as exc:  # a broken file is skipped
                logger.warning("vision pre-training: skipped %s (%s)", path, exc)
                continue
            out.append((visual, labels))
        return out

    def features(visual) -> torch.Tensor:  # noqa: ANN001
        grid = torch.tensor([visual.grid_thw])
        if visual.kind == "image":
            pooled = backbone.get_image_features(visual.pixel_values, grid).pooler_output
        else:
            pooled = backbone.get_video_features(visual.pixel_values, grid).pooler_output
        return pooled[0].float().mean(0)

    train_set, test_set = encoded(train_media), encoded(held_out_media)
    optimizer = torch.optim.AdamW([*backbone.visual.parameters(), *probes.parameters()], lr=lr)
    rng = random.Random(seed)
    total = epochs * len(train_set)
    step = 0
    for _ in range(epochs):
        order = list(range(len(train_set)))
        rng.shuffle(order)
        for index in order:
            visual, labels = train_set[index]
            feature = features(visual)
            losses = [
                nn.functional.cross_entropy(
                    probes[name](feature)[None], torch.tensor([values[name].index(value)])
                )
                for name, value in labels.items()
                if name in values and value in values[name]
            ]
            if not losses:
                continue
            optimizer.zero_grad()
            sum(losses).backward()
            optimizer.step()
            step += 1
            if on_step is not None:
                on_step(step, total)
    hits: dict[str, list[float]] = {}
    with torch.no_grad():
        for visual, labels in test_set:
            feature = features(visual)
            for name, value in labels.items():
                if name in values:
                    guess = values[name][int(probes[name](feature).argmax())]
                    hits.setdefault(name, []).append(float(guess == value))
    return {name: round(float(np.mean(v)), 3) for name, v in hits.items()}


def train_demo_model(
    *,
    out_dir: Path,
    work_dir: Path,
    eval_world_dir: Path,
    train_seeds: tuple[int, ...] = (101, 102),
    epochs: int = 4,
    projects: list[str] | None = None,
    prompts_per_project: int | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    lr: float = 1e-3,
    seed: int = 0,
    vision_epochs: int = 10,
    media_repr_mode: str = "visual_mean",
    on_progress: Callable[[int, str], None] | None = None,
) -> dict:
    """Trains, evaluates on ``eval_world_dir`` (held out) and saves the seed release layout.

    Returns the metrics written beside the checkpoint (``demo_metrics.json``).
    """
    from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

    def report(percent: int, phase: str) -> None:
        if on_progress is not None:
            on_progress(percent, phase)

    started = time.monotonic()
    report(1, "building training worlds")
    train_examples: list[tuple[str, PreferenceExample]] = []
    corpus: list[str] = []
    for train_seed in train_seeds:
        world_dir = work_dir / f"train-seed{train_seed}-{prompts_per_project or 'all'}"
        if not (world_dir / "ground_truth.json").exists():
            write_world(
                generate_world(seed=train_seed, scale="small", prompts=prompts_per_project),
                world_dir,
            )
        train_examples += examples_from_world(world_dir, projects=projects)
    for _, ex in train_examples:
        corpus.append(ex.item.prompt_text)
        corpus += [c.text for c in ex.item.candidates if c.text]
    held_out = examples_from_world(eval_world_dir, projects=projects)
    tokenizer = build_tiny_tokenizer(corpus, vocab_size=1024)
    scorer = build_tiny_reward_scorer(
        hidden_size=hidden_size,
        num_layers=num_layers,
        seed=seed,
        tokenizer=tokenizer,
        # Image and video answers read from their own visual tokens (see RewardHeadConfig).
        head_config=RewardHeadConfig(media_repr_mode=media_repr_mode),
        **LIMITS,
    )
    report(5, "evaluating the untrained model")
    before = evaluate(scorer, held_out)
    vision_probe: dict[str, float] = {}
    if vision_epochs:
        train_media = [
            m
            for seed_ in train_seeds
            for m in media_labels(
                work_dir / f"train-seed{seed_}-{prompts_per_project or 'all'}", projects=projects
            )
        ]

        def on_vision_step(step: int, total: int) -> None:
            if step % 50 == 0 or step == total:
                report(
                    6 + int(9 * step / max(total, 1)),
                    f"pre-training the vision tower: {step} of {total}",
                )

        vision_probe = pretrain_vision(
            scorer,
            train_media,
            media_labels(eval_world_dir, projects=projects),
            epochs=vision_epochs,
            seed=seed,
            on_step=on_vision_step,
        )
    last = {"percent": -1}

    def on_step(step: int, total: int) -> None:
        percent = 15 + int(75 * step / max(total, 1))
        if percent != last["percent"]:
            last["percent"] = percent
            report(percent, f"training: step {step} of {total}")

    losses = train(
        scorer.model,
        scorer.builder,
        [ex for _, ex in train_examples],
        epochs=epochs,
        batch_size=8,
        lr=lr,
        seed=seed,
        on_step=on_step,
    )
    report(92, "evaluating on held-out prompts")
    after = evaluate(scorer, held_out)
    train_fit = evaluate(scorer, train_examples[: len(held_out)])
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    scorer.save(out_dir)
    metrics = {
        "held_out": asdict(after),
        "held_out_untrained": asdict(before),
        "vision_probe_held_out": vision_probe,
        "media_repr_mode": media_repr_mode,
        "train_subset": asdict(train_fit),
        "train_examples": len(train_examples),
        "epochs": epochs,
        "steps": len(losses),
        "first_loss": round(losses[0], 4) if losses else None,
        "last_loss": round(float(np.mean(losses[-10:])), 4) if losses else None,
        "train_seeds": list(train_seeds),
        "hidden_size": hidden_size,
        "num_layers": num_layers,
        "seconds": round(time.monotonic() - started, 1),
    }
    (out_dir / "demo_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics
