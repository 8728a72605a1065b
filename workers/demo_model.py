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
from typing import TYPE_CHECKING

import numpy as np
from scipy.stats import kendalltau

from annotate.demo_world import (
    PROJECT_T2I,
    PROJECT_T2V,
    T2I_WEIGHTS,
    T2V_WEIGHTS,
    generate_world,
    load_ground_truth,
    write_world,
)
from workers.media import MediaError
from workers.reward_model import (
    CandidateInput,
    PreferenceExample,
    RewardHeadConfig,
    ScoringItem,
    train,
)

if TYPE_CHECKING:
    from workers.reward_model.media_cache import MediaStore

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


# The attributes a text-to-image / text-to-video prompt asks for, with their weights in the
# renderer's hidden quality (the rest of the weight is how clean the rendering is).
MEDIA_PROMPT_WEIGHTS = {PROJECT_T2I: T2I_WEIGHTS, PROJECT_T2V: T2V_WEIGHTS}


def regrouped_media_examples(
    world_dir: Path, *, per_prompt: int, seed: int = 0, projects: list[str] | None = None
) -> list[tuple[str, PreferenceExample]]:
    """Extra training groups for the media projects, drawn from the renderer's own labels.

    Each text-to-image (text-to-video) prompt is paired `per_prompt` times with 4 (3) pictures
    (clips) of the world's other prompts, each chosen to agree with the prompt on a random
    subset of the asked attributes; every candidate's quality is the renderer's formula
    (weights of the attributes it gets right, plus cleanliness), so the ranking follows the
    same rule as the world's own: more comparisons of the same kind from the same pictures.
    Not in the default recipe: with the alignment stage it did not help (bench/README.md).
    """
    truth = load_ground_truth(world_dir)
    rng = random.Random(seed)
    out: list[tuple[str, PreferenceExample]] = []
    for name, weights in MEDIA_PROMPT_WEIGHTS.items():
        project_truth = truth.projects.get(name)
        if project_truth is None or (projects and name not in projects):
            continue
        asked = [a for a in weights if a != "clean"]
        kind = "image" if name == PROJECT_T2I else "video"
        size = 4 if kind == "image" else 3
        rows = [
            row
            for line in (world_dir / project_truth.file).read_text().splitlines()
            if "candidates" in (row := json.loads(line))
        ]
        paths = {c["id"]: str(world_dir / c[kind]) for row in rows for c in row["candidates"]}
        pool = [
            (cid, c["drawn"], c["artefact"])
            for cid, c in project_truth.candidates.items()
            if cid in paths and "drawn" in c
        ]
        for row in rows:
            wanted = project_truth.prompts[row["id"]]
            for _ in range(per_prompt):
                chosen, quality = [], []
                for _ in range(size):
                    agree = {a for a in asked if rng.random() < 0.5}
                    fits = [
                        p
                        for p in pool
                        if p[0] not in chosen
                        and all((p[1][a] == wanted[a]) == (a in agree) for a in asked)
                    ]
                    cid, drawn, artefact = rng.choice(
                        fits or [p for p in pool if p[0] not in chosen]
                    )
                    chosen.append(cid)
                    quality.append(
                        sum(weights[a] for a in asked if drawn[a] == wanted[a])
                        + weights["clean"] * (1 - artefact)
                    )
                ranks = [1 + sum(q2 > q for q2 in quality) for q in quality]
                item = ScoringItem(
                    prompt_text=row["prompt"],
                    candidates=[CandidateInput(kind=kind, path=paths[c]) for c in chosen],
                )
                out.append((name, PreferenceExample(item=item, rankings=ranks)))
    return out


def widen_merger(scorer, *, std: float = 0.2, seed: int = 0) -> None:  # noqa: ANN001
    """Re-initialises the tiny vision tower's merger (its two linear layers) at `std`.

    At the configs' 0.02-std initialisation the merged features of two different pictures
    differ by about 0.0045 around a shared 0.021 (bench/README.md): the language model sees
    nearly the same tokens for every picture, and a reward model asked which picture matches
    a caption stays at chance. From 0.2 the differences survive (a two-colour matching task
    is learnt in 64 examples; at 0.1 and below it is not).
    """
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 2)
        for module in scorer.model.backbone.visual.merger.modules():
            if isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=std)


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


