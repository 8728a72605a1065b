"""Molmo2 images without torchvision: the crops, pooling indices and tokens of transformers'
``Molmo2ImageProcessor`` and ``Molmo2Processor`` (transformers 5.24).

transformers' image processor runs only on its torchvision backend, which does not import
beside Quorum's torch. What it asks of torchvision is a bilinear resize without antialias
(``torch.nn.functional.interpolate``) and a normalisation; the rest is torch already. The
tiling (``compute_crop_geometry``) and pooling windows (``arange_for_pooling``) are the
processor module's own pure functions, imported as they are. Tested against the processor
itself (with a test-only stand-in for those two torchvision calls) in
``tests/workers/test_molmo2_media.py``.

An image becomes a low-resolution view (the image squeezed to one crop) followed by
overlapping crops of the image resized onto a canvas of whole windows; the adapter pools
``pooling_size`` windows of patches into one token each. Its tokens in a row are
``<low_res_im_start>`` + rows of ``<im_patch>``... ``<im_col>`` + ``<im_end>``, then
``<im_start>`` + the high-resolution rows + ``<im_end>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

# The placeholder Molmo2's chat template writes for an image, and the tokens an image becomes
# (Molmo2Processor.image_token_ids: every one of them is an image token for the attention
# mask, which lets all of a row's image tokens see each other).
MOLMO2_IMAGE_TOKEN = "<|image|>"
MOLMO2_VIDEO_TOKEN = "<|video|>"
MOLMO2_PATCH, MOLMO2_COL = "<im_patch>", "<im_col>"
MOLMO2_START, MOLMO2_LOW_RES_START, MOLMO2_END = "<im_start>", "<low_res_im_start>", "<im_end>"
MOLMO2_VISUAL_TOKENS = (
    MOLMO2_PATCH,
    MOLMO2_COL,
    MOLMO2_START,
    MOLMO2_LOW_RES_START,
    "<frame_start>",
    MOLMO2_END,
    "<frame_end>",
    "<im_low>",
)


@dataclass(frozen=True)
class Molmo2ImageSettings:
    """What ``Molmo2ImageProcessor`` (its ``preprocessor_config.json``) and ``Molmo2Processor``
    (its ``processor_config.json``) decide about an image; transformers' defaults."""

    crop_size: int = 378
    max_crops: int = 8
    overlap_margins: tuple[int, int] = (4, 4)
    patch_size: int = 14
    pooling_size: tuple[int, int] = (2, 2)
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    image_use_col_tokens: bool = True
    use_single_crop_col_tokens: bool | None = None
    use_single_crop_start_token: bool = True

    @classmethod
    def from_processor(cls, processor: Any | None, **options: Any) -> Molmo2ImageSettings:
        """Settings of a (never run) ``Molmo2ImageProcessor``; `options` are the processor's
        token options (``image_use_col_tokens``...)."""
        if processor is None:
            return cls(**options)
        size = processor.size
        height = size["height"] if isinstance(size, dict) else size.height
        width = size["width"] if isinstance(size, dict) else size.width
        if height != width:
            raise ValueError(f"Molmo2 only supports a square crop size, got {height}x{width}")
        if not (processor.do_resize and processor.do_rescale and processor.do_normalize):
            raise ValueError("Molmo2 image processors that skip resize/rescale/normalize")
        if int(processor.resample) != int(Image.Resampling.BILINEAR):
            raise ValueError(f"Molmo2 resample {processor.resample} (only bilinear is supported)")
        return cls(
            crop_size=int(height),
            max_crops=int(processor.max_crops),
            overlap_margins=tuple(int(m) for m in processor.overlap_margins),  # type: ignore[arg-type]
            patch_size=int(processor.patch_size),
            pooling_size=tuple(int(p) for p in processor.pooling_size),  # type: ignore[arg-type]
            image_mean=tuple(float(m) for m in processor.image_mean),
            image_std=tuple(float(s) for s in processor.image_std),
            rescale_factor=float(processor.rescale_factor),
            **options,
        )


@dataclass
class Molmo2Image:
    """One image as Molmo2's processor gives it.

    Attributes:
        pixel_values (`torch.FloatTensor` of shape `(crops, patches, 3 * patch**2)`): The
            low-resolution view, then the overlapping crops.
        pooling (`torch.LongTensor` of shape `(tokens, pool_h * pool_w)`): Per image token, the
            patches it pools, indexed within this image's patches (-1 for padding).
        grid (`tuple[int, int, int, int]`): Low-resolution rows and columns of tokens, then the
            high-resolution ones (``image_grids``).
    """

    pixel_values: torch.Tensor
    pooling: torch.Tensor
    grid: tuple[int, int, int, int]

    @property
    def num_crops(self) -> int:
        return int(self.pixel_values.shape[0])

    @property
    def num_patches(self) -> int:
        return int(self.pixel_values.shape[0] * self.pixel_values.shape[1])


