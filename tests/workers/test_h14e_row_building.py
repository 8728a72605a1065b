"""Rows built in processes (`RowBuildPool`): the same results as the scorer's threads, for every
layout and failure; the processes follow the builder and the media settings, stop cleanly, and an
item whose process dies fails alone with a clear error (no Django)."""

from __future__ import annotations

import glob
import os
import pickle

import pytest
import torch
from PIL import Image

from tests.media_fixtures import random_pictures_and_clip
from workers.reward_model import CandidateInput, RewardScorer, ScoringItem
from workers.reward_model.media_cache import MediaCache, MediaStore
from workers.reward_model.row_building import _SHARED_DIR
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture (no Django here)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    out, _ = random_pictures_and_clip(root, seed=11)
    out["corrupt"] = root / "corrupt.png"
    out["corrupt"].write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out["missing"] = root / "missing.png"
    return out


@pytest.fixture(scope="module")
def built():
    return build_tiny_reward_scorer(
        tokenizer=build_tiny_tokenizer(), seed=5, image_max_pixels=56 * 56, max_length=400
    )


@pytest.fixture(scope="module")
def pooled(built):
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=2)
    yield scorer
    scorer.close()


def _items(files) -> list[ScoringItem]:
    text = CandidateInput(kind="text", text="A short answer.")
    return [
        ScoringItem(
            "Which picture fits?",
            [
                CandidateInput(kind="image", path=str(files["small"]), text="this one"),
                CandidateInput(kind="image", path=str(files["corrupt"])),
                CandidateInput(kind="video", path=str(files["clip"])),
                CandidateInput(kind="image", path=str(files["missing"])),
                CandidateInput(kind="text", text="   "),
                text,
            ],
            prompt_image=str(files["wide"]),
        ),
        ScoringItem("Say hello.", [text, CandidateInput(kind="text", text="Hello there!")]),
        # Packed, the row is over max_length: each candidate scored in isolation.
        ScoringItem("Pick one.", [CandidateInput(kind="text", text="word " * 150)] * 3),
        # Even one answer is over max_length: a per-candidate error.
        ScoringItem("Pick.", [text, CandidateInput(kind="text", text="long " * 500)]),
        ScoringItem("Nothing to score.", []),
        ScoringItem("A broken prompt.", [text], prompt_image=str(files["missing"])),
        ScoringItem(
            "Which one?",
            [CandidateInput(kind="image", path=str(files["tall"])), text],
            prompt_video=str(files["clip"]),
        ),
    ]


@pytest.mark.parametrize("mode", ["packed", "isolated", "separate"])
def test_it_scores_as_the_threads_do(built, pooled, files, mode):
    threads = RewardScorer(built.model, built.builder, device="cpu", prefetch_workers=2)
    built.builder.media_cache.clear()
    expected = threads.score(_items(files), mode=mode)
    pooled.row_pool.clear_media_cache()

    got = pooled.score(_items(files), mode=mode)

    # Scores bit for bit, errors, layouts and notes: every field of every result.
    assert got == expected
    assert sum(s is not None for r in got for s in r.scores) >= 8
    assert all(r.error for r in got[4:6]) and "file not found" in got[5].error
    assert "cannot decode image" in got[0].errors[1] and "file not found" in got[0].errors[3]
    if mode == "packed":
        assert got[2].layout == "isolated" and "over max_length" in got[2].note
    assert "over max_length" in got[3].errors[1]
    assert _handed_over() == []


def test_a_single_item_is_built_in_a_process_too(built, pooled, files):
    expected = RewardScorer(built.model, built.builder, device="cpu").score(_items(files)[:1])

    assert pooled.score(_items(files)[:1]) == expected


def test_a_builder_that_changed_is_copied_to_the_processes_again(files):
    scorer = build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(), seed=2, max_length=400)
    scorer.builder.media_cache = MediaCache(0)
    threads = RewardScorer(scorer.model, scorer.builder, device="cpu")
    pooled = RewardScorer(scorer.model, scorer.builder, device="cpu", build_processes=1)
    try:
        items = _items(files)[1:3]
        assert pooled.score(items) == threads.score(items)
        scorer.builder.max_length = 60  # now item 0 overflows too

        got = pooled.score(items)

        assert got == threads.score(items)
        assert got[0].layout == "isolated"
    finally:
        pooled.close()


