"""The paper's recipe, written for tests from its description (REFERENCE.md), not from Quorum.

"You Only Judge Once" (arXiv 2604.10966) trains a value head on rows built like this: the
processor's chat template over a user turn (image first, then the prompt text) and an assistant
turn holding the responses joined by ``"\\n\\n<|resp_sep|>\\n\\n"``, rendered without a
generation prompt and tokenised as one string; each ``<|image_pad|>`` is expanded to the
image's token count (what ``Qwen2VLProcessor`` does); response k < N is read at the token just
before the k-th ``<|resp_sep|>`` and response N at the final token; the head's output is
divided by sqrt(hidden_size); the loss is the cross-entropy against the rank-1 response.

Nothing here imports Quorum's input builder or scorer: tests compare Quorum against this. The
model is a ``Qwen2VLForConditionalGeneration`` (the class the paper fine-tunes) and the
checkpoint is written in the paper's merged layout: the full model folder, tokenizer, image
processor, ``reward_model_config.json`` and ``value_head.pt``.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

SEP = "\n\n<|resp_sep|>\n\n"


@dataclass
class Sample:
    prompt: str
    responses: list[str]
    rankings: list[int] | None = None
    image: Any = None  # a PIL image


def collate(tokenizer: Any, image_processor: Any, sample: Sample) -> dict[str, Any]:
    """Model inputs and read-out indices for one sample, as the paper's collate builds them."""
    content: list[dict[str, Any]] = []
    if sample.image is not None:
        content.append({"type": "image"})
    content.append({"type": "text", "text": sample.prompt})
    messages = [
        {"role": "user", "content": content},
        {"role": "assistant", "content": [{"type": "text", "text": SEP.join(sample.responses)}]},
    ]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    visual: dict[str, torch.Tensor] = {}
    if sample.image is not None:
        pixels = image_processor(images=[sample.image], return_tensors="pt")
        count = int(pixels["image_grid_thw"][0].prod()) // image_processor.merge_size**2
        text = text.replace("<|image_pad|>", "<|image_pad|>" * count)
        visual = {
            "pixel_values": pixels["pixel_values"],
            "image_grid_thw": pixels["image_grid_thw"],
        }
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    ids = input_ids[0].tolist()
    sep_id = tokenizer.convert_tokens_to_ids("<|resp_sep|>")
    seps = [i for i, token in enumerate(ids) if token == sep_id]
    ends = [s - 1 for s in seps] + [len(ids) - 1]
    image_id = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    return {
        "text": text,
        "input_ids": input_ids,
        "mm_token_type_ids": (input_ids == image_id).int(),
        "ends": ends,
        **visual,
    }


def value_head(hidden: int, width: int = 1024) -> nn.Module:
    head = nn.Sequential(nn.Linear(hidden, width), nn.SiLU(), nn.Linear(width, 1))
    for layer in (head[0], head[2]):
        nn.init.normal_(layer.weight, std=0.01)
        nn.init.zeros_(layer.bias)
    return head


def scores(model: Any, head: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """The paper's forward: last layer's hidden states at the read-out tokens, head, / sqrt(H)."""
    visual = {k: batch[k] for k in ("pixel_values", "image_grid_thw") if k in batch}
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=torch.ones_like(batch["input_ids"]),
        mm_token_type_ids=batch["mm_token_type_ids"],
        output_hidden_states=True,
        use_cache=False,
        **visual,
    )
    hidden = out.hidden_states[-1][0]
    picked = hidden[torch.tensor(batch["ends"])]
    return head(picked.float()).squeeze(-1) / math.sqrt(hidden.shape[-1])


def train(
    model: Any,
    tokenizer: Any,
    image_processor: Any,
    samples: list[Sample],
    *,
    steps: int,
    lr: float = 3e-3,
    seed: int = 0,
) -> tuple[nn.Module, list[float]]:
    """Fine-tune the whole tiny model and a fresh head with the N-way cross-entropy, one
    sample per step, responses shuffled each time (the paper shuffles against position bias)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    head = value_head(model.config.text_config.hidden_size)
    parameters = [*model.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(parameters, lr=lr)
    losses = []
    model.train()
    for step in range(steps):
        sample = samples[step % len(samples)]
        order = list(range(len(sample.responses)))
        rng.shuffle(order)
        shuffled = Sample(
            sample.prompt,
            [sample.responses[i] for i in order],
            [sample.rankings[i] for i in order],  # type: ignore[index]
            sample.image,
        )
        best = min(range(len(order)), key=lambda k: shuffled.rankings[k])  # type: ignore[index]
        batch = collate(tokenizer, image_processor, shuffled)
        loss = nn.functional.cross_entropy(scores(model, head, batch)[None], torch.tensor([best]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss))
    model.eval()
    return head, losses


def save_merged(
    path: Path, model: Any, head: nn.Module, tokenizer: Any, image_processor: Any
) -> Path:
    """The paper's merged release layout."""
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    image_processor.save_pretrained(path)
    config = {
        "value_head_type": "mlp",
        "value_head_hidden_dim": head[0].out_features,
        "value_head_activation": "silu",
        "resp_repr_mode": "last",
    }
    (path / "reward_model_config.json").write_text(json.dumps(config))
    torch.save(head.state_dict(), path / "value_head.pt")
    return path


TRAIN_PROMPTS = [
    "Is the sky blue?",
    "Name a fruit.",
    "Count to three.",
    "Say hello.",
    "What colour is grass?",
    "Which animal barks?",
]
GOOD = "Here is a careful answer."
BAD = "I am not sure."


def train_tiny_checkpoint(path: Path, tokenizer: Any, picture: Any, steps: int = 40) -> tuple:
    """Train a tiny Qwen2-VL by this recipe (text and image prompts) and save it merged.

    Returns:
        (path, model, head, image_processor)
    """
    from transformers import Qwen2VLForConditionalGeneration

    from workers.tiny import tiny_image_processor, tiny_vl_config

    config = tiny_vl_config(tokenizer, hidden_size=64, num_layers=2)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = Qwen2VLForConditionalGeneration(config)
    image_processor = tiny_image_processor()
    rng = random.Random(0)
    samples = []
    for number, prompt in enumerate(TRAIN_PROMPTS):
        responses = [GOOD, BAD, "Maybe.", "No idea at all."]
        rng.shuffle(responses)
        rankings = [1 if r == GOOD else 4 if r == BAD else 2 for r in responses]
        image = picture(seed=number) if number % 2 else None
        samples.append(Sample(prompt, responses, rankings, image))
    head, losses = train(model, tokenizer, image_processor, samples, steps=steps)
    if not losses[-1] < losses[0]:
        raise AssertionError(f"the recipe did not train: {losses[0]} -> {losses[-1]}")
    save_merged(path, model, head, tokenizer, image_processor)
    return path, model, head, image_processor
