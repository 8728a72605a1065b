"""Decoded media kept on disk between scoring runs and workers, and forward passes cut by rows
alone (no Django)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from tests.workers.pure_core import _media_root, picture_and_clip  # noqa: F401  (autouse fixture)
from workers import media
from workers.reward_model import CandidateInput, RewardInputBuilder, RewardScorer, ScoringItem
from workers.reward_model.media_cache import MediaCache, MediaStore
from workers.tiny import build_tiny_reward_scorer

# Qwen3-VL clips keep their own size rule; this budget keeps them small.
QWEN3_LIMITS = {"video_max_pixels": 4 * 64 * 96, "video_min_pixels": 4 * 32 * 32}


@pytest.fixture
def files(tmp_path):
    return picture_and_clip(tmp_path, 11)


def _builder(tokenizer, family: str, store: MediaStore | None) -> RewardInputBuilder:
    """A tiny model's builder without the process's cache, with `store` (off when None)."""
    limits = QWEN3_LIMITS if family == "qwen3_vl" else {}
    base = build_tiny_reward_scorer(tokenizer=tokenizer, family=family, **limits).builder
    builder = RewardInputBuilder(
        tokenizer,
        base.image_processor,
        model_type=base.model_type,
        patch_size=base.patch_size,
        tokens_per_second=base.tokens_per_second,
        media_cache=MediaCache(0),
        media_store=store or MediaStore(),
        **limits,
    )
    return builder


def _encode(builder: RewardInputBuilder, kind: str, path):
    return builder.encode_image(path) if kind == "image" else builder.encode_video(path)


def _count_decodes(monkeypatch) -> list[str]:
    calls: list[str] = []
    load_image, sample = media.load_image, media.sample_video_frames
    import workers.reward_model.inputs as inputs

    monkeypatch.setattr(
        inputs, "load_image", lambda *a, **k: calls.append("image") or load_image(*a, **k)
    )
    monkeypatch.setattr(
        inputs, "sample_video_frames", lambda *a, **k: calls.append("video") or sample(*a, **k)
    )
    return calls


@pytest.mark.parametrize(
    "family,kind",
    [
        ("qwen2_vl", "image"),
        ("qwen2_vl", "video"),
        ("qwen2_5_vl", "video"),  # its temporal step comes from the stored sampling rate
        ("qwen3_vl", "image"),
        ("qwen3_vl", "video"),  # its timestamps come from the stored frame times
    ],
)
def test_a_stored_file_is_not_decoded_again_and_reaches_the_model_unchanged(
    tokenizer, files, tmp_path, monkeypatch, family, kind
):
    fresh = _encode(_builder(tokenizer, family, None), kind, files[kind])
    decodes = _count_decodes(monkeypatch)
    _encode(_builder(tokenizer, family, MediaStore(tmp_path / "store")), kind, files[kind])
    assert decodes == [kind]

    # Another worker process: its own builder and cache, the same store.
    store = MediaStore(tmp_path / "store")
    again = _encode(_builder(tokenizer, family, store), kind, files[kind])

    assert decodes == [kind] and (store.hits, store.misses) == (1, 0)
    assert again.grid_thw == fresh.grid_thw
    assert again.time_interval == fresh.time_interval
    assert again.expansion == fresh.expansion
    assert again.pixel_values.dtype == fresh.pixel_values.dtype
    assert torch.equal(again.pixel_values, fresh.pixel_values)


def test_builders_with_other_budgets_do_not_share_entries(tokenizer, files, tmp_path):
    store = MediaStore(tmp_path / "store")
    base = build_tiny_reward_scorer(tokenizer=tokenizer).builder
    small, large = (
        RewardInputBuilder(
            tokenizer,
            base.image_processor,
            image_max_pixels=pixels,
            media_cache=MediaCache(0),
            media_store=store,
        )
        for pixels in (56 * 56, 112 * 112)
    )

    grid = small.encode_image(files["image"]).grid_thw

    assert large.encode_image(files["image"]).grid_thw != grid
    assert store.writes == 2 and store.hits == 0
    assert small.encode_image(files["image"]).grid_thw == grid
    assert store.hits == 1


def test_a_picture_asked_for_as_a_video_is_not_taken_from_the_store(tokenizer, files, tmp_path):
    store = MediaStore(tmp_path / "store")
    builder = _builder(tokenizer, "qwen2_vl", store)

    image = builder.encode_image(files["image"])
    video = builder.encode_video(files["image"])  # FFmpeg reads a PNG as a one-frame clip

    assert (image.kind, video.kind) == ("image", "video")
    assert store.writes == 2 and store.hits == 0


def test_a_damaged_entry_is_decoded_again_and_rewritten(tokenizer, files, tmp_path, caplog):
    store = MediaStore(tmp_path / "store")
    fresh = _builder(tokenizer, "qwen2_vl", store).encode_video(files["video"])
    (entry,) = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    entry.write_bytes(entry.read_bytes()[:40])

    again = _builder(tokenizer, "qwen2_vl", store).encode_video(files["video"])

    assert torch.equal(again.pixel_values, fresh.pixel_values)
    assert "unreadable" in caplog.text and str(entry) in caplog.text
    assert store.writes == 2
    assert _builder(tokenizer, "qwen2_vl", store).encode_video(files["video"]) is not None
    assert store.hits == 1


def test_a_store_it_cannot_write_only_costs_decoding(tokenizer, files, tmp_path, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder would be")
    store = MediaStore(blocker / "store")
    builder = _builder(tokenizer, "qwen2_vl", store)

    visual = builder.encode_image(files["image"])
    builder.encode_image(files["image"])

    assert visual.grid_thw[0] == 1 and store.writes == 0
    assert caplog.text.count("cannot write") == 1


def test_without_a_folder_the_store_keeps_nothing(tokenizer, files, tmp_path, monkeypatch):
    store = MediaStore()
    decodes = _count_decodes(monkeypatch)

    for _ in range(2):
        _builder(tokenizer, "qwen2_vl", store).encode_image(files["image"])

    assert decodes == ["image", "image"] and store.writes == 0


# -- forward passes ---------------------------------------------------------------------------


def _items(count: int, lengths: list[int]) -> list[ScoringItem]:
    return [
        ScoringItem(
            f"Prompt {i}?",
            [CandidateInput(text="word " * lengths[i % len(lengths)]), CandidateInput(text="b")],
        )
        for i in range(count)
    ]


def _passes(scorer: RewardScorer, items: list[ScoringItem]) -> list[list[int]]:
    """The items of each forward pass of `scorer.score(items)`."""
    passes: list[list[int]] = []
    score_rows = scorer._score_rows

    def record(rows, mode, results):
        passes.append(sorted(row.item_index for row in rows))
        return score_rows(rows, mode, results)

    scorer._score_rows = record
    try:
        scorer.score(items)
    finally:
        del scorer._score_rows
    return passes


def test_items_of_like_length_share_a_forward_pass_and_long_ones_go_apart(tokenizer):
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=2)
    scorer = RewardScorer(built.model, built.builder, device="cpu", prefetch_workers=0)

    like = _passes(scorer, _items(12, [3]))
    mixed = _passes(scorer, _items(6, [3, 3, 3, 300, 300, 3]))

    assert like == [list(range(12))]  # one pass, as the bare forward makes
    assert mixed == [[0, 1, 2], [3, 4], [5]]  # no short row padded to 300 words


def test_scores_do_not_depend_on_how_fast_media_are_prepared(tokenizer):
    built = build_tiny_reward_scorer(tokenizer=tokenizer, seed=2)
    encode_item = built.builder.encode_item
    rng = np.random.default_rng(0)
    delays = {i: float(d) for i, d in enumerate(rng.uniform(0, 0.05, 14))}
    lock = threading.Lock()

    def slow_encode(item):
        with lock:
            delay = delays[int(item.prompt_text.split()[1].rstrip("?"))]
        time.sleep(delay)
        return encode_item(item)

    items = _items(14, [3, 40, 5, 120, 8])
    serial = RewardScorer(built.model, built.builder, device="cpu", prefetch_workers=0)
    expected = [r.scores for r in serial.score(items)]
    built.builder.encode_item = slow_encode
    threaded = RewardScorer(built.model, built.builder, device="cpu", prefetch_workers=2)

    assert [r.scores for r in threaded.score(items)] == expected
