"""Scores read one batch late (what a GPU scorer does so that the device runs a batch while the
CPU collates and launches the next) are the scores read at once, for every batch, the last
included, and a batch that fails is still reported on its own."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workers.reward_model import CandidateInput, RewardScorer, ScoringItem
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer


@pytest.fixture(scope="module")
def built():
    return build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(), seed=3)


def _items() -> list[ScoringItem]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(9):
        words = "word " * (3 + 40 * (i % 3))  # rows of three lengths: several batches
        image = None
        if i % 4 == 1:
            image = Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8))
        candidates = [CandidateInput(text=f"{words} answer {j}") for j in range(2 + i % 3)]
        items.append(ScoringItem(f"Prompt {i}?", candidates, prompt_image=image))
    return items


def _scorer(built, defer: bool) -> RewardScorer:
    return RewardScorer(
        built.model,
        built.builder,
        device="cpu",
        prefetch_workers=0,
        max_batch_rows=2,  # many forward passes for nine items
        defer_readout=defer,
    )


@pytest.mark.parametrize("mode", ["packed", "isolated", "separate"])
def test_scores_read_one_batch_late_equal_scores_read_at_once(built, mode):
    items = _items()
    at_once = _scorer(built, defer=False).score(items, mode=mode)
    late = _scorer(built, defer=True).score(items, mode=mode)
    assert [r.scores for r in late] == [r.scores for r in at_once]
    assert all(None not in r.scores for r in late)  # the last batch was read too
    assert [r.errors for r in late] == [r.errors for r in at_once]


def test_a_failing_batch_is_reported_alone_while_the_others_are_read_late(built):
    items = _items()
    scorer = _scorer(built, defer=True)
    collate = scorer.builder.collate

    def flaky(rows, mode):
        if any(row.item_index == 4 for row in rows):  # its batch fails, then its row alone
            raise RuntimeError("device fault")
        return collate(rows, mode)

    scorer.builder.collate = flaky
    try:
        late = scorer.score(items)
    finally:
        del scorer.builder.collate
    at_once = _scorer(built, defer=False).score(items)
    for i, (a, b) in enumerate(zip(late, at_once, strict=True)):
        if i == 4:
            assert a.errors and all("device fault" in e for e in a.errors)
            assert all(score is None for score in a.scores)
        else:
            assert a.scores == b.scores
            assert None not in a.scores


def test_on_a_cpu_scores_are_read_at_once_and_passes_cost_128_tokens(built):
    scorer = RewardScorer(built.model, built.builder, device="cpu")
    assert scorer.defer_readout is False
    assert scorer.batch_overhead_tokens == 128  # a GPU's default is 4096 (bench/README.md)