def media_prompts(
    world_dir: Path, *, projects: list[str] | None = None
) -> list[tuple[ScoringItem, dict[str, str], list[dict[str, str]]]]:
    """(item, what the prompt asks for, what each candidate shows) for every text-to-image and
    text-to-video prompt of a demo world, from the renderer's labels."""
    truth = load_ground_truth(world_dir)
    out = []
    for name in MEDIA_PROMPT_WEIGHTS:
        project_truth = truth.projects.get(name)
        if project_truth is None or (projects and name not in projects):
            continue
        for line in (world_dir / project_truth.file).read_text().splitlines():
            row = json.loads(line)
            if "candidates" not in row:
                continue
            kind = row["candidates"][0]["kind"]
            asked = project_truth.prompts[row["id"]]
            item = ScoringItem(
                prompt_text=row["prompt"],
                candidates=[
                    CandidateInput(kind=kind, path=str(world_dir / c[kind]))
                    for c in row["candidates"]
                ],
            )
            drawn = [project_truth.candidates[c["id"]]["drawn"] for c in row["candidates"]]
            out.append(
                (
                    item,
                    {k: str(v) for k, v in asked.items() if k in LABELS},
                    [{k: str(v) for k, v in d.items() if k in LABELS} for d in drawn],
                )
            )
    return out


