"""The joint fit's SPD algebra worked in cache-sized blocks of prompts (and the pairs'
quadratic forms in blocks of votes) gives the same floats as each half worked whole: the
inverse factor's columns, `_spd_solve`, `pair_quadratic` and the whole fit, compared byte
for byte with block sizes that leave a remainder (one prompt too); a failed factorisation in
a later block still sends the whole batch to the fallback."""

from __future__ import annotations

import numpy as np
import pytest

from curation import crowd_bt as CB
from tests.curation.test_crowd_bt import crowd_votes
from tests.curation.test_h17c_spd_algebra import _spd_batch


def _bytes(*arrays: np.ndarray) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


def _blocks(monkeypatch, prompts: int | None, votes: int | None = None) -> None:
    """Blocks of ``prompts`` / ``votes`` (None: one block per half, as before blocking)."""
    monkeypatch.setattr(CB, "SPD_BLOCK_PROMPTS", prompts or 10**9)
    monkeypatch.setattr(CB, "FORM_BLOCK_VOTES", votes or 10**9)


@pytest.mark.parametrize("cores", [1, 2])
@pytest.mark.parametrize(("block", "vote_block"), [(1, 1), (7, 500), (256, 8192), (2049, 3)])
def test_blocks_equal_the_halves_worked_whole_byte_for_byte(monkeypatch, cores, block, vote_block):
    monkeypatch.setattr(CB, "available_cores", lambda: cores)
    rng = np.random.default_rng(block)
    prompts = CB.SPLIT_MIN_PROMPTS + 51  # above the split; halves of 1025 and 1026
    n = 19
    hess = _spd_batch(rng, prompts, n)
    rhs = rng.normal(size=(prompts, n))
    votes = CB.SPLIT_MIN_VOTES + 1001
    p = np.sort(rng.integers(0, prompts, votes))
    a, b = rng.integers(0, n, votes), rng.integers(0, n, votes)

    def results() -> list[bytes]:
        inverse = CB.InverseHessian(hess)
        assert inverse.columns is not None
        return _bytes(
            CB._spd_solve(hess, rhs),
            inverse.columns,
            inverse.apply(rhs),
            inverse.pair_quadratic(p * n + a, p * n + b),
        )

    _blocks(monkeypatch, None)
    whole = results()
    _blocks(monkeypatch, block, vote_block)
    assert results() == whole
    # And the answers themselves: the inverse and the solve, to rounding.
    assert np.allclose(CB._spd_solve(hess, rhs), np.linalg.solve(hess, rhs[:, :, None])[..., 0])


def test_the_fit_in_small_blocks_equals_the_fit_in_one_block_byte_for_byte(monkeypatch):
    votes, _ = crowd_votes(4, prompts=300, per_prompt=12, flips={0: 0.05, 1: 0.5})
    comparisons = CB.index_comparisons(votes).comparisons
    _blocks(monkeypatch, None)
    whole = CB.fit_crowd_bt(comparisons)
    _blocks(monkeypatch, 13, 97)
    blocked = CB.fit_crowd_bt(comparisons)
    for name in ("theta", "eta", "pi", "responsibility", "loo_margin", "weight"):
        assert _bytes(getattr(blocked, name)) == _bytes(getattr(whole, name)), name
    assert (blocked.alpha, blocked.iterations) == (whole.alpha, whole.iterations)


@pytest.mark.parametrize("cores", [1, 2])
def test_a_failed_factorisation_in_a_later_block_sends_the_whole_batch_to_the_fallback(
    monkeypatch, cores
):
    monkeypatch.setattr(CB, "available_cores", lambda: cores)
    _blocks(monkeypatch, 64)
    rng = np.random.default_rng(3)
    prompts = CB.SPLIT_MIN_PROMPTS + 1
    hess = _spd_batch(rng, prompts, 6)
    rhs = rng.normal(size=(prompts, 6))
    hess[prompts - 3] = np.diag([1.0, -2.0, 3.0, 1.0, 1.0, 1.0])  # the last block's
    inverse = CB.InverseHessian(hess)
    assert inverse.columns is None
    assert _bytes(inverse.dense()) == _bytes(np.linalg.inv(hess))
    expected = np.linalg.solve(hess, rhs[:, :, None])[:, :, 0]
    assert _bytes(CB._spd_solve(hess, rhs)) == _bytes(expected)
