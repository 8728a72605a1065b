"""The joint fit's Cholesky algebra (h17c) equals the LU solves and explicit inverses it
replaced: `_spd_solve` and `InverseHessian` on random positive-definite batches, and the
whole fit (EM and final strengths) against the same fit made with the explicit-inverse
path (the fallback every routine takes where a Cholesky factorisation fails)."""

from __future__ import annotations

import numpy as np
import pytest

from curation import crowd_bt as CB
from tests.curation.test_crowd_bt import crowd_votes


def _spd_batch(rng: np.random.Generator, prompts: int, n: int) -> np.ndarray:
    """Hessians of the fits' shape: ``2 alpha I`` plus a random weighted Laplacian (a few
    with every pair joined, a few with none), and some plain random SPD matrices."""
    hess = np.zeros((prompts, n, n))
    for p in range(prompts):
        kind = p % 4
        if kind == 3:
            a = rng.normal(size=(n, n))
            hess[p] = a @ a.T + 0.05 * np.eye(n)
            continue
        edges = n * (n - 1) // 2 if kind == 2 else int(rng.integers(0, 2 * n + 1))
        for _ in range(edges):
            i, j = rng.integers(0, n, size=2)
            if i == j:
                continue
            w = rng.uniform(0.0, 3.0)
            hess[p, i, i] += w
            hess[p, j, j] += w
            hess[p, i, j] -= w
            hess[p, j, i] -= w
        hess[p] += 2 * rng.choice([0.05, 0.1, 3.0]) * np.eye(n)
    return hess


@pytest.mark.parametrize("seed", range(6))
def test_the_cholesky_solve_and_inverse_equal_lu_and_the_explicit_inverse(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 21))
    hess = _spd_batch(rng, int(rng.integers(1, 40)), n)
    rhs = rng.normal(size=hess.shape[:2])
    inverse = np.linalg.inv(hess)
    scale = np.max(np.abs(inverse))

    expected = np.linalg.solve(hess, rhs[:, :, None])[:, :, 0]
    assert np.max(np.abs(CB._spd_solve(hess, rhs) - expected)) < 1e-10 * max(scale, 1.0)

    fast = CB.InverseHessian(hess)
    assert fast.columns is not None  # the Cholesky path, not the fallback
    assert np.max(np.abs(fast.dense() - inverse)) < 1e-10 * max(scale, 1.0)
    assert np.max(np.abs(fast.apply(rhs) - np.einsum("pij,pj->pi", inverse, rhs))) < 1e-10 * max(
        scale, 1.0
    )
    # Every ordered pair of every prompt, the diagonal's zero form included.
    p, a, b = np.meshgrid(np.arange(hess.shape[0]), np.arange(n), np.arange(n), indexing="ij")
    p, a, b = p.ravel(), a.ravel(), b.ravel()
    form = inverse[p, a, a] + inverse[p, b, b] - 2 * inverse[p, a, b]
    got = fast.pair_quadratic(p * n + a, p * n + b)
    assert np.max(np.abs(got - form)) < 1e-10 * max(scale, 1.0)
    assert np.all(got >= 0)


def test_a_matrix_that_is_not_positive_definite_takes_the_lu_path():
    """The fallback: where a factorisation fails, the explicit inverse and the LU solve."""
    rng = np.random.default_rng(3)
    hess = _spd_batch(rng, 5, 6)
    hess[2] = np.diag([1.0, -2.0, 3.0, 1.0, 1.0, 1.0])  # indefinite: Cholesky fails
    rhs = rng.normal(size=hess.shape[:2])
    inverse = CB.InverseHessian(hess)
    assert inverse.columns is None
    assert np.array_equal(inverse.dense(), np.linalg.inv(hess))
    assert np.allclose(inverse.apply(rhs), np.einsum("pij,pj->pi", np.linalg.inv(hess), rhs))
    expected = np.linalg.solve(hess, rhs[:, :, None])[:, :, 0]
    assert np.array_equal(CB._spd_solve(hess, rhs), expected)
    flat = np.array([0, 13, 14]), np.array([1, 12, 17])
    inv = np.linalg.inv(hess)
    p, a, b = flat[0] // 6, flat[0] % 6, flat[1] % 6
    assert np.allclose(
        inverse.pair_quadratic(*flat), inv[p, a, a] + inv[p, b, b] - 2 * inv[p, a, b]
    )


def _without_cholesky(monkeypatch):
    def failing(a, *args, **kwargs):
        raise np.linalg.LinAlgError("reference: LU solves and explicit inverses")

    monkeypatch.setattr(CB.np.linalg, "cholesky", failing)


@pytest.mark.parametrize("seed", range(4))
def test_the_fit_equals_the_explicit_inverse_fit(seed, monkeypatch):
    """The whole joint fit (EM steps, annotators, final prior's choice, leave-one-out
    margins) with the Cholesky algebra equals the one made with LU solves and explicit
    inverses, on random crowds of mixed sizes and reliabilities."""
    rng = np.random.default_rng(seed)
    flips = {k: float(f) for k, f in enumerate(rng.choice([0.0, 0.1, 0.3, 0.5], size=6))}
    votes, _ = crowd_votes(
        seed,
        prompts=int(rng.integers(20, 60)),
        candidates=int(rng.integers(3, 12)),
        flips=flips,
        left_clickers=(6,),
    )
    c = CB.index_comparisons(votes).comparisons
    fast = CB.fit_crowd_bt(c)
    _without_cholesky(monkeypatch)
    reference = CB.fit_crowd_bt(c)
    monkeypatch.undo()
    assert fast.iterations == reference.iterations
    assert fast.alpha == reference.alpha
    for name in ("theta", "eta", "pi", "loo_margin", "responsibility"):
        got, want = getattr(fast, name), getattr(reference, name)
        assert np.max(np.abs(got - want)) < 1e-9, name
    assert fast.loo_log_likelihood == pytest.approx(reference.loo_log_likelihood, abs=1e-8)
