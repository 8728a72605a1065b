"""The input builder: chat-template rows, read-out positions, media, batches."""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image

from workers.media import MediaError, VideoFrames, load_image, sample_video_frames
from workers.reward_model.model import (
    MultiResponseRewardModel,
    RewardBatch,
    TrainingBatch,
    _text_config,
)
from workers.reward_model.records import (
    _PAD_SEGMENT,
    _PROMPT_SEGMENT,
    ATTENTION_MODES,
    DEFAULT_IMAGE_MAX_PIXELS,
    DEFAULT_MAX_FRAMES,
    DEFAULT_MAX_LENGTH,
    DEFAULT_MIN_PIXELS,
    DEFAULT_VIDEO_MAX_PIXELS,
    IMAGE_PAD,
    PAD_TOKEN,
    PROMPT_PREFIX,
    PROMPT_SUFFIX,
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
