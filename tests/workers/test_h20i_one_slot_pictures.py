"""A picture patchified from its pixels is held as one temporal slot (h20i).

Its patches repeat the same values in every temporal slot: the visual holds them once
(`_Visual.one_slot`), `pixel_values` is built on access, and `collate` writes every slot
straight into the batch. The model gets the same float32 values, bit for bit, as from the
full patches; a new picture's memory (faulted in page by page) is half as large. No Django.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from workers.reward_model import RewardInputBuilder
from workers.reward_model.inputs import _cat_pixels, _patchify_uint8, _Row, _Visual
from workers.reward_model.media_cache import MediaCache, MediaStore, _nbytes
from workers.tiny import build_tiny_tokenizer, tiny_image_processor


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture (no Django here)."""


def _builder(tmp_path, family: str = "qwen2_vl") -> RewardInputBuilder:
    processor = tiny_image_processor(family=family, patch_size=16 if family == "qwen3_vl" else 14)
    return RewardInputBuilder(
        build_tiny_tokenizer(),
        processor,
        patch_size=processor.patch_size,
        image_max_pixels=112 * 112,
        media_cache=MediaCache(0),
        media_store=MediaStore(tmp_path / "store"),
    )


def _picture(tmp_path, seed: int, size: tuple[int, int] = (150, 200)):
    path = tmp_path / f"picture-{seed}.png"
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen3_vl"])
@pytest.mark.parametrize("stored", [False, True])
def test_a_picture_is_held_once_with_the_full_patches_values(tmp_path, family, stored):
    builder = _builder(tmp_path, family)
    path = _picture(tmp_path, 1)
    if stored:
        builder.encode_image(path)  # decoded and stored; read back below
    pixels = np.asarray(builder._image_to_budget(Image.open(path).convert("RGB")))
    processor = builder.image_processor
    expected, grid = _patchify_uint8(
        pixels[None],
        processor.image_mean,
        processor.image_std,
        builder.patch_size,
        builder.temporal_patch_size,
        builder.merge_size,
    )

    visual = builder.encode_image(path)

    assert builder.media_store.hits == int(stored)
    assert visual.one_slot is not None and visual.one_slot[1] == builder.temporal_patch_size
    assert "pixel_values" not in vars(visual)
    assert visual.grid_thw == grid
    got = visual.pixel_values
    assert got.dtype == expected.dtype and got.shape == expected.shape
    assert got.numpy().tobytes() == expected.numpy().tobytes()
    assert _nbytes(visual) * builder.temporal_patch_size == expected.numel() * 4
    again = pickle.loads(pickle.dumps(visual))
    assert again.one_slot is not None and torch.equal(again.pixel_values, expected)


def test_only_the_pixel_values_are_built_on_access(tmp_path):
    visual = _builder(tmp_path).encode_image(_picture(tmp_path, 2))
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        visual.nothing  # noqa: B018
    plain = _Visual("image", torch.zeros(4, 8), (1, 2, 2), 2)
    assert plain.one_slot is None and plain.pixel_values.shape == (4, 8)


def test_batches_hold_every_slot_as_the_full_patches_would(tmp_path):
    builder = _builder(tmp_path)
    pictures = [builder.encode_image(_picture(tmp_path, seed, (84 + seed, 120))) for seed in (3, 4)]
    full = [_Visual("image", v.pixel_values, v.grid_thw, v.merge_size) for v in pictures]
    other = _Visual("image", torch.randn(16, full[0].pixel_values.shape[1]), (1, 4, 4), 2)
    for visuals in (pictures, [other, *pictures], [pictures[0], other, pictures[1]]):
        got = _cat_pixels(visuals)
        expected = torch.cat([v.pixel_values for v in visuals])
        assert got.numpy().tobytes() == expected.numpy().tobytes()
    # Another dtype among them: torch.cat's promotion, as before.
    half = _Visual("image", other.pixel_values.to(torch.float64), (1, 4, 4), 2)
    assert torch.equal(
        _cat_pixels([pictures[0], half]), torch.cat([full[0].pixel_values, half.pixel_values])
    )

    pad = builder.token_ids["<|image_pad|>"]

    def rows(visuals):
        ids = [t for v in visuals for t in v.tokens(pad)] + [1, 2]
        return [_Row(0, ids, [-1] * (len(ids) - 1) + [0], list(visuals), [(0, 0, len(ids) - 1)])]

    one_slot, repeated = (
        builder.collate(rows(pictures), "packed"),
        builder.collate(rows(full), "packed"),
    )
    assert one_slot.pixel_values.numpy().tobytes() == repeated.pixel_values.numpy().tobytes()
    assert torch.equal(one_slot.image_grid_thw, repeated.image_grid_thw)
