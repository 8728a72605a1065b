"""The input builder: chat-template rows, read-out positions, media, batches."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import math
import random
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from tokenizers import Tokenizer as _RustTokenizer

from workers.media import (
    DECODE_POOL,
    DecodePool,
    MediaBudget,
    MediaError,
    VideoFrames,
    check_pixels,
    load_image,
    sample_video_frames,
)
from workers.reward_model.chat_skeleton import VARYING, ChatSkeleton, derive_skeleton
from workers.reward_model.media_cache import (
    MEDIA_CACHE,
    MEDIA_STORE,
    MediaCache,
    MediaStore,
    file_digest,
)
from workers.reward_model.model import (
    MultiResponseRewardModel,
    RewardBatch,
    TrainingBatch,
    _text_config,
)
from workers.reward_model.molmo2 import (
    MOLMO2_IMAGE_TOKEN,
    MOLMO2_VIDEO_TOKEN,
    MOLMO2_VIDEO_TOKEN_OPTIONS,
    MOLMO2_VISUAL_TOKENS,
    Molmo2Image,
    Molmo2ImageSettings,
    Molmo2Video,
    Molmo2VideoSettings,
    collate_molmo2_images,
    collate_molmo2_videos,
    molmo2_frame_indices,
    molmo2_image_inputs,
    molmo2_image_tokens,
    molmo2_video_inputs,
    molmo2_video_tokens,
)
from workers.reward_model.records import (
    _PAD_SEGMENT,
    _PROMPT_SEGMENT,
    ATTENTION_MODES,
    DEFAULT_IMAGE_MAX_PIXELS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MAX_PACKED_CANDIDATES,
    DEFAULT_MIN_PIXELS,
    DEFAULT_VIDEO_FPS,
    DEFAULT_VIDEO_MAX_PIXELS,
    IMAGE_PAD,
    MOLMO2_BACKBONES,
    OVERFLOW_POLICIES,
    PAD_TOKEN,
    QWEN2_VL_CHAT_TEMPLATE,
    RESP_SEP_TOKEN,
    RESPONSE_SEPARATOR,
    SPECIAL_TOKENS,
    VIDEO_PAD,
    VISION_END,
    VISION_START,
    AttentionMode,
    CandidateInput,
    MediaRef,
    PreferenceExample,
    ScoringItem,
    best_index_from_rankings,
    order_from_rankings,
)

logger = logging.getLogger(__name__)

# transformers' Qwen3VLVideoProcessor defaults, used when a Qwen3-VL checkpoint ships no video
# config: its pixel budget bounds all frames of a clip together, not each frame.
QWEN3_VL_VIDEO_DEFAULTS: dict[str, Any] = {
    "min_pixels": 128 * 32 * 32,
    "max_pixels": 32 * 32 * 768,
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
}
QWEN3_VL_MIN_FRAMES = 4

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
    size: tuple[int, int] | None = None,
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
        size (`tuple[int, int]`, *optional*): The (height, width) to resize to, when the
            backbone picks it by its own rule (Qwen3-VL budgets the whole clip); the pixel
            budget is then not used.

    Returns:
        `tuple[torch.FloatTensor, tuple[int, int, int]]`: patches of shape
        `(t * h * w, 3 * temporal_patch_size * patch_size**2)` and the grid `(t, h, w)`.
    """
    _, smart_resize, clip_mean, clip_std = _qwen2vl_pil()
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.shape[0] == 0:
        raise ValueError(f"expected frames of shape (T, H, W, 3), got {frames.shape}")
    _, height, width, _ = frames.shape
    new_h, new_w = size or smart_resize(
        height,
        width,
        factor=patch_size * merge_size,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )
    if new_h % (patch_size * merge_size) or new_w % (patch_size * merge_size):
        raise ValueError(f"frame size {(new_h, new_w)} is not a multiple of the merged patch")
    frames = _resize_frames(frames, new_h, new_w)
    mean = tuple(float(v) for v in image_mean or clip_mean)
    std = tuple(float(v) for v in image_std or clip_std)
    grid_h, grid_w = new_h // patch_size, new_w // patch_size
    if frames.dtype == np.uint8 and len(mean) == len(std) == frames.shape[-1]:
        return _patchify_uint8(frames, mean, std, patch_size, temporal_patch_size, merge_size)
    pixels = _normalise(frames, mean, std)
    pixels = pixels.transpose(0, 3, 1, 2)  # (T, C, H, W)
    remainder = pixels.shape[0] % temporal_patch_size
    if remainder:
        repeat = np.repeat(pixels[-1:], temporal_patch_size - remainder, axis=0)
        pixels = np.concatenate([pixels, repeat], axis=0)
    channels = pixels.shape[1]
    grid_t = pixels.shape[0] // temporal_patch_size
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


@functools.cache
def _qwen2vl_pil() -> tuple[type, Any, Sequence[float], Sequence[float]]:
    """(``Qwen2VLImageProcessorPil``, its ``smart_resize``, CLIP's mean and std), imported at the
    first picture (transformers' modules load lazily) and kept: an import statement in the
    function each picture or clip goes through costs about as much as a picture's rescaling."""
    from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
        Qwen2VLImageProcessorPil,
        smart_resize,
    )

    return Qwen2VLImageProcessorPil, smart_resize, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD


def _cat_pixels(visuals: Sequence[_Visual]) -> torch.Tensor:
    """The visuals' `pixel_values` one after another (``torch.cat``); a one-slot picture's
    values are written into each of its temporal slots there, never held repeated."""
    if all(v.one_slot is None for v in visuals):
        return torch.cat([v.pixel_values for v in visuals])
    parts = [v.pixel_values if v.one_slot is None else v.one_slot[0] for v in visuals]
    if len({part.dtype for part in parts}) > 1:
        return torch.cat([v.pixel_values for v in visuals])  # torch.cat's type promotion
    first, (values, slots) = parts[0], visuals[0].one_slot or (None, 1)
    width = first.shape[1] if values is None else values.shape[1] * slots * values.shape[2]
    out = torch.empty((sum(len(part) for part in parts), width), dtype=first.dtype)
    start = 0
    for visual, part in zip(visuals, parts, strict=True):
        rows = out[start : start + len(part)]
        start += len(part)
        if visual.one_slot is None:
            rows.copy_(part)
            continue
        count, channels, area = part.shape
        rows = rows.view(count, channels, visual.one_slot[1], area)
        rows.copy_(part[:, :, None].expand(rows.shape))
    return out


def _normalise(values: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """The image processors' rescale and normalise, in float32: ``(x / 255 - mean) / std``."""
    mean_array = np.asarray(mean, dtype=np.float32)
    std_array = np.asarray(std, dtype=np.float32)
    return (values.astype(np.float32) / 255.0 - mean_array) / std_array


def _patchify_uint8(
    frames: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """[`patchify_video_frames`] for uint8 frames at their size: the bytes laid out patch by
    patch first (a quarter of the float32 values' size), then converted, rescaled and
    normalised in place in the output, each the same float32 operation on the same values
    as [`_normalise`] (so the same results bit for bit): one array of float32 values
    allocated and written instead of five, and no transposing copy of them."""
    pixels, grid = _patch_values(frames, mean, std, patch_size, temporal_patch_size, merge_size)
    if pixels.shape[2] != temporal_patch_size:
        pixels = np.broadcast_to(pixels, (*pixels.shape[:2], temporal_patch_size, pixels.shape[3]))
        pixels = np.ascontiguousarray(pixels)
    return torch.from_numpy(pixels.reshape(pixels.shape[0], -1)), grid


def _patch_values(
    frames: np.ndarray,
    mean: Sequence[float],
    std: Sequence[float],
    patch_size: int,
    temporal_patch_size: int,
    merge_size: int,
) -> tuple[np.ndarray, tuple[int, int, int]]:
    """[`_patchify_uint8`]'s values as ``(patches, channels, slots, patch_size**2)`` float32,
    a picture (one frame) with one temporal slot (its values are the same in every slot), and
    the grid."""
    num_frames, height, width, channels = frames.shape
    # A picture (one frame) fills every temporal slot of its patches with the same values:
    # they are computed once, then copied (half the work for the usual 2 slots).
    slots = 1 if num_frames == 1 else temporal_patch_size
    remainder = num_frames % slots
    if remainder:
        repeat = np.repeat(frames[-1:], slots - remainder, axis=0)
        frames = np.concatenate([frames, repeat], axis=0)
    grid_t = frames.shape[0] // slots
    grid_h, grid_w = height // patch_size, width // patch_size
    patches = frames.reshape(
        grid_t,
        slots,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
        channels,
    )
    # (t, h / merge, w / merge, merge, merge, channel, temporal, patch, patch): the order
    # of the float path in patchify_video_frames.
    patches = np.ascontiguousarray(patches.transpose(0, 2, 5, 3, 6, 8, 1, 4, 7))
    patches = patches.reshape(grid_t * grid_h * grid_w, channels, slots, -1)
    pixels = np.empty(patches.shape, dtype=np.float32)
    np.copyto(pixels, patches, casting="unsafe")  # astype(np.float32), in place
    np.divide(pixels, np.float32(255.0), out=pixels)
    np.subtract(pixels, np.asarray(mean, dtype=np.float32)[:, None, None], out=pixels)
    np.divide(pixels, np.asarray(std, dtype=np.float32)[:, None, None], out=pixels)
    return pixels, (grid_t, grid_h, grid_w)


def _resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames at (height, width), each resized by Pillow (bicubic); as they are when already."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
            for f in frames
        ]
    )


