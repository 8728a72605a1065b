"""Frame sampling and image loading for the reward-model workers (PyAV + Pillow, no Django)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workers.media import (
    MediaError,
    encode_video,
    evenly_spaced_indices,
    load_image,
    sample_video_frames,
)
from workers.reward_model import patchify_video_frames
from workers.tiny import tiny_image_processor

# Frame i is a flat grey of level i * STEP, so a decoded frame tells which frame it was.
STEP = 8


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture: this pure-core file runs
    with ``-p no:django`` and touches no Django settings."""


@pytest.fixture(scope="module")
def numbered_video(tmp_path_factory):
    frames = [np.full((240, 320, 3), i * STEP, dtype=np.uint8) for i in range(30)]
    return encode_video(tmp_path_factory.mktemp("video") / "numbered.mp4", frames, fps=10)


def _frame_number(frame: np.ndarray) -> int:
    number = round(float(frame.mean()) / STEP)
    # RGB -> yuv420 -> RGB moves flat greys by a couple of levels, far less than STEP / 2.
    assert abs(float(frame.mean()) - number * STEP) < STEP / 2
    return number


def test_it_spaces_indices_evenly_with_both_ends():
    assert evenly_spaced_indices(30, 4) == [0, 10, 19, 29]
    assert evenly_spaced_indices(5, 8) == [0, 1, 2, 3, 4]
    assert evenly_spaced_indices(9, 1) == [4]
    assert evenly_spaced_indices(0, 8) == []


@pytest.mark.parametrize("total,count", [(30, 4), (31, 8), (100, 7), (8, 7), (2, 2)])
def test_it_keeps_gaps_between_indices_within_one_frame(total, count):
    indices = evenly_spaced_indices(total, count)

    gaps = np.diff(indices)
    assert len(indices) == min(total, count)
    assert indices[0] == 0 and indices[-1] == total - 1
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1


def test_it_samples_the_evenly_spaced_frames(numbered_video):
    sampled = sample_video_frames(numbered_video, max_frames=4, max_side=None)

    assert sampled.indices == [0, 10, 19, 29]
    assert [_frame_number(f) for f in sampled.frames] == [0, 10, 19, 29]
    assert sampled.timestamps == pytest.approx([0.0, 1.0, 1.9, 2.9], abs=0.01)
    assert sampled.fps == pytest.approx(3 / 2.9, rel=0.01)


def test_it_caps_frame_count_and_resolution(numbered_video):
    sampled = sample_video_frames(numbered_video, max_frames=8, max_side=64)

    assert sampled.frames.shape == (8, 48, 64, 3)
    assert sampled.frames.dtype == np.uint8


def test_it_returns_every_frame_of_a_short_clip(tmp_path):
    clip = encode_video(tmp_path / "short.mp4", [np.full((32, 32, 3), 100, np.uint8)] * 3)

    sampled = sample_video_frames(clip, max_frames=8)

    assert sampled.indices == [0, 1, 2]
    assert sampled.frames.shape == (3, 32, 32, 3)


def test_it_names_a_corrupt_video_in_the_error(tmp_path):
    corrupt = tmp_path / "upload.mp4"
    corrupt.write_bytes(np.random.default_rng(0).bytes(4096))

    with pytest.raises(MediaError, match=r"upload\.mp4: cannot open video") as caught:
        sample_video_frames(corrupt)

    assert caught.value.path == str(corrupt)


def test_it_names_a_truncated_video_in_the_error(numbered_video, tmp_path):
    truncated = tmp_path / "cut.mp4"
    truncated.write_bytes(numbered_video.read_bytes()[:700])

    with pytest.raises(MediaError, match=r"cut\.mp4: "):
        sample_video_frames(truncated)


def test_it_names_a_missing_video_in_the_error(tmp_path):
    with pytest.raises(MediaError, match=r"nothing\.mp4: file not found"):
        sample_video_frames(tmp_path / "nothing.mp4")


def test_it_loads_images_as_rgb_and_caps_their_size(tmp_path):
    path = tmp_path / "grey.png"
    Image.new("L", (400, 200), color=90).save(path)

    image = load_image(path, max_side=100)

    assert image.mode == "RGB" and image.size == (100, 50)


def test_it_names_a_corrupt_image_in_the_error(tmp_path):
    corrupt = tmp_path / "photo.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + np.random.default_rng(1).bytes(200))

    with pytest.raises(MediaError, match=r"photo\.png: cannot decode image"):
        load_image(corrupt)


def test_it_names_a_truncated_image_in_the_error(tmp_path):
    path = tmp_path / "big.jpg"
    noise = np.random.default_rng(2).integers(0, 255, (200, 200, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path)
    path.write_bytes(path.read_bytes()[:2000])

    with pytest.raises(MediaError, match=r"big\.jpg: cannot decode image"):
        load_image(path)


def test_it_patchifies_video_frames_like_the_image_processor():
    # The official processor treats an image as a clip of two identical frames; our
    # torchvision-free video patchifier must lay patches out the same way.
    frame = np.random.default_rng(3).integers(0, 255, (100, 130, 3), dtype=np.uint8)
    processor = tiny_image_processor()
    expected = processor(
        images=[Image.fromarray(frame)],
        size={"shortest_edge": 56 * 56, "longest_edge": 224 * 224},
        return_tensors="pt",
    )

    patches, grid = patchify_video_frames(np.stack([frame, frame]), max_pixels=224 * 224)

    assert grid == tuple(expected["image_grid_thw"][0].tolist())
    np.testing.assert_allclose(patches.numpy(), expected["pixel_values"].numpy(), atol=0.015)


def test_it_pads_an_odd_frame_count_to_the_temporal_patch():
    frames = np.random.default_rng(4).integers(0, 255, (3, 56, 56, 3), dtype=np.uint8)

    patches, grid = patchify_video_frames(frames)

    assert grid == (2, 4, 4)
    assert patches.shape == (2 * 4 * 4, 3 * 2 * 14 * 14)
