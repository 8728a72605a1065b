"""Multi-response reward model: score N candidate responses to one prompt in one forward pass.

The input is the prompt (optionally with an image and/or a video) followed by the N responses
joined by ``"\\n\\n<|resp_sep|>\\n\\n"``. Each response is represented by the backbone's hidden
state at its last token, and a small value head maps that to a score ("You Only Judge Once",
arXiv 2604.10966). Three attention modes are offered:

- ``"packed"``: plain causal attention over the whole sequence. Response k sees responses
  1..k-1, so training shuffles candidate order. Cheapest; the paper's setting.
- ``"isolated"``: a 4D attention mask lets each response attend only to the prompt and to
  itself, with position ids restarted after the prompt, so every score equals the score of a
  separate prompt+response pass while the prompt is still encoded once.
- ``"separate"``: one pass per candidate (the baseline the packed modes are measured against).

This module is a pure core (torch, transformers, peft, numpy, Pillow via ``workers.media``):
no Django, no Celery. Workers and the playground call :func:`load_reward_model` and
:meth:`RewardScorer.score`; tests, the demo and benchmarks build tiny models with
``workers.tiny``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from workers.media import MediaError, VideoFrames, load_image, sample_video_frames

logger = logging.getLogger(__name__)

__all__ = [
    "CandidateInput",
    "CheckpointError",
    "MultiResponseRewardModel",
    "PreferenceExample",
    "RewardBatch",
    "RewardHeadConfig",
    "RewardInputBuilder",
    "RewardScorer",
    "ScoringItem",
    "ScoringResult",
    "Scorer",
    "SequenceClassificationScorer",
    "TrainingBatch",
    "apply_lora",
    "best_index_from_rankings",
    "isolated_attention_mask",
    "load_reward_model",
    "nway_loss",
    "order_from_rankings",
    "patchify_video_frames",
    "pick_device",
    "plackett_luce_loss",
    "save_reward_model",
    "train",
    "train_step",
]

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


# --------------------------------------------------------------------------------------------
# Value head and model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RewardHeadConfig:
    """Value-head settings, stored as ``reward_model_config.json`` in the seed release layout.

    Attributes:
        value_head_type (`str`): ``"mlp"`` (Linear -> act -> Linear) or ``"linear"``.
        value_head_hidden_dim (`int`, *optional*): Width of the MLP's hidden layer (defaults to
            the input size when `None`).
        value_head_activation (`str`): One of ``silu``, ``gelu``, ``relu``, ``selu``, ``tanh``.
        resp_repr_mode (`str`): How a response is summarised: ``last`` token (default),
            ``first``, ``first_last_concat``/``add``/``sub``, or ``response_mean``.
    """

    value_head_type: str = "mlp"
    value_head_hidden_dim: int | None = 1024
    value_head_activation: str = "silu"
    resp_repr_mode: str = "last"

    def problems(self) -> list[str]:
        """Every invalid field, described; empty when the config is valid."""
        found = []
        if self.value_head_type not in VALUE_HEAD_TYPES:
            found.append(
                f"unknown value_head_type {self.value_head_type!r} (expected one of "
                f"{', '.join(VALUE_HEAD_TYPES)})"
            )
        if self.value_head_type == "mlp" and self.value_head_activation.lower() not in ACTIVATIONS:
            found.append(
                f"unknown value_head_activation {self.value_head_activation!r} (expected one "
                f"of {', '.join(ACTIVATIONS)})"
            )
        if self.resp_repr_mode not in RESP_REPR_MODES:
            found.append(
                f"unknown resp_repr_mode {self.resp_repr_mode!r} (expected one of "
                f"{', '.join(RESP_REPR_MODES)})"
            )
        hidden = self.value_head_hidden_dim
        if hidden is not None and (not isinstance(hidden, int) or hidden < 1):
            found.append(f"value_head_hidden_dim must be a positive integer, got {hidden!r}")
        return found

    def head_input_dim(self, hidden_size: int) -> int:
        """Input width of the head for a backbone of `hidden_size`."""
        return 2 * hidden_size if self.resp_repr_mode == "first_last_concat" else hidden_size

    def to_dict(self) -> dict[str, Any]:
        """The JSON form written to ``reward_model_config.json``."""
        return {
            "value_head_type": self.value_head_type,
            "value_head_hidden_dim": self.value_head_hidden_dim,
            "value_head_activation": self.value_head_activation,
            "resp_repr_mode": self.resp_repr_mode,
        }


def build_value_head(input_dim: int, config: RewardHeadConfig) -> nn.Module:
    """Build the value head, initialised N(0, 0.01) with zero biases.

    The module layout matches the released checkpoints: an `nn.Sequential` (keys ``0.*`` and
    ``2.*``) for ``mlp``, a bare `nn.Linear` for ``linear``.
    """
    problems = config.problems()
    if problems:
        raise ValueError("; ".join(problems))
    if config.value_head_type == "linear":
        head: nn.Module = nn.Linear(input_dim, 1)
    else:
        hidden = config.value_head_hidden_dim or input_dim
        activation = ACTIVATIONS[config.value_head_activation.lower()]
        head = nn.Sequential(nn.Linear(input_dim, hidden), activation(), nn.Linear(hidden, 1))
    for module in head.modules():
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
    return head


def _text_config(config: Any) -> Any:
    return getattr(config, "text_config", None) or config


def backbone_hidden_size(backbone: nn.Module) -> int:
    """Hidden size of the language model inside a (possibly LoRA-wrapped) VL backbone."""
    return int(_text_config(backbone.config).hidden_size)


@dataclass
class RewardBatch:
    """Model inputs for a batch of rows (a row = a prompt followed by 1..N candidates).

    Attributes:
        input_ids (`torch.LongTensor` of shape `(B, L)`): Right-padded token ids.
        segment_ids (`torch.LongTensor` of shape `(B, L)`): -1 prompt, -2 padding, k for the
            tokens of candidate slot k (including the separator that follows it).
        position_ids (`torch.LongTensor` of shape `(3, B, L)`): M-RoPE positions (temporal,
            height, width); in isolated mode every slot restarts right after the prompt.
        mm_token_type_ids (`torch.IntTensor` of shape `(B, L)`): 0 text, 1 image, 2 video.
        response_starts / response_ends (`torch.LongTensor` of shape `(B, N)`): index of the
            first / last token of each slot's response, -1 for empty slots.
        mode (`str`): The attention mode the rows were laid out for.
        pixel_values, image_grid_thw, pixel_values_videos, video_grid_thw: Visual inputs in
            order of appearance (row-major), `None` when absent.
    """

    input_ids: torch.Tensor
    segment_ids: torch.Tensor
    position_ids: torch.Tensor
    mm_token_type_ids: torch.Tensor
    response_starts: torch.Tensor
    response_ends: torch.Tensor
    mode: str
    pixel_values: torch.Tensor | None = None
    image_grid_thw: torch.Tensor | None = None
    pixel_values_videos: torch.Tensor | None = None
    video_grid_thw: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> RewardBatch:
        """A copy with every tensor on `device`."""
        moved = {
            name: (value.to(device) if isinstance(value, torch.Tensor) else value)
            for name, value in self.__dict__.items()
        }
        return RewardBatch(**moved)

    @property
    def num_tokens(self) -> int:
        """Non-padding tokens in the batch."""
        return int((self.segment_ids != _PAD_SEGMENT).sum())


def isolated_attention_mask(segment_ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive 4D mask for isolated mode: causal, and a candidate sees only prompt + itself.

    Args:
        segment_ids (`torch.LongTensor` of shape `(B, L)`): See [`RewardBatch`].
        dtype (`torch.dtype`): The backbone's compute dtype.

    Returns:
        `torch.Tensor` of shape `(B, 1, L, L)`: 0 where attention is allowed, the dtype's
        minimum elsewhere (works for both the eager and the SDPA attention paths).
    """
    length = segment_ids.shape[1]
    device = segment_ids.device
    query = segment_ids[:, :, None]
    key = segment_ids[:, None, :]
    causal = torch.ones(length, length, dtype=torch.bool, device=device).tril()
    allowed = causal & ((key == _PROMPT_SEGMENT) | (key == query)) & (key != _PAD_SEGMENT)
    # Padding queries see nothing else; letting them see themselves keeps softmax finite.
    allowed |= torch.eye(length, dtype=torch.bool, device=device)
    mask = torch.zeros(allowed.shape, dtype=dtype, device=device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


class MultiResponseRewardModel(nn.Module):
    """A vision-language backbone plus a value head scoring every response of a row.

    Args:
        backbone (`PreTrainedModel`): A Qwen2-VL-family base model (``Qwen2VLModel`` or
            ``Qwen2_5_VLModel``, optionally wrapped by peft) returning `last_hidden_state`.
        head_config ([`RewardHeadConfig`], *optional*): Value-head settings.

    The head runs in float32 whatever the backbone dtype: it is tiny, and the score
    differences that rank candidates are small.
    """

    def __init__(self, backbone: nn.Module, head_config: RewardHeadConfig | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head_config = head_config or RewardHeadConfig()
        self.hidden_size = backbone_hidden_size(backbone)
        self.value_head = build_value_head(
            self.head_config.head_input_dim(self.hidden_size), self.head_config
        )
        self.scale = math.sqrt(self.hidden_size)

    @property
    def device(self) -> torch.device:
        return next(self.backbone.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.backbone.parameters()).dtype

    @property
    def model_type(self) -> str:
        return str(self.backbone.config.model_type)

    def forward(self, batch: RewardBatch) -> torch.Tensor:
        """Score every candidate slot of `batch`.

        Returns:
            `torch.FloatTensor` of shape `(B, N)`: float32 scores, `-inf` for empty slots.
        """
        if batch.mode == "isolated":
            attention_mask = isolated_attention_mask(batch.segment_ids, self.dtype)
        elif bool((batch.segment_ids == _PAD_SEGMENT).any()):
            attention_mask = (batch.segment_ids != _PAD_SEGMENT).long()
        else:
            # No padding: let the backbone take its plain causal path (SDPA is_causal).
            attention_mask = None
        visual_inputs = {
            name: value
            for name in ("pixel_values", "image_grid_thw", "pixel_values_videos", "video_grid_thw")
            if (value := getattr(batch, name)) is not None
        }
        outputs = self.backbone(
            input_ids=batch.input_ids,
            attention_mask=attention_mask,
            position_ids=batch.position_ids,
            mm_token_type_ids=batch.mm_token_type_ids,
            use_cache=False,
            **visual_inputs,
        )
        return self.score_hidden_states(
            outputs.last_hidden_state, batch.response_starts, batch.response_ends
        )

    def score_hidden_states(
        self, hidden: torch.Tensor, starts: torch.Tensor, ends: torch.Tensor
    ) -> torch.Tensor:
        """Apply the response representation and value head to backbone hidden states.

        Args:
            hidden (`torch.Tensor` of shape `(B, L, H)`): Last hidden states.
            starts, ends (`torch.LongTensor` of shape `(B, N)`): Response token spans, -1 = empty.

        Returns:
            `torch.FloatTensor` of shape `(B, N)`: Scores divided by sqrt(hidden_size), `-inf`
            for empty slots.
        """
        valid = ends >= 0
        hidden = hidden.float()
        size = hidden.shape[-1]

        def gather(index: torch.Tensor) -> torch.Tensor:
            index = index.clamp(min=0)[..., None].expand(-1, -1, size)
            return torch.gather(hidden, 1, index)

        mode = self.head_config.resp_repr_mode
        if mode == "last":
            representation = gather(ends)
        elif mode == "first":
            representation = gather(starts)
        elif mode == "first_last_concat":
            representation = torch.cat([gather(starts), gather(ends)], dim=-1)
        elif mode == "first_last_add":
            representation = gather(starts) + gather(ends)
        elif mode == "first_last_sub":
            representation = gather(ends) - gather(starts)
        else:  # response_mean: a (B, N, L) averaging matrix keeps it one batched matmul
            positions = torch.arange(hidden.shape[1], device=hidden.device)
            inside = (positions >= starts[..., None]) & (positions <= ends[..., None])
            weights = inside.float() / inside.sum(-1, keepdim=True).clamp(min=1)
            representation = weights @ hidden
        scores = self.value_head(representation).squeeze(-1) / self.scale
        return scores.masked_fill(~valid, float("-inf"))


# --------------------------------------------------------------------------------------------
# Visual preprocessing
# --------------------------------------------------------------------------------------------


def patchify_video_frames(
    frames: np.ndarray,
    *,
    patch_size: int = 14,
    temporal_patch_size: int = 2,
    merge_size: int = 2,
    min_pixels: int = DEFAULT_MIN_PIXELS,
    max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS,
    image_mean: Sequence[float] | None = None,
    image_std: Sequence[float] | None = None,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """Turn RGB frames into Qwen2-VL video patches without torchvision.

    Same result as the official video processor (within resampling differences): resize to a
    multiple of ``patch_size * merge_size`` within the pixel budget, rescale to [0, 1],
    normalise, pad the frame count to a multiple of ``temporal_patch_size`` by repeating the
    last frame, and lay the patches out merge-window by merge-window.

    Args:
        frames (`np.ndarray` of shape `(T, H, W, 3)`, uint8): RGB frames.
        patch_size, temporal_patch_size, merge_size (`int`): The vision encoder's geometry.
        min_pixels, max_pixels (`int`): Pixel budget per frame after resizing.
        image_mean, image_std (`Sequence[float]`, *optional*): Normalisation (CLIP's default).

    Returns:
        `tuple[torch.FloatTensor, tuple[int, int, int]]`: patches of shape
        `(t * h * w, 3 * temporal_patch_size * patch_size**2)` and the grid `(t, h, w)`.
    """
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    _, height, width, _ = frames.shape
    new_h, new_w = smart_resize(
        height,
        width,
        factor=patch_size * merge_size,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )
    if (new_h, new_w) != (height, width):
        frames = np.stack(
            [
                np.asarray(Image.fromarray(f).resize((new_w, new_h), Image.Resampling.BICUBIC))
                for f in frames
            ]
        )
    mean = np.asarray(image_mean or OPENAI_CLIP_MEAN, dtype=np.float32)
    std = np.asarray(image_std or OPENAI_CLIP_STD, dtype=np.float32)
    pixels = (frames.astype(np.float32) / 255.0 - mean) / std
    pixels = pixels.transpose(0, 3, 1, 2)  # (T, C, H, W)
    remainder = pixels.shape[0] % temporal_patch_size
    if remainder:
        repeat = np.repeat(pixels[-1:], temporal_patch_size - remainder, axis=0)
        pixels = np.concatenate([pixels, repeat], axis=0)
    channels = pixels.shape[1]
    grid_t = pixels.shape[0] // temporal_patch_size
    grid_h, grid_w = new_h // patch_size, new_w // patch_size
    patches = pixels.reshape(
        grid_t,
        temporal_patch_size,
        channels,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    patches = patches.transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(
        grid_t * grid_h * grid_w, channels * temporal_patch_size * patch_size * patch_size
    )
    return torch.from_numpy(np.ascontiguousarray(flat)), (grid_t, grid_h, grid_w)


@dataclass
class _Visual:
    kind: Literal["image", "video"]
    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    merge_size: int
    # M-RoPE temporal step per temporal patch: 1 for Qwen2-VL and images; Qwen2.5-VL videos
    # use tokens_per_second * seconds per temporal patch.
    time_interval: float = 1.0

    @property
    def num_tokens(self) -> int:
        t, h, w = self.grid_thw
        return t * h * w // (self.merge_size**2)


@dataclass
class _Segment:
    ids: list[int]
    visuals: list[_Visual] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class _EncodedItem:
    prompt: _Segment | None
    candidates: list[_Segment | None]
    error: str | None
    candidate_errors: list[str | None]


@dataclass
class _Row:
    item_index: int
    prompt: _Segment
    candidates: list[tuple[int, _Segment]]  # (candidate index in the item, segment)
    separator: list[int]

    @property
    def length(self) -> int:
        body = sum(len(seg) for _, seg in self.candidates)
        return len(self.prompt) + body + len(self.separator) * (len(self.candidates) - 1)


def _media_error_text(exc: Exception) -> str:
    # MediaError already names the file; our ValueErrors are written for users.
    if isinstance(exc, (MediaError, ValueError)):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


class RewardInputBuilder:
    """Turns [`ScoringItem`]s into [`RewardBatch`]es for a Qwen2-VL-family backbone.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): Must know the Qwen-VL special tokens and
            ``<|resp_sep|>``.
        image_processor (`Qwen2VLImageProcessorPil`, *optional*): Used for images; built with
            default settings when omitted.
        model_type (`str`): ``"qwen2_vl"`` or ``"qwen2_5_vl"`` (affects video positions).
        patch_size, temporal_patch_size, merge_size (`int`): Vision geometry of the backbone.
        tokens_per_second (`float`, *optional*): Qwen2.5-VL's temporal position scale.
        max_length (`int`): Longest row (prompt + candidates) sent through the model.
        image_max_pixels, video_max_pixels, min_pixels (`int`): Pixel budgets (per frame for
            video); they cap the visual token count.
        max_frames (`int`): Frames sampled per video.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any | None = None,
        *,
        model_type: str = "qwen2_vl",
        patch_size: int = 14,
        temporal_patch_size: int = 2,
        merge_size: int = 2,
        tokens_per_second: float | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        image_max_pixels: int = DEFAULT_IMAGE_MAX_PIXELS,
        video_max_pixels: int = DEFAULT_VIDEO_MAX_PIXELS,
        min_pixels: int = DEFAULT_MIN_PIXELS,
        max_frames: int = DEFAULT_MAX_FRAMES,
    ) -> None:
        if image_processor is None:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                Qwen2VLImageProcessorPil,
            )

            image_processor = Qwen2VLImageProcessorPil(
                patch_size=patch_size,
                temporal_patch_size=temporal_patch_size,
                merge_size=merge_size,
            )
        geometry = (
            image_processor.patch_size,
            image_processor.temporal_patch_size,
            image_processor.merge_size,
        )
        if geometry != (patch_size, temporal_patch_size, merge_size):
            raise ValueError(
                f"image processor geometry (patch, temporal patch, merge) {geometry} does not "
                f"match the model's {(patch_size, temporal_patch_size, merge_size)}"
            )
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.model_type = model_type
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.merge_size = merge_size
        self.tokens_per_second = tokens_per_second
        self.max_length = max_length
        self.image_max_pixels = image_max_pixels
        self.video_max_pixels = video_max_pixels
        self.min_pixels = min_pixels
        self.max_frames = max_frames
        self.token_ids = self._special_token_ids(tokenizer)
        self.pad_id = (
            self.token_ids[PAD_TOKEN]
            if tokenizer.pad_token_id is None
            else int(tokenizer.pad_token_id)
        )
        self._prefix = self._template_ids(PROMPT_PREFIX)
        self._suffix = self._template_ids(PROMPT_SUFFIX)
        self.separator = self._template_ids(RESPONSE_SEPARATOR)

    @classmethod
    def for_model(
        cls,
        model: MultiResponseRewardModel,
        tokenizer: Any,
        image_processor: Any | None = None,
        **limits: Any,
    ) -> RewardInputBuilder:
        """A builder matching `model`'s vision geometry and special-token ids.

        Raises:
            ValueError: The tokenizer's special-token ids differ from the model config's.
        """
        config = model.backbone.config
        vision = config.vision_config
        builder = cls(
            tokenizer,
            image_processor,
            model_type=config.model_type,
            patch_size=vision.patch_size,
            temporal_patch_size=vision.temporal_patch_size,
            merge_size=vision.spatial_merge_size,
            tokens_per_second=getattr(vision, "tokens_per_second", None),
            **limits,
        )
        expected = {
            IMAGE_PAD: config.image_token_id,
            VIDEO_PAD: config.video_token_id,
            VISION_START: config.vision_start_token_id,
        }
        wrong = [
            f"{tok} is {builder.token_ids[tok]} in the tokenizer but {cfg_id} in the model config"
            for tok, cfg_id in expected.items()
            if builder.token_ids[tok] != cfg_id
        ]
        if wrong:
            raise ValueError("tokenizer does not match the model: " + "; ".join(wrong))
        vocab = _text_config(config).vocab_size
        if len(tokenizer) > vocab:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, model embeds only {vocab}")
        return builder

    # -- tokenisation -----------------------------------------------------------------------

    @staticmethod
    def _special_token_ids(tokenizer: Any) -> dict[str, int]:
        ids = {}
        for token in (*SPECIAL_TOKENS, RESP_SEP_TOKEN):
            encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(encoded) != 1:
                raise ValueError(f"tokenizer has no special token {token}")
            ids[token] = int(encoded[0])
        return ids

    def _template_ids(self, text: str) -> list[int]:
        # Our own template text: special tokens in it are meant as control tokens.
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _user_text_ids(self, text: str) -> list[int]:
        # User/annotator text: split_special_tokens makes a literal "<|im_end|>" plain text.
        if not text:
            return []
        return list(
            self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]
        )

    # -- media ------------------------------------------------------------------------------

    def encode_image(self, image: MediaRef | Image.Image) -> _Visual:
        """Load (if a path) and patchify an image; raises `MediaError` for unreadable files."""
        if not isinstance(image, Image.Image):
            # Decode-time cap well above the pixel budget, so huge uploads are not held whole.
            image = load_image(image, max_side=int(2 * math.sqrt(self.image_max_pixels)) + 28)
        out = self.image_processor(
            images=[image.convert("RGB")],
            size={"shortest_edge": self.min_pixels, "longest_edge": self.image_max_pixels},
            return_tensors="pt",
        )
        grid = tuple(int(v) for v in out["image_grid_thw"][0])
        return _Visual("image", out["pixel_values"], grid, self.merge_size)  # type: ignore[arg-type]

    def encode_video(self, video: MediaRef | VideoFrames) -> _Visual:
        """Sample (if a path) and patchify a video; raises `MediaError` for unreadable files."""
        if not isinstance(video, VideoFrames):
            video = sample_video_frames(
                video,
                max_frames=self.max_frames,
                max_side=int(2 * math.sqrt(self.video_max_pixels)) + 28,
            )
        pixel_values, grid = patchify_video_frames(
            video.frames,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.video_max_pixels,
            image_mean=self.image_processor.image_mean,
            image_std=self.image_processor.image_std,
        )
        interval = 1.0
        if self.model_type == "qwen2_5_vl" and self.tokens_per_second:
            interval = self.tokens_per_second * self.temporal_patch_size / max(video.fps, 1e-6)
        return _Visual("video", pixel_values, grid, self.merge_size, interval)

    def _vision_block(self, visual: _Visual) -> list[int]:
        pad = self.token_ids[IMAGE_PAD if visual.kind == "image" else VIDEO_PAD]
        return [
            self.token_ids[VISION_START],
            *([pad] * visual.num_tokens),
            self.token_ids[VISION_END],
        ]

    # -- items ------------------------------------------------------------------------------

    def encode_prompt(self, item: ScoringItem) -> _Segment:
        """Chat-formatted prompt segment with its visual placeholders."""
        ids = list(self._prefix)
        visuals = []
        if item.prompt_image is not None:
            visuals.append(self.encode_image(item.prompt_image))
        if item.prompt_video is not None:
            visuals.append(self.encode_video(item.prompt_video))
        for visual in visuals:
            ids += self._vision_block(visual)
        ids += self._user_text_ids(item.prompt_text) + self._suffix
        return _Segment(ids, visuals)

    def encode_candidate(self, candidate: CandidateInput) -> _Segment:
        """Response segment: text tokens, or visual tokens followed by an optional caption."""
        if candidate.kind == "text":
            ids = self._user_text_ids(candidate.text)
            if not ids:
                raise ValueError("empty response text")
            return _Segment(ids)
        if candidate.kind not in ("image", "video"):
            raise ValueError(f"unknown candidate kind {candidate.kind!r}")
        source = candidate.media if candidate.media is not None else candidate.path
        if source is None:
            raise ValueError(f"{candidate.kind} candidate has neither path nor media")
        if candidate.kind == "image":
            visual = self.encode_image(source)  # type: ignore[arg-type]
        else:
            visual = self.encode_video(source)  # type: ignore[arg-type]
        return _Segment(self._vision_block(visual) + self._user_text_ids(candidate.text), [visual])

    def encode_item(self, item: ScoringItem) -> _EncodedItem:
        """Encode an item, capturing media/text failures per item and per candidate."""
        count = len(item.candidates)
        if count == 0:
            return _EncodedItem(None, [], "item has no candidates", [])
        try:
            prompt = self.encode_prompt(item)
        except (MediaError, ValueError, OSError) as exc:
            return _EncodedItem(
                None, [None] * count, f"prompt: {_media_error_text(exc)}", [None] * count
            )
        candidates: list[_Segment | None] = []
        errors: list[str | None] = []
        for candidate in item.candidates:
            try:
                candidates.append(self.encode_candidate(candidate))
                errors.append(None)
            except (MediaError, ValueError, OSError) as exc:
                candidates.append(None)
                errors.append(_media_error_text(exc))
        return _EncodedItem(prompt, candidates, None, errors)

    # -- rows and batches -------------------------------------------------------------------

    def plan_rows(
        self, item_index: int, encoded: _EncodedItem, mode: AttentionMode
    ) -> tuple[list[_Row], str | None, dict[int, str]]:
        """Lay out an encoded item as rows within `max_length`.

        In packed/isolated mode all candidates share one row when they fit; otherwise they are
        split greedily over several rows, each repeating the prompt. Isolated scores do not
        change by splitting; packed scores of later candidates then see fewer earlier ones.

        Returns:
            rows, an item-level error (or `None`), and candidate errors by index.
        """
        errors: dict[int, str] = {}
        if encoded.prompt is None:
            return [], encoded.error, errors
        prompt = encoded.prompt
        if len(prompt) >= self.max_length:
            return [], f"prompt is {len(prompt)} tokens, over max_length {self.max_length}", errors
        fitting = []
        for index, segment in enumerate(encoded.candidates):
            if segment is None:
                continue
            total = len(prompt) + len(segment)
            if total > self.max_length:
                errors[index] = (
                    f"input is {total} tokens (prompt {len(prompt)} + response {len(segment)}), "
                    f"over max_length {self.max_length}"
                )
            else:
                fitting.append((index, segment))
        if mode == "separate":
            groups = [[pair] for pair in fitting]
        else:
            groups, current, length = [], [], len(prompt)
            for pair in fitting:
                extra = len(pair[1]) + (len(self.separator) if current else 0)
                if current and length + extra > self.max_length:
                    groups.append(current)
                    current, length = [], len(prompt)
                    extra = len(pair[1])
                current.append(pair)
                length += extra
            if current:
                groups.append(current)
        rows = [_Row(item_index, prompt, group, self.separator) for group in groups]
        return rows, None, errors

    def _row_positions(self, ids: list[int], visuals: list[_Visual]) -> torch.Tensor:
        """M-RoPE positions (3, L) for one row, the same rule as the backbone's get_rope_index.

        Text advances all three axes by one per token; a visual block gets (t, h, w) grid
        positions offset by the current position, then the position jumps past the larger of
        its height and width. Positions are translation-equivariant, which isolated mode uses.
        """
        image_id, video_id = self.token_ids[IMAGE_PAD], self.token_ids[VIDEO_PAD]
        is_visual = np.isin(np.asarray(ids), (image_id, video_id))
        # Runs of text / visual tokens, found with numpy: rows can be 24k tokens long.
        bounds = [0, *(np.flatnonzero(np.diff(is_visual.astype(np.int8))) + 1).tolist(), len(ids)]
        chunks = []
        current = 0
        visual_iter = iter(visuals)
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if not is_visual[start]:
                chunks.append((torch.arange(end - start) + current).expand(3, -1))
                current += end - start
                continue
            index = start
            while index < end:  # one run may hold several adjacent visuals
                visual = next(visual_iter)
                t, h, w = visual.grid_thw
                lh, lw = h // visual.merge_size, w // visual.merge_size
                temporal = (torch.arange(t) * visual.time_interval).long() + current
                height, width = torch.arange(lh) + current, torch.arange(lw) + current
                grid = torch.meshgrid(temporal, height, width, indexing="ij")
                chunks.append(torch.stack(grid).reshape(3, -1))
                current += max(lh, lw)
                index += visual.num_tokens
        return torch.cat(chunks, dim=1)

    def collate(self, rows: Sequence[_Row], mode: AttentionMode) -> RewardBatch:
        """Pad rows into one [`RewardBatch`] (right padding)."""
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
        width = max(len(row.candidates) for row in rows)
        length = max(row.length for row in rows)
        batch = len(rows)
        input_ids = torch.full((batch, length), self.pad_id, dtype=torch.long)
        segment_ids = torch.full((batch, length), _PAD_SEGMENT, dtype=torch.long)
        position_ids = torch.zeros((3, batch, length), dtype=torch.long)
        starts = torch.full((batch, width), -1, dtype=torch.long)
        ends = torch.full((batch, width), -1, dtype=torch.long)
        images: list[_Visual] = []
        videos: list[_Visual] = []
        for r, row in enumerate(rows):
            ids = list(row.prompt.ids)
            segments = [_PROMPT_SEGMENT] * len(ids)
            visuals = list(row.prompt.visuals)
            for slot, (_, segment) in enumerate(row.candidates):
                starts[r, slot] = len(ids)
                ids += segment.ids
                ends[r, slot] = len(ids) - 1
                visuals += segment.visuals
                tail = self.separator if slot < len(row.candidates) - 1 else []
                ids += tail
                # The separator after a response belongs to its slot: the response's last
                # token precedes it, so it never changes that response's score.
                segments += [slot] * (len(segment) + len(tail))
            positions = self._row_positions(ids, visuals)
            if mode == "isolated":
                seg_t = torch.tensor(segments)
                first_start = int(starts[r, 0])
                for slot in range(1, len(row.candidates)):
                    shift = positions[0, starts[r, slot]] - positions[0, first_start]
                    positions[:, seg_t == slot] -= shift
            n = len(ids)
            input_ids[r, :n] = torch.tensor(ids)
            segment_ids[r, :n] = torch.tensor(segments)
            position_ids[:, r, :n] = positions
            for visual in visuals:
                (images if visual.kind == "image" else videos).append(visual)
        image_id, video_id = self.token_ids[IMAGE_PAD], self.token_ids[VIDEO_PAD]
        mm_types = (input_ids == image_id).int() + 2 * (input_ids == video_id).int()

        def stack(visuals: list[_Visual]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if not visuals:
                return None, None
            pixels = torch.cat([v.pixel_values for v in visuals])
            grids = torch.tensor([v.grid_thw for v in visuals], dtype=torch.long)
            return pixels, grids

        pixel_values, image_grid = stack(images)
        pixel_values_videos, video_grid = stack(videos)
        return RewardBatch(
            input_ids=input_ids,
            segment_ids=segment_ids,
            position_ids=position_ids,
            mm_token_type_ids=mm_types,
            response_starts=starts,
            response_ends=ends,
            mode=mode,
            pixel_values=pixel_values,
            image_grid_thw=image_grid,
            pixel_values_videos=pixel_values_videos,
            video_grid_thw=video_grid,
        )

    def training_batch(
        self,
        examples: Sequence[PreferenceExample],
        *,
        mode: AttentionMode = "packed",
        rng: random.Random | None = None,
        shuffle: bool = True,
    ) -> tuple[TrainingBatch | None, list[str]]:
        """Encode examples into a [`TrainingBatch`], one row per example.

        Candidate order is shuffled per example (in packed mode later responses see earlier
        ones, so a fixed order would teach a position bias), rank-1 ties are broken at random.
        Examples that fail to encode or do not fit `max_length` are skipped and described.

        Returns:
            The batch (`None` when every example was skipped) and the skip reasons.
        """
        rng = rng or random.Random()
        rows, best, orders, skipped = [], [], [], []
        for number, example in enumerate(examples):
            if len(example.rankings) != len(example.item.candidates):
                skipped.append(
                    f"example {number}: {len(example.rankings)} rankings for "
                    f"{len(example.item.candidates)} candidates"
                )
                continue
            encoded = self.encode_item(example.item)
            problems = [encoded.error] if encoded.error else []
            problems += [f"candidate {i}: {e}" for i, e in enumerate(encoded.candidate_errors) if e]
            if problems:
                skipped.append(f"example {number}: " + "; ".join(problems))
                continue
            permutation = list(range(len(encoded.candidates)))
            if shuffle:
                rng.shuffle(permutation)
            row = _Row(
                number,
                encoded.prompt,  # type: ignore[arg-type]
                [(i, encoded.candidates[i]) for i in permutation],  # type: ignore[misc]
                self.separator,
            )
            if row.length > self.max_length:
                skipped.append(f"example {number}: {row.length} tokens, over {self.max_length}")
                continue
            rankings = [example.rankings[i] for i in permutation]
            rows.append(row)
            best.append(best_index_from_rankings(rankings, rng))
            orders.append(order_from_rankings(rankings, rng))
        if not rows:
            return None, skipped
        width = max(len(order) for order in orders)
        order_t = torch.full((len(rows), width), -1, dtype=torch.long)
        for r, order in enumerate(orders):
            order_t[r, : len(order)] = torch.tensor(order)
        batch = TrainingBatch(
            inputs=self.collate(rows, mode),
            best_index=torch.tensor(best, dtype=torch.long),
            order=order_t,
        )
        return batch, skipped


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def _new_results(items: Sequence[ScoringItem]) -> list[ScoringResult]:
    return [
        ScoringResult(scores=[None] * len(item.candidates), errors=[None] * len(item.candidates))
        for item in items
    ]


class RewardScorer:
    """Scores items with a [`MultiResponseRewardModel`]; the API workers and the playground use.

    Args:
        model ([`MultiResponseRewardModel`]): The reward model (moved to `device`).
        builder ([`RewardInputBuilder`]): Tokenizer, image processor and limits.
        device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
        max_batch_tokens (`int`): Padded tokens per forward pass (rows x longest row).
        max_batch_rows (`int`): Rows per forward pass.
    """

    kind = "multi_response"

    def __init__(
        self,
        model: MultiResponseRewardModel,
        builder: RewardInputBuilder,
        *,
        device: str | torch.device | None = None,
        max_batch_tokens: int = 16_384,
        max_batch_rows: int = 16,
    ) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.builder = builder
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows

    def score(
        self, items: Sequence[ScoringItem], mode: AttentionMode = "packed"
    ) -> list[ScoringResult]:
        """Score every candidate of every item.

        Failures are reported per item (`ScoringResult.error`) or per candidate
        (`ScoringResult.errors`) and never stop the other items.

        Args:
            items (`Sequence[ScoringItem]`): Prompts with their candidates (N may differ).
            mode (`str`): ``"packed"``, ``"isolated"`` or ``"separate"`` (one pass per
                candidate; the baseline).

        Returns:
            `list[ScoringResult]`: One per item, scores aligned with the candidates.
        """
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
        results = _new_results(items)
        # train() or apply_lora() may have left dropout on; scores must be deterministic.
        self.model.eval()
        rows: list[_Row] = []
        for index, item in enumerate(items):
            encoded = self.builder.encode_item(item)
            results[index].errors = list(encoded.candidate_errors) or results[index].errors
            item_rows, item_error, length_errors = self.builder.plan_rows(index, encoded, mode)
            if item_error is not None:
                results[index].error = item_error
            for candidate, message in length_errors.items():
                results[index].errors[candidate] = message
            rows += item_rows
        for group in self._batches(rows, mode):
            self._score_rows(group, mode, results)
        return results

    def _batches(self, rows: list[_Row], mode: str) -> Iterator[list[_Row]]:
        # Longest first so each batch pads to a similar length.
        ordered = sorted(rows, key=lambda row: row.length, reverse=True)
        group: list[_Row] = []
        for row in ordered:
            longest = group[0].length if group else row.length
            count = len(group) + 1
            too_big = count * longest > self.max_batch_tokens or count > self.max_batch_rows
            if mode == "isolated":
                # The isolated mask is (B, L, L); keep it under ~64M elements per batch.
                too_big = too_big or count * longest * longest > 64 * 2**20
            if group and too_big:
                yield group
                group = []
            group.append(row)
        if group:
            yield group

    def _score_rows(self, rows: list[_Row], mode: str, results: list[ScoringResult]) -> None:
        try:
            batch = self.builder.collate(rows, mode).to(self.device)  # type: ignore[arg-type]
            with torch.inference_mode():
                scores = self.model(batch).cpu()
        except Exception as exc:  # noqa: BLE001 - one bad batch must not sink the others
            if len(rows) > 1:
                # Retry row by row so only the row that really fails is reported.
                for row in rows:
                    self._score_rows([row], mode, results)
                return
            logger.exception("scoring failed for item %s", rows[0].item_index)
            for candidate, _ in rows[0].candidates:
                results[rows[0].item_index].errors[candidate] = (
                    f"scoring failed: {exc.__class__.__name__}: {exc}"
                )
            return
        for r, row in enumerate(rows):
            for slot, (candidate, _) in enumerate(row.candidates):
                results[row.item_index].scores[candidate] = float(scores[r, slot])

    def save(self, path: str | os.PathLike[str], *, merge_lora: bool = False) -> Path:
        """Write the seed release layout (see [`save_reward_model`])."""
        return save_reward_model(
            self.model,
            path,
            tokenizer=self.builder.tokenizer,
            image_processor=self.builder.image_processor,
            merge_lora=merge_lora,
        )


class SequenceClassificationScorer:
    """Baseline: a text-only `AutoModelForSequenceClassification` scoring one candidate per pass.

    `mode` is accepted for interface compatibility and ignored: every candidate is always
    scored in its own prompt+response sequence. Image/video prompts and media candidates are
    reported as errors.
    """

    kind = "sequence_classification"

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        *,
        device: str | torch.device | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        max_batch_tokens: int = 16_384,
        max_batch_rows: int = 32,
    ) -> None:
        self.device = pick_device(device)
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_rows = max_batch_rows
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer needs a pad token to batch candidates")
        if getattr(model.config, "pad_token_id", None) is None:
            # The classifier finds each sequence's last token by skipping pad ids.
            model.config.pad_token_id = tokenizer.pad_token_id
        self.pad_id = int(tokenizer.pad_token_id)
        self._prefix = tokenizer(PROMPT_PREFIX, add_special_tokens=False)["input_ids"]
        self._suffix = tokenizer(PROMPT_SUFFIX, add_special_tokens=False)["input_ids"]

    def _user_ids(self, text: str) -> list[int]:
        if not text:
            return []
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)[
            "input_ids"
        ]

    def score(
        self, items: Sequence[ScoringItem], mode: AttentionMode = "separate"
    ) -> list[ScoringResult]:
        """Score each candidate in its own pass. See [`RewardScorer.score`] for the contract."""
        results = _new_results(items)
        pending: list[tuple[int, int, list[int]]] = []
        for index, item in enumerate(items):
            if not item.candidates:
                results[index].error = "item has no candidates"
                continue
            if item.prompt_image is not None or item.prompt_video is not None:
                results[index].error = "text-only reward model cannot score an image/video prompt"
                continue
            prompt = self._prefix + self._user_ids(item.prompt_text) + self._suffix
            for candidate_index, candidate in enumerate(item.candidates):
                if candidate.kind != "text":
                    results[index].errors[candidate_index] = (
                        f"text-only reward model cannot score {candidate.kind} candidates"
                    )
                    continue
                response = self._user_ids(candidate.text)
                if not response:
                    results[index].errors[candidate_index] = "empty response text"
                    continue
                ids = prompt + response
                if len(ids) > self.max_length:
                    results[index].errors[candidate_index] = (
                        f"input is {len(ids)} tokens, over max_length {self.max_length}"
                    )
                    continue
                pending.append((index, candidate_index, ids))
        pending.sort(key=lambda entry: len(entry[2]), reverse=True)
        start = 0
        while start < len(pending):
            longest = len(pending[start][2])
            count = max(1, min(self.max_batch_rows, self.max_batch_tokens // longest))
            group = pending[start : start + count]
            start += count
            input_ids = torch.full((len(group), longest), self.pad_id, dtype=torch.long)
            attention = torch.zeros_like(input_ids)
            for r, (_, _, ids) in enumerate(group):
                input_ids[r, : len(ids)] = torch.tensor(ids)
                attention[r, : len(ids)] = 1
            with torch.inference_mode():
                logits = self.model(
                    input_ids=input_ids.to(self.device), attention_mask=attention.to(self.device)
                ).logits
            for (index, candidate_index, _), value in zip(
                group, logits[:, 0].float().cpu(), strict=True
            ):
                results[index].scores[candidate_index] = float(value)
        return results


# --------------------------------------------------------------------------------------------
# Losses and training
# --------------------------------------------------------------------------------------------


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


@dataclass
class TrainingBatch:
    """Inputs plus targets: `best_index` (B,) for the N-way loss, `order` (B, N) for PL."""

    inputs: RewardBatch
    best_index: torch.Tensor
    order: torch.Tensor

    def to(self, device: torch.device | str) -> TrainingBatch:
        return TrainingBatch(
            self.inputs.to(device), self.best_index.to(device), self.order.to(device)
        )


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


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars; we report problems ourselves."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def _is_peft(module: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a pinned dependency
        return False
    return isinstance(module, PeftModel)


def save_reward_model(
    model: MultiResponseRewardModel | nn.Module,
    path: str | os.PathLike[str],
    *,
    tokenizer: Any,
    image_processor: Any | None = None,
    merge_lora: bool = False,
) -> Path:
    """Save a reward model so :func:`load_reward_model` can read it back.

    A [`MultiResponseRewardModel`] is written in the seed release layout: the base model
    (``config.json`` + safetensors), tokenizer and image processor, ``reward_model_config.json``
    and ``value_head.pt``; a LoRA-wrapped backbone is either merged into the base weights
    (`merge_lora=True`) or saved beside them as ``lora_adapter/``. A sequence-classification
    model is written with `save_pretrained` (the baseline layout).

    Returns:
        `Path`: The checkpoint directory.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with _quiet_transformers():
        if not isinstance(model, MultiResponseRewardModel):
            model.save_pretrained(path)
            tokenizer.save_pretrained(path)
        else:
            _save_seed_layout(model, path, tokenizer, image_processor, merge_lora)
    return path


def _save_seed_layout(
    model: MultiResponseRewardModel,
    path: Path,
    tokenizer: Any,
    image_processor: Any | None,
    merge_lora: bool,
) -> None:
    backbone = model.backbone
    config_data = model.head_config.to_dict()
    config_data["value_head_input_dim"] = model.head_config.head_input_dim(model.hidden_size)
    if _is_peft(backbone):
        if merge_lora:
            # A copy, so the caller's model keeps training with its adapter unmerged.
            copy.deepcopy(backbone).merge_and_unload().save_pretrained(path)
        else:
            backbone.save_pretrained(path / LORA_ADAPTER_DIR)
            base = backbone.get_base_model()
            # Injected LoRA layers wrap the original Linear as `base_layer`; store the original
            # names and drop the adapter weights, so the base loads without peft.
            state = {
                key.replace(".base_layer", ""): value
                for key, value in base.state_dict().items()
                if "lora_" not in key
            }
            base.save_pretrained(path, state_dict=state)
            config_data["lora_adapter"] = LORA_ADAPTER_DIR
    else:
        backbone.save_pretrained(path)
    tokenizer.save_pretrained(path)
    if image_processor is not None:
        image_processor.save_pretrained(path)
    (path / REWARD_CONFIG_FILE).write_text(json.dumps(config_data, indent=2) + "\n")
    head_state = {k: v.detach().float().cpu() for k, v in model.value_head.state_dict().items()}
    torch.save(head_state, path / VALUE_HEAD_FILE)


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(path, "file not found")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(path, f"not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise CheckpointError(path, "expected a JSON object")
    return data


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        with _quiet_transformers():
            return AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(path / "tokenizer.json", f"cannot load tokenizer ({exc})") from exc


def _load_backbone(path: Path, dtype: torch.dtype | None) -> nn.Module:
    from transformers import AutoModel

    config_file = path / "config.json"
    model_type = _read_json(config_file).get("model_type")
    if model_type not in SUPPORTED_BACKBONES:
        raise CheckpointError(
            config_file,
            f"unsupported backbone model_type {model_type!r} (supported: "
            f"{', '.join(SUPPORTED_BACKBONES)})",
        )
    try:
        with _quiet_transformers():
            backbone, info = AutoModel.from_pretrained(
                path, local_files_only=True, dtype=dtype, output_loading_info=True
            )
    # Config validation, safetensors and torch raise many unrelated types for a bad file.
    except Exception as exc:  # noqa: BLE001
        raise CheckpointError(
            path, f"cannot load the base model ({exc.__class__.__name__}: {exc})"
        ) from exc
    weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    weights_name = path / weights[0].name if len(weights) == 1 else path
    missing = list(info.get("missing_keys", []))
    if missing:
        shown = ", ".join(sorted(missing)[:5])
        raise CheckpointError(
            weights_name,
            f"base model weights lack {len(missing)} tensors that config.json needs ({shown})",
        )
    mismatched = list(info.get("mismatched_keys", []))
    if mismatched:
        raise CheckpointError(
            weights_name, f"base model weights have wrong shapes: {mismatched[:5]}"
        )
    return backbone


def _merge_lora(backbone: nn.Module, adapter_dir: Path) -> nn.Module:
    from peft import LoraConfig, get_peft_model, load_peft_weights, set_peft_model_state_dict

    config_file = adapter_dir / "adapter_config.json"
    if not config_file.is_file():
        raise CheckpointError(config_file, "file not found")
    try:
        config = LoraConfig.from_pretrained(adapter_dir)
        weights = load_peft_weights(str(adapter_dir), device="cpu")
    except (OSError, ValueError, TypeError) as exc:
        raise CheckpointError(adapter_dir, f"cannot read the LoRA adapter ({exc})") from exc
    config.inference_mode = True
    peft_model = get_peft_model(backbone, config)
    result = set_peft_model_state_dict(peft_model, weights)
    unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    if unexpected:
        # Adapters trained on *ForConditionalGeneration carry one more "model." level.
        remapped = {
            key.replace("base_model.model.model.", "base_model.model.", 1): value
            for key, value in weights.items()
            if "lm_head" not in key
        }
        result = set_peft_model_state_dict(peft_model, remapped)
        unexpected = [k for k in result.unexpected_keys if "lora_" in k]
    missing = [k for k in result.missing_keys if "lora_" in k]
    if unexpected or missing:
        detail = unexpected[:3] or missing[:3]
        raise CheckpointError(
            adapter_dir,
            f"LoRA adapter does not fit the base model ({len(unexpected)} unexpected, "
            f"{len(missing)} missing tensors, e.g. {detail})",
        )
    return peft_model.merge_and_unload()


def _load_value_head(
    path: Path, head: nn.Module, hidden_size: int, config: RewardHeadConfig
) -> None:
    head_file = path / VALUE_HEAD_FILE
    if not head_file.is_file():
        raise CheckpointError(head_file, "file not found (the seed layout needs the value head)")
    try:
        state = torch.load(head_file, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for a bad pickle
        raise CheckpointError(head_file, f"cannot read the state dict ({exc})") from exc
    if not isinstance(state, dict):
        raise CheckpointError(head_file, f"expected a state dict, got {type(state).__name__}")
    expected = head.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            head_file,
            f"keys do not match a {config.value_head_type!r} head (missing {missing}, "
            f"unexpected {unexpected})",
        )
    for key, tensor in expected.items():
        found = tuple(state[key].shape)
        if found != tuple(tensor.shape):
            first = next(iter(expected))
            if key == first and len(found) == 2:
                raise CheckpointError(
                    head_file,
                    f"head takes {found[1]} inputs but the backbone hidden size is {hidden_size} "
                    f"(resp_repr_mode {config.resp_repr_mode!r} needs "
                    f"{config.head_input_dim(hidden_size)})",
                )
            raise CheckpointError(
                head_file, f"{key} has shape {list(found)}, expected {list(tensor.shape)}"
            )
    head.load_state_dict({k: v.float() for k, v in state.items()})


def load_reward_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
    **limits: Any,
) -> RewardScorer | SequenceClassificationScorer:
    """Load a reward model from a local directory and return a ready scorer.

    Two layouts are recognised: the seed release layout (``reward_model_config.json`` present:
    base model + ``value_head.pt`` + optional ``lora_adapter/``), giving a [`RewardScorer`], and
    a plain sequence-classification checkpoint, giving a [`SequenceClassificationScorer`].
    Nothing is downloaded (`local_files_only=True`).

    Args:
        path (`str` or `os.PathLike`): Checkpoint directory.
        device (`str` or `torch.device`, *optional*): Defaults to CUDA when available.
        dtype (`torch.dtype`, *optional*): Backbone dtype; bf16 on CUDA, float32 on CPU.
        **limits: Passed to [`RewardInputBuilder`] (``max_length``, ``image_max_pixels``...).

    Raises:
        CheckpointError: A file is missing or malformed, or parts do not fit together; the
            message names the file and the mismatch.
    """
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(path, "checkpoint directory not found")
    resolved = pick_device(device)
    if dtype is None:
        dtype = torch.bfloat16 if resolved.type == "cuda" else torch.float32
    if (path / REWARD_CONFIG_FILE).exists():
        return _load_seed_layout(path, resolved, dtype, limits)
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(
            path, f"neither {REWARD_CONFIG_FILE} (seed layout) nor config.json found"
        )
    architectures = _read_json(config_file).get("architectures") or []
    if not any(str(a).endswith("ForSequenceClassification") for a in architectures):
        raise CheckpointError(
            config_file,
            f"no {REWARD_CONFIG_FILE} beside it and architectures {architectures} is not a "
            "sequence-classification model",
        )
    from transformers import AutoModelForSequenceClassification

    try:
        with _quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, local_files_only=True, dtype=dtype, output_loading_info=True
            )
    except Exception as exc:  # noqa: BLE001 - see _load_backbone
        raise CheckpointError(
            path, f"cannot load the classifier ({exc.__class__.__name__}: {exc})"
        ) from exc
    if info.get("missing_keys"):
        raise CheckpointError(path, f"classifier weights lack {sorted(info['missing_keys'])[:5]}")
    if model.config.num_labels != 1:
        raise CheckpointError(
            config_file, f"a reward classifier has num_labels 1, found {model.config.num_labels}"
        )
    tokenizer = _load_tokenizer(path)
    max_length = limits.get("max_length", DEFAULT_MAX_LENGTH)
    return SequenceClassificationScorer(model, tokenizer, device=resolved, max_length=max_length)


def _load_seed_layout(
    path: Path, device: torch.device, dtype: torch.dtype, limits: dict[str, Any]
) -> RewardScorer:
    config_file = path / REWARD_CONFIG_FILE
    data = _read_json(config_file)
    head_config = RewardHeadConfig(
        value_head_type=data.get("value_head_type", "mlp"),
        value_head_hidden_dim=data.get("value_head_hidden_dim", 1024),
        value_head_activation=str(data.get("value_head_activation", "silu")),
        resp_repr_mode=data.get("resp_repr_mode", "last"),
    )
    problems = head_config.problems()
    if problems:
        raise CheckpointError(config_file, "; ".join(problems))
    backbone = _load_backbone(path, dtype)
    adapter_dir = path / str(data.get("lora_adapter", LORA_ADAPTER_DIR))
    if adapter_dir.is_dir():
        backbone = _merge_lora(backbone, adapter_dir)
    hidden = backbone_hidden_size(backbone)
    declared = data.get("value_head_input_dim")
    if declared is not None and declared != head_config.head_input_dim(hidden):
        raise CheckpointError(
            config_file,
            f"value_head_input_dim is {declared} but the backbone hidden size {hidden} with "
            f"resp_repr_mode {head_config.resp_repr_mode!r} gives "
            f"{head_config.head_input_dim(hidden)}",
        )
    model = MultiResponseRewardModel(backbone, head_config)
    _load_value_head(path, model.value_head, hidden, head_config)
    tokenizer = _load_tokenizer(path)
    image_processor = None
    if (path / "preprocessor_config.json").is_file():
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
            Qwen2VLImageProcessorPil,
        )

        try:
            image_processor = Qwen2VLImageProcessorPil.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError, TypeError) as exc:
            raise CheckpointError(
                path / "preprocessor_config.json", f"cannot load the image processor ({exc})"
            ) from exc
    try:
        builder = RewardInputBuilder.for_model(model, tokenizer, image_processor, **limits)
    except ValueError as exc:
        raise CheckpointError(path / "tokenizer.json", str(exc)) from exc
    return RewardScorer(model, builder, device=device)
