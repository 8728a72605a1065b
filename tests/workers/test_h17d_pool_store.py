"""A decoding-pool process writes the media store's entry of what it decoded: the scoring
process neither compresses nor writes it, only counts it, and the entry reads back as one the
scoring process would have written (no Django)."""

from __future__ import annotations

from concurrent.futures import Future

import pytest
import torch

from tests.workers.pure_core import _media_root, picture_and_clip  # noqa: F401  (autouse fixture)
from workers import media
from workers.media import DecodePool, decode_and_store
from workers.reward_model import CandidateInput, RewardInputBuilder, ScoringItem
from workers.reward_model.media_cache import MediaCache, MediaStore
from workers.tiny import build_tiny_reward_scorer


@pytest.fixture
def files(tmp_path):
    return picture_and_clip(tmp_path, 23)


def _builder(tokenizer, store: MediaStore, pool: DecodePool | None) -> RewardInputBuilder:
    base = build_tiny_reward_scorer(tokenizer=tokenizer).builder
    return RewardInputBuilder(
        tokenizer,
        base.image_processor,
        model_type=base.model_type,
        patch_size=base.patch_size,
        media_cache=MediaCache(0),
        media_store=store,
        decode_pool=pool or DecodePool(0),
    )


def _item(files) -> ScoringItem:
    return ScoringItem(
        "Which fits?",
        [
            CandidateInput(kind="image", path=str(files["image"])),
            CandidateInput(kind="video", path=str(files["video"])),
        ],
    )


def _pixels(encoded) -> list[torch.Tensor]:
    return [v.pixel_values for c in encoded.candidates for v in c.visuals]


def _entries(root) -> list:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_the_pool_process_writes_the_entry_and_this_process_counts_it(
    tokenizer, files, tmp_path, pool, monkeypatch
):
    writes = []
    write = MediaStore.write
    monkeypatch.setattr(MediaStore, "write", lambda self, *a: writes.append(a) or write(self, *a))
    store = MediaStore(tmp_path / "store")

    pooled = _builder(tokenizer, store, pool).encode_item(_item(files))

    assert pooled.candidate_errors == [None, None]
    assert writes == []  # nothing compressed nor written here
    entries = _entries(tmp_path / "store")
    assert len(entries) == 2
    # Counted for the bound (a sweep may have measured an entry besides).
    assert store.writes == 2 and store._known_bytes is not None
    assert store._known_bytes + store._written >= sum(p.stat().st_size for p in entries)
    # Another process reads them: the same values as a decode here, store off.
    again = MediaStore(tmp_path / "store")
    read = _builder(tokenizer, again, None).encode_item(_item(files))
    fresh = _builder(tokenizer, MediaStore(), None).encode_item(_item(files))
    assert (again.hits, again.misses) == (2, 0)
    for a, b, c in zip(_pixels(pooled), _pixels(read), _pixels(fresh), strict=True):
        assert torch.equal(a, c) and torch.equal(b, c)


def test_an_entry_the_pool_could_not_write_is_written_here(
    tokenizer, files, tmp_path, pool, monkeypatch
):
    def unwritten(kind, path, budget, store_path=None):
        future = Future()
        future.set_result(decode_and_store(kind, path, budget, None))
        return future

    store = MediaStore(tmp_path / "store")
    builder = _builder(tokenizer, store, pool)
    monkeypatch.setattr(builder.decode_pool, "submit", unwritten)

    builder.encode_item(_item(files))

    assert store.writes == 2 and len(_entries(tmp_path / "store")) == 2


def test_decode_and_store_reports_a_write_that_failed(files, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    budget = media.MediaBudget(factor=28, min_pixels=28 * 28, max_pixels=56 * 56)

    frames, meta, written = decode_and_store(
        "image", str(files["image"]), budget, str(blocker / "ab" / "entry.image")
    )

    assert written == 0 and frames.shape[0] == 1 and meta["source"] == [200, 150]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
