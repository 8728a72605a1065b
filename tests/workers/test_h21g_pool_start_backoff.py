"""Process pools that cannot start (`RowBuildPool`, `DecodePool`) are not started again at every
call: the failed start is remembered for `START_RETRY_S` seconds, with one warning, and the calls
meanwhile take the in-thread path (the same scores); after it, one new start is tried. No
process is spawned here (the executor's start is made to fail) and no Django is needed."""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from PIL import Image

from workers import media
from workers.media import DecodePool
from workers.reward_model import CandidateInput, RewardScorer, ScoringItem, row_building
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture (no Django here)."""


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(row_building, "_clock", clock)
    monkeypatch.setattr(media, "_clock", clock)
    return clock


def _failing_starts(monkeypatch, module, where: str) -> list[int]:
    """Executors of `module` whose start fails with OSError: in their constructor
    (`where="init"`) or when they spawn a process (`"submit"`); returns the starts tried."""
    starts: list[int] = []

    class FailingExecutor(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            starts.append(1)
            if where == "init":
                raise OSError(24, "Too many open files")
            super().__init__(*args, **kwargs)

        def submit(self, *args, **kwargs):
            raise OSError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(module, "ProcessPoolExecutor", FailingExecutor)
    return starts


@pytest.fixture(scope="module")
def built():
    return build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(), seed=21, max_length=300)


def _items() -> list[ScoringItem]:
    return [
        ScoringItem(
            f"Question {n}?",
            [
                CandidateInput(kind="text", text="A short answer."),
                CandidateInput(kind="text", text=f"Another answer, number {n}."),
            ],
        )
        for n in range(3)
    ]


def _warnings(caplog, logger: str) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING
    ]


@pytest.mark.parametrize("where", ["init", "submit"])
def test_row_processes_that_cannot_start_are_not_started_again_at_every_call(
    built, monkeypatch, caplog, clock, where
):
    starts = _failing_starts(monkeypatch, row_building, where)
    expected = RewardScorer(built.model, built.builder, device="cpu").score(_items())
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=2)
    try:
        with caplog.at_level(logging.WARNING, logger="workers.reward_model.row_building"):
            first = scorer.score(_items())
            later = [scorer.score(_items()) for _ in range(3)]

            # The call that tried the start fails its items, as before.
            assert all(r.scores == [None, None] for r in first)
            assert all(r.error.startswith("rows not built: the row-building") for r in first)
            # Then no start: the threads build the rows, the same scores as without the pool.
            assert len(starts) == 1
            assert scorer.row_pool.processes == 0
            for got in later:
                assert [r.scores for r in got] == [r.scores for r in expected]
                assert [r.errors for r in got] == [r.errors for r in expected]
            [warning] = _warnings(caplog, "workers.reward_model.row_building")
            assert "could not start" in warning

            clock.now += row_building.START_RETRY_S - 1
            scorer.score(_items())
            assert len(starts) == 1
            clock.now += 1  # the back-off is over: one new start is tried
            assert scorer.row_pool.processes == 2
            again = scorer.score(_items())
            assert len(starts) == 2 and all(r.scores == [None, None] for r in again)
            assert len(_warnings(caplog, "workers.reward_model.row_building")) == 2
            assert [r.scores for r in scorer.score(_items())] == [r.scores for r in expected]
            assert len(starts) == 2
    finally:
        scorer.close()


def test_setting_another_number_of_row_processes_tries_a_start_at_once(built, monkeypatch, clock):
    starts = _failing_starts(monkeypatch, row_building, "init")
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=2)
    try:
        scorer.score(_items())
        scorer.row_pool.configure(3)
        assert scorer.row_pool.processes == 3
        scorer.score(_items())
        assert len(starts) == 2
    finally:
        scorer.close()


@pytest.mark.parametrize("where", ["init", "submit"])
def test_a_decoding_pool_that_cannot_start_is_not_started_again_at_every_call(
    tmp_path, monkeypatch, caplog, clock, where
):
    starts = _failing_starts(monkeypatch, media, where)
    picture = tmp_path / "p.png"
    Image.fromarray(np.zeros((20, 30, 3), dtype=np.uint8)).save(picture)
    budget = media.MediaBudget(28, 56 * 56, 112 * 112, 3, 8, 448, 2.0)
    pool = DecodePool(2)
    try:
        with caplog.at_level(logging.WARNING, logger="workers.media"):
            assert [pool.submit("image", str(picture), budget) for _ in range(5)] == [None] * 5
            assert len(starts) == 1
            assert len(_warnings(caplog, "workers.media")) == 1
            clock.now += media.START_RETRY_S - 1
            assert pool.submit("image", str(picture), budget) is None
            assert len(starts) == 1
            clock.now += 1
            assert pool.submit("image", str(picture), budget) is None
            assert pool.submit("image", str(picture), budget) is None
            assert len(starts) == 2
            assert len(_warnings(caplog, "workers.media")) == 2
    finally:
        pool.shutdown()


def test_items_decode_here_the_same_while_the_decoding_pool_cannot_start(
    built, tmp_path, monkeypatch, clock
):
    from workers.reward_model import RewardInputBuilder
    from workers.reward_model.media_cache import MediaCache, MediaStore

    starts = _failing_starts(monkeypatch, media, "submit")
    rng = np.random.default_rng(21)
    paths = []
    for n in range(2):
        paths.append(tmp_path / f"{n}.png")
        Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(paths[-1])
    item = ScoringItem("Which fits?", [CandidateInput(kind="image", path=str(p)) for p in paths])
    base = built.builder

    def builder(pool: DecodePool) -> RewardInputBuilder:
        return RewardInputBuilder(
            base.tokenizer,
            base.image_processor,
            model_type=base.model_type,
            patch_size=base.patch_size,
            media_cache=MediaCache(0),
            media_store=MediaStore(),
            decode_pool=pool,
        )

    here = builder(DecodePool(0)).encode_item(item)
    pool = DecodePool(2)
    pooled = builder(pool)
    try:
        for _ in range(3):
            got = pooled.encode_item(item)
            assert got.candidate_errors == here.candidate_errors
            for a, b in zip(got.candidates, here.candidates, strict=True):
                for x, y in zip(a.visuals, b.visuals, strict=True):
                    assert torch.equal(x.pixel_values, y.pixel_values)
        assert len(starts) == 1
    finally:
        pool.shutdown()