def test_the_processes_write_the_callers_media_store(built, pooled, files, tmp_path):
    store = tmp_path / "store"
    previous = built.builder.media_store
    built.builder.media_store = MediaStore(store)
    pooled.row_pool.clear_media_cache()
    try:
        pooled.score(_items(files)[:1])
    finally:
        built.builder.media_store = previous

    # The picture prompt, the candidate picture that decodes and the clip.
    stored = sorted(p.suffix for p in store.rglob("*") if p.is_file())
    assert stored == [".image", ".image", ".video"]


def test_the_pixel_limit_holds_in_the_processes(pooled, files, monkeypatch, tmp_path):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 150 * 200 - 1)
    pooled.row_pool.clear_media_cache()
    # An empty media store: frames stored by an earlier test (the same picture's content, in
    # the suite's data dir) are read without decoding, so no limit would be met.
    monkeypatch.setattr(pooled.builder, "media_store", MediaStore(tmp_path / "store"))

    got = pooled.score(_items(files)[:1])

    assert got[0].error is not None and "over the limit of 29999" in got[0].error


def _handed_over() -> list[str]:
    """This process's row files not taken yet."""
    return glob.glob(os.path.join(_SHARED_DIR, f"quorum-rows-{os.getpid()}-*"))


class _ExitsWhenUnpickled:
    """An item field whose unpickling ends the process that reads it: a crash mid-build."""

    def __reduce__(self):
        return (os._exit, (3,))


def test_a_process_that_dies_fails_its_item_alone_and_the_others_are_scored(built, files):
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=2)
    items = _items(files)[1:3]
    try:
        expected = scorer.score(items)
        boom = ScoringItem("Boom.", items[0].candidates, prompt_image=_ExitsWhenUnpickled())  # type: ignore[arg-type]
        # The dying item between the others: in flight with both when its process dies.
        crashing = [items[0], boom, items[1]]

        got = scorer.score(crashing)

        assert [got[0], got[2]] == expected
        assert got[1].scores == [None, None]
        assert "the row-building process died building this prompt alone" in got[1].error
        assert "a row-building process died while item 1" in got[1].error
        assert scorer.score(items) == expected
        assert _handed_over() == []
    finally:
        scorer.close()


def test_close_stops_the_processes(built, files):
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=2)
    scorer.score(_items(files)[1:2])
    processes = list(scorer.row_pool._executor._processes.values())
    assert processes and all(p.is_alive() for p in processes)

    scorer.close()

    assert scorer.row_pool._executor is None
    assert not any(p.is_alive() for p in processes)
    assert all(p.exitcode == 0 for p in processes)


def test_a_pickled_builder_leaves_this_process_state_behind(built):
    copy = pickle.loads(pickle.dumps(built.builder))

    assert copy._lock is not built.builder._lock and copy._item_decodes == {}
    assert copy.limits() == built.builder.limits()
    assert copy.token_ids == built.builder.token_ids


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "molmo2"])
def test_other_backbones_score_as_the_threads_do(files, family):
    scorer = build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(), family=family, seed=6)
    scorer.builder.media_cache = MediaCache(0)
    items = [
        ScoringItem(
            "Which fits?",
            [
                CandidateInput(kind="image", path=str(files["small"]), text="this"),
                CandidateInput(kind="text", text="A short answer."),
            ],
            prompt_image=str(files["wide"]),
        ),
        ScoringItem(
            "Which clip?",
            [CandidateInput(kind="video", path=str(files["clip"])), CandidateInput(kind="text")],
        ),
    ]
    expected = RewardScorer(scorer.model, scorer.builder, device="cpu").score(items)
    pooled = RewardScorer(scorer.model, scorer.builder, device="cpu", build_processes=1)
    try:
        got = pooled.score(items)
    finally:
        pooled.close()

    assert got == expected
    assert got[0].scores[0] is not None and got[1].scores[0] is not None


def test_positions_built_ahead_collate_as_computed_there_and_stay_as_built(built, files):
    builder = built.builder
    items = _items(files)
    plan = builder.plan(0, builder.encode_item(items[0]), "isolated")
    row = plan.rows[0]
    expected = builder.collate([row], "isolated").position_ids
    row.positions = builder._row_positions(row.ids, row.visuals)
    kept = row.positions.clone()

    first = builder.collate([row], "isolated").position_ids
    second = builder.collate([row], "isolated").position_ids  # a batch retried row by row

    assert len(row.slots) > 1 and not torch.equal(expected[:, 0], kept)
    assert torch.equal(first, expected) and torch.equal(second, expected)
    assert torch.equal(row.positions, kept)
