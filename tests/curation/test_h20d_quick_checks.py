"""The flags pass's whole-list checks by C-level maps (h20d): `consensus.any_unpaired` is
``any(map(unpaired, votes))``, `agreement._only_pair_records` is ``all(type(r) is
PairRecord ...)``, `consensus._by_kind` of pair judgments only is the per-record split, and
`evaluator_quality` answers alike with and without the pairs-only shortcuts and with gold
placed on its prompts."""

from __future__ import annotations

import dataclasses
import random

import pytest

from curation import agreement as A
from curation import consensus as C


def _votes(
    seed: int, n: int, *, sizes=(2,), rankings: float = 0.0, untimed: bool = True
) -> list[C.Vote]:
    rng = random.Random(seed)
    times = [None, 500, 5000, 9000] if untimed else [500, 5000, 9000, 12000, 301]
    out = []
    for i in range(n):
        prompt = rng.randint(1, 30)
        evaluator = f"e{rng.randint(1, 8)}"
        if rng.random() < rankings:
            members = rng.sample(range(1, 9), 3)
            out.append(
                C.Vote(
                    i,
                    1000 + i,
                    prompt,
                    evaluator,
                    ranking=tuple((m,) for m in members),
                    presented_order=tuple(rng.sample(members, 3)),
                    duration_ms=rng.choice(times),
                )
            )
            continue
        size = rng.choice(sizes)
        pair = tuple(rng.sample(range(1, 9), size))
        shown = rng.choice([pair, pair[::-1], ()])
        out.append(
            C.Vote(
                i,
                1000 + i,
                prompt,
                evaluator,
                pair=pair,
                outcome=rng.choice(["a", "b", "tie", "both_bad"]),
                presented_order=shown,
                duration_ms=rng.choice(times),
            )
        )
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("sizes", [(2,), (2, 2, 2, 1), (2, 0), (3, 2), (1,)])
@pytest.mark.parametrize("rankings", [0.0, 0.3, 1.0])
def test_any_unpaired_is_any_unpaired_vote(seed, sizes, rankings):
    votes = _votes(seed, 40, sizes=sizes, rankings=rankings)
    assert C.any_unpaired(votes) is any(map(C.unpaired, votes))
    assert C.any_unpaired(iter(votes)) is any(map(C.unpaired, votes))
    kept = C.without_unpaired(votes)
    assert list(kept) == [v for v in votes if not C.unpaired(v)]
    if not any(map(C.unpaired, votes)):
        assert kept is votes  # the same list when there is none


def test_any_unpaired_of_no_votes_is_false():
    assert C.any_unpaired([]) is False


class _OtherPair(A.PairRecord):
    pass


@pytest.mark.parametrize(
    "records",
    [
        [],
        [A.PairRecord(1, "x", 1, 2, "a")],
        [A.PairRecord(1, "x", 1, 2, "a"), A.PairRecord(2, "y", 2, 3, "tie")],
        [A.PairRecord(1, "x", 1, 2, "a"), A.RankingRecord(1, "y", ((1,), (2,)))],
        [A.RankingRecord(1, "y", ((1,), (2,)))],
        [A.PairRecord(1, "x", 1, 2, "a"), _OtherPair(1, "z", 1, 2, "b")],
    ],
)
def test_only_pair_records_is_all_of_type_pair_record(records):
    assert A._only_pair_records(records) is all(type(r) is A.PairRecord for r in records)


@pytest.mark.parametrize("seed", range(4))
def test_by_kind_of_pairs_only_is_the_per_record_split(seed):
    votes = _votes(seed, 200)
    records = C.vote_records(votes)
    fast = C._by_kind(votes, records, pairs_only=True)
    slow = C._by_kind(votes, records, pairs_only=False)
    assert [list(map(id, part)) for kind in fast for part in kind] == [
        list(map(id, part)) for kind in slow for part in kind
    ]
    mixed = _votes(seed, 200, rankings=0.4)
    pairs, rankings = C._by_kind(mixed, C.vote_records(mixed), pairs_only=False)
    assert [v.judgment_id for v in pairs[0]] == [v.judgment_id for v in mixed if v.is_pair]
    assert [v.judgment_id for v in rankings[0]] == [v.judgment_id for v in mixed if not v.is_pair]


def _quality(votes, **kwargs):
    for memo in (A._annotator_codes, A.annotator_reliability, A._pair_relations, A._pair_table):
        memo.forget()
    got = C.evaluator_quality(votes, joint=False, **kwargs)
    return {e: q.__dict__ for e, q in got.items()}


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("untimed", [True, False])
def test_evaluator_quality_of_pairs_only_equals_the_general_path(seed, untimed, monkeypatch):
    """The pairs-only shortcuts (no split pass, no second type check, durations grouped on
    arrays where every vote is timed) answer what the general path answers, forced here by
    `_by_kind` and `_compared_counts` seeing ``pairs_only`` false and no grouped durations."""
    votes = _votes(seed, 600, untimed=untimed)
    gold = {votes[3].task_id: [[votes[3].pair[0]], [votes[3].pair[1]]]}
    fast = _quality(votes, gold=gold)
    real_by_kind, real_compared = C._by_kind, C._compared_counts
    monkeypatch.setattr(
        C, "_by_kind", lambda v, r, *, pairs_only: real_by_kind(v, r, pairs_only=False)
    )
    monkeypatch.setattr(
        C, "_compared_counts", lambda r, *, pairs_only=False: real_compared(r, pairs_only=False)
    )
    monkeypatch.setattr(C, "_durations_by_evaluator", lambda votes, records: None)
    slow = _quality(votes, gold=gold)
    assert slow == fast
    assert all(type(q["median_ms"]) is float for q in fast.values())


@pytest.mark.parametrize("seed", range(4))
def test_durations_by_evaluator_are_each_evaluators_in_vote_order(seed):
    votes = _votes(seed, 500, untimed=False)
    records = C.vote_records(votes)
    A._annotator_codes.forget()
    got = C._durations_by_evaluator(votes, records)
    expected: dict[str, list[int]] = {}
    for vote in votes:
        expected.setdefault(vote.evaluator, []).append(vote.duration_ms)
    assert {e: d.tolist() for e, d in got.items()} == expected
    # A vote without a duration, a float or a bool one, or one past int64: the loop's.
    for odd in (None, 1500.0, True, 2**63):
        changed = [*votes[:7], dataclasses.replace(votes[7], duration_ms=odd), *votes[8:]]
        changed_records = C.vote_records(changed)
        A._annotator_codes.forget()
        assert C._durations_by_evaluator(changed, changed_records) is None


@pytest.mark.parametrize("seed", range(3))
def test_gold_is_placed_on_its_prompt(seed):
    """Gold given per task reaches the evaluators' gold accuracy (the task -> prompt map is
    built where there is gold); without gold, nobody has a gold accuracy."""
    votes = [v for v in _votes(seed, 300) if v.outcome in ("a", "b")]
    gold_vote = votes[0]
    a, b = gold_vote.pair
    gold = {gold_vote.task_id: [[a], [b]]}
    with_gold = _quality(votes, gold=gold)
    graded = {e: q for e, q in with_gold.items() if q["n_gold"]}
    assert gold_vote.evaluator in graded
    assert all(q["gold_accuracy"] is not None for q in graded.values())
    without = _quality(votes)
    assert all(q["n_gold"] == 0 and q["gold_accuracy"] is None for q in without.values())
