"""Pixel patches of uint8 frames: laid out as bytes first, then rescaled and normalised in place,
with the same float32 values, bit for bit, as normalising every frame first and transposing the
floats (the path before; the image processor's own values for pictures are checked in
test_media_pixels.py). No Django."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from workers.media import load_image
from workers.reward_model import RewardInputBuilder, patchify_video_frames
from workers.reward_model.media_cache import MediaCache, MediaStore
from workers.tiny import build_tiny_tokenizer, tiny_image_processor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture: this pure-core file runs
    with ``-p no:django`` and touches no Django settings."""


def _normalised_then_patchified(
    frames: np.ndarray, *, patch_size: int, temporal_patch_size: int, merge_size: int, mean, std
) -> torch.Tensor:
    """The float path written out: rescale and normalise every frame in float32 (as the image
    processors do), pad the frame count with the last frame, then transpose into patches."""
    pixels = (frames.astype(np.float32) / 255.0 - np.asarray(mean, dtype=np.float32)) / np.asarray(
        std, dtype=np.float32
    )
    pixels = pixels.transpose(0, 3, 1, 2)
    remainder = pixels.shape[0] % temporal_patch_size
    if remainder:
        pad = np.repeat(pixels[-1:], temporal_patch_size - remainder, axis=0)
        pixels = np.concatenate([pixels, pad])
    grid_t = pixels.shape[0] // temporal_patch_size
    grid_h, grid_w = pixels.shape[2] // patch_size, pixels.shape[3] // patch_size
    patches = pixels.reshape(
        grid_t,
        temporal_patch_size,
        3,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    ).transpose(0, 3, 6, 4, 7, 2, 1, 5, 8)
    return torch.from_numpy(np.ascontiguousarray(patches).reshape(grid_t * grid_h * grid_w, -1))


@pytest.mark.parametrize(
    "shape,patch_size,temporal_patch_size,mean,std",
    [
        ((1, 392, 392, 3), 14, 2, CLIP_MEAN, CLIP_STD),  # a picture: one frame, padded
        ((8, 224, 224, 3), 14, 2, CLIP_MEAN, CLIP_STD),  # a clip's 8 frames
        ((3, 56, 84, 3), 14, 2, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),  # odd count, not square
        ((5, 28, 56, 3), 14, 3, CLIP_MEAN, CLIP_STD),  # another temporal patch
        ((2, 64, 96, 3), 16, 2, (0.1, 0.2, 0.3), (0.9, 0.8, 0.7)),  # Qwen3-VL's 16 pixels
    ],
)
def test_patches_hold_the_normalised_floats_bit_for_bit(
    shape, patch_size, temporal_patch_size, mean, std
):
    frames = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    # Every byte value in every channel, so each of the 768 (channel, value) pairs is checked.
    frames[0, 0, : min(256, shape[2]), :] = np.arange(min(256, shape[2]), dtype=np.uint8)[:, None]
    frames[-1, -1, : min(256, shape[2]), :] = np.arange(255, 255 - min(256, shape[2]), -1)[:, None]
    expected = _normalised_then_patchified(
        frames,
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=2,
        mean=mean,
        std=std,
    )

    patches, grid = patchify_video_frames(
        frames,
        size=shape[1:3],
        patch_size=patch_size,
        temporal_patch_size=temporal_patch_size,
        merge_size=2,
        image_mean=list(mean),
        image_std=list(std),
    )

    grid_t = -(-shape[0] // temporal_patch_size)
    assert grid == (grid_t, shape[1] // patch_size, shape[2] // patch_size)
    assert patches.dtype == torch.float32 and patches.is_contiguous()
    assert torch.equal(patches, expected)


def test_every_byte_value_of_every_channel_is_the_float_paths():
    """All 256 values in each channel, against frames that are not uint8 (the float path)."""
    values = np.arange(256, dtype=np.uint8)
    frames = np.empty((2, 28, 28 * 10, 3), dtype=np.uint8)
    frames[...] = np.resize(values, 28 * 28 * 10 * 2).reshape(2, 28, 280)[..., None]
    frames[..., 1] = 255 - frames[..., 1]
    frames[..., 2] = np.roll(frames[..., 2], 7, axis=2)

    from_bytes, grid = patchify_video_frames(frames, size=(28, 280))
    from_floats, float_grid = patchify_video_frames(frames.astype(np.float32), size=(28, 280))

    assert grid == float_grid == (1, 2, 20)
    assert torch.equal(from_bytes, from_floats)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
def test_a_stored_picture_is_patchified_from_its_pixels_as_the_processor_does(
    tmp_path, monkeypatch, family
):
    """Read back from the media store (or handed over by a decoding process), a picture's
    pixels are patchified as they are, without the image processor and without a Pillow
    image in between, to the processor's own values."""
    processor = tiny_image_processor(family=family, patch_size=16 if family == "qwen3_vl" else 14)
    path = tmp_path / "picture.png"
    rng = np.random.default_rng(5)
    Image.fromarray(rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)).save(path)

    def builder(store: MediaStore) -> RewardInputBuilder:
        return RewardInputBuilder(
            build_tiny_tokenizer(),
            processor,
            patch_size=processor.patch_size,
            image_max_pixels=112 * 112,
            media_cache=MediaCache(0),
            media_store=store,
        )

    first = builder(MediaStore(tmp_path / "store"))
    first.encode_image(path)  # decoded, resized and stored
    picture = first._image_to_budget(load_image(path))
    expected = processor(
        images=[picture],
        size={"shortest_edge": first.min_pixels, "longest_edge": first.image_max_pixels},
        return_tensors="pt",
    )["pixel_values"]
    calls = []
    preprocess = type(processor).preprocess
    monkeypatch.setattr(
        type(processor), "preprocess", lambda *a, **k: calls.append(1) or preprocess(*a, **k)
    )
    monkeypatch.setattr(
        Image, "fromarray", lambda *a, **k: pytest.fail("a Pillow image made of stored pixels")
    )
    store = MediaStore(tmp_path / "store")

    visual = builder(store).encode_image(path)

    assert (store.hits, calls) == (1, [])
    assert torch.equal(visual.pixel_values, expected)
