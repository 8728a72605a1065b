"""`consensus.Vote.record()` of a pair judgment, built without the dataclass constructor,
equals `agreement.PairRecord`'s constructor on every input and raises where it raises."""

from __future__ import annotations

import dataclasses
import random

import pytest

from curation import agreement as A
from curation import consensus as C


def _reference(vote: C.Vote) -> A.PairRecord:
    shown = vote.presented_order
    presented = shown if len(shown) == 2 and set(shown) == set(vote.pair) else None
    return A.PairRecord(
        task=vote.prompt_id,
        annotator=vote.evaluator,
        a=vote.pair[0],
        b=vote.pair[1],
        outcome=vote.outcome,
        presented_order=presented,
        duration_ms=vote.duration_ms,
    )


def test_pair_records_equal_the_constructors():
    rng = random.Random(5)
    built = raised = 0
    for i in range(2000):
        a, b = rng.choice([(1, 2), (2, 1), (3, 3)])
        shown = rng.choice([(a, b), (b, a), (a,), (), (a, b, a), [b, a], (a, 9)])
        outcome = rng.choice(["a", "b", "tie", "both_bad", "", "left"])
        vote = C.Vote(i, i, 7, f"e{i % 3}", pair=(a, b), outcome=outcome, presented_order=shown)
        try:
            expected = _reference(vote)
        except ValueError as error:
            with pytest.raises(ValueError, match=str(error).split(":")[1].strip()[:20]):
                vote.record()
            raised += 1
            continue
        got = vote.record()
        assert type(got) is A.PairRecord
        assert got == expected and got.__dict__ == expected.__dict__
        assert got.winner == expected.winner and hash(got) == hash(expected)
        built += 1
    assert built > 500 and raised > 500
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.outcome = "b"  # type: ignore[misc]


def test_relation_table_equals_the_relations_of_each_record():
    """`agreement._relation_table` reads pair records directly: the same table as summing
    `_relations` record by record (mixed with rankings, ids of mixed types, repeats)."""
    rng = random.Random(9)
    records: list = []
    for _ in range(3000):
        task = rng.randint(1, 40)
        annotator = f"e{rng.randint(1, 6)}"
        ids = rng.choice([(1, 2), (2, 1), (3, 4), ("x", 3), (3, "x"), (5, 6)])
        if rng.random() < 0.2:
            records.append(A.RankingRecord(task, annotator, ((ids[0],), (ids[1], 7))))
        else:
            outcome = rng.choice(["a", "b", "tie", "both_bad"])
            records.append(A.PairRecord(task, annotator, ids[0], ids[1], outcome))
    expected: dict = {}
    for record in records:
        for (x, y), relation in A._relations(record).items():
            expected.setdefault((record.task, x, y), {})[record.annotator] = relation
    table = A._relation_table(records)
    assert dict(table) == expected
    assert list(table) == list(expected)  # first-seen order too
    assert [list(v.items()) for v in table.values()] == [list(v.items()) for v in expected.values()]


def test_precedes_orders_mixed_ids_by_repr():
    assert A._precedes(1, 2) and not A._precedes(2, 1)
    assert A._precedes("x", 3) == (repr("x") < repr(3))
    assert A._precedes(3, "x") == (repr(3) < repr("x"))


def test_pair_position_bias_expected_counts_are_the_per_judgment_sums():
    import numpy as np

    rng = random.Random(4)
    records = []
    for i in range(5000):
        a, b = rng.sample(range(1, 30), 2)
        shown = rng.choice([(a, b), (b, a), None])
        records.append(
            A.PairRecord(i % 50, f"e{rng.randint(1, 9)}", a, b, rng.choice(A.OUTCOMES), shown)
        )
    result = A.position_bias(records)
    assert len(result) == 9
    for key, bias in result.items():
        mine = [
            r for r in records if r.annotator == key and r.presented_order and r.winner is not None
        ]
        expected = np.zeros(2)
        for _ in mine:
            expected[:2] += 1 / 2
        assert bias.n == len(mine) > 0
        assert bias.expected == tuple(float(e) for e in expected)
        assert bias.counts == (
            sum(r.presented_order[0] == r.winner for r in mine),
            sum(r.presented_order[1] == r.winner for r in mine),
        )


def test_vote_records_equal_each_votes_record_and_keep_them():
    """`consensus.vote_records` (the flags pass's loop) gives each vote's `record()`: pair
    judgments of every kind, rankings, and records already kept on a vote."""
    rng = random.Random(11)

    def votes():
        rng.seed(11)
        out = []
        for i in range(600):
            if rng.random() < 0.2:
                ranking = tuple((c,) for c in rng.sample(range(1, 6), rng.randint(2, 4)))
                shown = tuple(c for (c,) in ranking)[:: rng.choice([1, -1])]
                out.append(C.Vote(i, i, 7, f"e{i % 3}", ranking=ranking, presented_order=shown))
                continue
            a, b = rng.choice([(1, 2), (2, 1)])
            shown = rng.choice([(a, b), (b, a), (a,), (), [b, a], (a, 9), (a, a)])
            outcome = rng.choice(["a", "b", "tie", "both_bad"])
            out.append(
                C.Vote(i, i, 7, f"e{i % 3}", pair=(a, b), outcome=outcome, presented_order=shown)
            )
        return out

    one, other = votes(), votes()
    for vote in one[::7]:
        vote.record()  # some already kept
    got = C.vote_records(one)
    expected = [vote._make_record() for vote in other]
    assert got == expected
    assert [r.__dict__ for r in got] == [r.__dict__ for r in expected]
    assert [type(r) for r in got] == [type(r) for r in expected]
    assert all(vote.record() is record for vote, record in zip(one, got, strict=True))
