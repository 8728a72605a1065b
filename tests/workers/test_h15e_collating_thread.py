"""Rows built in processes are cut into forward passes and collated by a thread of the scoring
process (`RewardScorer._score_collated`): the batches, hence the scores, are the threads' path's
exactly; a batch that fails to collate is reported per item; the thread and the handed-over
files are gone after a call, whether it succeeds or fails (no Django)."""

from __future__ import annotations

import dataclasses
import glob
import os
import threading
import time

import numpy as np
import pytest
import torch

from tests.media_fixtures import random_pictures_and_clip
from workers.media import encode_video
from workers.reward_model import CandidateInput, RewardScorer, ScoringItem
from workers.reward_model.inputs import RewardInputBuilder
from workers.reward_model.media_cache import MediaCache
from workers.reward_model.row_building import _SHARED_DIR
from workers.reward_model.scorers import COLLATED_AHEAD
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture (no Django here)."""


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    out, rng = random_pictures_and_clip(root, seed=15)
    out["other_clip"] = encode_video(
        root / "other.mp4", rng.integers(0, 255, (6, 48, 64, 3), dtype=np.uint8)
    )
    return out


@pytest.fixture(scope="module")
def built():
    scorer = build_tiny_reward_scorer(
        tokenizer=build_tiny_tokenizer(), seed=9, image_max_pixels=56 * 56, max_length=400
    )
    scorer.builder.media_cache = MediaCache(0)
    return scorer


def _items(files) -> list[ScoringItem]:
    """The demo projects' shapes: a picture prompt with text answers (VQA), picture answers
    (text-to-image), clip answers (text-to-video), two of each."""
    text = CandidateInput(kind="text", text="A short answer.")
    pictures = [CandidateInput(kind="image", path=str(files[k])) for k in ("small", "tall", "wide")]
    clips = [CandidateInput(kind="video", path=str(files[k])) for k in ("clip", "other_clip")]
    return [
        ScoringItem(
            "What is shown?",
            [text, CandidateInput(kind="text", text="A cat.")],
            prompt_image=str(files["wide"]),
        ),
        ScoringItem("Which picture fits?", pictures),
        ScoringItem("Which clip fits?", clips),
        ScoringItem(
            "And here?",
            [CandidateInput(kind="text", text="Trees."), text],
            prompt_image=str(files["tall"]),
        ),
        ScoringItem("A red square.", pictures[::-1]),
        ScoringItem("A moving dot.", clips[::-1]),
    ]


def _record(scorer: RewardScorer, monkeypatch) -> list:
    """Every batch `scorer`'s model is called with, and the thread it is called on."""
    calls = []
    forward = scorer.model.forward

    def record(batch):
        calls.append((batch, threading.current_thread().name))
        return forward(batch)

    monkeypatch.setattr(scorer.model, "forward", record)
    return calls


def _tensors(batch) -> dict:
    return {f.name: getattr(batch, f.name) for f in dataclasses.fields(batch)}


def _handed_over() -> list[str]:
    return glob.glob(os.path.join(_SHARED_DIR, f"quorum-rows-{os.getpid()}-*"))


def _collating_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name == "rm-collate"]


@pytest.mark.parametrize("mode", ["packed", "isolated", "separate"])
def test_it_runs_the_threads_batches_tensor_for_tensor(built, files, monkeypatch, mode):
    threads = RewardScorer(built.model, built.builder, device="cpu", max_batch_rows=3)
    processes = RewardScorer(
        built.model, built.builder, device="cpu", max_batch_rows=3, build_processes=2
    )
    calls = _record(threads, monkeypatch)
    try:
        expected = threads.score(_items(files), mode=mode)
        expected_batches, calls[:] = list(calls), []

        got = processes.score(_items(files), mode=mode)
    finally:
        processes.close()

    assert got == expected
    assert all(s is not None for r in got for s in r.scores)
    assert len(calls) == len(expected_batches) >= 2
    for (batch, thread), (want, _) in zip(calls, expected_batches, strict=True):
        assert thread == "MainThread"
        fields, wanted = _tensors(batch), _tensors(want)
        assert fields.keys() == wanted.keys()
        for name, value in fields.items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(value, wanted[name]), name
            else:
                assert value == wanted[name], name
    assert _handed_over() == [] and _collating_threads() == []