def _resize_normalize(
    image: torch.Tensor, size: tuple[int, int], settings: Molmo2ImageSettings
) -> torch.Tensor:
    """``resize_and_normalize_image``: bilinear resize without antialias in float, rounded back
    to bytes, then the processor's fused rescale + normalise (mean and std times 255)."""
    if tuple(image.shape[-2:]) != size:
        resized = F.interpolate(
            image.float(), size=list(size), mode="bilinear", align_corners=False, antialias=False
        )
        image = resized.round().clamp(0, 255).to(torch.uint8)
    mean = torch.tensor(settings.image_mean) * (1.0 / settings.rescale_factor)
    std = torch.tensor(settings.image_std) * (1.0 / settings.rescale_factor)
    return (image.to(torch.float32) - mean[:, None, None]) / std[:, None, None]


def _to_patches(crops: torch.Tensor, patch_size: int) -> torch.Tensor:
    """[crops, S, S, C] -> [crops, patches, patch * patch * C], patches row by row."""
    count, height, width, channels = crops.shape
    rows, cols = height // patch_size, width // patch_size
    crops = crops.reshape(count, rows, patch_size, cols, patch_size, channels).transpose(2, 3)
    return crops.reshape(count, rows * cols, patch_size * patch_size * channels)


def molmo2_image_inputs(image: Image.Image, settings: Molmo2ImageSettings) -> Molmo2Image:
    """Preprocess one image as ``Molmo2ImageProcessor`` does, without torchvision."""
    from transformers.image_transforms import convert_to_rgb
    from transformers.models.molmo2.image_processing_molmo2 import (
        arange_for_pooling,
        compute_crop_geometry,
    )

    rgb = np.asarray(convert_to_rgb(image, return_numpy=True))
    pixels = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None]  # [1, C, H, W]
    crop, patch = settings.crop_size, settings.patch_size
    left, right = settings.overlap_margins
    crop_patches = crop // patch
    window = (crop_patches - left - right) * patch
    tiling_h, tiling_w, canvas_h, canvas_w = compute_crop_geometry(
        pixels.shape[2],
        pixels.shape[3],
        max_crops=settings.max_crops,
        overlap_margins=list(settings.overlap_margins),
        crop_size=crop,
        patch_size=patch,
    )
    canvas = _resize_normalize(pixels, (canvas_h, canvas_w), settings)[0]  # [C, H, W]
    crops = canvas.unfold(1, crop, window).unfold(2, crop, window)  # [C, th, tw, S, S]
    crops = crops.permute(1, 2, 3, 4, 0).reshape(tiling_h * tiling_w, crop, crop, -1)

    # Each crop's patches, numbered crop after crop; the margins a crop shares with its
    # neighbour are dropped (kept only at the image's outer edges), leaving the canvas grid.
    index = torch.arange(tiling_h * tiling_w * crop_patches**2, dtype=torch.int32)
    index = index.reshape(tiling_h, tiling_w, crop_patches, crop_patches)
    if left:
        index[1:, :, :left, :] = -1
        index[:, 1:, :, :left] = -1
    if right:
        index[:-1, :, -right:, :] = -1
        index[:, :-1, :, -right:] = -1
    index = index.permute(0, 2, 1, 3).reshape(-1)
    index = index[index >= 0].reshape(canvas_h // patch, canvas_w // patch)
    pool_h, pool_w = settings.pooling_size
    high, high_rows, high_cols = arange_for_pooling(index, pool_h, pool_w)

    low_view = _resize_normalize(pixels, (crop, crop), settings)[0].permute(1, 2, 0)[None]
    low_index = torch.arange(crop_patches**2, dtype=torch.int32).reshape(crop_patches, crop_patches)
    low, low_rows, low_cols = arange_for_pooling(low_index, pool_h, pool_w)
    # The low-resolution view comes first, so the crops' patches follow its own.
    high = torch.where(high >= 0, high + crop_patches**2, -1)
    pixel_values = _to_patches(torch.cat([low_view, crops]), patch)
    return Molmo2Image(
        pixel_values=pixel_values,
        pooling=torch.cat([low, high]).long(),
        grid=(low_rows, low_cols, high_rows, high_cols),
    )


def molmo2_image_tokens(
    grid: Sequence[int], ids: dict[str, int], settings: Molmo2ImageSettings
) -> list[int]:
    """The tokens ``Molmo2Processor.replace_image_token`` puts in place of ``<|image|>``."""
    low_rows, low_cols, high_rows, high_cols = grid
    patch, col = ids[MOLMO2_PATCH], ids[MOLMO2_COL]
    row = [patch] * high_cols + ([col] if settings.image_use_col_tokens else [])
    high = [ids[MOLMO2_START], *(row * high_rows), ids[MOLMO2_END]]
    single_col = (
        settings.image_use_col_tokens
        if settings.use_single_crop_col_tokens is None
        else settings.use_single_crop_col_tokens
    )
    start = ids[MOLMO2_LOW_RES_START if settings.use_single_crop_start_token else MOLMO2_START]
    row = [patch] * low_cols + ([col] if single_col else [])
    low = [start, *(row * low_rows), ids[MOLMO2_END]]
    return low + high


def _offset_pooling(visuals: Sequence[Molmo2Image] | Sequence[Molmo2Video]) -> torch.Tensor:
    """Each visual's pooling indices shifted by the patches of the visuals before it (-1, the
    padding, stays -1): the batch's pixels are one concatenation."""
    pooling, offset = [], 0
    for visual in visuals:
        pooling.append(torch.where(visual.pooling >= 0, visual.pooling + offset, -1))
        offset += visual.num_patches
    return torch.cat(pooling)


def collate_molmo2_images(images: Sequence[Molmo2Image]) -> dict[str, torch.Tensor]:
    """The model inputs of a batch's images in row order (``Molmo2ImageProcessor._preprocess``):
    pooling indices offset by the patches of the images before."""
    return {
        "pixel_values": torch.cat([image.pixel_values for image in images]),
        "image_token_pooling": _offset_pooling(images),
        "image_grids": torch.tensor([image.grid for image in images], dtype=torch.long),
        "image_num_crops": torch.tensor([image.num_crops for image in images], dtype=torch.long),
    }


# -- videos ------------------------------------------------------------------------------------

# Molmo2Processor's options about video tokens (the rest of its options are about images).
MOLMO2_VIDEO_TOKEN_OPTIONS = ("video_use_col_tokens", "use_frame_special_tokens")


@dataclass(frozen=True)
class Molmo2VideoSettings:
    """What ``Molmo2VideoProcessor`` (its ``video_preprocessor_config.json``) and
    ``Molmo2Processor`` decide about a video; transformers' defaults. Frames go through the
    low-resolution path only: each is resized to one crop and pooled."""

    crop_size: int = 378
    patch_size: int = 14
    pooling_size: tuple[int, int] = (3, 3)
    image_mean: tuple[float, ...] = (0.5, 0.5, 0.5)
    image_std: tuple[float, ...] = (0.5, 0.5, 0.5)
    rescale_factor: float = 1 / 255
    num_frames: int = 64
    max_fps: float | None = 2
    video_use_col_tokens: bool = False
    use_frame_special_tokens: bool = True
    # Why this checkpoint's videos cannot be scored as transformers would (None: they can).
    unsupported: str | None = None

    @classmethod
    def from_processor(cls, processor: Any | None, **options: Any) -> Molmo2VideoSettings:
        """Settings of a (never run) ``Molmo2VideoProcessor``; `options` are the processor's
        token options (``video_use_col_tokens``, ``use_frame_special_tokens``)."""
        if processor is None:
            return cls(**options)
        size = processor.size
        height = size["height"] if isinstance(size, dict) else size.height
        width = size["width"] if isinstance(size, dict) else size.width
        if height != width:
            raise ValueError(f"Molmo2 only supports a square frame size, got {height}x{width}")
        if not (processor.do_rescale and processor.do_normalize):
            # Left unset (transformers' class default), the processor hands the model raw
            # bytes; checkpoints set both.
            raise ValueError("Molmo2 video processors that skip rescale/normalize")
        if not getattr(processor, "do_sample_frames", True):
            raise ValueError("Molmo2 video processors that do not sample frames")
        if int(processor.resample) != int(Image.Resampling.BILINEAR):
            raise ValueError(f"Molmo2 resample {processor.resample} (only bilinear is supported)")
        if getattr(processor, "fps", None) is not None:
            raise ValueError("Molmo2 video processors with a fixed fps (only num_frames/max_fps)")
        max_fps = getattr(processor, "max_fps", None)
        return cls(
            crop_size=int(height),
            patch_size=int(processor.patch_size),
            pooling_size=tuple(int(p) for p in processor.pooling_size),  # type: ignore[arg-type]
            image_mean=tuple(float(m) for m in processor.image_mean),
            image_std=tuple(float(s) for s in processor.image_std),
            rescale_factor=float(processor.rescale_factor),
            num_frames=int(processor.num_frames),
            max_fps=None if max_fps is None else float(max_fps),
            **options,
        )


@dataclass
class Molmo2Video:
    """One video as Molmo2's video processor gives it.

    Attributes:
        pixel_values (`torch.FloatTensor` of shape `(frames, patches, 3 * patch**2)`): Each
            sampled frame resized to one crop.
        pooling (`torch.LongTensor` of shape `(frames * tokens, pool_h * pool_w)`): Per video
            token, the patches it pools, indexed within this video's patches (-1 for padding).
        grid (`tuple[int, int, int]`): Frames, then rows and columns of tokens per frame
            (``video_grids``).
        timestamps (`list[float]`): Seconds of each frame, written before it.
    """

    pixel_values: torch.Tensor
    pooling: torch.Tensor
    grid: tuple[int, int, int]
    timestamps: list[float]

    @property
    def num_patches(self) -> int:
        return int(self.pixel_values.shape[0] * self.pixel_values.shape[1])


def molmo2_frame_indices(total: int, fps: float, settings: Molmo2VideoSettings) -> list[int]:
    """``Molmo2VideoProcessor.sample_frames`` for a clip of `total` frames at `fps` (0 when
    the container does not say: then ``max_fps``, as transformers assumes)."""
    if total < 1:
        return []
    if not fps:
        fps = settings.max_fps or 2.0
    target = settings.num_frames
    if settings.max_fps is not None and fps > settings.max_fps:
        target = min(target, int(total / fps * settings.max_fps))
    target = max(min(target, total), 1)
    return torch.arange(0, total, total / target).int().tolist()


def molmo2_video_inputs(
    frames: np.ndarray, timestamps: Sequence[float], settings: Molmo2VideoSettings
) -> Molmo2Video:
    """Preprocess sampled RGB frames (`[T, H, W, 3]` bytes) as ``Molmo2VideoProcessor``
    does, without torchvision."""
    from transformers.models.molmo2.video_processing_molmo2 import arange_for_pooling

    if len(frames) != len(timestamps):
        raise ValueError(f"{len(frames)} frames but {len(timestamps)} timestamps")
    pixels = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2)  # [T, C, H, W]
    crop, patch = settings.crop_size, settings.patch_size
    resized = _resize_normalize(pixels, (crop, crop), settings)  # type: ignore[arg-type]
    patches = _to_patches(resized.permute(0, 2, 3, 1), patch)
    side = crop // patch
    index = torch.arange(side * side, dtype=torch.int32).reshape(side, side)
    pool_h, pool_w = settings.pooling_size
    pooling, rows, cols = arange_for_pooling(index, pool_h, pool_w)
    count, per_frame = patches.shape[:2]
    # Each frame's windows point at its own patches, frame after frame.
    offsets = (torch.arange(count) * per_frame).view(-1, 1, 1)
    pooled = torch.where(pooling >= 0, pooling + offsets, pooling).reshape(-1, pooling.shape[-1])
    return Molmo2Video(patches, pooled.long(), (count, rows, cols), [float(t) for t in timestamps])


