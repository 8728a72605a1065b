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
