"""Answers kept for the very same records (`agreement._memo_last`) and votes
(`consensus._indexed_preferences`): a second call on the same objects reuses the first
answer, and anything else (other records, equal records that are other objects, changed
arguments) is computed afresh, equal to the function's own answer."""

from __future__ import annotations

import random

import numpy as np
import pytest

from curation import agreement as A
from curation import consensus as C
from curation import crowd_bt as CB


@pytest.fixture(autouse=True)
def _forget():
    for func in (A.annotator_reliability, A._pair_table, A._pair_relations):
        func.forget()
    C._last_indexed[0] = None


def _records(seed: int, n: int = 300) -> list[A.PairRecord]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.sample(range(6), 2)
        out.append(
            A.PairRecord(
                task=rng.randrange(12),
                annotator=f"ann{rng.randrange(5)}",
                a=a,
                b=b,
                outcome=rng.choice(A.OUTCOMES),
                presented_order=(a, b) if rng.random() < 0.5 else (b, a),
            )
        )
    return out


def _fresh_reliability(records, **kwargs):
    A.annotator_reliability.forget()
    return A.annotator_reliability(records, **kwargs)


def _counted(monkeypatch, name: str) -> list[int]:
    calls: list[int] = []
    func = getattr(A, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return func(*args, **kwargs)

    monkeypatch.setattr(A, name, counted)
    return calls


def test_it_reuses_the_answer_for_the_same_records(monkeypatch):
    records = _records(0)
    calls = _counted(monkeypatch, "_reliability_counts")
    first = A.annotator_reliability(records, gold={})
    again = A.annotator_reliability(list(records), gold={})
    assert calls == [1] and again == first


def test_other_records_of_the_same_length_are_computed_afresh():
    records = _records(1)
    A.annotator_reliability(records)
    # One annotator's outcomes flipped: the same length, other objects from the first on.
    flip = {"a": "b", "b": "a", "tie": "a", "both_bad": "b"}
    changed = [
        A.PairRecord(**{**r.__dict__, "outcome": flip[r.outcome]}) if r.annotator == "ann0" else r
        for r in records
    ]
    got = A.annotator_reliability(changed)
    assert got == _fresh_reliability(changed)
    assert got != _fresh_reliability(records)


def test_equal_records_that_are_other_objects_are_computed_afresh(monkeypatch):
    records = _records(2)
    A.annotator_reliability(records)
    copies = [A.PairRecord(**r.__dict__) for r in records]
    calls = _counted(monkeypatch, "_reliability_counts")
    assert A.annotator_reliability(copies) == _fresh_reliability(records)
    assert calls == [1, 1]


def test_a_changed_argument_is_computed_afresh_even_in_the_same_dict():
    records = _records(3)
    gold = {task: [[c] for c in range(6)] for task in range(12)}
    A.annotator_reliability(records, gold=gold)
    for task in gold:  # the caller changes its dict in place
        gold[task].reverse()
    got = A.annotator_reliability(records, gold=gold)
    assert got == _fresh_reliability(records, gold=gold)
    assert got != _fresh_reliability(records, gold={t: [[c] for c in range(6)] for t in gold})


def test_a_caller_changing_its_answer_leaves_the_kept_one_alone():
    records = _records(4)
    first = A.annotator_reliability(records)
    expected = dict(first)
    first.clear()
    assert A.annotator_reliability(records) == expected
    table = A._pair_table(records)
    with pytest.raises(ValueError, match="read-only"):
        table.unit[0] = 5


def test_the_pair_table_of_the_same_records_is_the_first_one():
    records = _records(5)
    table = A._pair_table(records)
    assert A._pair_table(list(records)) is table
    other = _records(6)
    A._pair_table.forget()
    fresh = A._pair_table(other)
    A._pair_table(records)
    again = A._pair_table(other)
    assert again is not fresh
    for name in ("unit", "annotator", "relation", "record"):
        np.testing.assert_array_equal(getattr(again, name), getattr(fresh, name))


def _votes(seed: int, n: int = 200) -> list[C.Vote]:
    rng = random.Random(seed)
    votes = []
    for j in range(n):
        a, b = rng.sample(range(10, 16), 2)
        shown = (a, b) if rng.random() < 0.5 else (b, a)
        votes.append(
            C.Vote(
                judgment_id=j,
                task_id=j,
                prompt_id=rng.randrange(8),
                evaluator=f"e{rng.randrange(4)}",
                pair=(a, b),
                outcome=rng.choice(["a", "b", "tie"]),
                presented_order=shown,
            )
        )
    return votes


def _columns(indexed: CB.Indexed) -> tuple:
    c = indexed.comparisons
    return (
        [x.tolist() for x in (c.prompt, c.winner, c.loser, c.annotator, c.winner_first)],
        indexed.prompts,
        indexed.candidates,
        indexed.annotators,
    )


def test_indexed_preferences_are_reused_for_the_same_votes_only():
    votes = _votes(0)
    first = C._indexed_preferences(votes)
    assert C._indexed_preferences(list(votes)) is first
    assert _columns(first) == _columns(CB.index_comparisons(C._strict_preferences(votes)))
    with pytest.raises(ValueError, match="read-only"):
        first.comparisons.winner[0] = 1
    changed = list(votes)
    old = changed[3]
    changed[3] = C.Vote(
        judgment_id=old.judgment_id,
        task_id=old.task_id,
        prompt_id=old.prompt_id,
        evaluator=old.evaluator,
        pair=old.pair,
        outcome="a" if old.outcome != "a" else "b",
        presented_order=old.presented_order,
    )
    got = C._indexed_preferences(changed)
    assert _columns(got) == _columns(CB.index_comparisons(C._strict_preferences(changed)))
    assert _columns(got) != _columns(first)
