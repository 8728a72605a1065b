"""`graph._tally` keeps its last answer for the very same comparison rows and tie policy
(an export's leaderboard, then its stability on the same rows), and computes afresh for
anything else; `leaderboard_stability` with the refit's win matrix reused equals a greedy
removal written out from the graph's own fit (the reference below)."""

from __future__ import annotations

import random

import numpy as np
import pytest

from curation import graph as G


@pytest.fixture(autouse=True)
def _forget():
    G._last_tally[0] = None


def _rows(seed: int, n: int = 400) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    models = [f"m{i}" for i in range(6)]
    strength = {m: rng.gauss(0, 1) for m in models}
    rows = []
    for _ in range(n):
        a, b = rng.sample(models, 2)
        p = 1 / (1 + np.exp(strength[b] - strength[a]))
        outcome = rng.choices(["a", "b", "tie", "both_bad"], [p, 1 - p, 0.1, 0.05])[0]
        rows.append((a, b, outcome))
    return rows


def test_it_reuses_the_tally_of_the_same_rows_only():
    rows = _rows(0)
    first = G._tally(rows, "half")
    assert G._tally(list(rows), "half") is first  # another list, the same row objects
    with pytest.raises(ValueError, match="read-only"):
        first.counts[0] = 0
    dropped = G._tally(rows, "drop")  # another tie policy: counted again, ties left out
    assert dropped is not first and dropped.counts.sum() < first.counts.sum()
    copies = [tuple(list(r)) for r in rows]  # equal rows, other objects
    again = G._tally(copies, "half")
    assert again is not G._tally(rows, "half")
    assert again.cells == first.cells and np.array_equal(again.counts, first.counts)
    changed = list(rows)
    changed[5] = (rows[5][1], rows[5][0], rows[5][2])
    assert G._tally(changed, "half").cells != first.cells or not np.array_equal(
        G._tally(changed, "half").counts, first.counts
    )


def _stability_reference(rows, max_removals):
    """`leaderboard_stability`'s greedy loop with every win matrix built afresh."""
    from scipy.special import expit

    tally = G._tally(rows, "half")
    counts = tally.counts.copy()
    theta = G._fit_bradley_terry(tally.wins(counts), 1e-3)
    order = G._stable_order(tally.models)

    def top(t):
        return min(range(len(t)), key=lambda i: (-t[i], order[tally.models[i]]))

    leader = top(theta)
    removed = []
    while len(removed) < min(max_removals, int(tally.counts.sum())):
        rivals = np.delete(np.arange(len(theta)), leader)
        rival = int(rivals[np.argmax(theta[rivals])])
        wins = tally.wins(counts)
        _, hess = G._bt_gradient_hessian(theta, wins, wins + wins.T, 1e-3)
        direction = np.zeros(len(theta))
        direction[leader], direction[rival] = 1.0, -1.0
        u = np.linalg.solve(hess, direction)
        p = expit(theta[:, None] - theta[None, :])
        effect = -(1 - p) * (u[:, None] - u[None, :])
        i, j = tally.first, tally.second
        change = tally.share * effect[i, j] + (1 - tally.share) * effect[j, i]
        change = np.where(counts >= 1, change, np.inf)
        best = int(np.argmin(change))
        if float(change[best]) >= 0:
            break
        counts[best] -= 1
        removed.append(tally.cells[best])
        theta = G._fit_bradley_terry(tally.wins(counts), 1e-3, initial=theta)
        if np.max(np.delete(theta, leader)) > theta[leader] + 1e-9:
            return len(removed), tuple(removed), tally.models[top(theta)]
    return None, tuple(removed), None


@pytest.mark.parametrize("seed", range(5))
def test_stability_equals_the_greedy_loop_written_out(seed):
    rows = _rows(seed, n=random.Random(seed).choice([30, 120, 400]))
    got = G.leaderboard_stability(rows, max_removals=60)
    G._last_tally[0] = None
    assert (got.votes_to_change, got.removed, got.new_leader) == _stability_reference(rows, 60)
