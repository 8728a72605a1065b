"""The joint fit's objective, gradient and Hessians worked in two halves of prompts on two
threads (h19c) give the same floats as the whole batch on one: `_objective`,
`_gradient_hessian` and `_hessian` into a `HessianBuffer`, byte for byte, with a scalar or a
per-prompt prior mean, prompts without cells at either end and around the middle, cells
dropped for a zero weight; and the whole fit (already covered by test_h18e_halves, here on a
crowd where some prompts have no strict vote)."""

from __future__ import annotations

import numpy as np
import pytest

from curation import crowd_bt as CB
from tests.curation.test_h18e_halves import _bytes, cores  # noqa: F401 - the fixture

N = 7


def _comparisons(seed: int, prompts: int, empty: list[int]) -> CB.Comparisons:
    """Random votes over ``prompts`` prompts of up to N candidates; ``empty`` prompts get none
    (their rows of theta have no cells)."""
    rng = np.random.default_rng(seed)
    votes = 12 * prompts
    p = rng.integers(0, prompts, votes)
    keep = ~np.isin(p, empty)
    p = p[keep]
    a = rng.integers(0, N, len(p))
    b = (a + rng.integers(1, N, len(p))) % N
    return CB.Comparisons(
        prompt=p,
        winner=a,
        loser=b,
        annotator=rng.integers(0, 9, len(p)),
        winner_first=rng.integers(-1, 2, len(p)),
        n_prompts=prompts,
        n_candidates=N,
        n_annotators=9,
    )


def _case(seed: int, *, zero_weights: bool = False):
    rng = np.random.default_rng(1000 + seed)
    prompts = CB.SPLIT_MIN_PROMPTS + int(rng.integers(1, 400))
    middle = prompts // 2
    empty = [0, 1, middle - 1, middle, middle + 1, prompts - 1]
    c = _comparisons(seed, prompts, empty)
    weight = rng.uniform(0.05, 2.0, len(c))
    if zero_weights:  # cells whose weights sum to 0 are dropped (a fresh scatter)
        weight[rng.random(len(c)) < 0.2] = 0.0
    cells = CB._cells(CB.win_cells(c, weight))
    theta = rng.normal(size=(prompts, N))
    theta[empty] = 0.0
    mean = rng.normal(size=(prompts, N))
    return prompts, cells, theta, mean


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("zero_weights", [False, True])
def test_the_halves_equal_the_whole_batch_byte_for_byte(cores, seed, zero_weights):  # noqa: F811
    prompts, cells, theta, mean = _case(seed, zero_weights=zero_weights)

    def results():
        out = []
        for centre in (0.0, mean):
            workspace = CB.HessianBuffer((prompts, N))
            out += _bytes(CB._objective(theta, cells, 0.3, centre))
            grad, hess = CB._gradient_hessian(
                theta, cells, 0.3, centre, out=workspace.for_cells(cells)
            )
            out += _bytes(grad, hess.copy())
            # A second Hessian into the same buffer (the EM's reuse), then a fresh one.
            out += _bytes(CB._hessian(theta * 0.5, cells, 1.0, workspace).copy())
            out += _bytes(CB._hessian(theta, cells, 0.1, CB.HessianBuffer((prompts, N))))
        return out

    cores(1)
    whole = results()
    helper = cores(2)
    halves = results()
    # Per mean: the objective, the gradient and Hessian, two Hessians.
    assert helper.submitted == 8
    assert halves == whole


def test_the_halves_equal_the_dense_reference(cores):  # noqa: F811
    """Not only equal to the whole batch's path: the Hessian is the dense bincount's."""
    prompts, cells, theta, _ = _case(7)
    cores(2)
    workspace = CB.HessianBuffer((prompts, N))
    grad, hess = CB._gradient_hessian(theta, cells, 0.3, out=workspace.for_cells(cells))
    grad_ref, hess_ref = CB._gradient_hessian(theta, cells, 0.3)  # fresh: never split
    assert _bytes(grad, hess) == _bytes(grad_ref, hess_ref)


def test_a_fit_with_prompts_without_votes_on_two_cores_equals_one(cores):  # noqa: F811
    c = _comparisons(3, CB.SPLIT_MIN_PROMPTS + 101, empty=[5, 1000, 1050, 1051, 2100])
    cores(1)
    whole = CB.fit_crowd_bt(c)
    helper = cores(2)
    halves = CB.fit_crowd_bt(c)
    assert helper.submitted > 0
    for name in ("theta", "eta", "pi", "responsibility", "loo_margin", "n_separable"):
        assert _bytes(getattr(halves, name)) == _bytes(getattr(whole, name)), name
    assert (halves.alpha, halves.iterations) == (whole.alpha, whole.iterations)