def test_the_batches_are_collated_off_the_scoring_thread_a_bounded_way_ahead(
    built, files, monkeypatch
):
    scorer = RewardScorer(
        built.model, built.builder, device="cpu", max_batch_rows=2, build_processes=2
    )
    collate = RewardInputBuilder.collate
    collated: list[str] = []
    ahead: list[int] = []

    def spy(builder, rows, mode):
        collated.append(threading.current_thread().name)
        return collate(builder, rows, mode)

    forward = scorer.model.forward

    def model(batch):
        ahead.append(len(collated) - len(ahead))
        time.sleep(0.02)  # the collating thread gets every chance to run ahead
        return forward(batch)

    # On the class: the builder is pickled for the building processes.
    monkeypatch.setattr(RewardInputBuilder, "collate", spy)
    monkeypatch.setattr(scorer.model, "forward", model)
    try:
        scorer.score(_items(files) * 2)
    finally:
        scorer.close()

    assert len(ahead) > 4 and set(collated) == {"rm-collate"}
    # The batch in the model, one in the queue and one collated, waiting for room.
    assert max(ahead) <= COLLATED_AHEAD + 2


def test_the_threads_path_has_no_collating_thread(built, files, monkeypatch):
    scorer = RewardScorer(built.model, built.builder, device="cpu", prefetch_workers=2)
    seen: list[list[str]] = []
    forward = scorer.model.forward

    def model(batch):
        seen.append(_collating_threads())
        return forward(batch)

    monkeypatch.setattr(scorer.model, "forward", model)
    scorer.score(_items(files))

    assert seen and all(names == [] for names in seen)


@pytest.mark.parametrize("build_processes", [0, 2])
def test_a_batch_that_fails_to_collate_is_retried_row_by_row(
    built, files, monkeypatch, build_processes
):
    collate = RewardInputBuilder.collate

    def failing(builder, rows, mode):
        if len(rows) > 1 or any(row.item_index == 2 for row in rows):
            raise ValueError("boom")
        return collate(builder, rows, mode)

    monkeypatch.setattr(RewardInputBuilder, "collate", failing)
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=build_processes)
    try:
        got = scorer.score(_items(files), mode="separate")
    finally:
        scorer.close()

    assert got[2].scores == [None, None]
    assert got[2].errors == ["scoring failed: ValueError: boom"] * 2
    assert all(s is not None for r in got[:2] + got[3:] for s in r.scores)
    assert _handed_over() == [] and _collating_threads() == []


class _Stop(BaseException):
    """Not an Exception: no batch retry catches it, the call stops."""


def test_a_call_that_stops_midway_leaves_no_thread_and_no_file(built, files, monkeypatch):
    scorer = RewardScorer(
        built.model, built.builder, device="cpu", max_batch_rows=2, build_processes=2
    )
    forward = scorer.model.forward
    calls = []

    def model(batch):
        calls.append(1)
        if len(calls) == 2:
            raise _Stop
        return forward(batch)

    monkeypatch.setattr(scorer.model, "forward", model)
    try:
        with pytest.raises(_Stop):
            scorer.score(_items(files) * 2)
        assert _collating_threads() == []
        # Items still in a building process when the call stopped are deleted as they finish.
        deadline = time.monotonic() + 30
        while _handed_over() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _handed_over() == []

        monkeypatch.setattr(scorer.model, "forward", forward)
        again = scorer.score(_items(files))
    finally:
        scorer.close()

    threads = RewardScorer(built.model, built.builder, device="cpu", max_batch_rows=2)
    assert again == threads.score(_items(files))
