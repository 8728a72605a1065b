"""`batch_consensus._strength_rankings` (every prompt's strength groups at once, on arrays)
equals `batch_consensus._strength_groups` per prompt: the same groups in the same order, and
each candidate's group position, on random prompts with exact ties, near ties chained across
the tolerance, ties by the relative tolerance at large magnitudes, -0.0, integer strengths,
missing candidates, prompts without candidates, and strengths that are not finite."""

from __future__ import annotations

import random

import numpy as np
import pytest

from curation import batch_consensus as BC


def _world(rng: random.Random, n_prompts: int, special: list[float]):
    ids = rng.sample(range(1, 10 * n_prompts + 50), 8 * n_prompts + 20)
    nodes, strengths = [], []
    for _ in range(n_prompts):
        size = rng.choice([0, 1, 2, 3, 4, 5, 8])
        mine = {ids.pop() for _ in range(size)}
        base = [0.0, -0.0, 1.0, 1.0 + 5e-7, 1.0 + 1.2e-6, 1.0 + 2.3e-6, -2.5, 3e-7, 2, 0]
        # Relative tolerance (1e-9 of the larger) beyond the absolute one at large sizes.
        base += [4e3, 4e3 + 3e-6, 4e3 + 5e-6, -7e5, -7e5 - 6e-4, -7e5 - 1e-3]
        strengths.append(
            {
                n: rng.choice(base + special) if rng.random() < 0.5 else rng.gauss(0, 1)
                for n in mine
                if rng.random() > 0.15
            }
        )
        nodes.append(mine)
    return nodes, strengths


def _positions(rankings) -> dict[int, int]:
    return {c: g for r in rankings for g, group in enumerate(r) for c in group}


@pytest.mark.parametrize("special", [[], [float("inf"), float("-inf"), float("nan")]])
@pytest.mark.parametrize("seed", range(8))
def test_it_ranks_every_prompt_as_strength_groups_does(seed, special):
    rng = random.Random(seed)
    nodes, strengths = _world(rng, rng.choice([1, 7, 300]), special)
    rankings, ids, positions = BC._strength_rankings(nodes, strengths)
    expected = [BC._strength_groups(n, s) for n, s in zip(nodes, strengths, strict=True)]
    assert rankings == expected
    want = _positions(expected)
    assert ids.tolist() == sorted(want)
    assert positions.tolist() == [want[c] for c in sorted(want)]
    assert ids.dtype == positions.dtype == np.int64


def test_it_groups_across_the_tolerance_and_the_prompts_apart():
    nodes = [{1, 2, 3, 4}, {5, 6}, set(), {7}]
    strengths = [
        # 1 and 2 within 1e-6, 3 within 1e-6 of 2 (chained), 4 apart.
        {1: 1.0, 2: 1.0 + 9e-7, 3: 1.0 + 1.7e-6, 4: 0.5},
        # Equal strengths in two prompts stay two prompts' groups.
        {5: 1.0, 6: 1.0},
        {},
        {},
    ]
    rankings, ids, positions = BC._strength_rankings(nodes, strengths)
    assert rankings == [[[1, 2, 3], [4]], [[5, 6]], [], [[7]]]
    assert dict(zip(ids.tolist(), positions.tolist(), strict=True)) == {
        1: 0,
        2: 0,
        3: 0,
        4: 1,
        5: 0,
        6: 0,
        7: 0,
    }
