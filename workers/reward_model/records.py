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
PROMPT_PREFIX = f"{IM_START}user\n"
PROMPT_SUFFIX = f"{IM_END}\n{IM_START}assistant\n"

REWARD_CONFIG_FILE = "reward_model_config.json"
VALUE_HEAD_FILE = "value_head.pt"
LORA_ADAPTER_DIR = "lora_adapter"

SUPPORTED_BACKBONES = ("qwen2_vl", "qwen2_5_vl")
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

AttentionMode = Literal["packed", "isolated", "separate"]
ATTENTION_MODES: tuple[str, ...] = ("packed", "isolated", "separate")

# Segment ids in a row: the prompt, padding, and 0..N-1 for the candidate slots.
_PROMPT_SEGMENT = -1
_PAD_SEGMENT = -2

# Limits chosen for CPU workers and the demo; a release model on GPU raises them.
DEFAULT_MAX_LENGTH = 24_576
DEFAULT_IMAGE_MAX_PIXELS = 448 * 448  # 256 visual tokens at patch 14, merge 2
DEFAULT_VIDEO_MAX_PIXELS = 224 * 224  # per frame: 64 visual tokens per temporal pair
DEFAULT_MIN_PIXELS = 56 * 56
DEFAULT_MAX_FRAMES = 8


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
    """

    scores: list[float | None]
    errors: list[str | None]
    error: str | None = None

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
