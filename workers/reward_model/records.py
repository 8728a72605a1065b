"""Constants, errors and the records scorers take and return."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from PIL import Image
from torch import nn

from workers.media import VideoFrames

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------
# Constants shared with the tokenizer (workers/tiny.py builds tokenizers with these tokens).
# --------------------------------------------------------------------------------------------

RESP_SEP_TOKEN = "<|resp_sep|>"
RESPONSE_SEPARATOR = f"\n\n{RESP_SEP_TOKEN}\n\n"
IM_START, IM_END = "<|im_start|>", "<|im_end|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
PAD_TOKEN = "<|endoftext|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)
# Used only by checkpoints that ship no chat template (the single-response classifier baseline
# saved by older Quorum versions): a user turn and an open assistant turn.
PROMPT_PREFIX = f"{IM_START}user\n"
PROMPT_SUFFIX = f"{IM_END}\n{IM_START}assistant\n"

# The chat template Qwen2-VL and Qwen2.5-VL ship (tokenizer_config.json / chat_template.json):
# a default system turn when the conversation has none, each turn closed with "<|im_end|>\n",
# one "<|vision_start|><|image_pad|><|vision_end|>" per image (video: <|video_pad|>) where the
# content block stands. A reward model's head is trained on rows rendered by it (REFERENCE.md);
# checkpoints that carry their own template use theirs.
QWEN2_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}"
    "{{ message['content'] }}<|im_end|>\n{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}{% if add_vision_id %}Picture "
    "{{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}{% if add_vision_id %}Video "
    "{{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

REWARD_CONFIG_FILE = "reward_model_config.json"
VALUE_HEAD_FILE = "value_head.pt"
LORA_ADAPTER_DIR = "lora_adapter"

SUPPORTED_BACKBONES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "molmo2")
# Backbones with one position axis (plain RoPE) whose images are Molmo2's crops and pooled
# tokens (workers/reward_model/molmo2.py), not Qwen-VL's patches and M-RoPE.
MOLMO2_BACKBONES = ("molmo2",)
VALUE_HEAD_TYPES = ("mlp", "linear")
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "selu": nn.SELU,
    "tanh": nn.Tanh,
}
RESP_REPR_MODES = (
    "last",
    "first",
    "first_last_concat",
    "first_last_add",
    "first_last_sub",
    "response_mean",
)

# How image/video responses are represented: at the paper's read-out token, as the mean of
# their own visual tokens, or that mean times (1 + the prompt's state before the first
# response) (text responses always use resp_repr_mode).
MEDIA_REPR_MODES = ("readout", "visual_mean", "visual_prompt")

AttentionMode = Literal["packed", "isolated", "separate"]
ATTENTION_MODES: tuple[str, ...] = ("packed", "isolated", "separate")

# Segment ids in a row: the prompt, padding, and 0..N-1 for the candidate slots.
_PROMPT_SEGMENT = -1
_PAD_SEGMENT = -2

# The paper's max length. Image and video budgets are not constants: they come from the
# checkpoint's processor configuration (see RewardInputBuilder); these are transformers'
# Qwen2-VL defaults, used only when a checkpoint ships no processor config.
DEFAULT_MAX_LENGTH = 24_576
DEFAULT_IMAGE_MAX_PIXELS = 28 * 28 * 1280
DEFAULT_VIDEO_MAX_PIXELS = 28 * 28 * 768  # per frame
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_FRAMES = 768
DEFAULT_VIDEO_FPS = 2.0
# Where a row holds more candidates than this, or does not fit max_length, packed scoring
# falls back to isolated scoring (or drops the tail, the paper's rule) and says so.
DEFAULT_MAX_PACKED_CANDIDATES = 8
OVERFLOW_POLICIES = ("isolated", "drop")


class CheckpointError(Exception):
    """A reward-model checkpoint is missing, malformed or does not fit its backbone.

    The message names the offending file and the mismatch.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Resolve a device: the one given, else CUDA when available, else CPU.

    Called when a model is loaded, never at import: CUDA must not be initialised before a
    Celery prefork worker forks.
    """
    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


# --------------------------------------------------------------------------------------------
# Public input/output records
# --------------------------------------------------------------------------------------------

MediaRef = str | os.PathLike[str]


@dataclass(frozen=True)
class CandidateInput:
    """One candidate response.

    Attributes:
        kind (`str`): ``"text"``, ``"image"`` or ``"video"``.
        text (`str`): The response text; for image/video candidates an optional caption that
            follows the visual tokens.
        path (`str` or `os.PathLike`, *optional*): The image or video file of a media candidate.
        media (`PIL.Image.Image` or [`~workers.media.VideoFrames`], *optional*): Already
            decoded media, used instead of `path` (benchmarks, playground uploads in memory).
    """

    kind: Literal["text", "image", "video"] = "text"
    text: str = ""
    path: MediaRef | None = None
    media: Image.Image | VideoFrames | None = None


@dataclass(frozen=True)
class ScoringItem:
    """One prompt and its candidates.

    Attributes:
        prompt_text (`str`): The user prompt.
        candidates (`list[CandidateInput]`): The responses to score (N >= 1).
        prompt_image: Image file path, or a decoded `PIL.Image.Image`, shown before the text.
        prompt_video: Video file path, or decoded [`~workers.media.VideoFrames`].
    """

    prompt_text: str
    candidates: Sequence[CandidateInput]
    prompt_image: MediaRef | Image.Image | None = None
    prompt_video: MediaRef | VideoFrames | None = None


@dataclass
class ScoringResult:
    """Scores of one item, aligned with its candidates.

    Attributes:
        scores (`list[float | None]`): Score per candidate; `None` where it could not be scored.
        errors (`list[str | None]`): Why a candidate has no score (corrupt media, too long...).
        error (`str`, *optional*): An item-level failure (e.g. the prompt video is corrupt); then
            every score is `None`.
        layout (`str`): How the scores were computed: ``"packed"`` (all candidates in one row,
            the paper's setting), ``"isolated"`` or ``"separate"``. Scores of one item are
            always comparable with each other.
        note (`str`): Why the layout differs from the one asked for (overflow, too many
            candidates), or which candidates were dropped; empty otherwise.
    """

    scores: list[float | None]
    errors: list[str | None]
    error: str | None = None
    layout: str = ""
    note: str = ""

    @property
    def ok(self) -> bool:
        """Whether every candidate got a score."""
        return self.error is None and all(e is None for e in self.errors)


@dataclass(frozen=True)
class PreferenceExample:
    """A training example: an item and the rank of each candidate (1 = best, ties allowed)."""

    item: ScoringItem
    rankings: Sequence[int]


class Scorer(Protocol):
    """What workers and the playground rely on; both scorer classes below implement it."""

    def score(
        self, items: Sequence[ScoringItem], mode: AttentionMode = "packed"
    ) -> list[ScoringResult]: ...


def best_index_from_rankings(rankings: Sequence[int], rng: random.Random | None = None) -> int:
    """Index of the rank-1 (best) response; ties at the top are broken uniformly at random."""
    top = min(rankings)
    best = [i for i, rank in enumerate(rankings) if rank == top]
    return best[0] if len(best) == 1 else (rng or random).choice(best)


def order_from_rankings(rankings: Sequence[int], rng: random.Random | None = None) -> list[int]:
    """Candidate indices from best to worst; tied ranks in random order (for Plackett-Luce)."""
    rng = rng or random.Random()
    keys = {i: rng.random() for i in range(len(rankings))}
    return sorted(range(len(rankings)), key=lambda i: (rankings[i], keys[i]))