def _video_frames_size(
    frames: np.ndarray, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(height, width) ``patchify_video_frames`` resizes Qwen2-VL frames to."""
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

    return smart_resize(
        frames.shape[1],
        frames.shape[2],
        factor=factor,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )


def qwen3_vl_frame_count(
    total: int, rate: float, *, fps: float, min_frames: int, max_frames: int
) -> int:
    """How many frames Qwen3-VL samples from a clip of `total` frames at `rate` frames/s
    (``Qwen3VLVideoProcessor.sample_frames``: the clip's length at `fps`, truncated, within
    [`min_frames`, `max_frames`] and never more than the clip has; 24 when the rate is unknown).
    """
    rate = rate or 24.0
    count = int(total / rate * fps)
    return min(max(count, min_frames), max_frames, total)


def qwen3_vl_timestamps(seconds: Sequence[float], temporal_patch_size: int) -> list[float]:
    """The time written before each temporal patch of a Qwen3-VL video
    (``Qwen3VLProcessor._calculate_timestamps``): the frame times padded to a whole patch with
    the last one, then the mean of each patch's first and last frame time."""
    times = list(seconds)
    if len(times) % temporal_patch_size:
        times += [times[-1]] * (temporal_patch_size - len(times) % temporal_patch_size)
    return [
        (times[i] + times[i + temporal_patch_size - 1]) / 2
        for i in range(0, len(times), temporal_patch_size)
    ]


def qwen3_vl_video_size(
    num_frames: int,
    height: int,
    width: int,
    *,
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    min_pixels: int,
    max_pixels: int,
) -> tuple[int, int]:
    """(height, width) Qwen3-VL resizes every frame of a clip to: transformers' own
    ``smart_resize`` for video, whose pixel budget covers all frames together."""
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    if num_frames < temporal_patch_size:
        raise ValueError(
            f"the video has {num_frames} frame(s); Qwen3-VL needs at least {temporal_patch_size}"
        )
    return smart_resize(
        num_frames,
        height,
        width,
        temporal_factor=temporal_patch_size,
        factor=patch_size * merge_size,
        min_pixels=min_pixels,
        max_pixels=max_pixels,
    )


@dataclass
class _Visual:
    kind: Literal["image", "video"]
    pixel_values: torch.Tensor
    grid_thw: tuple[int, int, int]
    merge_size: int
    # M-RoPE temporal step per temporal patch: 1 for Qwen2-VL and images; Qwen2.5-VL videos
    # use tokens_per_second * seconds per temporal patch.
    time_interval: float = 1.0
    # What replaces the placeholder when it is more than pad tokens: a Qwen3-VL video is, per
    # temporal patch, "<t seconds>" + <|vision_start|> + pads + <|vision_end|>, and each
    # patch is its own (1, h, w) block for positions.
    expansion: list[int] | None = None
    # A Molmo2 image (its crops and pooling indices) or video (its frames, pooling indices
    # and timestamps); pixel_values is molmo2.pixel_values.
    molmo2: Molmo2Image | Molmo2Video | None = None
    # A picture kept as one temporal slot (`one_slot_picture`): its values, (patches,
    # channels, patch_size**2) float32, and the slot count; `pixel_values` is then not held
    # but built on access, and `collate` writes every slot straight into the batch.
    one_slot: tuple[torch.Tensor, int] | None = None

    @classmethod
    def one_slot_picture(
        cls, values: torch.Tensor, slots: int, grid_thw: tuple[int, int, int], merge_size: int
    ) -> _Visual:
        """A picture whose patches repeat `values` in each of their `slots` temporal slots,
        held once: half the memory of `pixel_values` for the usual 2 slots (a new picture's
        memory is faulted in page by page: 38 minor faults, ~95 us, per demo picture)."""
        visual = cls("image", None, grid_thw, merge_size, one_slot=(values, slots))  # type: ignore[arg-type]
        del visual.pixel_values
        return visual

    def __getattr__(self, name: str) -> Any:
        # Reached only for an attribute not held: a one-slot picture's `pixel_values`.
        one_slot = self.__dict__.get("one_slot")
        if name != "pixel_values" or one_slot is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        values, slots = one_slot
        count, channels, area = values.shape
        return values[:, :, None].expand(count, channels, slots, area).reshape(count, -1)

    @property
    def num_tokens(self) -> int:
        """Visual (pad) tokens: the model's features for this visual."""
        t, h, w = self.grid_thw
        return t * h * w // (self.merge_size**2)

    def tokens(self, pad_id: int) -> list[int]:
        """The tokens that stand for this visual in a row."""
        return list(self.expansion) if self.expansion is not None else [pad_id] * self.num_tokens

    def blocks(self) -> list[tuple[tuple[int, int, int], float]]:
        """Runs of pad tokens with their grid and temporal step, in row order."""
        if self.expansion is None:
            return [(self.grid_thw, self.time_interval)]
        t, h, w = self.grid_thw
        return [((1, h, w), 1.0)] * t


@dataclass
class _Candidate:
    """A candidate ready for a row: its assistant-turn text and the visuals it stands for."""

    body: str
    visuals: list[_Visual] = field(default_factory=list)


@dataclass
class _EncodedItem:
    """An item with its media decoded (tokenisation happens per row, on the whole string)."""

    prompt_text: str
    prompt_visuals: list[_Visual]
    candidates: list[_Candidate | None]
    error: str | None
    candidate_errors: list[str | None]


@dataclass
class _Row:
    """One sequence sent through the model.

    Attributes:
        item_index: The item the row scores.
        ids: Token ids, visual placeholders expanded (an int64 array for rows built in a
            row-building process: `collate` copies it without a Python loop).
        segments: Per token (a list or, as `ids`, an array), -1 for the prompt (system + user
            turn + assistant header) and the slot number for the tokens of candidate slot k
            (its separator or closing included).
        visuals: Visuals in order of appearance.
        slots: Per slot, (candidate index in the item, first token, read-out token).
    """

    item_index: int
    ids: list[int]
    segments: list[int]
    visuals: list[_Visual]
    slots: list[tuple[int, int, int]]
    # M-RoPE positions of `ids` (`RewardInputBuilder._row_positions`) when computed where the
    # row was built (a row-building process); `collate` computes them otherwise.
    positions: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return len(self.ids)

    @property
    def candidates(self) -> list[int]:
        return [candidate for candidate, _, _ in self.slots]


@dataclass
class _Plan:
    """How one item is scored: its rows, and what the result must say about them."""

    rows: list[_Row]
    error: str | None = None
    candidate_errors: dict[int, str] = field(default_factory=dict)
    layout: str = ""
    note: str = ""


def _media_error_text(exc: Exception) -> str:
    # MediaError already names the file; our ValueErrors are written for users.
    if isinstance(exc, (MediaError, ValueError)):
        return str(exc)
    return f"{exc.__class__.__name__}: {exc}"


def _long_tensor(values: Sequence[int] | np.ndarray) -> torch.Tensor:
    """int64 tensor of token ids or segments: through numpy, several times faster than
    ``torch.tensor`` on a list of ints; no copy for an int64 array."""
    return torch.from_numpy(np.asarray(values, dtype=np.int64))


def _processor_size(processor: Any, key: str) -> int | None:
    size = getattr(processor, "size", None) or {}
    value = size.get(key) if isinstance(size, dict) else getattr(size, key, None)
    return int(value) if value else None


class RewardInputBuilder:
    """Turns [`ScoringItem`]s into [`RewardBatch`]es laid out as the paper trains its head.

    A packed row is the checkpoint's chat template applied to a user turn (images, then video,
    then the prompt text) and an assistant turn holding the N responses joined by
    ``"\\n\\n<|resp_sep|>\\n\\n"``, rendered without a generation prompt (so the turn is
    closed with ``<|im_end|>\\n``) and **tokenised as one string** (BPE merges across the
    boundaries: ``".\\n\\n"`` is one token). Read-out (``resp_repr_mode="last"``): response
    k < N at the token just before the k-th ``<|resp_sep|>``, response N at the row's final
    token. An image or video candidate's text is ``<|vision_start|><|image_pad|><|vision_end|>``
    (expanded to its visual tokens) followed by its caption.

    Isolated rows put each candidate after one shared prompt as if it were the only response
    (the paper's N=1 layout, read at the final ``\\n``), with a mask and restarted positions:
    every score equals a separate pass. It is off-distribution for checkpoints trained packed.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): Must know the Qwen-VL special tokens and
            ``<|resp_sep|>``.
        image_processor (`Qwen2VLImageProcessorPil`, *optional*): Used for images; built with
            default settings when omitted.
        chat_template (`str`, *optional*): Jinja chat template; the tokenizer's own when omitted,
            else Qwen2-VL's ([`QWEN2_VL_CHAT_TEMPLATE`]).
        model_type (`str`): ``"qwen2_vl"`` or ``"qwen2_5_vl"`` (affects video positions).
        patch_size, temporal_patch_size, merge_size (`int`): Vision geometry of the backbone.
        tokens_per_second (`float`, *optional*): Qwen2.5-VL's temporal position scale.
        max_length (`int`): Longest row sent through the model.
        image_max_pixels, min_pixels (`int`, *optional*): Image budget; the image processor's
            ``size`` (the checkpoint's ``preprocessor_config.json``) when omitted.
        video_max_pixels (`int`, *optional*): Per-frame budget; the video processor config's,
            else transformers' Qwen2-VL default.
        max_frames (`int`, *optional*), video_fps (`float`, *optional*): Frames are sampled at
            `video_fps` (2 for Qwen2-VL) up to `max_frames`.
        video_min_pixels (`int`, *optional*), min_frames (`int`, *optional*): The video
            processor's ``size["shortest_edge"]`` and ``min_frames`` (Qwen3-VL samples at least
            `min_frames`); `min_pixels` and 4 when omitted.
        video_mean, video_std (`Sequence[float]`, *optional*): The video processor's
            normalisation; when omitted, Qwen3-VL's video default (0.5) for Qwen3-VL, else
            the image processor's.
        cap_pixels_per_frame (`bool`), max_video_tokens (`int`): Qwen3-VL's optional
            per-frame cap (its video processor's settings of the same names; off by default,
            as in transformers 5.24).

    Qwen3-VL videos follow its own processors (transformers 5.x): `video_max_pixels` and
    `video_min_pixels` bound all frames together, and each temporal patch is written as
    ``<t seconds><|vision_start|>`` + pads + ``<|vision_end|>`` inside the chat template's
    ``<|vision_start|>...<|vision_end|>``.
        overflow (`str`): What packed scoring does with an item whose row exceeds `max_length`
            or that has more than `max_packed_candidates` candidates: ``"isolated"`` scores each
            candidate in isolation, ``"drop"`` keeps the leading responses that fit and reports
            the rest as dropped (the paper's rule). The result always says which.
        molmo2_tokens (`dict`, *optional*): Molmo2Processor's image- and video-token options
            (``image_use_col_tokens``, ``use_single_crop_col_tokens``,
            ``use_single_crop_start_token``, ``video_use_col_tokens``,
            ``use_frame_special_tokens``; its ``processor_config.json``).
        molmo2_video (`dict`, *optional*): Molmo2VideoProcessor's settings as
            [`Molmo2VideoSettings`] fields (``crop_size``, ``num_frames``, ``max_fps``...);
            read from `video_processor` when that is a ``Molmo2VideoProcessor``.
        media_cache ([`MediaCache`], *optional*): Where encoded media are kept by file content
            (a file met again is not decoded again); the worker process's `MEDIA_CACHE` (256
            MiB, shared by every builder, each with keys of its own) when omitted.
            ``MediaCache(0)`` turns it off.
        media_store ([`MediaStore`], *optional*): Where decoded frames, resized for the
            model, are kept on disk by file content and this builder's settings (Qwen-VL
            backbones; Molmo2's media are not stored); the process's `MEDIA_STORE` when
            omitted (off until a directory is set: the gpu workers set one).
        decode_pool ([`DecodePool`], *optional*): Processes that decode and resize an item's
            media files (Qwen-VL pictures, Qwen2-VL and Qwen2.5-VL clips) while this process
            runs the model: `encode_item` hands them all of an item's files not already in
            `media_cache` or `media_store` at once, then takes the frames back in order. The
            process's `DECODE_POOL` when omitted (off until a number of processes is set: the
            gpu workers set one); the frames are the same either way.

    Molmo2 (`model_type="molmo2"`, `image_processor` a ``Molmo2ImageProcessor`` whose settings
    are read, never run) follows transformers' Molmo2 processors (see `molmo2.py`): an image
    is ``<|image|>`` in the rendered text, expanded to its low- and high-resolution tokens;
    every row starts with the BOS token; positions are plain. A video is ``<|video|>``, its
    frames sampled by Molmo2VideoProcessor's rule (``num_frames``, ``max_fps``) and written with
    their timestamps. transformers' Molmo2 takes no images beside a video in a forward and one
    video per text: a candidate that would need either beside the prompt's media is refused, and
    several video (or video and image) answers are scored one row per candidate (layout
    ``"separate"``, with a note). Rows of images and rows of a video in one batch get their
    features computed apart (see `MultiResponseRewardModel`).
    """

    def __init__(
        self,
        tokenizer: Any,
        image_processor: Any | None = None,
        *,
        chat_template: str | None = None,
        model_type: str = "qwen2_vl",
        patch_size: int = 14,
        temporal_patch_size: int = 2,
        merge_size: int = 2,
        tokens_per_second: float | None = None,
        max_length: int = DEFAULT_MAX_LENGTH,
        image_max_pixels: int | None = None,
        video_max_pixels: int | None = None,
        min_pixels: int | None = None,
        max_frames: int | None = None,
        video_fps: float | None = None,
        video_processor: Any | None = None,
        video_min_pixels: int | None = None,
        min_frames: int | None = None,
        video_mean: Sequence[float] | None = None,
        video_std: Sequence[float] | None = None,
        cap_pixels_per_frame: bool = False,
        max_video_tokens: int = 768,
        overflow: str = "isolated",
        max_packed_candidates: int = DEFAULT_MAX_PACKED_CANDIDATES,
        molmo2_tokens: dict[str, Any] | None = None,
        molmo2_video: dict[str, Any] | None = None,
        media_cache: MediaCache | None = None,
        media_store: MediaStore | None = None,
        decode_pool: DecodePool | None = None,
    ) -> None:
        # Molmo2 images and videos are preprocessed by molmo2.py from its processors' settings.
        self.molmo2_tokens = dict(molmo2_tokens or {})
        image_options = {
            k: v for k, v in self.molmo2_tokens.items() if k not in MOLMO2_VIDEO_TOKEN_OPTIONS
        }
        video_options = {
            k: v for k, v in self.molmo2_tokens.items() if k in MOLMO2_VIDEO_TOKEN_OPTIONS
        }
        self.molmo2 = (
            Molmo2ImageSettings.from_processor(image_processor, **image_options)
            if model_type in MOLMO2_BACKBONES
            else None
        )
        self.molmo2_video: Molmo2VideoSettings | None = None
        if self.molmo2 is not None:
            if molmo2_video is not None:
                self.molmo2_video = Molmo2VideoSettings(**molmo2_video, **video_options)
            elif video_processor is not None:
                try:
                    self.molmo2_video = Molmo2VideoSettings.from_processor(
                        video_processor, **video_options
                    )
                except ValueError as exc:
                    self.molmo2_video = Molmo2VideoSettings(unsupported=str(exc))
            else:
                self.molmo2_video = Molmo2VideoSettings(**video_options)
        vision = self.molmo2 is None  # Qwen-VL geometry and budgets apply
        if image_processor is None and vision:
            from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
                Qwen2VLImageProcessorPil,
            )

            image_processor = Qwen2VLImageProcessorPil(
                patch_size=patch_size,
                temporal_patch_size=temporal_patch_size,
                merge_size=merge_size,
            )
        geometry = (
            (
                image_processor.patch_size,
                image_processor.temporal_patch_size,
                image_processor.merge_size,
            )
            if vision
            else (patch_size, temporal_patch_size, merge_size)
        )
        if geometry != (patch_size, temporal_patch_size, merge_size):
            raise ValueError(
                f"image processor geometry (patch, temporal patch, merge) {geometry} does not "
                f"match the model's {(patch_size, temporal_patch_size, merge_size)}"
            )
        if overflow not in OVERFLOW_POLICIES:
            raise ValueError(f"overflow must be one of {OVERFLOW_POLICIES}, got {overflow!r}")
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = (
            chat_template or getattr(tokenizer, "chat_template", None) or QWEN2_VL_CHAT_TEMPLATE
        )
        self.model_type = model_type
        self.patch_size = patch_size
        self.temporal_patch_size = temporal_patch_size
        self.merge_size = merge_size
        self.tokens_per_second = tokens_per_second
        self.max_length = max_length
        self.image_max_pixels = (
            image_max_pixels
            or _processor_size(image_processor, "longest_edge")
            or DEFAULT_IMAGE_MAX_PIXELS
        )
        self.min_pixels = (
            min_pixels or _processor_size(image_processor, "shortest_edge") or DEFAULT_MIN_PIXELS
        )
        # Without a video config, Qwen3-VL's own processor defaults (a budget for the clip).
        qwen3 = QWEN3_VL_VIDEO_DEFAULTS if model_type == "qwen3_vl" else {}
        self.video_max_pixels = (
            video_max_pixels
            or _processor_size(video_processor, "longest_edge")
            or qwen3.get("max_pixels")
            or DEFAULT_VIDEO_MAX_PIXELS
        )
        self.video_min_pixels = (
            video_min_pixels
            or _processor_size(video_processor, "shortest_edge")
            or qwen3.get("min_pixels")
            or self.min_pixels
        )
        self.min_frames = (
            min_frames or getattr(video_processor, "min_frames", None) or QWEN3_VL_MIN_FRAMES
        )
        self.max_frames = (
            max_frames or getattr(video_processor, "max_frames", None) or (DEFAULT_MAX_FRAMES)
        )
        self.video_mean = list(video_mean) if video_mean else qwen3.get("mean")
        self.video_std = list(video_std) if video_std else qwen3.get("std")
        self.cap_pixels_per_frame = bool(cap_pixels_per_frame)
        self.max_video_tokens = max_video_tokens
        self.video_fps = video_fps or getattr(video_processor, "fps", None) or DEFAULT_VIDEO_FPS
        self.overflow = overflow
        self.max_packed_candidates = max_packed_candidates
        self._lock = threading.Lock()
        # Chat-template skeletons by (template, prompt media kinds, generation prompt or not).
        self._skeletons: dict[tuple[str, tuple[str, ...], bool], ChatSkeleton | None] = {}
        # Visuals by (this builder, kind, file digest): what they are depends on the builder's
        # settings, so builders sharing a cache never share entries.
        self.media_cache = MEDIA_CACHE if media_cache is None else media_cache
        self._cache_scope = object()
        self.media_store = MEDIA_STORE if media_store is None else media_store
        self._store_scope_name: str | None = None
        self.decode_pool = DECODE_POOL if decode_pool is None else decode_pool
        # Per thread, while encode_item runs: its files' digests and pool decodes.
        self._item_decodes: dict[int, tuple[dict[str, str | None], dict[tuple, Future]]] = {}
        self.token_ids = self._special_token_ids(tokenizer, vision=vision)
        if self.molmo2 is not None:
            self.token_ids.update(self._molmo2_token_ids(tokenizer))
            self.image_placeholder = getattr(tokenizer, "image_token", None) or MOLMO2_IMAGE_TOKEN
            self.placeholder_ids = {
                "image": self.token_ids[self.image_placeholder],
                "video": self.token_ids.get(
                    getattr(tokenizer, "video_token", None) or MOLMO2_VIDEO_TOKEN, -1
                ),
            }
            self.visual_token_ids = [self.token_ids[t] for t in MOLMO2_VISUAL_TOKENS]
        else:
            self.image_placeholder = IMAGE_PAD
            self.placeholder_ids = {
                "image": self.token_ids[IMAGE_PAD],
                "video": self.token_ids[VIDEO_PAD],
            }
            self.visual_token_ids = [self.token_ids[IMAGE_PAD], self.token_ids[VIDEO_PAD]]
        self.pad_id = (
            self.token_ids[PAD_TOKEN]
            if tokenizer.pad_token_id is None
            else int(tokenizer.pad_token_id)
        )
        if self.pad_id < 0:
            raise ValueError("the tokenizer has no pad token")
        self.sep_id = self.token_ids[RESP_SEP_TOKEN]
        # Control-token literals typed by users are defused before rendering (see _plain).
        self._control_literals = sorted(
            {str(t) for t in getattr(tokenizer, "all_special_tokens", [])}
            | set(SPECIAL_TOKENS)
            | {RESP_SEP_TOKEN}
            | (
                {self.image_placeholder, MOLMO2_VIDEO_TOKEN, *MOLMO2_VISUAL_TOKENS}
                if self.molmo2 is not None
                else set()
            ),
            key=len,
            reverse=True,
        )

    # Rows joined from the chat template's skeleton where it is exact (`chat_skeleton`); False:
    # every row rendered by the template (the same strings; tests and benchmarks compare them).
    chat_skeletons = True

    # What belongs to the process holding the builder, not to its settings: left out when it is
    # pickled (a row-building process gets the builder so, `workers.reward_model.row_building`).
    PROCESS_STATE = (
        "_lock",
        "_item_decodes",
        "_cache_scope",
        "media_cache",
        "media_store",
        "decode_pool",
    )

    def __getstate__(self) -> dict[str, Any]:
        """The settings, tokenizer and processors; not this process's lock, pending decodes,
        media cache, media store or decode pool (see `__setstate__`)."""
        return {k: v for k, v in self.__dict__.items() if k not in self.PROCESS_STATE}

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A builder unpickled in another process uses that process's media cache, store and
        decode pool, as one built there without them."""
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._item_decodes = {}
        self._cache_scope = object()
        self.media_cache, self.media_store, self.decode_pool = MEDIA_CACHE, MEDIA_STORE, DECODE_POOL

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
        vocab = _text_config(config).vocab_size + getattr(
            _text_config(config), "additional_vocab_size", 0
        )
        if config.model_type in MOLMO2_BACKBONES:
            builder = cls(tokenizer, image_processor, model_type=config.model_type, **limits)
            expected = {
                "<im_patch>": config.image_patch_id,
                "<im_start>": config.image_start_token_id,
                "<low_res_im_start>": config.low_res_image_start_token_id,
                "<im_end>": config.image_end_token_id,
            }
            wrong = [
                f"{tok} is {builder.token_ids[tok]} in the tokenizer but {cfg_id} in the model "
                "config"
                for tok, cfg_id in expected.items()
                if builder.token_ids[tok] != cfg_id
            ]
            if wrong:
                raise ValueError("tokenizer does not match the model: " + "; ".join(wrong))
            if len(tokenizer) > vocab:
                raise ValueError(
                    f"tokenizer has {len(tokenizer)} tokens, model embeds only {vocab}"
                )
            return builder
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
        if len(tokenizer) > vocab:
            raise ValueError(f"tokenizer has {len(tokenizer)} tokens, model embeds only {vocab}")
        return builder

    def limits(self) -> dict[str, Any]:
        """The budgets rows are built with (saved beside a checkpoint by `save_reward_model`).

        Molmo2's image budget (crop size, crop count) is its image processor's settings,
        saved with it."""
        if self.molmo2 is not None:
            video = dataclasses.asdict(self.molmo2_video)  # type: ignore[call-overload]
            for key in MOLMO2_VIDEO_TOKEN_OPTIONS:
                video.pop(key)
            return {
                "max_length": self.max_length,
                "molmo2_tokens": dict(self.molmo2_tokens),
                "molmo2_video": video,
            }
        return {
            "max_length": self.max_length,
            "image_max_pixels": self.image_max_pixels,
            "min_pixels": self.min_pixels,
            "video_max_pixels": self.video_max_pixels,
            "video_min_pixels": self.video_min_pixels,
            "min_frames": self.min_frames,
            "max_frames": self.max_frames,
            "video_fps": self.video_fps,
            "cap_pixels_per_frame": self.cap_pixels_per_frame,
            "max_video_tokens": self.max_video_tokens,
        }

    # -- tokenisation -----------------------------------------------------------------------

    @staticmethod
    def _special_token_ids(tokenizer: Any, *, vision: bool = True) -> dict[str, int]:
        """Ids of the control tokens rows use; -1 for vision tokens a text-only builder lacks."""
        ids = {}
        for token in (*SPECIAL_TOKENS, RESP_SEP_TOKEN):
            encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids[token] = int(encoded[0])
            elif vision or token in (RESP_SEP_TOKEN,):
                raise ValueError(f"tokenizer has no special token {token}")
            else:
                ids[token] = -1
        return ids

    @staticmethod
    def _molmo2_token_ids(tokenizer: Any) -> dict[str, int]:
        """Ids of Molmo2's image tokens (``Molmo2Processor.image_token_ids``) and placeholders;
        a missing video placeholder is left out (videos are refused)."""
        image_token = getattr(tokenizer, "image_token", None) or MOLMO2_IMAGE_TOKEN
        video_token = getattr(tokenizer, "video_token", None) or MOLMO2_VIDEO_TOKEN
        ids = {}
        for token in (image_token, video_token, *MOLMO2_VISUAL_TOKENS):
            encoded = tokenizer(token, add_special_tokens=False)["input_ids"]
            if len(encoded) == 1:
                ids[token] = int(encoded[0])
            elif token != video_token:
                raise ValueError(f"tokenizer has no Molmo2 image token {token}")
        return ids

    def _plain(self, text: str) -> str:
        """User text with control-token literals defused (a zero-width space after ``<``).

        The paper tokenises the rendered string whole, so a literal ``<|resp_sep|>`` or
        ``<|im_end|>`` typed by a user would become a control token and shift every read-out.
        """
        if "<|" not in text:
            return text
        for literal in self._control_literals:
            if literal in text:
                text = text.replace(literal, literal[0] + "\u200b" + literal[1:])
        return text

    def _tokenise(self, text: str) -> list[int]:
        # Fast tokenizers reset their truncation state on every call; scorers build rows in
        # prefetch threads, so calls are serialised (they are cheap beside media decoding).
        with self._lock:
            backend = getattr(self.tokenizer, "_tokenizer", None)
            if (
                isinstance(backend, _RustTokenizer)
                and backend.truncation is None
                and backend.padding is None
                and backend.encode_special_tokens
                == bool(getattr(self.tokenizer, "split_special_tokens", False))
            ):
                # What the call below runs once its checks and settings are done (nothing to
                # truncate, pad or split): the same ids, without a third of its time. The
                # batch call without offsets (tokenizers >= 0.21) gives the same ids for a
                # quarter less again (a demo row: 94 -> 65 us).
                fast = getattr(type(backend), "encode_batch_fast", None)
                if fast is not None:
                    return fast(backend, [text], add_special_tokens=False)[0].ids
                return backend.encode(text, add_special_tokens=False).ids
            return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _render_template(self, kinds: tuple[str, ...], prompt_text: str, answer: str | None) -> str:
        """The chat template rendered: a user turn with media of `kinds` then `prompt_text`,
        and an assistant turn holding `answer` (None: the generation prompt instead)."""
        user: list[dict[str, Any]] = [{"type": kind} for kind in kinds]
        user.append({"type": "text", "text": prompt_text})
        messages: list[dict[str, Any]] = [{"role": "user", "content": user}]
        if answer is not None:
            messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
        with self._lock:
            return self.tokenizer.apply_chat_template(
                messages,
                chat_template=self.chat_template,
                tokenize=False,
                add_generation_prompt=answer is None,
            )

    def _skeleton(self, kinds: tuple[str, ...], generation: bool) -> ChatSkeleton | None:
        """The chat template's skeleton for rows of this shape (`chat_skeleton`), derived at
        the shape's first row; None where the template is not content-independent."""
        key = (self.chat_template, kinds, generation)
        try:
            return self._skeletons[key]
        except KeyError:
            pass
        skeleton = None
        if self.chat_skeletons and not VARYING.search(self.chat_template):
            skeleton = derive_skeleton(
                lambda contents: self._render_template(
                    kinds, contents[0], None if generation else contents[1]
                ),
                1 if generation else 2,
            )
        self._skeletons[key] = skeleton
        return skeleton

    def render(self, item: _EncodedItem, bodies: Sequence[str] | None) -> str:
        """The chat-template string of a row; with `bodies` None, the prompt up to the
        assistant header (the generation prompt). Joined from the template's skeleton for
        the row's shape where it has one (the same string), else rendered."""
        kinds = tuple(visual.kind for visual in item.prompt_visuals)
        answer = None if bodies is None else RESPONSE_SEPARATOR.join(bodies)
        skeleton = self._skeleton(kinds, answer is None)
        if skeleton is None:
            text = self._render_template(kinds, item.prompt_text, answer)
        elif answer is None:
            text = skeleton.fill((item.prompt_text,))
        else:
            text = skeleton.fill((item.prompt_text, answer))
        if self.molmo2 is not None:
            # Molmo2Processor starts every text with the BOS token (the EOS token when the
            # tokenizer has none) unless the chat template wrote it.
            bos = self.tokenizer.bos_token or self.tokenizer.eos_token
            if bos and not text.startswith(bos):
                text = bos + text
        return text

    def _expand(self, ids: list[int], visuals: Sequence[_Visual]) -> list[int]:
        """Replace each image/video placeholder by its visual's token count."""
        image_id, video_id = self.placeholder_ids["image"], self.placeholder_ids["video"]
        out: list[int] = []
        pending = iter(visuals)
        found = 0
        for token in ids:
            if token in (image_id, video_id):
                visual = next(pending, None)
                found += 1
                kind = "image" if token == image_id else "video"
                if visual is None or visual.kind != kind:
                    raise ValueError(f"the rendered row has an unexpected {kind} placeholder")
                out += visual.tokens(token)
            else:
                out.append(token)
        if found != len(visuals):
            raise ValueError(
                f"the chat template placed {found} media placeholders for {len(visuals)} media"
            )
        return out

    # -- media ------------------------------------------------------------------------------

    def _digest(self, source: Any) -> str | None:
        """The file's digest when a cache or the store may hold it; `None` for decoded media."""
        if isinstance(source, (Image.Image, VideoFrames)):
            return None
        if not self.media_cache.max_bytes and self._store_scope() is None:
            return None
        known = self._item_decodes.get(threading.get_ident())
        if known is not None and str(source) in known[0]:
            return known[0][str(source)]
        return file_digest(source)

    def _store_scope(self) -> str | None:
        """This builder's name in the media store: a digest of every setting that decides the
        stored frames (and of the libraries that decode and resize them); `None` when the
        store is off or the backbone's media are not stored (Molmo2)."""
        if not self.media_store.enabled or self.molmo2 is not None:
            return None
        if self._store_scope_name is None:
            from importlib.metadata import version

            import PIL
            import transformers

            resample = getattr(self.image_processor, "resample", None)
            settings = {
                # 2: entries hold the file's size ("source"), checked on every hit.
                "format": 2,
                "model_type": self.model_type,
                "geometry": [self.patch_size, self.temporal_patch_size, self.merge_size],
                "image": [
                    type(self.image_processor).__name__,
                    # A number: a processor built in memory holds PIL's enum, one loaded
                    # from a checkpoint's JSON the int, for the same resampling.
                    None if resample is None else int(resample),
                    self.min_pixels,
                    self.image_max_pixels,
                ],
                "video": [
                    self.video_min_pixels,
                    self.video_max_pixels,
                    self.max_frames,
                    self.min_frames,
                    self.video_fps,
                    self.cap_pixels_per_frame,
                    self.max_video_tokens,
                ],
                "libraries": [PIL.__version__, transformers.__version__, version("av")],
            }
            text = repr(sorted(settings.items()))
            self._store_scope_name = hashlib.blake2b(text.encode(), digest_size=12).hexdigest()
        return self._store_scope_name

    def _stored(
        self, kind: str, digest: str | None, source: MediaRef
    ) -> tuple[np.ndarray, dict] | None:
        """The frames stored for `source`'s content, or `None` (then decode it). A hit is held
        to the pixel limit as a fresh decode is (the same `MediaError`), from the file's size
        stored with the frames: the store may have been filled under a higher limit."""
        scope = self._store_scope()
        if scope is None or digest is None:
            return None
        stored = self.media_store.read(scope, kind, digest)
        if stored is None:
            return None
        size = stored[1].get("source")
        if not isinstance(size, list) or len(size) != 2:
            return None  # an entry without the file's size: decode it again (and check it)
        check_pixels(source, int(size[0]), int(size[1]))
        return stored

    def _store(self, kind: str, digest: str | None, frames: np.ndarray, meta: dict) -> None:
        scope = self._store_scope()
        if scope is not None and digest is not None:
            self.media_store.write(scope, kind, digest, frames, meta)

    def _budget(self, kind: str) -> MediaBudget | None:
        """What a pool process needs to decode a file of `kind` as this builder does; `None`
        where this builder decodes its files itself (Molmo2, Qwen3-VL clips, pictures for an
        image processor that is not Qwen-style)."""
        if self.molmo2 is not None:
            return None
        factor = self.patch_size * self.merge_size
        if kind == "image":
            if not self._resizes_to_budget():
                return None
            return MediaBudget(
                factor=factor,
                min_pixels=self.min_pixels,
                max_pixels=self.image_max_pixels,
                resample=int(self.image_processor.resample),
                pixel_limit=Image.MAX_IMAGE_PIXELS,
            )
        if kind != "video" or self.model_type == "qwen3_vl":
            return None
        return MediaBudget(
            factor=factor,
            min_pixels=self.video_min_pixels,
            max_pixels=self.video_max_pixels,
            max_frames=self.max_frames,
            max_side=int(2 * math.sqrt(self.video_max_pixels)) + 28,
            fps=self.video_fps,
            pixel_limit=Image.MAX_IMAGE_PIXELS,
        )

    def _submit_decodes(self, item: ScoringItem) -> None:
        """Hand the pool every media file of `item` that is neither in the cache nor in the
        store, all at once: the pool's processes decode them side by side while this thread
        (and the model) go on."""
        sources: list[tuple[str, Any]] = [
            ("image", item.prompt_image),
            ("video", item.prompt_video),
            *((c.kind, c.path) for c in item.candidates if c.media is None),
        ]
        digests: dict[str, str | None] = {}
        futures: dict[tuple, Future] = {}
        for kind, source in sources:
            if source is None or isinstance(source, (Image.Image, VideoFrames)):
                continue
            budget = self._budget(kind)
            if budget is None or (kind, str(source)) in futures:
                continue
            digest = digests[str(source)] = self._digest(source)
            if digest is not None and self._holds(kind, digest):
                continue
            # The pool process writes the store's entry itself (compressing a clip's frames
            # costs more than patchifying them): this process only counts it.
            scope = self._store_scope()
            store_path = (
                None
                if scope is None or digest is None
                else self.media_store.path_for(scope, kind, digest)
            )
            future = self.decode_pool.submit(kind, str(source), budget, store_path)
            if future is None:
                break  # the pool is off or lost: this thread decodes them
            futures[(kind, str(source))] = future
        self._item_decodes[threading.get_ident()] = (digests, futures)

    def _holds(self, kind: str, digest: str) -> bool:
        """Whether the cache or the store has (or is making) this file's visual."""
        if (self._cache_scope, kind, digest) in self.media_cache:
            return True
        scope = self._store_scope()
        return scope is not None and self.media_store.contains(scope, kind, digest)

    def _pool_decoded(
        self, kind: str, source: Any, digest: str | None
    ) -> tuple[np.ndarray, dict] | None:
        """The frames a pool process decoded for `source` (submitted by `encode_item`), or
        `None`: then this thread decodes it. The entry the pool process wrote to the store
        is counted there; one it could not write is written from here."""
        known = self._item_decodes.get(threading.get_ident())
        future = None if known is None else known[1].pop((kind, str(source)), None)
        if future is None:
            return None
        try:
            frames, meta, written = future.result()
        except (BrokenProcessPool, CancelledError) as exc:
            self.decode_pool.broken(None, exc)
            return None
        if written:
            self.media_store.account(written)
        else:
            self._store(kind, digest, frames, meta)
        return frames, meta

    def encode_image(self, image: MediaRef | Image.Image) -> _Visual:
        """Load (if a path) and patchify an image; raises `MediaError` for unreadable files.

        A file whose content was encoded before comes from `media_cache`, one decoded
        before from `media_store`."""
        digest = self._digest(image)
        if digest is None or not self.media_cache.max_bytes:
            return self._encode_image(image, digest)
        key = (self._cache_scope, "image", digest)
        return self.media_cache.get_or_compute(key, lambda: self._encode_image(image, digest))

    def _encode_image(self, image: MediaRef | Image.Image, digest: str | None = None) -> _Visual:
        if self.molmo2 is not None:
            if not isinstance(image, Image.Image):
                image = load_image(image)
            inputs = molmo2_image_inputs(image, self.molmo2)
            tokens = molmo2_image_tokens(inputs.grid, self.token_ids, self.molmo2)
            grid = (1, inputs.grid[0] * inputs.grid[1], inputs.grid[2] * inputs.grid[3])
            return _Visual("image", inputs.pixel_values, grid, 1, expansion=tokens, molmo2=inputs)
        if not isinstance(image, Image.Image):
            # The pixels as an array from here (a picture's bytes are copied once, not for
            # every step); a Pillow image again only for a processor that needs one.
            stored = self._stored("image", digest, image)
            if stored is not None:
                pixels = stored[0][0]
            elif (decoded := self._pool_decoded("image", image, digest)) is not None:
                pixels = decoded[0][0]
            else:
                loaded = load_image(image)
                source = [loaded.width, loaded.height]
                pixels = np.asarray(self._image_to_budget(loaded))
                if self._resizes_to_budget():
                    self._store("image", digest, pixels[None], {"source": source})
            direct = self._patchify_at_budget(pixels)
            if direct is not None:
                return direct
            image = Image.fromarray(pixels)
        out = self.image_processor(
            images=[image.convert("RGB")],
            size={"shortest_edge": self.min_pixels, "longest_edge": self.image_max_pixels},
            return_tensors="pt",
        )
        grid = tuple(int(v) for v in out["image_grid_thw"][0])
        return _Visual("image", out["pixel_values"], grid, self.merge_size)  # type: ignore[arg-type]

    def _patchify_at_budget(self, image: Image.Image | np.ndarray) -> _Visual | None:
        """An image already at its budget size, rescaled, normalised and patchified as
        ``Qwen2VLImageProcessorPil`` does (the same float32 values, bit for bit), without the
        processor's argument checks and copies: a third of a small picture's encoding time.

        `image` is a Pillow image or its RGB pixels, ``(height, width, 3)`` uint8. `None` for
        any other processor, setting or image: the processor then runs as it does.
        """
        processor_type, _, clip_mean, clip_std = _qwen2vl_pil()
        processor = self.image_processor
        if (
            type(processor) is not processor_type
            or not (processor.do_rescale and processor.do_normalize)
            or processor.rescale_factor != 1 / 255
        ):
            return None
        if isinstance(image, Image.Image):
            if image.mode != "RGB":
                return None
            image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            return None
        height, width = image.shape[:2]
        factor = self.patch_size * self.merge_size
        if width % factor or height % factor:
            return None  # not at a size _image_to_budget gives: the processor resizes it
        mean = processor.image_mean or clip_mean
        std = processor.image_std or clip_std
        if len(mean) != 3 or len(std) != 3:
            return None
        # patchify_video_frames(image[None], size=(height, width)) with its mean and std:
        # nothing to resize, uint8 frames, so its `_patchify_uint8`, one slot kept.
        values, grid = _patch_values(
            image[None],
            tuple(float(v) for v in mean),
            tuple(float(v) for v in std),
            self.patch_size,
            self.temporal_patch_size,
            self.merge_size,
        )
        if values.shape[2] == self.temporal_patch_size:  # one slot in all: nothing repeats
            pixels = torch.from_numpy(values.reshape(len(values), -1))
            return _Visual("image", pixels, grid, self.merge_size)
        values = torch.from_numpy(values.reshape(*values.shape[:2], -1))
        return _Visual.one_slot_picture(values, self.temporal_patch_size, grid, self.merge_size)

    def _image_to_budget(self, image: Image.Image) -> Image.Image:
        """Resizes a decoded file once, straight to the size the image processor picks for it
        (``smart_resize`` within the pixel budget, the processor's own resampling).

        The processor's resize then finds the image at its size and only copies it: one
        resample, not two, and the same pixels as giving the processor the decoded image (as
        the paper's recipe does), which a cap before the processor's resize would not give.
        """
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        if not self._resizes_to_budget():
            return image  # not a Qwen-style processor: let it resize as it does
        resample = self.image_processor.resample
        height, width = smart_resize(
            image.height,
            image.width,
            factor=self.patch_size * self.merge_size,
            min_pixels=self.min_pixels,
            max_pixels=self.image_max_pixels,
        )
        if (width, height) == image.size:
            return image
        return image.resize((width, height), Image.Resampling(int(resample)))

    def _resizes_to_budget(self) -> bool:
        return getattr(self.image_processor, "resample", None) is not None and hasattr(
            self.image_processor, "merge_size"
        )

    def encode_video(self, video: MediaRef | VideoFrames) -> _Visual:
        """Sample (if a path) and patchify a video; raises `MediaError` for unreadable files.

        Frames are sampled at the processor's rate (`video_fps`) up to `max_frames`. A file
        whose content was encoded before comes from `media_cache`, one decoded before from
        `media_store`.
        """
        digest = self._digest(video)
        if digest is None or not self.media_cache.max_bytes:
            return self._encode_video(video, digest)
        key = (self._cache_scope, "video", digest)
        return self.media_cache.get_or_compute(key, lambda: self._encode_video(video, digest))

    def _encode_video(self, video: MediaRef | VideoFrames, digest: str | None = None) -> _Visual:
        if self.molmo2 is not None:
            return self._encode_molmo2_video(video)
        if self.model_type == "qwen3_vl":
            return self._encode_qwen3_vl_video(video, digest)
        size = None
        if not isinstance(video, VideoFrames):
            stored = self._stored("video", digest, video)
            if stored is None:
                stored = self._pool_decoded("video", video, digest)
            if stored is not None:
                frames, meta = stored
                video = VideoFrames(frames, [], [], float(meta["fps"]))
            else:
                video = sample_video_frames(
                    video,
                    max_frames=self.max_frames,
                    max_side=int(2 * math.sqrt(self.video_max_pixels)) + 28,
                    fps=self.video_fps,
                )
                # Stored as patchify_video_frames resizes them: decoding and resizing are
                # what a stored clip saves.
                height, width = _video_frames_size(
                    video.frames,
                    factor=self.patch_size * self.merge_size,
                    min_pixels=self.video_min_pixels,
                    max_pixels=self.video_max_pixels,
                )
                frames = _resize_frames(video.frames, height, width)
                video = dataclasses.replace(video, frames=frames)
                meta = {"fps": video.fps, "source": list(video.source_size or ())}
                self._store("video", digest, frames, meta)
            size = video.frames.shape[1:3]
        pixel_values, grid = patchify_video_frames(
            video.frames,
            size=size,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
            min_pixels=self.video_min_pixels,
            max_pixels=self.video_max_pixels,
            image_mean=self.video_mean or self.image_processor.image_mean,
            image_std=self.video_std or self.image_processor.image_std,
        )
        interval = 1.0
        if self.model_type == "qwen2_5_vl" and self.tokens_per_second:
            interval = self.tokens_per_second * self.temporal_patch_size / max(video.fps, 1e-6)
        return _Visual("video", pixel_values, grid, self.merge_size, interval)

    def _encode_molmo2_video(self, video: MediaRef | VideoFrames) -> _Visual:
        """A video as transformers' Molmo2 processors lay it out: frames sampled by
        ``Molmo2VideoProcessor.sample_frames`` (from the file's frame count and rate), each
        resized to one crop, written after its time (frame index / the file's rate).

        Pre-sampled `VideoFrames` are taken as they are (``do_sample_frames=False``); their
        times come from `indices` / `source_fps`, else from `timestamps`.
        """
        settings = self.molmo2_video
        if settings is None or self.placeholder_ids["video"] < 0:
            raise ValueError(f"{self.model_type} tokenizer has no video token {MOLMO2_VIDEO_TOKEN}")
        if settings.unsupported:
            raise ValueError(f"{self.model_type} videos cannot be scored: {settings.unsupported}")
        if not isinstance(video, VideoFrames):
            video = sample_video_frames(
                video,
                max_side=None,
                frame_indices=lambda total, rate: molmo2_frame_indices(total, rate, settings),
            )
        if video.source_fps:
            seconds = [index / video.source_fps for index in video.indices]
        else:
            seconds = list(video.timestamps)
        inputs = molmo2_video_inputs(video.frames, seconds, settings)
        tokens = molmo2_video_tokens(inputs, self.token_ids, settings, self._tokenise)
        frames, rows, cols = inputs.grid
        return _Visual(
            "video", inputs.pixel_values, (frames, rows, cols), 1, expansion=tokens, molmo2=inputs
        )

    def _qwen3_vl_size(self, num_frames: int, height: int, width: int) -> tuple[int, int]:
        max_pixels = self.video_max_pixels
        if self.cap_pixels_per_frame:
            # Qwen3VLVideoProcessor.resize's cap: each frame gets at most max_video_tokens
            # patches or its share of the budget, and at least 1.05x the minimum.
            factor = self.patch_size * self.merge_size
            frame_cap = self.max_video_tokens * factor * factor
            per_frame = max(
                min(frame_cap, self.video_max_pixels // num_frames),
                int(self.video_min_pixels * 1.05),
            )
            max_pixels = per_frame * num_frames
        return qwen3_vl_video_size(
            num_frames,
            height,
            width,
            patch_size=self.patch_size,
            merge_size=self.merge_size,
            temporal_patch_size=self.temporal_patch_size,
            min_pixels=self.video_min_pixels,
            max_pixels=max_pixels,
        )

    def _encode_qwen3_vl_video(
        self, video: MediaRef | VideoFrames, digest: str | None = None
    ) -> _Visual:
        """A video as transformers' Qwen3-VL processors lay it out: frames sampled and resized
        by its video processor's rules, then per temporal patch a timestamp and its pads.

        Pre-sampled `VideoFrames` are taken as they are (the processor's
        ``do_sample_frames=False``); their times come from `indices` / `source_fps`, else
        from `timestamps`.
        """
        stored = None if isinstance(video, VideoFrames) else self._stored("video", digest, video)
        if stored is not None:
            frames, meta = stored
            # Sampled and resized by the rules below when stored; the frame times are kept.
            video = VideoFrames(frames, [], list(meta["seconds"]), 1.0)
            size = frames.shape[1:3]
        elif isinstance(video, VideoFrames):
            _, height, width, _ = video.frames.shape
            size = self._qwen3_vl_size(len(video.frames), height, width)
        else:

            def frame_count(total: int, rate: float) -> int:
                return qwen3_vl_frame_count(
                    total,
                    rate,
                    fps=self.video_fps,
                    min_frames=self.min_frames,
                    max_frames=self.max_frames,
                )

            def frame_size(count: int, width: int, height: int) -> tuple[int, int]:
                height, width = self._qwen3_vl_size(count, height, width)
                return width, height

            video = sample_video_frames(video, frame_count=frame_count, frame_size=frame_size)
            size = video.frames.shape[1:3]
            if video.source_fps:
                seconds = [index / video.source_fps for index in video.indices]
            else:
                seconds = list(video.timestamps)
            meta = {"seconds": seconds, "source": list(video.source_size or ())}
            self._store("video", digest, video.frames, meta)
        pixel_values, grid = patchify_video_frames(
            video.frames,
            patch_size=self.patch_size,
            temporal_patch_size=self.temporal_patch_size,
            merge_size=self.merge_size,
            image_mean=self.video_mean or self.image_processor.image_mean,
            image_std=self.video_std or self.image_processor.image_std,
            size=(int(size[0]), int(size[1])),
        )
        if video.source_fps:
            seconds = [index / video.source_fps for index in video.indices]
        else:
            seconds = list(video.timestamps)
        start, end = self.token_ids[VISION_START], self.token_ids[VISION_END]
        pads = [self.token_ids[VIDEO_PAD]] * (grid[1] * grid[2] // self.merge_size**2)
        expansion: list[int] = []
        for time in qwen3_vl_timestamps(seconds, self.temporal_patch_size):
            # Between control tokens the timestamp is tokenised on its own, as it is inside
            # the processor's expanded string.
            expansion += [*self._tokenise(f"<{time:.1f} seconds>"), start, *pads, end]
        return _Visual("video", pixel_values, grid, self.merge_size, expansion=expansion)

    # -- items ------------------------------------------------------------------------------

    def encode_candidate(self, candidate: CandidateInput) -> _Candidate:
        """A candidate's assistant-turn text (and visuals for image/video candidates)."""
        if candidate.kind == "text":
            if not candidate.text.strip():
                raise ValueError("empty response text")
            return _Candidate(self._plain(candidate.text))
        if candidate.kind not in ("image", "video"):
            raise ValueError(f"unknown candidate kind {candidate.kind!r}")
        source = candidate.media if candidate.media is not None else candidate.path
        if source is None:
            raise ValueError(f"{candidate.kind} candidate has neither path nor media")
        if candidate.kind == "image":
            visual = self.encode_image(source)  # type: ignore[arg-type]
            pad = IMAGE_PAD
        else:
            visual = self.encode_video(source)  # type: ignore[arg-type]
            pad = VIDEO_PAD
        if self.molmo2 is not None:
            # Molmo2Processor expands its placeholders wherever they stand in the text.
            placeholder = (
                self.image_placeholder
                if candidate.kind == "image"
                else getattr(self.tokenizer, "video_token", None) or MOLMO2_VIDEO_TOKEN
            )
            body = f"{placeholder}{self._plain(candidate.text)}"
        else:
            body = f"{VISION_START}{pad}{VISION_END}{self._plain(candidate.text)}"
        return _Candidate(body, [visual])

    def encode_item(self, item: ScoringItem) -> _EncodedItem:
        """Decode an item's media, capturing failures per item and per candidate."""
        if self.decode_pool.processes < 1 or self.molmo2 is not None:
            return self._encode_item(item)
        self._submit_decodes(item)
        try:
            return self._encode_item(item)
        finally:
            _, futures = self._item_decodes.pop(threading.get_ident(), (None, {}))
            for future in futures.values():
                future.cancel()  # not taken: the item failed before needing them

    def _encode_item(self, item: ScoringItem) -> _EncodedItem:
        count = len(item.candidates)
        text = self._plain(item.prompt_text)
        if count == 0:
            return _EncodedItem(text, [], [], "item has no candidates", [])
        try:
            visuals = []
            if item.prompt_image is not None:
                visuals.append(self.encode_image(item.prompt_image))
            if item.prompt_video is not None:
                if self.molmo2 is not None and visuals:
                    raise ValueError(
                        f"{self.model_type} takes no image beside a video (as transformers' "
                        "Molmo2 forward): a prompt with both cannot be scored"
                    )
                visuals.append(self.encode_video(item.prompt_video))
        except (MediaError, ValueError, OSError) as exc:
            error = f"prompt: {_media_error_text(exc)}"
            return _EncodedItem(text, [], [None] * count, error, [None] * count)
        candidates: list[_Candidate | None] = []
        errors: list[str | None] = []
        for candidate in item.candidates:
            try:
                candidates.append(self.encode_candidate(candidate))
                errors.append(None)
            except (MediaError, ValueError, OSError) as exc:
                candidates.append(None)
                errors.append(_media_error_text(exc))
        if self.molmo2 is not None and visuals:
            # transformers' Molmo2 takes no images beside a video in a forward, and one video
            # per text: a candidate whose row would need either cannot be scored as it is.
            prompt_video = any(v.kind == "video" for v in visuals)
            for index, candidate in enumerate(candidates):
                kinds = {v.kind for v in candidate.visuals} if candidate is not None else set()
                if "video" in kinds or (prompt_video and kinds):
                    candidates[index] = None
                    errors[index] = (
                        f"{self.model_type} takes no image beside a video and one video per "
                        "row (as transformers' Molmo2 forward and processor): this answer's "
                        "media cannot be scored with the prompt's"
                    )
        return _EncodedItem(text, visuals, candidates, None, errors)

    # -- rows -------------------------------------------------------------------------------

    def _prompt_ids(self, item: _EncodedItem) -> tuple[list[int], list[int]]:
        """(raw ids, expanded ids) of the prompt: system + user turn + assistant header."""
        raw = self._tokenise(self.render(item, None))
        return raw, self._expand(raw, item.prompt_visuals)

    def packed_row(self, item_index: int, item: _EncodedItem, order: Sequence[int]) -> _Row:
        """All candidates in `order` in one assistant turn, read out as the paper does."""
        candidates = [item.candidates[i] for i in order]
        if any(c is None for c in candidates):
            raise ValueError("packed_row needs encoded candidates")
        text = self.render(item, [c.body for c in candidates])  # type: ignore[union-attr]
        raw = self._tokenise(text)
        prompt_raw, prompt_ids = self._prompt_ids(item)
        # The response region starts where the whole-string tokens leave the prompt's (BPE
        # can merge across the boundary, so compare tokens, not lengths).
        shared = 0
        for a, b in zip(raw, prompt_raw, strict=False):
            if a != b:
                break
            shared += 1
        visuals = [*item.prompt_visuals, *(v for c in candidates for v in c.visuals)]  # type: ignore[union-attr]
        ids = self._expand(raw, visuals)
        start = shared + (len(prompt_ids) - len(prompt_raw))
        seps = [i for i in range(start, len(ids)) if ids[i] == self.sep_id]
        if len(seps) != len(order) - 1:
            raise ValueError(
                f"found {len(seps)} {RESP_SEP_TOKEN} tokens for {len(order)} responses"
            )
        starts = [start, *(s + 1 for s in seps)]
        ends = [*(s - 1 for s in seps), len(ids) - 1]
        segments = [_PROMPT_SEGMENT] * start
        bounds = [*starts[1:], len(ids)]
        for slot, (first, stop) in enumerate(zip(starts, bounds, strict=True)):
            segments += [slot] * (stop - first)
        slots = [(order[k], starts[k], ends[k]) for k in range(len(order))]
        return _Row(item_index, ids, segments, visuals, slots)

    def _isolated_tail(self, item: _EncodedItem, index: int, prompt_raw: list[int]) -> list[int]:
        """Tokens after the prompt of the one-response row of candidate `index` (unexpanded)."""
        body = item.candidates[index].body  # type: ignore[union-attr]
        raw = self._tokenise(self.render(item, [body]))
        if raw[: len(prompt_raw)] == prompt_raw:
            return raw[len(prompt_raw) :]
        # BPE merged across the prompt/response boundary: tokenise the tail on its own.
        text = self.render(item, [body])
        return self._tokenise(text[len(self.render(item, None)) :])

    def _tails(self, item: _EncodedItem, indices: Sequence[int], prompt_raw: list[int]) -> dict:
        """Expanded tokens after the prompt of each candidate's one-response row."""
        return {
            index: self._expand(
                self._isolated_tail(item, index, prompt_raw),
                item.candidates[index].visuals,  # type: ignore[union-attr]
            )
            for index in indices
        }

    def isolated_row(
        self,
        item_index: int,
        item: _EncodedItem,
        indices: Sequence[int],
        tails: dict[int, list[int]] | None = None,
    ) -> _Row:
        """One shared prompt, then each candidate laid out as the only response (`tails`:
        the candidates' tokens when the caller has them already)."""
        prompt_raw, ids = self._prompt_ids(item)
        tails = tails or self._tails(item, indices, prompt_raw)
        visuals = list(item.prompt_visuals)
        segments = [_PROMPT_SEGMENT] * len(ids)
        slots = []
        for slot, index in enumerate(indices):
            candidate = item.candidates[index]
            tail = tails[index]
            slots.append((index, len(ids), len(ids) + len(tail) - 1))
            ids = ids + tail
            segments += [slot] * len(tail)
            visuals += candidate.visuals  # type: ignore[union-attr]
        return _Row(item_index, ids, segments, visuals, slots)

    def plan(self, item_index: int, item: _EncodedItem, mode: AttentionMode) -> _Plan:
        """Lay out an encoded item as rows within `max_length`, saying how.

        Packed: one row with every candidate. When it is longer than `max_length`, or holds
        more than `max_packed_candidates`, `overflow` decides: ``"isolated"`` (each candidate
        scored as if alone, still comparable with each other) or ``"drop"`` (the leading
        candidates that fit, the rest reported as dropped). Isolated rows are split over
        several rows when needed, which does not change their scores.
        """
        if item.error is not None:
            return _Plan([], error=item.error)
        usable = [i for i, c in enumerate(item.candidates) if c is not None]
        if not usable:
            return _Plan([], layout=mode)
        if mode != "separate" and self._molmo2_videos_apart(item, usable):
            plan = self.plan(item_index, item, "separate")
            plan.note = (
                "Molmo2 takes one video per row and no image beside it: one row per candidate"
            )
            return plan
        if mode == "packed":
            too_many = len(usable) > self.max_packed_candidates
            row = None if too_many else self.packed_row(item_index, item, usable)
            if row is not None and row.length <= self.max_length:
                return _Plan([row], layout="packed")
            reason = (
                f"{len(usable)} candidates, over the {self.max_packed_candidates} packed together"
                if too_many
                else f"the packed row is {row.length} tokens, over max_length {self.max_length}"  # type: ignore[union-attr]
            )
            if self.overflow == "drop":
                return self._plan_dropped(item_index, item, usable, reason)
            plan = self.plan(item_index, item, "isolated")
            plan.note = f"{reason}: each candidate scored in isolation"
            return plan
        prompt_raw, prompt_ids = self._prompt_ids(item)
        if len(prompt_ids) >= self.max_length:
            return _Plan(
                [],
                error=f"prompt is {len(prompt_ids)} tokens, over max_length {self.max_length}",
            )
        errors: dict[int, str] = {}
        fitting: list[tuple[int, int]] = []
        tails = self._tails(item, usable, prompt_raw)
        for index in usable:
            tail = len(tails[index])
            if len(prompt_ids) + tail > self.max_length:
                errors[index] = (
                    f"input is {len(prompt_ids) + tail} tokens (prompt {len(prompt_ids)} + "
                    f"response {tail}), over max_length {self.max_length}"
                )
            else:
                fitting.append((index, tail))
        if mode == "isolated" and self._images_see_each_other(item, [i for i, _ in fitting]):
            # In a one-response row every Molmo2 image token sees every other, the prompt's
            # included; a shared prompt cannot see each candidate's, so one row per candidate.
            rows = [self.packed_row(item_index, item, [index]) for index, _ in fitting]
            note = "Molmo2 prompt and answer images attend to each other: one row per candidate"
            return _Plan(rows, candidate_errors=errors, layout="separate", note=note)
        if mode == "separate":
            rows = [self.packed_row(item_index, item, [index]) for index, _ in fitting]
            return _Plan(rows, candidate_errors=errors, layout="separate")
        groups: list[list[int]] = []
        length = len(prompt_ids)
        for index, tail in fitting:
            if not groups or length + tail > self.max_length:
                groups.append([])
                length = len(prompt_ids)
            groups[-1].append(index)
            length += tail
        rows = [self.isolated_row(item_index, item, group, tails) for group in groups]
        return _Plan(rows, candidate_errors=errors, layout="isolated")

    def _molmo2_videos_apart(self, item: _EncodedItem, indices: Sequence[int]) -> bool:
        """Whether the candidates' media cannot share a Molmo2 row: a video answer beside
        another video or an image (transformers' Molmo2 takes one video per text and no
        images beside it; the prompt's media were checked in `encode_item`)."""
        if self.molmo2 is None:
            return False
        kinds = [v.kind for i in indices for v in item.candidates[i].visuals]  # type: ignore[union-attr]
        return "video" in kinds and len(kinds) > 1

    def _images_see_each_other(self, item: _EncodedItem, indices: Sequence[int]) -> bool:
        """Whether isolated rows would differ from separate ones: a Molmo2 prompt image and
        an image answer (Molmo2's image tokens attend to each other in both directions)."""
        return (
            self.molmo2 is not None
            and bool(item.prompt_visuals)
            and any(item.candidates[i].visuals for i in indices)  # type: ignore[union-attr]
        )

    def _plan_dropped(
        self, item_index: int, item: _EncodedItem, usable: list[int], reason: str
    ) -> _Plan:
        keep = usable[: self.max_packed_candidates]
        while keep:
            row = self.packed_row(item_index, item, keep)
            if row.length <= self.max_length:
                break
            keep = keep[:-1]
        dropped = [i for i in usable if i not in keep]
        message = f"dropped: {reason} (the paper's overflow rule keeps the leading responses)"
        errors = dict.fromkeys(dropped, message)
        if not keep:
            return _Plan([], candidate_errors=errors, layout="packed", note=reason)
        note = f"{reason}: {len(dropped)} trailing candidates dropped"
        return _Plan([row], candidate_errors=errors, layout="packed", note=note)

    def _row_positions(self, ids: list[int], visuals: list[_Visual]) -> torch.Tensor:
        """M-RoPE positions (3, L) for one row, the same rule as the backbone's get_rope_index.

        Text advances all three axes by one per token; a visual block gets (t, h, w) grid
        positions offset by the current position, then the position jumps past the larger of
        its height and width. A Qwen3-VL video is one (1, h, w) block per temporal patch, as
        its get_rope_index splits ``video_grid_thw`` (the timestamps between them are text).
        Positions are translation-equivariant, which isolated mode uses.
        """
        if self.molmo2 is not None:
            # Molmo2: plain RoPE, one position per token, images included.
            return torch.arange(len(ids)).expand(3, -1).clone()
        image_id, video_id = self.token_ids[IMAGE_PAD], self.token_ids[VIDEO_PAD]
        is_visual = np.isin(np.asarray(ids), (image_id, video_id))
        # Runs of text / visual tokens, found with numpy: rows can be 24k tokens long.
        bounds = [0, *(np.flatnonzero(np.diff(is_visual.astype(np.int8))) + 1).tolist(), len(ids)]
        chunks = []
        current = 0
        blocks = iter([(v.merge_size, *block) for v in visuals for block in v.blocks()])
        for start, end in zip(bounds[:-1], bounds[1:], strict=True):
            if not is_visual[start]:
                chunks.append((torch.arange(end - start) + current).expand(3, -1))
                current += end - start
                continue
            index = start
            while index < end:  # one run may hold several adjacent visuals
                merge, (t, h, w), interval = next(blocks)
                lh, lw = h // merge, w // merge
                temporal = (torch.arange(t) * interval).long() + current
                height, width = torch.arange(lh) + current, torch.arange(lw) + current
                grid = torch.meshgrid(temporal, height, width, indexing="ij")
                chunks.append(torch.stack(grid).reshape(3, -1))
                current += max(lh, lw)
                index += t * lh * lw
        return torch.cat(chunks, dim=1)

    def collate(self, rows: Sequence[_Row], mode: AttentionMode) -> RewardBatch:
        """Pad rows into one [`RewardBatch`] (right padding)."""
        if mode not in ATTENTION_MODES:
            raise ValueError(f"unknown attention mode {mode!r}; expected one of {ATTENTION_MODES}")
        width = max(len(row.slots) for row in rows)
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
            positions = row.positions
            if positions is None:
                positions = self._row_positions(row.ids, row.visuals)
            elif mode == "isolated":
                positions = positions.clone()  # shifted below; the row's stay as built
            for slot, (_, first, last) in enumerate(row.slots):
                starts[r, slot] = first
                ends[r, slot] = last
            if mode == "isolated":
                seg_t = _long_tensor(row.segments)
                first_start = row.slots[0][1]
                for slot in range(1, len(row.slots)):
                    shift = positions[0, row.slots[slot][1]] - positions[0, first_start]
                    positions[:, seg_t == slot] -= shift
            n = row.length
            input_ids[r, :n] = _long_tensor(row.ids)
            segment_ids[r, :n] = _long_tensor(row.segments)
            position_ids[:, r, :n] = positions
            for visual in row.visuals:
                (images if visual.kind == "image" else videos).append(visual)
        if self.molmo2 is not None:
            # Molmo2Processor.create_mm_token_type_ids: every image token is type 1.
            mm_types = torch.isin(input_ids, torch.tensor(self.visual_token_ids)).int()
            molmo2 = collate_molmo2_images([v.molmo2 for v in images]) if images else {}  # type: ignore[misc]
            if videos:
                molmo2.update(collate_molmo2_videos([v.molmo2 for v in videos]))  # type: ignore[misc]
            kinds = tuple(v.kind for row in rows for v in row.visuals)
            return RewardBatch(
                input_ids=input_ids,
                segment_ids=segment_ids,
                position_ids=position_ids,
                mm_token_type_ids=mm_types,
                response_starts=starts,
                response_ends=ends,
                mode=mode,
                pixel_values=molmo2.get("pixel_values"),
                image_token_pooling=molmo2.get("image_token_pooling"),
                image_grids=molmo2.get("image_grids"),
                image_num_crops=molmo2.get("image_num_crops"),
                pixel_values_videos=molmo2.get("pixel_values_videos"),
                video_token_pooling=molmo2.get("video_token_pooling"),
                video_grids=molmo2.get("video_grids"),
                visual_kinds=kinds if images and videos else None,
            )
        image_id, video_id = self.token_ids[IMAGE_PAD], self.token_ids[VIDEO_PAD]
        mm_types = (input_ids == image_id).int() + 2 * (input_ids == video_id).int()

        def stack(visuals: list[_Visual]) -> tuple[torch.Tensor | None, torch.Tensor | None]:
            if not visuals:
                return None, None
            pixels = _cat_pixels(visuals)
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
            try:
                if mode == "isolated":
                    row = self.isolated_row(number, encoded, permutation)
                else:
                    row = self.packed_row(number, encoded, permutation)
            except ValueError as exc:
                skipped.append(f"example {number}: {exc}")
                continue
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
