"""A media store hit is held to the pixel limit (``QUORUM_MAX_IMAGE_MEGAPIXELS``) as a fresh
decode is: a file stored under a higher limit is refused with the same error (no Django)."""

from __future__ import annotations

import json
import zlib

import pytest
from PIL import Image

from tests.workers.pure_core import _media_root, picture_and_clip  # noqa: F401  (autouse fixture)
from workers import media
from workers.media import DecodePool
from workers.reward_model import CandidateInput, RewardInputBuilder, ScoringItem
from workers.reward_model.media_cache import MediaCache, MediaStore
from workers.tiny import build_tiny_reward_scorer

QWEN3_LIMITS = {"video_max_pixels": 4 * 64 * 96, "video_min_pixels": 4 * 32 * 32}
# The picture is 200 x 150, the clip's frames 96 x 64: one pixel under each.
UNDER = {"image": 200 * 150 - 1, "video": 96 * 64 - 1}


@pytest.fixture
def files(tmp_path):
    return picture_and_clip(tmp_path, 17)


def _builder(tokenizer, family: str, store: MediaStore | None, pool=None) -> RewardInputBuilder:
    limits = QWEN3_LIMITS if family == "qwen3_vl" else {}
    base = build_tiny_reward_scorer(tokenizer=tokenizer, family=family, **limits).builder
    return RewardInputBuilder(
        tokenizer,
        base.image_processor,
        model_type=base.model_type,
        patch_size=base.patch_size,
        tokens_per_second=base.tokens_per_second,
        media_cache=MediaCache(0),
        media_store=store or MediaStore(),
        decode_pool=pool or DecodePool(0),
        **limits,
    )


def _item(kind: str, path) -> ScoringItem:
    return ScoringItem("Which fits?", [CandidateInput(kind=kind, path=str(path))])


@pytest.mark.parametrize("filled_by", ["this process", "the pool"])
@pytest.mark.parametrize(
    "family,kind",
    [("qwen2_vl", "image"), ("qwen2_vl", "video"), ("qwen3_vl", "image"), ("qwen3_vl", "video")],
)
def test_a_stored_file_over_the_limit_is_refused_as_a_fresh_decode_is(
    tokenizer, files, tmp_path, monkeypatch, pool, family, kind, filled_by
):
    if filled_by == "the pool" and family == "qwen3_vl" and kind == "video":
        pytest.skip("Qwen3-VL clips are decoded in the scoring process")
    path = files[kind]
    store = MediaStore(tmp_path / "store")
    filler = _builder(tokenizer, family, store, pool if filled_by == "the pool" else None)
    assert filler.encode_item(_item(kind, path)).candidate_errors == [None]
    assert store.writes == 1

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", UNDER[kind])
    fresh = _builder(tokenizer, family, None).encode_item(_item(kind, path))
    hit = _builder(tokenizer, family, MediaStore(tmp_path / "store")).encode_item(_item(kind, path))

    assert fresh.candidate_errors[0] is not None
    assert f"over the limit of {UNDER[kind]}" in fresh.candidate_errors[0]
    assert hit.candidate_errors == fresh.candidate_errors


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_stored_file_under_the_limit_is_still_read_from_the_store(
    tokenizer, files, tmp_path, monkeypatch, kind
):
    _builder(tokenizer, "qwen2_vl", MediaStore(tmp_path / "store")).encode_item(
        _item(kind, files[kind])
    )
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", UNDER[kind] + 1)
    store = MediaStore(tmp_path / "store")

    got = _builder(tokenizer, "qwen2_vl", store).encode_item(_item(kind, files[kind]))

    assert got.candidate_errors == [None] and (store.hits, store.misses) == (1, 0)


def test_an_entry_without_the_files_size_is_decoded_again_and_checked(
    tokenizer, files, tmp_path, monkeypatch
):
    store = MediaStore(tmp_path / "store")
    _builder(tokenizer, "qwen2_vl", store).encode_item(_item("image", files["image"]))
    (entry,) = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    # An entry as written before the size was kept: the same frames, no "source".
    data = entry.read_bytes()
    end = data.index(b"\n", len(MediaStore._MAGIC))
    header = json.loads(data[len(MediaStore._MAGIC) : end])
    del header["meta"]["source"]
    frames = zlib.decompress(data[end + 1 :])
    entry.write_bytes(
        MediaStore._MAGIC + json.dumps(header).encode() + b"\n" + zlib.compress(frames)
    )
    decodes = []
    load_image = media.load_image
    import workers.reward_model.inputs as inputs

    monkeypatch.setattr(inputs, "load_image", lambda p: decodes.append(p) or load_image(p))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", UNDER["image"])

    got = _builder(tokenizer, "qwen2_vl", store).encode_item(_item("image", files["image"]))

    assert decodes == [str(files["image"])]
    assert "over the limit of" in got.candidate_errors[0]
