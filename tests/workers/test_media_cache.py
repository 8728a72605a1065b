"""Encoded media kept by file content, and video frames converted without a converter per frame
(no Django)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch
from PIL import Image

from tests.workers.pure_core import _media_root  # noqa: F401  (autouse fixture)
from workers.media import _reformatter, encode_video, sample_video_frames
from workers.reward_model import CandidateInput, RewardScorer, ScoringItem
from workers.reward_model.media_cache import MEDIA_CACHE, MediaCache, file_digest
from workers.tiny import build_tiny_reward_scorer


@pytest.fixture
def media(tmp_path):
    rng = np.random.default_rng(5)
    paths = {}
    for name in ("a", "b"):
        paths[name] = tmp_path / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(paths[name])
        paths[f"clip_{name}"] = encode_video(
            tmp_path / f"{name}.mp4", rng.integers(0, 255, (8, 48, 64, 3), dtype=np.uint8)
        )
    return paths


def _builder(tokenizer, **limits):
    """A tiny model's input builder with a cache of its own (the process's is shared)."""
    builder = build_tiny_reward_scorer(tokenizer=tokenizer, **limits).builder
    builder.media_cache = MediaCache()
    return builder


def _tensor(megabytes: float) -> torch.Tensor:
    return torch.zeros(int(megabytes * 2**20) // 4, dtype=torch.float32)


# -- the cache ----------------------------------------------------------------------------------


def test_a_stored_value_is_returned_and_another_key_misses():
    cache = MediaCache(max_bytes=2**20)
    value = _tensor(0.25)
    cache.put("a", value)

    assert cache.get("a") is value
    assert cache.get("b") is None
    assert (cache.hits, cache.misses, cache.nbytes) == (1, 1, value.numel() * 4)


def test_it_evicts_the_least_recently_used_beyond_its_bound():
    cache = MediaCache(max_bytes=2**20)
    for key in ("a", "b", "c"):
        cache.put(key, _tensor(0.3))
    cache.get("a")  # now the most recently used

    cache.put("d", _tensor(0.3))

    assert cache.get("b") is None
    assert all(cache.get(key) is not None for key in ("a", "c", "d"))
    assert len(cache) == 3 and cache.nbytes <= cache.max_bytes


def test_it_counts_the_tensors_inside_a_visual_and_keeps_none_over_the_bound():
    cache = MediaCache(max_bytes=2**20)
    cache.put("ok", {"pixels": _tensor(0.6)})
    cache.put("big", {"pixels": _tensor(0.6), "more": [_tensor(0.6)]})

    assert cache.get("big") is None
    # The value too big to keep did not push the others out.
    assert cache.get("ok") is not None and cache.nbytes == int(0.6 * 2**20) // 4 * 4


def _in_two_threads(cache, compute):
    """Thread 1 computes "k"; thread 2 asks for "k" meanwhile; returns both outcomes."""
    started, release = threading.Event(), threading.Event()
    outcomes: list = [None, None]

    def slow():
        started.set()
        assert release.wait(10)
        return compute()

    def ask(slot, fn):
        try:
            outcomes[slot] = cache.get_or_compute("k", fn)
        except Exception as exc:  # noqa: BLE001 - the outcome under test
            outcomes[slot] = exc

    first = threading.Thread(target=ask, args=(0, slow))
    first.start()
    assert started.wait(10)
    second = threading.Thread(target=ask, args=(1, compute))
    second.start()
    for _ in range(1000):  # until the second thread is waiting (counted, as it does not decode)
        if cache.hits:
            break
        threading.Event().wait(0.001)
    release.set()
    first.join()
    second.join()
    return outcomes


def test_a_key_being_computed_is_waited_for_not_computed_twice():
    cache = MediaCache(max_bytes=2**20)
    calls = []

    def compute():
        calls.append(1)
        return _tensor(0.1)

    outcomes = _in_two_threads(cache, compute)

    assert len(calls) == 1
    assert outcomes[0] is outcomes[1] is cache.get("k")


def test_a_failed_computation_reaches_the_waiters_and_is_not_kept():
    cache = MediaCache(max_bytes=2**20)
    calls = []

    def fail():
        calls.append(1)
        raise ValueError("corrupt file")

    outcomes = _in_two_threads(cache, fail)

    assert len(calls) == 1
    assert all(isinstance(o, ValueError) for o in outcomes)
    with pytest.raises(ValueError):
        cache.get_or_compute("k", fail)
    assert len(calls) == 2 and len(cache) == 0


def test_the_digest_follows_the_content_not_the_path(media, tmp_path):
    copy = tmp_path / "copy.png"
    shutil.copy(media["a"], copy)

    assert file_digest(copy) == file_digest(media["a"]) != file_digest(media["b"])
    assert file_digest(tmp_path / "missing.png") is None


# -- the input builder --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["image", "video"])
def test_a_file_met_again_is_not_decoded_again(tokenizer, media, tmp_path, kind):
    builder = _builder(tokenizer)
    encode = builder.encode_image if kind == "image" else builder.encode_video
    a, b = (media["a"], media["b"]) if kind == "image" else (media["clip_a"], media["clip_b"])
    copy = tmp_path / f"copy{a.suffix}"
    shutil.copy(a, copy)

    first = encode(a)

    assert encode(a) is first
    assert encode(copy) is first  # same content under another name
    other = encode(b)
    assert other is not first
    assert not torch.equal(other.pixel_values, first.pixel_values)
    assert (builder.media_cache.hits, builder.media_cache.misses) == (2, 2)


@pytest.mark.parametrize("kind", ["image", "video"])
def test_cached_media_equal_media_decoded_afresh(tokenizer, media, kind):
    built = build_tiny_reward_scorer(tokenizer=tokenizer)
    processor = built.builder.image_processor
    uncached = type(built.builder)(tokenizer, processor, media_cache=MediaCache(0), max_frames=4)
    cached = type(built.builder)(tokenizer, processor, media_cache=MediaCache(), max_frames=4)
    path = media["a"] if kind == "image" else media["clip_a"]
    encode = "encode_image" if kind == "image" else "encode_video"

    getattr(cached, encode)(path)
    hit = getattr(cached, encode)(path)
    fresh = getattr(uncached, encode)(path)

    assert cached.media_cache.hits == 1 and len(uncached.media_cache) == 0
    assert hit.grid_thw == fresh.grid_thw
    assert torch.equal(hit.pixel_values, fresh.pixel_values)


def test_a_picture_asked_for_as_a_video_is_not_taken_from_the_cache(tokenizer, media):
    builder = _builder(tokenizer)
    image = builder.encode_image(media["a"])

    video = builder.encode_video(media["a"])  # FFmpeg reads a PNG as a one-frame clip

    assert (image.kind, video.kind) == ("image", "video")
    assert builder.media_cache.misses == 2


def test_builders_sharing_the_process_cache_keep_their_own_entries(tokenizer, media):
    shared = MediaCache()
    processor = build_tiny_reward_scorer(tokenizer=tokenizer).builder.image_processor
    small, large = (
        type(build_tiny_reward_scorer(tokenizer=tokenizer).builder)(
            tokenizer, processor, image_max_pixels=pixels, media_cache=shared
        )
        for pixels in (56 * 56, 112 * 112)
    )

    grid = small.encode_image(media["a"]).grid_thw

    assert large.encode_image(media["a"]).grid_thw != grid
    assert small.encode_image(media["a"]).grid_thw == grid
    assert len(shared) == 2
    assert build_tiny_reward_scorer(tokenizer=tokenizer).builder.media_cache is MEDIA_CACHE


def test_a_file_rewritten_in_place_is_decoded_again(tokenizer, media):
    builder = _builder(tokenizer)
    before = builder.encode_image(media["a"])

    shutil.copy(media["b"], media["a"])
    after = builder.encode_image(media["a"])

    assert torch.equal(after.pixel_values, builder.encode_image(media["b"]).pixel_values)
    assert not torch.equal(after.pixel_values, before.pixel_values)


def test_scores_with_cached_media_equal_the_first_scores(tokenizer, media):
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=2)
    built.builder.media_cache = MediaCache()
    items = [
        ScoringItem(
            f"Prompt {i}: which picture?",
            [
                CandidateInput(kind="image", path=str(media["a"]), text="one"),
                CandidateInput(kind="image", path=str(media["b"])),
                CandidateInput(kind="video", path=str(media["clip_a"])),
            ],
            prompt_image=str(media["b"]) if i % 2 else None,
        )
        for i in range(6)
    ]
    scorer = RewardScorer(built.model, built.builder, device="cpu", prefetch_items=2)

    first = scorer.score(items)
    misses = built.builder.media_cache.misses
    again = scorer.score(items)

    assert misses == 3  # three files, each decoded once over six prompts
    assert built.builder.media_cache.misses == misses
    assert [r.scores for r in again] == [r.scores for r in first]
    assert all(r.ok for r in first)


# -- the prefetch pool --------------------------------------------------------------------------


def test_every_prefetch_thread_works_on_the_chunk_the_model_needs_first(tokenizer):
    # Items 0 and 1 share the first chunk; each waits until the other is being prepared, which
    # happens only when the threads share the chunk (one thread per chunk would deadlock).
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=2)
    barrier = threading.Barrier(2, timeout=10)
    threads: dict[int, str] = {}
    encode_item = built.builder.encode_item

    def encode_and_wait(item):
        index = int(item.prompt_text.split()[1])
        threads[index] = threading.current_thread().name
        if index < 2:
            barrier.wait()
        return encode_item(item)

    built.builder.encode_item = encode_and_wait
    items = [
        ScoringItem(f"Prompt {i} ?", [CandidateInput(text="a"), CandidateInput(text="b")])
        for i in range(6)
    ]
    scorer = RewardScorer(
        built.model, built.builder, device="cpu", prefetch_workers=2, prefetch_items=3
    )

    results = scorer.score(items)

    assert all(r.ok for r in results)
    assert threads[0] != threads[1]


# -- video frames -------------------------------------------------------------------------------


def _reference_frames(path, indices, size):
    import av

    with av.open(str(path)) as container:
        frames = [
            frame.reformat(width=size[0], height=size[1], format="rgb24").to_ndarray()
            for index, frame in enumerate(container.decode(video=0))
            if index in indices
        ]
    return np.stack(frames)


def test_frames_converted_by_the_kept_converter_equal_a_fresh_conversion(tmp_path):
    rng = np.random.default_rng(9)
    big = encode_video(tmp_path / "big.mp4", rng.integers(0, 255, (6, 96, 128, 3), np.uint8))
    small = encode_video(tmp_path / "small.mp4", rng.integers(0, 255, (6, 48, 40, 3), np.uint8))

    # One thread, clips of different sizes in turn: the converter adapts to each.
    for path, size in ((big, (64, 48)), (small, (40, 48)), (big, (64, 48))):
        sampled = sample_video_frames(path, max_frames=3, max_side=64)
        np.testing.assert_array_equal(
            sampled.frames, _reference_frames(path, sampled.indices, size)
        )
    at_size = sample_video_frames(big, max_frames=3, frame_size=lambda n, w, h: (56, 28))
    expected = [
        np.asarray(Image.fromarray(f).resize((56, 28), Image.Resampling.BICUBIC))
        for f in _reference_frames(big, at_size.indices, (128, 96))
    ]
    np.testing.assert_array_equal(at_size.frames, np.stack(expected))


def test_each_thread_keeps_one_converter():
    found = []
    worker = threading.Thread(target=lambda: found.append(_reformatter()))
    worker.start()
    worker.join()

    assert _reformatter() is _reformatter()
    assert found[0] is not _reformatter()
