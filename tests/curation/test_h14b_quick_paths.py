"""Cheaper loops with the same answers: `agreement.too_fast` (one threshold per annotator)
and `consensus.restrict_ranking` (no set per tie group), each against the code it replaced
(pure; no database)."""

from __future__ import annotations

import random
import statistics
from collections import defaultdict

import pytest

from curation import agreement as A
from curation import consensus as C


def _too_fast_reference(records, *, ratio=0.25, min_history=5):
    timed = [r for r in records if r.duration_ms is not None]
    if not timed:
        return []
    project = statistics.median(r.duration_ms for r in timed)
    own = defaultdict(list)
    for record in timed:
        own[record.annotator].append(record.duration_ms)
    personal_median = {
        a: statistics.median(d) if len(d) >= min_history else 0.0 for a, d in own.items()
    }
    flagged = []
    for record in timed:
        personal = personal_median[record.annotator]
        reference = "annotator" if personal > project else "project"
        threshold = ratio * max(personal, project)
        if record.duration_ms < threshold:
            flagged.append(A.FastJudgment(record, threshold, reference))
    return flagged


@pytest.mark.parametrize("seed", range(6))
def test_too_fast_equals_the_per_record_rule(seed):
    rng = random.Random(seed)
    records = []
    for i in range(rng.randint(0, 600)):
        annotator = rng.choice(["a", "b", "c", 7, "slow", "rusher"])
        base = {"slow": 40_000, "rusher": 900}.get(annotator, 8_000)
        duration = rng.choice([None, 0, int(rng.expovariate(1 / base)), base // 10])
        records.append(
            A.PairRecord(
                task=i % 40, annotator=annotator, a=1, b=2, outcome="a", duration_ms=duration
            )
        )
    for ratio, min_history in ((0.25, 5), (0.5, 1), (0.1, 50)):
        got = A.too_fast(records, ratio=ratio, min_history=min_history)
        want = _too_fast_reference(records, ratio=ratio, min_history=min_history)
        assert got == want
        assert [(type(f.threshold_ms), f.reference) for f in got] == [
            (type(f.threshold_ms), f.reference) for f in want
        ]
    assert any(A.too_fast(records)) or not records


def test_restrict_ranking_equals_the_set_intersection():
    rng = random.Random(3)
    for _ in range(3000):
        members = rng.sample(range(30), rng.randint(0, 12))
        ranking, i = [], 0
        while i < len(members):
            width = rng.choice([1, 1, 2, 3])
            ranking.append(members[i : i + width])
            i += width
        keep = rng.sample(range(30), rng.randint(0, 15))
        wanted = set(keep)
        expected = [[c for c in g if c in wanted] for g in ranking if wanted & set(g)]
        assert C.restrict_ranking(ranking, iter(keep)) == expected
        assert C.restrict_ranking(tuple(tuple(g) for g in ranking), keep) == expected


def _position_bias_reference(records, *, by_annotator=True):
    """`agreement.position_bias`'s tallies as they were read per record (the reference)."""
    wins, slot_counts = defaultdict(list), defaultdict(list)
    for record in records:
        key = record.annotator if by_annotator else None
        if isinstance(record, A.PairRecord):
            if record.presented_order is None or record.winner is None:
                continue
            wins[key].append(record.presented_order.index(record.winner))
            slot_counts[key].append(2)
        else:
            if not record.presented_order or len(record.ranking[0]) != 1:
                continue
            wins[key].append(record.presented_order.index(record.ranking[0][0]))
            slot_counts[key].append(len(record.presented_order))
    return wins, slot_counts


@pytest.mark.parametrize("seed", range(4))
def test_position_bias_of_pairs_counts_what_the_per_record_loop_counted(seed):
    rng = random.Random(seed)
    records = []
    for i in range(rng.randint(1, 500)):
        a, b = rng.sample(range(1, 9), 2)
        shown = rng.choice([(a, b), (b, a), None])
        records.append(
            A.PairRecord(
                task=i % 30,
                annotator=rng.choice(["x", "y", 3]),
                a=a,
                b=b,
                outcome=rng.choice(["a", "a", "b", "tie", "both_bad"]),
                presented_order=shown,
            )
        )
    for by_annotator in (True, False):
        wins, slots = _position_bias_reference(records, by_annotator=by_annotator)
        got = A.position_bias(records, by_annotator=by_annotator)
        assert list(got) == list(wins)
        for key, result in got.items():
            assert result.n == len(wins[key])
            assert list(result.counts) == [wins[key].count(s) for s in range(max(slots[key]))]
    with pytest.raises(ValueError):
        A.position_bias(records + [A.RankingRecord(task=1, annotator="x", ranking=((1,), (2,)))])
