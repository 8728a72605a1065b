"""Losses, training steps and LoRA for the multi-response reward model."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from workers.reward_model.inputs import (
    RewardInputBuilder,
)
from workers.reward_model.model import (
    MultiResponseRewardModel,
    TrainingBatch,
)
from workers.reward_model.records import (
    AttentionMode,
    PreferenceExample,
)

logger = logging.getLogger(__name__)

# The paper's LoRA targets: the language model's attention and MLP projections.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# --------------------------------------------------------------------------------------------
# Losses and training
# --------------------------------------------------------------------------------------------


def nway_loss(scores: torch.Tensor, best_index: torch.Tensor) -> torch.Tensor:
    """N-way softmax loss: cross-entropy of the scores against the rank-1 response.

    Args:
        scores (`torch.Tensor` of shape `(B, N)`): Scores, `-inf` for empty slots.
        best_index (`torch.LongTensor` of shape `(B,)`): Slot of the best response.
    """
    return F.cross_entropy(scores, best_index)


def plackett_luce_loss(scores: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Plackett-Luce negative log-likelihood of full rankings, averaged over the batch.

    Args:
        scores (`torch.Tensor` of shape `(B, N)`): Scores, `-inf` for empty slots.
        order (`torch.LongTensor` of shape `(B, N)`): Slots best to worst, -1 padded.
    """
    valid = order >= 0
    ranked = torch.gather(scores, 1, order.clamp(min=0))
    # Empty slots must add nothing to the normalisers; a finite floor (not -inf) keeps the
    # gradient of the masked terms from turning into NaN.
    floor = torch.finfo(ranked.dtype).min / 4
    ranked = torch.where(valid, ranked, torch.full_like(ranked, floor))
    remaining = torch.logcumsumexp(ranked.flip(-1), dim=-1).flip(-1)
    terms = torch.where(valid, ranked - remaining, torch.zeros_like(ranked))
    return -(terms.sum(-1)).mean()


def train_step(
    model: MultiResponseRewardModel,
    batch: TrainingBatch,
    optimizer: torch.optim.Optimizer,
    *,
    loss: Literal["nway", "plackett_luce"] = "nway",
    max_grad_norm: float | None = 1.0,
) -> float:
    """One optimisation step; returns the loss value."""
    model.train()
    batch = batch.to(model.device)
    scores = model(batch.inputs)
    if loss == "nway":
        value = nway_loss(scores, batch.best_index)
    elif loss == "plackett_luce":
        value = plackett_luce_loss(scores, batch.order)
    else:
        raise ValueError(f"unknown loss {loss!r}")
    optimizer.zero_grad(set_to_none=True)
    value.backward()
    if max_grad_norm is not None:
        nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], max_grad_norm)
    optimizer.step()
    return float(value.detach())


def train(
    model: MultiResponseRewardModel,
    builder: RewardInputBuilder,
    examples: Sequence[PreferenceExample],
    *,
    epochs: int = 1,
    batch_size: int = 4,
    lr: float = 1e-4,
    mode: AttentionMode = "packed",
    loss: Literal["nway", "plackett_luce"] = "nway",
    seed: int = 0,
    weight_decay: float = 0.0,
    on_step: Callable[[int, int], None] | None = None,
) -> list[float]:
    """Train on preference examples with AdamW (small runs: the demo model, tests).

    Examples are reshuffled each epoch and candidate order within each example is shuffled
    each time it is seen. Examples that cannot be encoded are skipped with a warning.
    ``on_step(step, total_steps)`` is called after each batch (progress reports).

    Returns:
        `list[float]`: The loss of every step.
    """
    if mode == "separate":
        raise ValueError("train in 'packed' or 'isolated' mode; 'separate' has one candidate")
    rng = random.Random(seed)
    torch.manual_seed(seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    losses: list[float] = []
    total_steps = epochs * -(-len(examples) // batch_size)
    step = 0
    for _ in range(epochs):
        order = list(range(len(examples)))
        rng.shuffle(order)
        for start in range(0, len(order), batch_size):
            step += 1
            if on_step is not None:
                on_step(step, total_steps)
            chunk = [examples[i] for i in order[start : start + batch_size]]
            batch, skipped = builder.training_batch(chunk, mode=mode, rng=rng)
            for reason in skipped:
                logger.warning("training: skipped %s", reason)
            if batch is None:
                continue
            losses.append(train_step(model, batch, optimizer, loss=loss))
    model.eval()
    return losses


def apply_lora(
    model: MultiResponseRewardModel,
    *,
    r: int = 128,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] = LORA_TARGETS,
) -> MultiResponseRewardModel:
    """Wrap the language model's attention and MLP projections with LoRA (the paper's
    defaults: r 128, alpha 16, dropout 0.05).

    The backbone's own weights are frozen; the LoRA weights and the value head train.
    Vision-tower projections are left alone (their names differ: ``qkv``, ``proj``).
    """
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        # Match only the language model's layers, not the vision blocks.
        target_modules=rf".*language_model.*\.({'|'.join(target_modules)})$",
    )
    model.backbone = get_peft_model(model.backbone, config)
    for parameter in model.value_head.parameters():
        parameter.requires_grad_(True)
    return model


