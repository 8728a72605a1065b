"""The datasheet's leaderboard intervals (`graph.bradley_terry_leaderboard`): the bootstrap's
refits, stepped together, are each exactly the fit `graph._fit_bradley_terry` makes of that
draw (same steps, halvings and stop), so the intervals are those of one refit per draw."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from curation import graph as G


def _comparisons(seed: int, n_models: int, n_votes: int) -> list[tuple[str, str, str]]:
    rng = random.Random(seed)
    strength = {f"m{i}": rng.gauss(0, 1.5) for i in range(n_models)}
    models = list(strength)
    out = []
    for _ in range(n_votes):
        a, b = rng.sample(models, 2)
        p = 1 / (1 + math.exp(strength[b] - strength[a]))
        roll = rng.random()
        outcome = "tie" if roll < 0.1 else "a" if rng.random() < p else "b"
        out.append((a, b, outcome))
    # A model that never loses: a near-separable fit, where Newton halves its steps.
    out += [("m0", m, "a") for m in models[1:3]] * 3
    return out


def _one_refit_per_draw(comparisons, bootstrap, seed, alpha=1e-3, confidence=0.95):
    tally = G._tally(comparisons, "half")
    theta = G._fit_bradley_terry(tally.wins(tally.counts), alpha)
    rng = np.random.default_rng(seed)
    total = int(tally.counts.sum())
    draws = rng.multinomial(total, tally.counts / total, size=bootstrap)
    samples = np.array(
        [G._to_elo(G._fit_bradley_terry(tally.wins(d), alpha, initial=theta)) for d in draws]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail], axis=0)
    return {m: (low[i], high[i]) for i, m in enumerate(tally.models)}


@pytest.mark.parametrize("seed,n_models,n_votes", [(0, 4, 3000), (1, 7, 400), (2, 2, 30)])
def test_the_intervals_are_those_of_one_refit_per_draw(seed, n_models, n_votes):
    comparisons = _comparisons(seed, n_models, n_votes)
    board = G.bradley_terry_leaderboard(comparisons, bootstrap=120, seed=seed)
    want = _one_refit_per_draw(comparisons, 120, seed)
    assert {r.model: (r.ci_low, r.ci_high) for r in board} == want
    assert all(r.ci_low < r.score < r.ci_high for r in board)


def test_each_stacked_fit_is_its_own_fit():
    rng = np.random.default_rng(5)
    wins = rng.integers(0, 40, size=(50, 5, 5)).astype(float)
    wins[:, np.arange(5), np.arange(5)] = 0
    wins[3] = 0  # no games at all: the prior alone
    wins[4, 0, :] = 30  # model 0 unbeaten: steps get halved
    wins[4, :, 0] = 0
    start = rng.normal(size=5)
    got = G._fit_bradley_terry_many(wins, 1e-3, start)
    want = np.array([G._fit_bradley_terry(w, 1e-3, initial=start) for w in wins])
    assert np.array_equal(got, want)
