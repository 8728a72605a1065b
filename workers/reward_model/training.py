"""Losses, training steps and LoRA for the multi-response reward model."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from typing import Literal

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
    target_modules: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
) -> MultiResponseRewardModel:
    """Wrap the language model's attention projections with LoRA (the release's defaults).

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