# --------------------------------------------------------------------------------------------
# The paper's training recipe: LoRA + value head, accumulation, schedule, checkpoints
# --------------------------------------------------------------------------------------------

STATE_FILE = "training_state.pt"


@dataclass
class FitConfig:
    """Training settings; the defaults are the paper's (REFERENCE.md).

    Attributes:
        epochs, lr: 3 epochs at 1e-4 with a linear schedule after `warmup_ratio` of warm-up.
        batch_size, grad_accum: Examples per forward pass and passes per optimiser step
            (global batch 64 = 1 x 64).
        loss: ``"nway"`` (cross-entropy against the rank-1 response) or ``"plackett_luce"``.
        lora_r, lora_alpha, lora_dropout, lora_targets: LoRA on the language model's attention
            and MLP projections; `lora_r` 0 trains the whole backbone.
        gradient_checkpointing: Recompute activations in the backward pass (memory for time).
        bf16: Autocast to bfloat16 on CUDA (ignored on CPU).
        checkpoint_every: Optimiser steps between resumable checkpoints (0: none).
    """

    epochs: int = 3
    lr: float = 1e-4
    batch_size: int = 1
    grad_accum: int = 64
    warmup_ratio: float = 0.03
    loss: Literal["nway", "plackett_luce"] = "nway"
    lora_r: int = 128
    lora_alpha: int = 16
    lora_dropout: float = 0.05
    lora_targets: tuple[str, ...] = LORA_TARGETS
    gradient_checkpointing: bool = True
    bf16: bool = True
    max_grad_norm: float = 1.0
    checkpoint_every: int = 0
    seed: int = 0

    def problems(self) -> list[str]:
        found = []
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                found.append(f"{name} must be at least 1")
        if not self.lr > 0:
            found.append("lr must be positive")
        if self.loss not in ("nway", "plackett_luce"):
            found.append(f"unknown loss {self.loss!r} (nway or plackett_luce)")
        if self.lora_r < 0:
            found.append("lora_r must be 0 (full fine-tuning) or positive")
        return found


def example_modality(example: PreferenceExample) -> str:
    """``video`` if the prompt or a candidate is a video, else ``image``, else ``text``."""
    item = example.item
    kinds = {c.kind for c in item.candidates}
    if item.prompt_video is not None or "video" in kinds:
        return "video"
    if item.prompt_image is not None or "image" in kinds:
        return "image"
    return "text"