def molmo2_video_tokens(
    video: Molmo2Video,
    ids: dict[str, int],
    settings: Molmo2VideoSettings,
    tokenise: Any,
) -> list[int]:
    """The tokens ``Molmo2Processor.replace_video_token`` puts in place of ``<|video|>``: per
    frame its time (``"%.1f "``, a space before all but the first; text between control
    tokens, tokenised on its own by `tokenise`) and its rows of patches."""
    _, rows, cols = video.grid
    start = ids["<frame_start>" if settings.use_frame_special_tokens else MOLMO2_START]
    end = ids["<frame_end>" if settings.use_frame_special_tokens else MOLMO2_END]
    row = [ids[MOLMO2_PATCH]] * cols + ([ids[MOLMO2_COL]] if settings.video_use_col_tokens else [])
    out: list[int] = []
    for index, seconds in enumerate(video.timestamps):
        out += tokenise((" " if index else "") + f"{seconds:.1f} ")
        out += [start, *(row * rows), end]
    return out


def collate_molmo2_videos(videos: Sequence[Molmo2Video]) -> dict[str, torch.Tensor]:
    """The model inputs of a batch's videos in row order (``Molmo2VideoProcessor._preprocess``):
    pooling indices offset by the patches of the videos before."""
    return {
        "pixel_values_videos": torch.cat([video.pixel_values for video in videos]),
        "video_token_pooling": _offset_pooling(videos),
        "video_grids": torch.tensor([video.grid for video in videos], dtype=torch.long),
    }
