"""`consensus.sample_variants` and `restrict_ranking` equal the versions they replace (kept
here as the reference): the same variants from the same seeded generator, which is left in
the same state, on random rankings with tie groups, and a candidate named twice."""

from __future__ import annotations

import math
import random

import pytest

from curation import consensus as C


def _restrict_reference(ranking, keep):
    wanted = set(keep)
    induced = []
    for group in ranking:
        kept = [c for c in group if c in wanted]
        if kept:
            induced.append(kept)
    return induced


def _variants_reference(ranking, *, size=4, count=3, rng):
    members = sorted(c for group in ranking for c in group)
    if len(members) < size or len(ranking) < 2:
        return []
    if len(members) == size:
        return [[list(g) for g in ranking]]
    seen = set()
    variants = []
    possible = math.comb(len(members), size)
    attempts = 0
    while len(variants) < count and len(seen) < possible and attempts < 20 * count:
        attempts += 1
        subset = tuple(sorted(rng.sample(members, size)))
        if subset in seen:
            continue
        seen.add(subset)
        induced = _restrict_reference(ranking, subset)
        if len(induced) >= 2:
            variants.append(induced)
    return variants


def _random_ranking(rng: random.Random) -> list[list[int]]:
    cands = rng.sample(range(1, 60), rng.randint(1, 19))  # ids not in ranking order
    ranking: list[list[int]] = []
    for c in cands:
        if ranking and rng.random() < rng.choice([0.0, 0.3, 0.9]):
            ranking[-1].append(c)  # a tie group, members in no id order
        else:
            ranking.append([c])
    return ranking


@pytest.mark.parametrize("seed", range(6))
def test_variants_equal_the_reference_and_leave_the_generator_alike(seed):
    rng = random.Random(seed)
    tied = 0
    for _ in range(300):
        ranking = _random_ranking(rng)
        size, count = rng.choice([(4, 3), (3, 5), (2, 2)])
        state = rng.getstate()
        ref_rng, got_rng = random.Random(), random.Random()
        ref_rng.setstate(state)
        got_rng.setstate(state)
        expected = _variants_reference(ranking, size=size, count=count, rng=ref_rng)
        got = C.sample_variants(ranking, size=size, count=count, rng=got_rng)
        assert got == expected
        assert got_rng.getstate() == ref_rng.getstate()
        tied += any(len(g) > 1 for v in got for g in v)
    assert tied  # variants with a tie group were compared


def test_a_candidate_named_twice_is_restricted_as_before():
    ranking = [[5], [3, 5], [9], [1], [7]]
    got = C.sample_variants(ranking, size=4, count=3, rng=random.Random(1))
    assert got == _variants_reference(ranking, size=4, count=3, rng=random.Random(1))


@pytest.mark.parametrize("seed", range(4))
def test_restrict_ranking_equals_the_reference(seed):
    rng = random.Random(seed)
    for _ in range(300):
        ranking = _random_ranking(rng)
        flat = [c for g in ranking for c in g]
        keep = rng.sample(flat, rng.randint(0, len(flat)))
        assert C.restrict_ranking(ranking, keep) == _restrict_reference(ranking, keep)
        assert C.restrict_ranking([tuple(g) for g in ranking], keep) == _restrict_reference(
            ranking, keep
        )
