"""`batch_consensus._strength_groups` equals `consensus.groups_from_scores` of the strengths
as `batch_consensus` read them before (missing candidates at 0.0, tolerance 1e-6): the same
groups in the same order on random strengths with exact ties, near ties chained across the
tolerance, -0.0 and missing candidates."""

from __future__ import annotations

import random

import pytest

from curation import batch_consensus as BC
from curation import consensus as C


@pytest.mark.parametrize("seed", range(10))
def test_it_groups_strengths_as_groups_from_scores(seed):
    rng = random.Random(seed)
    tied = 0
    for _ in range(200):
        nodes = sorted(rng.sample(range(1, 200), rng.randint(1, 19)))
        base = [0.0, -0.0, 1.0, 1.0 + 5e-7, 1.0 + 1.2e-6, -2.5, 3e-7]
        strengths = {
            n: rng.choice(base) if rng.random() < 0.4 else rng.gauss(0, 1)
            for n in nodes
            if rng.random() > 0.15
        }
        expected = C.groups_from_scores({n: float(strengths.get(n, 0.0)) for n in nodes}, tol=1e-6)
        got = BC._strength_groups(nodes, strengths)
        assert got == expected
        tied += any(len(g) > 1 for g in got)
    assert tied