def modality_batches(
    examples: Sequence[PreferenceExample], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Example indices in batches of one modality each (the paper's sampler), shuffled."""
    buckets: dict[str, list[int]] = {}
    for index, example in enumerate(examples):
        buckets.setdefault(example_modality(example), []).append(index)
    batches = []
    for indices in buckets.values():
        rng.shuffle(indices)
        batches += [indices[i : i + batch_size] for i in range(0, len(indices), batch_size)]
    rng.shuffle(batches)
    return batches


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: parameter.detach().cpu().clone()
        for name, parameter in model.named_parameters()
        if parameter.requires_grad
    }


def fit(
    model: MultiResponseRewardModel,
    builder: RewardInputBuilder,
    examples: Sequence[PreferenceExample],
    config: FitConfig | None = None,
    *,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    on_step: Callable[[int, int, float], None] | None = None,
) -> dict[str, Any]:
    """Train `model` on `examples` with the paper's recipe; resumable.

    LoRA is applied unless the backbone already has it (or `lora_r` is 0). Every optimiser step
    averages `grad_accum` forward passes of `batch_size` examples of one modality; candidate
    order is shuffled per pass. With `checkpoint_dir`, the trainable weights, optimiser,
    schedule, position and random states are written there every `checkpoint_every` steps,
    and a later call with the same arguments resumes from the last one.

    Returns:
        ``{"losses": [per optimiser step], "steps", "skipped", "resumed_from"}``.
    """
    config = config or FitConfig()
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    from transformers import get_linear_schedule_with_warmup

    # LoRA's initialisation and dropout draw from torch's generator: seeded, a run (and a
    # resumed run) is reproducible.
    torch.manual_seed(config.seed)
    if config.lora_r and not _has_lora(model):
        apply_lora(
            model,
            r=config.lora_r,
            alpha=config.lora_alpha,
            dropout=config.lora_dropout,
            target_modules=config.lora_targets,
        )
    if config.gradient_checkpointing:
        model.backbone.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": False}
        )
    device = model.device
    autocast = config.bf16 and device.type == "cuda"
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=config.lr)
    per_epoch = -(-len(examples) // config.batch_size)
    total = max(1, config.epochs * -(-per_epoch // config.grad_accum))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(config.warmup_ratio * total), total)
    state = {"step": 0, "epoch": 0, "batch": 0, "losses": [], "skipped": 0}
    resumed_from = None
    state_file = Path(checkpoint_dir) / STATE_FILE if checkpoint_dir else None
    if state_file is not None and state_file.is_file():
        saved = torch.load(state_file, map_location="cpu", weights_only=False)
        named = dict(model.named_parameters())
        with torch.no_grad():
            for name, tensor in saved["trainable"].items():
                named[name].copy_(tensor)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["state"]
        random.setstate(saved["python_rng"])
        torch.set_rng_state(saved["torch_rng"])
        resumed_from = state["step"]

    def save_state() -> None:
        assert state_file is not None
        state_file.parent.mkdir(parents=True, exist_ok=True)
        partial = state_file.with_suffix(".tmp")
        torch.save(
            {
                "trainable": _trainable_state(model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "state": state,
                "python_rng": random.getstate(),
                "torch_rng": torch.get_rng_state(),
            },
            partial,
        )
        os.replace(partial, state_file)

    model.train()
    optimizer.zero_grad(set_to_none=True)
    window: list[float] = []
    for epoch in range(state["epoch"], config.epochs):
        # The batch order of an epoch depends only on the seed and the epoch: a resumed run
        # skips the batches it had done and sees the same rest.
        batches = modality_batches(examples, config.batch_size, random.Random(config.seed + epoch))
        for number in range(state["batch"] if epoch == state["epoch"] else 0, len(batches)):
            rng = random.Random(f"{config.seed}:{epoch}:{number}")
            chunk = [examples[i] for i in batches[number]]
            batch, skipped = builder.training_batch(chunk, mode="packed", rng=rng)
            state["skipped"] += len(skipped)
            for reason in skipped:
                logger.warning("training: skipped %s", reason)
            if batch is not None:
                batch = batch.to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                    scores = model(batch.inputs)
                if config.loss == "nway":
                    value = nway_loss(scores.float(), batch.best_index)
                else:
                    value = plackett_luce_loss(scores.float(), batch.order)
                (value / config.grad_accum).backward()
                window.append(float(value.detach()))
            last_of_epoch = number == len(batches) - 1
            if (number + 1) % config.grad_accum == 0 or last_of_epoch:
                if window:
                    nn.utils.clip_grad_norm_(parameters, config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad(set_to_none=True)
                    state["step"] += 1
                    state["losses"].append(sum(window) / len(window))
                    window = []
                    if on_step is not None:
                        on_step(state["step"], total, state["losses"][-1])
                state["epoch"], state["batch"] = (
                    (epoch + 1, 0) if last_of_epoch else (epoch, number + 1)
                )
                if (
                    state_file is not None
                    and config.checkpoint_every
                    and state["step"] % config.checkpoint_every == 0
                ):
                    save_state()
    if config.gradient_checkpointing:
        model.backbone.gradient_checkpointing_disable()
    model.eval()
    return {
        "losses": list(state["losses"]),
        "steps": state["step"],
        "skipped": state["skipped"],
        "resumed_from": resumed_from,
    }


def _has_lora(model: MultiResponseRewardModel) -> bool:
    return any("lora_" in name for name, _ in model.backbone.named_parameters())


def held_out_report(scorer: Any, examples: Sequence[PreferenceExample]) -> dict[str, Any]:
    """Top-1 accuracy (the model's best is a rank-1 candidate), chance, and mean Kendall tau
    against the human ranking, for all examples and per candidate kind (text/image/video)."""
    from scipy.stats import kendalltau

    results = scorer.score([example.item for example in examples], mode="packed")
    rows: dict[str, list[tuple[float, float, float]]] = {}
    for example, result in zip(examples, results, strict=True):
        scored = [s if s is not None else float("-inf") for s in result.scores]
        if all(s == float("-inf") for s in scored):
            continue
        top = max(range(len(scored)), key=scored.__getitem__)
        hit = 1.0 if example.rankings[top] == min(example.rankings) else 0.0
        best = sum(1 for r in example.rankings if r == min(example.rankings))
        tau = kendalltau([-r for r in example.rankings], scored).statistic
        row = (hit, best / len(example.rankings), 0.0 if tau != tau else float(tau))
        kinds = {c.kind for c in example.item.candidates}
        kind = "video" if "video" in kinds else "image" if "image" in kinds else "text"
        rows.setdefault(kind, []).append(row)
        rows.setdefault("all", []).append(row)

    def summary(values: list[tuple[float, float, float]]) -> dict[str, float]:
        count = len(values)
        return {
            "prompts": count,
            "top1_accuracy": round(sum(v[0] for v in values) / count, 4),
            "chance": round(sum(v[1] for v in values) / count, 4),
            "kendall_tau": round(sum(v[2] for v in values) / count, 4),
        }

    return {kind: summary(values) for kind, values in rows.items()}
