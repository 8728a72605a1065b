"""The joint fit's batched algebra worked in two halves on two threads (h18e) gives the same
floats as the whole batch on one: `_spd_solve`, `InverseHessian` (its columns, `apply`,
`pair_quadratic`) and the whole fit, compared byte for byte on batches above the split
thresholds; the halves partition the range; a failed factorisation in either half sends the
whole batch to the fallback; a forked child and a fresh import are safe."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys

import numpy as np
import pytest

from curation import crowd_bt as CB
from tests.curation.test_crowd_bt import crowd_votes
from tests.curation.test_h17c_spd_algebra import _spd_batch


class _CountingHelper:
    """The helper thread's executor, counting the halves handed to it."""

    def __init__(self, executor):
        self.executor = executor
        self.submitted = 0

    def submit(self, *args, **kwargs):
        self.submitted += 1
        return self.executor.submit(*args, **kwargs)


@pytest.fixture
def cores(monkeypatch):
    """``cores(n)``: the module sees n cores (1: every batch worked whole); answers the
    counting helper."""
    helper = _CountingHelper(CB._helper_thread())
    monkeypatch.setattr(CB, "_helper_thread", lambda: helper)

    def set_cores(n: int) -> _CountingHelper:
        monkeypatch.setattr(CB, "available_cores", lambda: n)
        return helper

    return set_cores


def _bytes(*arrays: np.ndarray) -> list[bytes]:
    return [np.ascontiguousarray(a).tobytes() for a in arrays]


@pytest.mark.parametrize("size", [0, 1, 2, 3, 1999, 2000, 2001, 4700, 94031])
def test_it_splits_a_range_into_two_halves_that_cover_it_once(cores, size):
    cores(2)
    halves = CB._halves(size, 2000)
    if size < 2000:
        assert halves is None
        return
    first, second = (range(size)[half] for half in halves)
    assert list(first) + list(second) == list(range(size))
    assert abs(len(first) - len(second)) <= 1


def test_it_works_whole_on_one_core(cores):
    helper = cores(1)
    assert CB._halves(5000, 2000) is None
    CB._spd_solve(*_batch(CB.SPLIT_MIN_PROMPTS + 1))
    assert helper.submitted == 0


def _batch(prompts: int, n: int = 19, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    hess = _spd_batch(rng, prompts, n)
    return hess, rng.normal(size=hess.shape[:2])


@pytest.mark.parametrize("seed", range(3))
def test_the_halves_equal_the_whole_batch_byte_for_byte(cores, seed):
    rng = np.random.default_rng(100 + seed)
    prompts = CB.SPLIT_MIN_PROMPTS + int(rng.integers(1, 300))  # odd sizes too
    n = int(rng.integers(2, 20))
    hess, rhs = _batch(prompts, n, seed)
    votes = CB.SPLIT_MIN_VOTES + int(rng.integers(1, 5000))
    p = rng.integers(0, prompts, votes)
    a, b = rng.integers(0, n, votes), rng.integers(0, n, votes)

    def results():
        inverse = CB.InverseHessian(hess)
        assert inverse.columns is not None
        return _bytes(
            CB._spd_solve(hess, rhs),
            inverse.columns,
            inverse.apply(rhs),
            inverse.pair_quadratic(p * n + a, p * n + b),
        )

    cores(1)
    whole = results()
    helper = cores(2)
    halves = results()
    # The solve, the factor's columns, the product and the forms: each split once.
    assert helper.submitted == 4
    assert halves == whole


def test_the_fit_on_two_cores_equals_the_fit_on_one_byte_for_byte(cores):
    # Above both thresholds: 2,100 prompts, 42,000 votes; a spammer and a left clicker.
    votes, _ = crowd_votes(
        5, prompts=2100, per_prompt=20, flips={0: 0.05, 1: 0.15, 2: 0.5}, left_clickers=(3,)
    )
    comparisons = CB.index_comparisons(votes).comparisons
    assert len(comparisons) > CB.SPLIT_MIN_VOTES
    cores(1)
    whole = CB.fit_crowd_bt(comparisons)
    helper = cores(2)
    halves = CB.fit_crowd_bt(comparisons)
    assert helper.submitted > 0
    for name in (
        "theta",
        "eta",
        "pi",
        "responsibility",
        "loo_margin",
        "loo_agreement",
        "weight",
        "n_separable",
    ):
        assert _bytes(getattr(halves, name)) == _bytes(getattr(whole, name)), name
    assert (halves.alpha, halves.loo_log_likelihood, halves.iterations) == (
        whole.alpha,
        whole.loo_log_likelihood,
        whole.iterations,
    )


@pytest.mark.parametrize("where", ["first", "second"])
def test_a_failed_factorisation_in_either_half_sends_the_whole_batch_to_the_fallback(cores, where):
    prompts = CB.SPLIT_MIN_PROMPTS + 1
    hess, rhs = _batch(prompts, 6)
    bad = 10 if where == "first" else prompts - 10
    hess[bad] = np.diag([1.0, -2.0, 3.0, 1.0, 1.0, 1.0])  # indefinite: Cholesky fails
    cores(2)
    inverse = CB.InverseHessian(hess)
    assert inverse.columns is None
    assert _bytes(inverse.dense()) == _bytes(np.linalg.inv(hess))
    expected = np.linalg.solve(hess, rhs[:, :, None])[:, :, 0]
    assert _bytes(CB._spd_solve(hess, rhs)) == _bytes(expected)


def _solve_in_child(hess, rhs, out) -> None:
    out.send(CB._spd_solve(hess, rhs))


def test_a_forked_child_starts_its_own_helper(monkeypatch):
    """A process forked after the helper ran (a Celery prefork child of a parent that
    fitted) would wait for ever on the parent's helper, whose thread it does not have."""
    monkeypatch.setattr(CB, "available_cores", lambda: 2)  # the child inherits it
    hess, rhs = _batch(CB.SPLIT_MIN_PROMPTS + 1)
    expected = CB._spd_solve(hess, rhs)
    assert CB._helper is not None  # the helper thread runs in this process now
    receive, send = multiprocessing.get_context("fork").Pipe(duplex=False)
    child = multiprocessing.get_context("fork").Process(
        target=_solve_in_child, args=(hess, rhs, send)
    )
    child.start()
    try:
        assert receive.poll(60), "the forked child never answered"
        assert _bytes(receive.recv()) == _bytes(expected)
        child.join(30)
        assert child.exitcode == 0
    finally:
        if child.is_alive():
            child.kill()


def test_importing_the_fit_starts_no_thread():
    """The processes that fork workers (Celery's prefork parent, gunicorn's master) import
    the module: they must fork without threads."""
    code = (
        "import threading\n"
        "import numpy as np\n"
        "from curation import crowd_bt\n"
        "crowd_bt._spd_solve(np.eye(3)[None], np.ones((1, 3)))  # too small to split\n"
        "print(threading.active_count(), crowd_bt._helper)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.split() == ["1", "None"]
