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


def _bincount_sums(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=size).astype(float, copy=False)


def _reference_annotator_map(
    comparisons: CB.Comparisons,
    real: np.ndarray,
    eta: np.ndarray,
    pi: np.ndarray,
    eta_prior: tuple[float, float],
    pi_prior: float,
    *,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """`CB._annotator_map` as it was before h17c: every per-annotator sum a weighted
    bincount over the votes in their own order."""
    c = comparisons
    k = c.annotator
    size = c.n_annotators
    known = c.winner_first >= 0
    # d q_i / d pi: +1 where the vote picked the candidate shown first, -1 the other, 0 unknown.
    slope = np.where(known, np.where(c.winner_first == 1, 1.0, -1.0), 0.0)
    # q_i as one gather from [pi, 1 - pi, 1/2]: picked first, picked second, order unknown.
    pick = np.where(slope > 0, k, np.where(slope < 0, size + k, 2 * size))
    a, b = eta_prior

    def noise_pick(pi_: np.ndarray) -> np.ndarray:
        return np.concatenate([pi_, 1 - pi_, [0.5]])[pick]

    def objective(eta_: np.ndarray, pi_: np.ndarray) -> np.ndarray:
        e = eta_[k]
        mix = e * real + (1 - e) * noise_pick(pi_)
        prior = a * np.log(eta_) + b * np.log1p(-eta_)
        return (
            _bincount_sums(k, np.log(mix), size) + prior + pi_prior * (np.log(pi_) + np.log1p(-pi_))
        )

    value = objective(eta, pi)
    for _ in range(max_iter):
        e = eta[k]
        q = noise_pick(pi)
        mix = e * real + (1 - e) * q
        d_eta = (real - q) / mix
        d_pi = (1 - e) * slope / mix
        g_eta = _bincount_sums(k, d_eta, size) + a / eta - b / (1 - eta)
        g_pi = _bincount_sums(k, d_pi, size) + pi_prior * (1 / pi - 1 / (1 - pi))
        h_ee = -_bincount_sums(k, d_eta * d_eta, size) - a / eta**2 - b / (1 - eta) ** 2
        h_pp = -_bincount_sums(k, d_pi * d_pi, size) - pi_prior * (1 / pi**2 + 1 / (1 - pi) ** 2)
        h_ep = -_bincount_sums(k, slope / mix + d_eta * d_pi, size)
        det = h_ee * h_pp - h_ep * h_ep
        joint = (h_ee < 0) & (det > 0)
        det = np.where(joint, det, 1.0)
        step_eta = np.where(joint, (h_ep * g_pi - h_pp * g_eta) / det, -g_eta / h_ee)
        step_pi = np.where(joint, (h_ep * g_eta - h_ee * g_pi) / det, -g_pi / h_pp)
        scale = np.ones(size)
        new_eta, new_pi, new = eta, pi, value
        for _halving in range(60):
            try_eta = eta + scale * step_eta
            try_pi = pi + scale * step_pi
            inside = (try_eta > 0) & (try_eta < 1) & (try_pi > 0) & (try_pi < 1)
            try_eta = np.where(inside, try_eta, eta)
            try_pi = np.where(inside, try_pi, pi)
            with np.errstate(divide="ignore", invalid="ignore"):
                tried = objective(try_eta, try_pi)
            better = inside & (tried >= value - 1e-12 * np.abs(value))
            new_eta = np.where(better, try_eta, new_eta)
            new_pi = np.where(better, try_pi, new_pi)
            new = np.where(better, tried, new)
            if better.all():
                break
            scale[~better] /= 2
        moved = max(
            float(np.max(np.abs(new_eta - eta), initial=0.0)),
            float(np.max(np.abs(new_pi - pi), initial=0.0)),
        )
        eta, pi, value = new_eta, new_pi, new
        if moved < tol:
            break
    return eta, pi


@pytest.mark.parametrize("seed", range(5))
def test_the_annotator_map_by_sorted_runs_equals_the_bincount_map(seed):
    """`_annotator_map` sums each annotator's votes with `np.add.reduceat` over the votes
    sorted by annotator: the same fixed point as the weighted bincounts, on votes in random
    order, unknown display orders, and annotators without votes (indices with gaps)."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 400))
    size = int(rng.integers(1, 12))
    used = rng.choice(size + 3, size=min(size, size + 3), replace=False)[: max(1, size // 2 + 1)]
    c = CB.Comparisons(
        prompt=np.zeros(n, dtype=np.int64),
        winner=np.zeros(n, dtype=np.int64),
        loser=np.ones(n, dtype=np.int64),
        annotator=rng.choice(used, size=n).astype(np.int64),
        winner_first=rng.choice([-1, 0, 1], size=n).astype(np.int64),
        n_prompts=1,
        n_candidates=2,
        n_annotators=size + 3,
    )
    real = rng.uniform(0.02, 0.98, size=n)
    eta = rng.uniform(0.05, 0.95, size=c.n_annotators)
    pi = rng.uniform(0.05, 0.95, size=c.n_annotators)
    got = CB._annotator_map(c, real, eta, pi, (1.0, 1.0), 2.0)
    want = _reference_annotator_map(c, real, eta, pi, (1.0, 1.0), 2.0)
    for g, w in zip(got, want, strict=True):
        assert np.max(np.abs(g - w)) < 1e-9
    # Annotators without votes move by their priors alone, as in the reference.
    assert not np.array_equal(got[0], eta)
