"""`consensus.preference_columns` (pair judgments indexed with numpy) equals
`crowd_bt.index_comparisons` of `consensus._strict_preferences`, the per-vote generator it
replaces for the joint model: the same columns, keys and key order, on random pair votes
with every outcome, self-pairs, display orders known, partial, foreign or reversed, and
candidates met first as losers; anything it cannot index column-wise takes the generator."""

from __future__ import annotations

import random

import numpy as np
import pytest

from curation import consensus as C
from curation import crowd_bt as CB


def _vote(i: int, prompt: int, evaluator: str, pair, outcome: str, shown=()) -> C.Vote:
    return C.Vote(
        judgment_id=i,
        task_id=prompt * 100 + i,
        prompt_id=prompt,
        evaluator=evaluator,
        pair=pair,
        outcome=outcome,
        presented_order=shown,
    )


def _random_votes(seed: int, n: int = 400) -> list[C.Vote]:
    rng = random.Random(seed)
    prompts = rng.sample(range(-50, 5000), 15)  # not in appearance order, one may be negative
    votes = []
    for i in range(n):
        prompt = rng.choice(prompts)
        cands = [prompt * 7 + k for k in range(rng.randint(2, 9))]
        a, b = rng.sample(cands, 2) if rng.random() < 0.95 else (cands[0], cands[0])
        shown = rng.choice(
            [(a, b), (b, a), (a, b), (), (a,), (a, a), (b, b), (a, cands[-1] + 1), (a, b, a)]
        )
        outcome = rng.choice(["a", "b", "a", "b", "tie", "both_bad", ""])
        votes.append(_vote(i, prompt, f"ann{rng.randrange(7)}", (a, b), outcome, shown))
    return votes


def _columns(indexed) -> tuple:
    c = indexed.comparisons
    return (
        [x.tolist() for x in (c.prompt, c.winner, c.loser, c.annotator, c.winner_first)],
        (c.n_prompts, c.n_candidates, c.n_annotators),
        indexed.prompts,
        indexed.candidates,
        indexed.annotators,
    )


def _reference(votes):
    return CB.index_comparisons(C._strict_preferences(votes))


@pytest.mark.parametrize("seed", range(12))
def test_it_indexes_pair_votes_as_the_generator_does(seed):
    votes = _random_votes(seed)
    got = C._pair_preference_columns(votes)
    assert got is not None  # the column-wise path ran
    assert _columns(got) == _columns(_reference(votes))
    assert CB.fit_key(got) == CB.fit_key(_reference(votes))
    assert all(type(k) is int for keys in got.candidates for k in keys)
    assert all(type(k) is int for k in got.prompts)


def test_it_numbers_a_candidate_first_met_as_a_loser_before_later_winners():
    votes = [
        _vote(1, 9, "x", (30, 20), "a", (30, 20)),  # 30 beats 20
        _vote(2, 3, "y", (11, 10), "b", (10, 11)),  # 10 beats 11, 10 shown first
        _vote(3, 9, "y", (20, 40), "tie", (20, 40)),  # no preference: 40 not met
        _vote(4, 9, "x", (40, 20), "b", (20, 40)),  # 20 beats 40, shown first
    ]
    got = C._pair_preference_columns(votes)
    assert got.prompts == [9, 3]
    assert got.candidates == [[30, 20, 40], [10, 11]]
    assert got.annotators == ["x", "y"]
    c = got.comparisons
    assert c.prompt.tolist() == [0, 1, 0]
    assert c.winner.tolist() == [0, 0, 1]
    assert c.loser.tolist() == [1, 1, 2]
    assert c.winner_first.tolist() == [1, 1, 1]
    assert _columns(got) == _columns(_reference(votes))


@pytest.mark.parametrize(
    "odd",
    [
        _vote(90, 1, "z", (1, 2), "a", ("1", "2")),  # display order of strings
        _vote(90, 1, "z", (1.0, 2.0), "a", (1, 2)),  # float candidate ids
        _vote(90, 1, "z", ("p", "q"), "b", ()),  # string candidate ids
        C.Vote(judgment_id=90, task_id=1, prompt_id=1, evaluator="z", ranking=((1,), (2,))),
    ],
)
def test_it_leaves_what_it_cannot_index_to_the_generator(odd):
    votes = [*_random_votes(3, 50), odd]
    assert C._pair_preference_columns(votes) is None
    assert _columns(C.preference_columns(votes)) == _columns(_reference(votes))


def test_it_leaves_votes_without_a_strict_preference_to_the_generator():
    votes = [_vote(1, 1, "x", (1, 2), "tie", (1, 2))]
    assert C._pair_preference_columns(votes) is None
    assert len(C.preference_columns(votes).comparisons) == 0


def test_the_joint_model_reads_the_column_wise_indexing():
    votes = _random_votes(5, 600)
    C._last_indexed[0] = None
    got = C._indexed_preferences(votes)
    assert _columns(got) == _columns(_reference(votes))
    assert np.array_equal(got.comparisons.winner, _reference(votes).comparisons.winner)


def test_an_unknown_display_order_stays_unknown_for_candidate_zero():
    # A display order of another length is read as (0, 0) on the arrays: never as known.
    votes = [_vote(1, 4, "x", (0, 0), "a", ()), _vote(2, 4, "x", (0, 5), "b", (0,))]
    got = C._pair_preference_columns(votes)
    assert got.comparisons.winner_first.tolist() == [-1, -1]
    assert _columns(got) == _columns(_reference(votes))
