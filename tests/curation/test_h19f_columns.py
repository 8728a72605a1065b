"""The flags pass's per-vote steps (h19f): the annotators of a pass's records numbered
once (`agreement._annotator_codes`) for the pair table, the speed check and the anomaly
test, the same answers as each numbering its own; `consensus.vote_records` equals
`Vote.record` of each vote."""

from __future__ import annotations

import random

import pytest

from curation import agreement as A
from curation import consensus as C


def _pair_records(seed: int, n: int, *, timed_share: float = 1.0) -> list[A.PairRecord]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.sample(range(1, 12), 2)
        shown = rng.choice([(a, b), (b, a), None])
        duration = rng.choice([300, 4000, 9000, 12000]) if rng.random() < timed_share else None
        annotator = f"e{rng.randint(1, 9)}" if i % 11 else f"e{i % 4 + 20}"
        out.append(
            A.PairRecord(
                rng.randint(1, 25), annotator, a, b, rng.choice(A.OUTCOMES), shown, duration
            )
        )
    return out


def _copies(records):
    return [A.PairRecord(**r.__dict__) for r in records]


def _each_alone(records):
    """The pass's three users of the numbering, each on its own copies of the records."""
    A._annotator_codes.forget()
    A._pair_table.forget()
    A._pair_relations.forget()
    reliability = A.annotator_reliability.__wrapped__(_copies(records))
    fast = A.too_fast(_copies(records))
    anomalous = A.anomalous_voters(_copies(records))
    return reliability, fast, anomalous


def _fast_view(fast):
    return [(f.record.__dict__, f.threshold_ms, f.reference) for f in fast]


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("timed_share", [1.0, 0.7])
def test_the_shared_annotator_numbering_gives_each_checks_answer(seed, timed_share):
    """`agreement._annotator_codes` numbers the records once for the pair table, the speed
    check and the anomaly test (the flags pass's order, the same records): the answers of
    each check alone, of the per-record speed check and of the anomaly test's reference."""
    records = _pair_records(seed, 2500, timed_share=timed_share)
    A._annotator_codes.forget()
    reliability = A.annotator_reliability(records)
    fast = A.too_fast(records)
    anomalous = A.anomalous_voters(records)
    alone = _each_alone(records)
    assert list(reliability.items()) == list(alone[0].items())
    assert _fast_view(fast) == _fast_view(alone[1])
    assert list(anomalous.items()) == list(alone[2].items())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(A, "_too_fast_columns", lambda timed, **kwargs: None)
        assert _fast_view(fast) == _fast_view(A.too_fast(_copies(records)))
    assert list(anomalous.items()) == list(A.anomalous_voters_reference(records).items())
    codes, index = A._annotator_codes(records)
    expected: dict = {}
    assert codes.tolist() == [expected.setdefault(r.annotator, len(expected)) for r in records]
    assert list(index.items()) == list(expected.items())
    assert not codes.flags.writeable


def test_other_records_get_their_own_numbering():
    one, other = _pair_records(1, 400), _pair_records(2, 300)
    for records in (one, other, one[:200], one):
        codes, index = A._annotator_codes(records)
        assert len(codes) == len(records)
        assert [list(index)[k] for k in codes.tolist()] == [r.annotator for r in records]


def test_vote_records_equal_each_votes_record():
    rng = random.Random(21)

    def votes():
        rng.seed(21)
        out = []
        for i in range(3000):
            a, b = rng.choice([(1, 2), (2, 1), (4, 9), ("x", 2)])
            shown = rng.choice([(a, b), (b, a), (a,), (), [b, a], (a, 9), (a, a), (b, a, b)])
            outcome = rng.choice(["a", "b", "tie", "both_bad"])
            out.append(
                C.Vote(
                    i,
                    i,
                    i % 13,
                    f"e{i % 7}",
                    pair=(a, b),
                    outcome=outcome,
                    presented_order=shown,
                    duration_ms=rng.choice([None, 0, 1500]),
                )
            )
        return out

    one, other = votes(), votes()
    got = C.vote_records(one)
    expected = [vote._make_record() for vote in other]
    assert [list(r.__dict__.items()) for r in got] == [list(r.__dict__.items()) for r in expected]
    assert [type(r) for r in got] == [type(r) for r in expected]
    assert all(vote.record() is record for vote, record in zip(one, got, strict=True))


@pytest.mark.parametrize(
    "vote",
    [
        C.Vote(1, 1, 1, "e1", pair=(3, 3), outcome="a"),
        C.Vote(2, 2, 1, "e1", pair=(1, 2), outcome="left"),
        C.Vote(3, 3, 1, "e1", pair=(1,), outcome="a"),
    ],
    ids=["same-candidate", "unknown-outcome", "unpaired"],
)
def test_vote_records_raise_where_the_record_does(vote):
    with pytest.raises(ValueError) as expected:
        C.Vote(**{f: getattr(vote, f) for f in vote.__dataclass_fields__})._make_record()
    with pytest.raises(ValueError, match=str(expected.value)[:25]):
        C.vote_records([vote])


def test_loaded_votes_equal_the_constructors():
    """`consensus.loaded_vote` (fields stored one by one) is `Vote(...)`: equal, the same
    fields in the same order, hashing the same, frozen."""
    import dataclasses

    rng = random.Random(4)
    for i in range(300):
        pair = rng.choice([None, (1, 2), (5,)])
        values = (
            i,
            i * 3,
            i % 7,
            f"user:{i % 5}",
            () if pair else ((1,), (2, 3)),
            pair,
            rng.choice(["a", "tie", ""]),
            rng.choice([(), (2, 1)]),
            rng.choice([None, 1200]),
            None,
        )
        got, expected = C.loaded_vote(*values), C.Vote(*values)
        assert got == expected and hash(got) == hash(expected)
        assert list(got.__dict__.items()) == list(expected.__dict__.items())
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.outcome = "b"  # type: ignore[misc]
