"""Pictures read from files reach the model with the image processor's own pixel values, bit for
bit, when the builder patchifies them itself (no Django)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from workers.media import load_image
from workers.reward_model import RewardInputBuilder
from workers.reward_model.media_cache import MediaCache
from workers.tiny import build_tiny_tokenizer, tiny_image_processor


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture: this pure-core file runs
    with ``-p no:django`` and touches no Django settings."""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def _processor_visual(builder: RewardInputBuilder, path) -> tuple[torch.Tensor, tuple]:
    """What the image processor itself gives for the file (the builder's path before)."""
    image = builder._image_to_budget(load_image(path))
    out = builder.image_processor(
        images=[image],
        size={"shortest_edge": builder.min_pixels, "longest_edge": builder.image_max_pixels},
        return_tensors="pt",
    )
    return out["pixel_values"], tuple(int(v) for v in out["image_grid_thw"][0])


@pytest.mark.parametrize(
    "family,budget,size,mode",
    [
        ("qwen2_vl", 84 * 84, (384, 384), "RGB"),
        ("qwen2_vl", 84 * 84, (56, 56), "RGB"),  # already at its size: no resize
        ("qwen2_vl", 112 * 112, (130, 97), "RGBA"),
        ("qwen2_vl", 448 * 448, (640, 200), "L"),
        ("qwen3_vl", 96 * 96, (300, 170), "RGB"),  # 16-pixel patches, 0.5 mean and std
    ],
)
def test_pictures_are_patchified_as_the_image_processor_does(
    tokenizer, tmp_path, monkeypatch, family, budget, size, mode
):
    processor = tiny_image_processor(family=family, patch_size=16 if family == "qwen3_vl" else 14)
    builder = RewardInputBuilder(
        tokenizer,
        processor,
        patch_size=processor.patch_size,
        image_max_pixels=budget,
        media_cache=MediaCache(0),
    )
    rng = np.random.default_rng(sum(size))
    path = tmp_path / "picture.png"
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    pixels = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze(-1) if channels == 1 else pixels, mode).save(path)
    expected, grid = _processor_visual(builder, path)
    calls = []
    preprocess = type(processor).preprocess
    monkeypatch.setattr(
        type(processor), "preprocess", lambda *a, **k: calls.append(1) or preprocess(*a, **k)
    )

    visual = builder.encode_image(path)

    assert calls == []  # the builder's own patchifying, not the processor's
    assert visual.grid_thw == grid
    assert visual.pixel_values.dtype == expected.dtype
    assert torch.equal(visual.pixel_values, expected)


def test_other_processor_settings_are_left_to_the_processor(tokenizer, tmp_path):
    processor = tiny_image_processor()
    processor.rescale_factor = 1 / 127.5
    builder = RewardInputBuilder(tokenizer, processor, media_cache=MediaCache(0))
    path = tmp_path / "picture.png"
    Image.fromarray(np.full((56, 84, 3), 200, dtype=np.uint8)).save(path)

    visual = builder.encode_image(path)

    assert builder._patchify_at_budget(load_image(path)) is None
    assert torch.equal(visual.pixel_values, _processor_visual(builder, path)[0])
