"""Media decoded in pool processes (`DecodePool`): the model gets the same values as from a
decode in the scoring process, failures read the same, a lost pool costs nothing (no Django)."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import (
    smart_resize as transformers_smart_resize,
)

from tests.workers.pure_core import _media_root  # noqa: F401  (autouse fixture)
from workers import media
from workers.media import DecodePool, encode_video, smart_resize
from workers.reward_model import (
    CandidateInput,
    RewardInputBuilder,
    RewardScorer,
    ScoringItem,
    inputs,
)
from workers.reward_model.media_cache import MediaCache, MediaStore
from workers.tiny import build_tiny_reward_scorer


@pytest.fixture(scope="module")
def pool():
    pool = DecodePool(2)
    yield pool
    pool.shutdown()


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(5)
    out = {}
    for name, (height, width) in {"wide": (150, 200), "tiny": (20, 30), "tall": (300, 90)}.items():
        out[name] = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(out[name])
    grey = tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 255, (64, 48), dtype=np.uint8), mode="L").save(grey)
    out["grey"] = grey
    out["clip"] = encode_video(
        tmp_path / "clip.mp4", rng.integers(0, 255, (12, 64, 96, 3), dtype=np.uint8)
    )
    out["long"] = encode_video(
        tmp_path / "long.mp4", rng.integers(0, 255, (30, 48, 80, 3), dtype=np.uint8)
    )
    out["corrupt"] = tmp_path / "corrupt.png"
    out["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return out


def _builder(tokenizer, family: str, pool: DecodePool | None, **kwargs) -> RewardInputBuilder:
    base = build_tiny_reward_scorer(tokenizer=tokenizer, family=family).builder
    return RewardInputBuilder(
        tokenizer,
        base.image_processor,
        model_type=base.model_type,
        patch_size=base.patch_size,
        tokens_per_second=base.tokens_per_second,
        media_cache=MediaCache(0),
        media_store=kwargs.pop("media_store", MediaStore()),
        decode_pool=pool or DecodePool(0),
        **kwargs,
    )


def _item(files) -> ScoringItem:
    return ScoringItem(
        "Which answer fits?",
        [
            CandidateInput(kind="image", path=str(files["tiny"])),
            CandidateInput(kind="video", path=str(files["clip"])),
            CandidateInput(kind="image", path=str(files["tall"])),
            CandidateInput(kind="image", path=str(files["grey"])),
            CandidateInput(kind="video", path=str(files["long"])),
            CandidateInput(kind="image", path=str(files["corrupt"])),
        ],
        prompt_image=str(files["wide"]),
    )


def _visuals(encoded) -> list:
    out = list(encoded.prompt_visuals)
    for candidate in encoded.candidates:
        out += [] if candidate is None else candidate.visuals
    return out


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
def test_pool_decodes_give_the_model_the_same_values(tokenizer, files, pool, monkeypatch, family):
    here = _builder(tokenizer, family, None, image_max_pixels=56 * 56, video_max_pixels=28 * 56)
    expected = here.encode_item(_item(files))

    def no_decoding_here(*args, **kwargs):
        raise AssertionError("decoded in the scoring process")

    for module in (media, inputs):
        monkeypatch.setattr(module, "load_image", no_decoding_here)
        monkeypatch.setattr(module, "sample_video_frames", no_decoding_here)
    pooled = _builder(tokenizer, family, pool, image_max_pixels=56 * 56, video_max_pixels=28 * 56)
    got = pooled.encode_item(_item(files))

    assert got.error is None and got.candidate_errors == expected.candidate_errors
    assert "cannot decode image" in got.candidate_errors[5]
    assert str(files["corrupt"]) in got.candidate_errors[5]
    assert len(_visuals(got)) == len(_visuals(expected)) == 6
    for a, b in zip(_visuals(got), _visuals(expected), strict=True):
        assert (a.kind, a.grid_thw, a.time_interval) == (b.kind, b.grid_thw, b.time_interval)
        assert torch.equal(a.pixel_values, b.pixel_values)


def test_scores_through_the_pool_are_those_decoded_here(tokenizer, files, pool, tmp_path):
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=3)
    items = [_item(files), _item(files)]
    items[1].candidates.reverse()
    here = RewardScorer(built.model, _builder(tokenizer, "qwen2_vl", None), device="cpu")
    store = MediaStore(tmp_path / "store")
    pooled_builder = _builder(tokenizer, "qwen2_vl", pool, media_store=store)
    pooled_builder.media_cache = MediaCache()
    pooled = RewardScorer(built.model, pooled_builder, device="cpu", prefetch_workers=2)

    expected = here.score(items)
    got = pooled.score(items)

    assert [r.scores for r in got] == [r.scores for r in expected]
    assert [r.errors for r in got] == [r.errors for r in expected]
    # What the pool decoded is stored for the next run: the 6 files that decode.
    assert len([p for p in (tmp_path / "store").rglob("*") if p.is_file()]) == 6
    # The next run (another process: nothing in memory) reads the store: only the file that
    # does not decode is handed to the pool again.
    pooled_builder.media_cache.clear()
    submitted = []
    submit = pool.submit
    pooled_builder.decode_pool = DecodePool(2)
    pooled_builder.decode_pool.submit = lambda *a: submitted.append(a) or submit(*a)
    again = pooled.score(items)
    assert [r.scores for r in again] == [r.scores for r in expected]
    assert submitted and {a[1] for a in submitted} == {str(files["corrupt"])}


def test_the_pixel_limit_holds_in_the_pool_processes(tokenizer, files, pool, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 200 - 1)
    builder = _builder(tokenizer, "qwen2_vl", pool)

    got = builder.encode_item(_item(files))

    assert got.error is not None and "over the limit of 29999" in got.error


def test_a_lost_pool_process_costs_a_decode_here_and_the_pool_starts_again(tokenizer, files, pool):
    here = _builder(tokenizer, "qwen2_vl", None).encode_item(_item(files))
    builder = _builder(tokenizer, "qwen2_vl", pool)
    builder.encode_item(_item(files))  # the pool's processes are running
    for pid in list(pool._executor._processes):
        os.kill(pid, signal.SIGKILL)

    first = builder.encode_item(_item(files))
    second = builder.encode_item(_item(files))

    for got in (first, second):
        assert got.candidate_errors == here.candidate_errors
        for a, b in zip(_visuals(got), _visuals(here), strict=True):
            assert torch.equal(a.pixel_values, b.pixel_values)
    assert pool._executor is not None and all(
        p.is_alive() for p in pool._executor._processes.values()
    )


@pytest.mark.parametrize("factor", [28, 56])
@pytest.mark.parametrize("budget", [(56 * 56, 28 * 28 * 1280), (28 * 28, 84 * 84), (3136, 3136)])
def test_smart_resize_is_transformers_own(factor, budget):
    low, high = budget
    sizes = [1, 2, 13, 27, 28, 29, 55, 83, 84, 99, 150, 224, 383, 384, 1000, 1079, 4000]
    for height in sizes:
        for width in sizes:
            try:
                expected = transformers_smart_resize(
                    height, width, factor=factor, min_pixels=low, max_pixels=high
                )
            except ValueError as exc:
                with pytest.raises(ValueError, match="aspect ratio"):
                    smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
                assert "aspect ratio" in str(exc)
                continue
            got = smart_resize(height, width, factor=factor, min_pixels=low, max_pixels=high)
            assert got == expected, (height, width)


def test_files_already_in_memory_are_not_handed_to_the_pool(tokenizer, files, pool):
    builder = _builder(tokenizer, "qwen2_vl", pool)
    builder.media_cache = MediaCache()
    builder.encode_item(_item(files))
    submitted = []
    submit = pool.submit
    builder.decode_pool = DecodePool(2)
    builder.decode_pool.submit = lambda *a: submitted.append(a) or submit(*a)

    builder.encode_item(_item(files))

    assert [a[1] for a in submitted] == [str(files["corrupt"])]  # failures are not kept
