"""`annotator_reliability` of pair records from the pair table's columns equals the same
tallies from the per-unit relation table (`_relation_table`), which rankings still use:
random pair records with ties, both-bad, repeats by one annotator on a unit (the last one
counts), units judged once, gold tasks, integer and text candidate ids."""

from __future__ import annotations

import random

import pytest

from curation import agreement as A


@pytest.fixture(autouse=True)
def _forget():
    for func in (A.annotator_reliability, A._pair_table, A._pair_relations):
        func.forget()


def _records(seed: int, candidates: list) -> list[A.PairRecord]:
    rng = random.Random(seed)
    out = []
    for _ in range(rng.randrange(1, 400)):
        a, b = rng.sample(candidates, 2)
        out.append(
            A.PairRecord(
                task=rng.randrange(rng.choice([1, 4, 30])),
                annotator=rng.choice(["ann0", "ann1", "ann2", "ann3", 7, 8]),
                a=a,
                b=b,
                outcome=rng.choice(A.OUTCOMES),
                presented_order=(a, b) if rng.random() < 0.5 else (b, a),
            )
        )
    return out


def _gold(seed: int, candidates: list) -> dict:
    rng = random.Random(seed)
    gold = {}
    for task in rng.sample(range(30), rng.randrange(0, 6)):
        order = rng.sample(candidates, len(candidates))
        groups, i = [], 0
        while i < len(order):
            size = rng.choice([1, 1, 2])
            groups.append(order[i : i + size])
            i += size
        gold[task] = groups
    return gold


@pytest.mark.parametrize("seed", range(60))
def test_pair_columns_equal_the_relation_table(seed):
    candidates = list(range(6)) if seed % 3 else ["x", "y", "z", "w", "v"]
    records = _records(seed, candidates)
    gold = _gold(seed, candidates)
    columns = A._pair_reliability_counts(records, gold)
    table = A._table_reliability_counts(records, gold)
    names = ["given", "agree", "compared", "loo_agree", "loo_total", "labels", "gold_hits", "gold"]
    for name, got, expected in zip(names, columns, table, strict=True):
        assert +got == +expected, name
        assert all(type(v) is int for v in got.values()), name
    # and so the whole answer, which reads them
    got = A.annotator_reliability(records, gold=gold)
    A.annotator_reliability.forget()
    monkey = A._reliability_counts
    try:
        A._reliability_counts = A._table_reliability_counts
        expected = A.annotator_reliability(records, gold=gold)
    finally:
        A._reliability_counts = monkey
    assert got == expected


def test_a_unit_every_annotator_splits_on_counts_no_leave_one_out_hit():
    # ann0 says a, ann1 b, ann2 tie on one unit: for each, the others split evenly.
    records = [
        A.PairRecord(task=1, annotator=f"ann{i}", a=1, b=2, outcome=outcome)
        for i, outcome in enumerate(["a", "b", "tie"])
    ] + [A.PairRecord(task=1, annotator="ann3", a=2, b=1, outcome="b")]  # = ann0's view
    got = A.annotator_reliability(records)
    # ann0: others are b, tie, a(ann3 as 1>2) -> no favourite; ann3 likewise
    assert got["ann0"].loo_agreement is None and got["ann3"].loo_agreement is None
    # ann1: others a, tie, a -> a is the favourite, ann1 disagrees
    assert got["ann1"].loo_agreement == 0.0
    assert got["ann0"].agreement == 1 / 3 and got["ann1"].agreement == 0.0