def pretrain_matching(
    scorer,  # noqa: ANN001 - a RewardScorer
    prompts: list[tuple[ScoringItem, dict[str, str], list[dict[str, str]]]],
    *,
    epochs: int = 4,
    lr: float = 1e-3,
    batch_size: int = 4,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Aligns what the reward model's media read-out compares: the prompt's state and each
    answer's visual tokens, through the whole model as it scores.

    One linear probe per label (colour, shape, count, direction) is shared by both sides: on a
    row laid out as the reward model scores it, the probe reads the label the prompt asks for
    from the hidden state before the first answer, and the label each picture or clip shows
    from the mean of its visual tokens' final hidden states. A word and a picture of the same
    colour then point the same way, which is what the ``visual_prompt`` read-out (their
    product) needs to tell a matching answer from one that is not. Returns the loss per step.
    """
    import torch
    from torch import nn

    model = scorer.model
    builder = scorer.builder
    values: dict[str, list[str]] = {}
    for _, asked, drawn in prompts:
        for labels in (asked, *drawn):
            for name, value in labels.items():
                values.setdefault(name, [])
                if value not in values[name]:
                    values[name].append(value)
    torch.manual_seed(seed)
    probes = nn.ModuleDict({n: nn.Linear(model.hidden_size, len(v)) for n, v in values.items()})
    optimizer = torch.optim.AdamW([*model.backbone.parameters(), *probes.parameters()], lr=lr)
    rng = random.Random(seed)
    total = epochs * -(-len(prompts) // batch_size)
    losses: list[float] = []
    model.train()
    for _ in range(epochs):
        order = list(range(len(prompts)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            chosen = [prompts[i] for i in order[start : start + batch_size]]
            rows, targets = [], []
            for item, asked, drawn in chosen:
                plan = builder.plan(0, builder.encode_item(item), "packed")
                if plan.error or len(plan.rows) != 1:
                    continue
                rows.append(plan.rows[0])
                targets.append((asked, drawn))
            if not rows:
                continue
            batch = builder.collate(rows, "packed").to(model.device)
            hidden = model.backbone(
                input_ids=batch.input_ids,
                attention_mask=(batch.segment_ids != -2).long(),
                position_ids=batch.position_ids,
                mm_token_type_ids=batch.mm_token_type_ids,
                pixel_values=batch.pixel_values,
                image_grid_thw=batch.image_grid_thw,
                pixel_values_videos=batch.pixel_values_videos,
                video_grid_thw=batch.video_grid_thw,
                use_cache=False,
            ).last_hidden_state.float()
            visual = batch.mm_token_type_ids != 0
            terms = []
            for r, (row, (asked, drawn)) in enumerate(zip(rows, targets, strict=True)):
                prompt_state = hidden[r, row.slots[0][1] - 1]
                for name, value in asked.items():
                    terms.append((probes[name](prompt_state), values[name].index(value)))
                for candidate, first, last in row.slots:
                    inside = visual[r, first : last + 1]
                    if not bool(inside.any()):
                        continue
                    mean = hidden[r, first : last + 1][inside].mean(0)
                    for name, value in drawn[candidate].items():
                        terms.append((probes[name](mean), values[name].index(value)))
            loss = sum(
                nn.functional.cross_entropy(logits[None], torch.tensor([target]))
                for logits, target in terms
            ) / len(terms)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses), total)
    model.eval()
    return losses


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
    media_repr_mode: str = "visual_prompt",
    regrouped_per_prompt: int = 0,
    merger_init_std: float | None = 0.2,
    matching_epochs: int = 15,
    on_progress: Callable[[int, str], None] | None = None,
    media_store: MediaStore | None = None,
) -> dict:
    """Trains, evaluates on ``eval_world_dir`` (held out) and saves the seed release layout.

    The recipe: the vision tower's merger widened (`merger_init_std`, see [`widen_merger`]);
    the tower pre-trained on the renderer's labels (`vision_epochs`); prompt and pictures
    aligned through the whole model on the same labels (`matching_epochs`, see
    [`pretrain_matching`]); then reward training on the worlds' prompts, media answers read
    out with `media_repr_mode`. `regrouped_per_prompt` adds that many regrouped media groups
    per media prompt (see [`regrouped_media_examples`]; measured, not in the default recipe).

    With `media_store` (a [`MediaStore`], the workers'), the held-out evaluation decodes the
    eval world's pictures and clips into it: the demo projects hold the same files, so their
    first scoring run by the saved model (same media settings) reads them decoded instead of
    decoding each file a second time.

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
    regrouped = [
        example
        for train_seed in train_seeds
        for example in regrouped_media_examples(
            work_dir / f"train-seed{train_seed}-{prompts_per_project or 'all'}",
            per_prompt=regrouped_per_prompt,
            seed=seed + train_seed,
            projects=projects,
        )
    ]
    scorer = build_tiny_reward_scorer(
        hidden_size=hidden_size,
        num_layers=num_layers,
        seed=seed,
        tokenizer=tokenizer,
        # Image and video answers read from their own visual tokens (see RewardHeadConfig).
        head_config=RewardHeadConfig(media_repr_mode=media_repr_mode),
        **LIMITS,
    )
    if merger_init_std:
        widen_merger(scorer, std=merger_init_std, seed=seed)

    def evaluate_held_out():  # noqa: ANN202
        # Only the held-out files go to the store (the training worlds' are not scored later).
        kept = scorer.builder.media_store
        if media_store is not None:
            scorer.builder.media_store = media_store
        try:
            return evaluate(scorer, held_out)
        finally:
            scorer.builder.media_store = kept

    report(5, "evaluating the untrained model")
    before = evaluate_held_out()
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
    matching_losses: list[float] = []
    if matching_epochs:

        def on_matching_step(step: int, total: int) -> None:
            if step % 20 == 0 or step == total:
                report(
                    15 + int(10 * step / max(total, 1)),
                    f"aligning prompts and pictures: {step} of {total}",
                )

        matching_losses = pretrain_matching(
            scorer,
            [
                m
                for seed_ in train_seeds
                for m in media_prompts(
                    work_dir / f"train-seed{seed_}-{prompts_per_project or 'all'}",
                    projects=projects,
                )
            ],
            epochs=matching_epochs,
            seed=seed,
            on_step=on_matching_step,
        )
    last = {"percent": -1}

    def on_step(step: int, total: int) -> None:
        percent = 25 + int(65 * step / max(total, 1))
        if percent != last["percent"]:
            last["percent"] = percent
            report(percent, f"training: step {step} of {total}")

    losses = train(
        scorer.model,
        scorer.builder,
        [ex for _, ex in train_examples + regrouped],
        epochs=epochs,
        batch_size=8,
        lr=lr,
        seed=seed,
        on_step=on_step,
    )
    report(92, "evaluating on held-out prompts")
    after = evaluate_held_out()
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
        "regrouped_examples": len(regrouped),
        "matching_loss": [
            round(v, 3) for v in matching_losses[:: max(1, len(matching_losses) // 8)]
        ],
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
