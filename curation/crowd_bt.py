"""Joint annotator model: Bradley-Terry per prompt, reliability and position bias per annotator.

Pure core: numpy and scipy only, no Django, no other Quorum module. Judgments come in as
columns (`Comparisons`); every prompt is fitted at once as a ``[prompts, N, N]`` batch.

The model (Crowd-BT, Chen et al. 2013, with a position term as in crowd-kit's NoisyBT): a
vote of annotator k on candidates a, b of prompt p is, with probability ``eta_k``, a real
judgment, won by a with probability ``sigmoid(theta_pa - theta_pb)``; otherwise it is noise
that picks the candidate shown first with probability ``pi_k``. A careful annotator has
``eta`` near 1, a spammer near 0, a spammer who always clicks the left answer ``pi`` near 1.

Fitted by EM. E-step: the posterior that a vote is a real judgment. M-step: ``eta`` and
``pi`` by counting (with a Beta prior), the strengths by a weighted Bradley-Terry fit per
prompt (each vote weighted by its annotator's ``eta``), batched Newton steps over all
prompts. Run to its fixed point, not to a step cap: for the current margins the annotators'
``eta`` and ``pi`` are solved to where E- and M-step agree (plain EM crawls towards a
spammer's low ``eta``), so about ten steps converge where 400 plain ones did not. The E-step
reads *leave-one-out* margins: with about two judgments per candidate, the in-sample fit
explains every vote, and EM would call every annotator reliable. Leaving vote i out is one
Sherman-Morrison step on the prompt's Hessian (exact for a quadratic, a one-step Newton
approximation for the logistic loss), so all votes' leave-one-out margins cost one batched
matrix inverse.

`with_score_prior` lets an evaluator that scores every candidate (the reward model) centre
the strengths' prior, with a weight and a spread the humans' held-out votes decide.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import threading
import zipfile
from collections.abc import Callable, Hashable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from scipy.special import expit

logger = logging.getLogger(__name__)

# choix's convention, as `curation.graph.bradley_terry_scores`: prior alpha * ||theta||^2.
DEFAULT_ALPHA = 0.1
# Beta prior on eta (pseudo-counts of real and noise votes): a newcomer starts at 1/2.
ETA_PRIOR = (1.0, 1.0)
# Beta prior on pi: no slot preference until the votes show one.
PI_PRIOR = 2.0
# Prior strengths tried for the final fit, chosen on leave-one-out votes.
FINAL_ALPHAS = (0.1, 0.3, 1.0, 3.0)
# The EM stops once no annotator's eta or pi moves more than this; about 10 steps at
# MR2Bench scale. The cap is a safety net, not the usual way out.
EM_TOL = 1e-5
EM_MAX_ITER = 100
# The EM's steps shrink geometrically (about -0.22 times the previous one at MR2Bench
# scale: the estimates oscillate into the fixed point), so `crowd_bt_em` also estimates
# the fixed point from the last two steps (Aitken's extrapolation, `_aitken`) and stops
# once two successive estimates agree within `EM_TOL`: at 94K judgments after 8 steps
# instead of 9, 3.7e-7 from the fixed point in eta instead of 1.6e-6; on small crowds
# that converge slowly, up to 3 steps fewer, as close as the plain stop (a looser
# tolerance for the estimates, 3e-5, saved one step more at 94K but landed up to 5x
# farther off on those crowds).
# Extrapolate only while the steps contract steadily (ratio of successive steps within this).
_AITKEN_RATIO = 0.6


@dataclass(frozen=True)
class Comparisons:
    """Strict pairwise comparisons as columns (ties carry no preference and are left out).

    Attributes:
        prompt: Prompt index per vote, ``0 <= prompt < n_prompts``.
        winner: Index of the preferred candidate within its prompt, ``< n_candidates``.
        loser: Index of the other candidate.
        annotator: Annotator index, ``< n_annotators``.
        winner_first: 1 if the winner was shown first, 0 if the loser was, -1 if unknown.
        n_prompts, n_candidates, n_annotators: Sizes (``n_candidates``: the largest prompt).
    """

    prompt: np.ndarray
    winner: np.ndarray
    loser: np.ndarray
    annotator: np.ndarray
    winner_first: np.ndarray
    n_prompts: int
    n_candidates: int
    n_annotators: int

    def __len__(self) -> int:
        return int(self.prompt.shape[0])


@dataclass(frozen=True)
class Indexed:
    """`Comparisons` with the keys their indices stand for."""

    comparisons: Comparisons
    prompts: list[Hashable]
    candidates: list[list[Hashable]]  # per prompt index, candidate keys by local index
    annotators: list[Hashable]


def index_comparisons(
    votes: Iterable[tuple[Hashable, Hashable, Hashable, Hashable, Hashable | None]],
) -> Indexed:
    """Columns from ``(prompt, winner, loser, annotator, shown_first)`` tuples.

    ``shown_first`` is the candidate displayed first (``None``: unknown). Keys are any
    hashables; indices follow first appearance.
    """
    prompt_ix: dict[Hashable, int] = {}
    cand_ix: list[dict[Hashable, int]] = []
    ann_ix: dict[Hashable, int] = {}
    rows = []
    for prompt, winner, loser, annotator, first in votes:
        p = prompt_ix.setdefault(prompt, len(prompt_ix))
        if p == len(cand_ix):
            cand_ix.append({})
        local = cand_ix[p]
        w = local.setdefault(winner, len(local))
        lo = local.setdefault(loser, len(local))
        k = ann_ix.setdefault(annotator, len(ann_ix))
        shown = -1 if first is None else int(first == winner) if first in (winner, loser) else -1
        rows.append((p, w, lo, k, shown))
    data = np.array(rows, dtype=np.int64).reshape(-1, 5)
    comparisons = Comparisons(
        prompt=data[:, 0],
        winner=data[:, 1],
        loser=data[:, 2],
        annotator=data[:, 3],
        winner_first=data[:, 4],
        n_prompts=len(prompt_ix),
        n_candidates=max((len(c) for c in cand_ix), default=0),
        n_annotators=len(ann_ix),
    )
    return Indexed(
        comparisons=comparisons,
        prompts=list(prompt_ix),
        candidates=[list(c) for c in cand_ix],
        annotators=list(ann_ix),
    )


# --------------------------------------------------------------------------- batched BT


def win_matrices(comparisons: Comparisons, weight: np.ndarray | None = None) -> np.ndarray:
    """``wins[p, i, j]``: summed weight of votes in prompt p where i beat j."""
    c = comparisons
    n = c.n_candidates
    flat = (c.prompt * n + c.winner) * n + c.loser
    w = np.ones(len(c)) if weight is None else weight
    cells = _sums(flat, w, c.n_prompts * n * n)
    return cells.reshape(c.n_prompts, n, n)


# The fits below work on the non-zero cells of the win matrices (about 20 of 361 per prompt
# at MR2Bench scale) and only the Hessian is dense: a dense [P, N, N] objective cost 10x more.
_Cells = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, "Scatter"]


@dataclass(frozen=True)
class Scatter:
    """Flat indices of the cells of `WinCells` into ``theta.ravel()`` and into the dense
    Hessian: they depend on which cells exist only, so an EM fit computes them once."""

    winner: np.ndarray  # p * n + i
    loser: np.ndarray  # p * n + j
    hessian: np.ndarray  # diagonal (i, i), (j, j), then off-diagonal (i, j), (j, i)


@dataclass(frozen=True)
class WinCells:
    """The non-zero cells of `win_matrices`, without the dense ``[P, N, N]`` array.

    ``prompt, winner, loser, wins`` list the cells in `np.nonzero` order (by flat index)
    with the same sums, so a fit on them equals the fit on the dense matrices bit for bit.
    Finding them is a sort of the votes instead of a scan of every cell (1.7M cells, 13 ms,
    per Newton fit at MR2Bench scale).
    """

    prompt: np.ndarray
    winner: np.ndarray
    loser: np.ndarray
    wins: np.ndarray
    shape: tuple[int, int, int]
    scatter: Scatter | None = None


def _scatter(p: np.ndarray, i: np.ndarray, j: np.ndarray, n: int) -> Scatter:
    base = p * n * n
    return Scatter(
        winner=p * n + i,
        loser=p * n + j,
        hessian=np.concatenate(
            [base + i * n + i, base + j * n + j, base + i * n + j, base + j * n + i]
        ),
    )


def win_cells(comparisons: Comparisons, weight: np.ndarray | None = None) -> WinCells:
    """`win_matrices` as `WinCells`: accepted wherever the fits take ``wins``."""
    c = comparisons
    n = c.n_candidates
    # Where each vote lands depends on the votes only: sorted once per `Comparisons` (an EM
    # fit asks again with new weights about 65 times), with the cells' indices.
    layout = c.__dict__.get("_cell_layout")
    if layout is None:
        flat = (c.prompt * n + c.winner) * n + c.loser
        cells, vote_cell = np.unique(flat, return_inverse=True)
        p, rest = np.divmod(cells, n * n)
        i, j = np.divmod(rest, n)
        layout = (cells, vote_cell.reshape(-1), p, i, j, _scatter(p, i, j, n))
        object.__setattr__(c, "_cell_layout", layout)
    cells, vote_cell, p, i, j, scatter = layout
    w = np.ones(len(c)) if weight is None else weight
    # bincount adds each cell's votes in vote order, as `win_matrices` does: equal sums.
    sums = _sums(vote_cell, w, len(cells))
    keep = sums != 0
    if not keep.all():
        p, i, j, sums = p[keep], i[keep], j[keep], sums[keep]
        scatter = None
    return WinCells(p, i, j, sums, (c.n_prompts, n, n), scatter)


def _cells(wins: np.ndarray | WinCells) -> _Cells:
    if isinstance(wins, WinCells):
        n = wins.shape[1]
        scatter = wins.scatter or _scatter(wins.prompt, wins.winner, wins.loser, n)
        return wins.prompt, wins.winner, wins.loser, wins.wins, scatter
    p, i, j = np.nonzero(wins)
    return p, i, j, wins[p, i, j], _scatter(p, i, j, wins.shape[1])


def _sums(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    # bincount answers int64 zeros for an empty index, whatever the weights.
    return np.bincount(index, weights=weights, minlength=size).astype(float, copy=False)


def _objective(
    theta: np.ndarray, cells: _Cells, alpha: float, mean: np.ndarray | float = 0.0
) -> np.ndarray:
    p, _, _, w, scatter = cells
    flat = theta.reshape(-1)
    out = np.empty(theta.shape[0])

    def part(rows: slice) -> None:
        lo, hi = _cell_range(p, rows)
        loss = w[lo:hi] * np.logaddexp(
            0.0, flat[scatter.loser[lo:hi]] - flat[scatter.winner[lo:hi]]
        )
        penalty = alpha * np.sum((theta[rows] - _mean_rows(mean, rows)) ** 2, axis=1)
        out[rows] = _sums(p[lo:hi] - rows.start, loss, rows.stop - rows.start) + penalty

    _by_halves(part, theta.shape[0], SPLIT_MIN_PROMPTS)
    return out


def _gradient_hessian(
    theta: np.ndarray,
    cells: _Cells,
    alpha: float,
    mean: np.ndarray | float = 0.0,
    *,
    out: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Gradient and dense Hessian; with ``out`` (a ``[P, N, N]`` array of zeros, or one this
    function wrote before for the same ``cells``) the Hessian is written into it."""
    p, _, _, w, scatter = cells
    n_prompts, n = theta.shape
    flat = theta.reshape(-1)
    grad = np.empty(theta.shape)
    if out is not None:
        _compact_layout(scatter, n)  # once, before the halves read it

    def part(rows: slice) -> np.ndarray:
        lo, hi = _cell_range(p, rows)
        win = _win(flat, scatter, lo, hi)
        push = w[lo:hi] * (1 - win)
        g = 2 * alpha * (theta[rows] - _mean_rows(mean, rows))
        size, shift = (rows.stop - rows.start) * n, rows.start * n
        g -= _sums(scatter.winner[lo:hi] - shift, push, size).reshape(-1, n)
        g += _sums(scatter.loser[lo:hi] - shift, push, size).reshape(-1, n)
        grad[rows] = g
        curvature = w[lo:hi] * win * (1 - win)
        if out is not None:
            _hessian_rows(out, scatter, curvature, alpha, rows, lo, hi)
        return curvature

    if out is None:  # the whole batch, into a fresh Hessian
        curvature = part(slice(0, n_prompts))
        return grad, _fresh_hessian(scatter, curvature, alpha, theta.shape)
    _by_halves(part, n_prompts, SPLIT_MIN_PROMPTS)
    return grad, out


def _win(flat: np.ndarray, scatter: Scatter, lo: int, hi: int) -> np.ndarray:
    """Each of the cells ``lo:hi``'s probability that its winner wins, at strengths ``flat``."""
    return expit(flat[scatter.winner[lo:hi]] - flat[scatter.loser[lo:hi]])


def _mean_rows(mean: np.ndarray | float, rows: slice) -> np.ndarray | float:
    """The prior mean of the prompts ``rows`` (a per-prompt ``[P, N]`` mean, else as given)."""
    return mean[rows] if isinstance(mean, np.ndarray) and mean.ndim == 2 else mean


def _fresh_hessian(
    scatter: Scatter, curvature: np.ndarray, alpha: float, shape: tuple[int, int]
) -> np.ndarray:
    """The dense Hessian of every cell's ``curvature``, as a new ``[P, N, N]`` array."""
    n_prompts, n = shape
    values = np.concatenate([curvature, curvature, -curvature, -curvature])
    hess = _sums(scatter.hessian, values, n_prompts * n * n).reshape(n_prompts, n, n)
    diag = np.arange(n)
    hess[:, diag, diag] += 2 * alpha
    return hess


def _hessian_rows(
    out: np.ndarray,
    scatter: Scatter,
    curvature: np.ndarray,
    alpha: float,
    rows: slice,
    lo: int,
    hi: int,
) -> None:
    """The dense Hessian of the prompts ``rows`` written into ``out``, given the curvature of
    their cells ``lo:hi``: only where a cell lands and on the diagonal (the rest stays 0).
    Their entries of ``scatter.hessian`` (the same four runs, in the same order) are summed
    into their run of the sorted positions: the same sums in the same order as a fresh
    `_sums` of ``scatter.hessian`` (`_fresh_hessian`), so the same floats. A fresh ``[P, N,
    N]`` array per Newton step was the largest cost of the final strengths at 940K (a
    bincount into 17M cells)."""
    n = out.shape[1]
    positions, compact, on_diagonal = _compact_layout(scatter, n)
    cells = len(scatter.winner)
    if lo == 0 and hi == cells:  # every cell: every position, the entries as they are
        part = (0, len(positions), compact)
    else:
        parts = scatter.__dict__.setdefault("_compact_parts", {})
        key = (rows.start, rows.stop, lo, hi)
        part = parts.get(key)
        if part is None:
            p_lo, p_hi = np.searchsorted(
                positions, (rows.start * n * n, rows.stop * n * n)
            ).tolist()
            entries = np.concatenate([compact[k * cells + lo : k * cells + hi] for k in range(4)])
            part = (p_lo, p_hi, entries - p_lo)
            parts[key] = part
    p_lo, p_hi, entries = part
    values = np.concatenate([curvature, curvature, -curvature, -curvature])
    diag = np.arange(n)
    out[rows, diag, diag] = 2 * alpha
    out.reshape(-1)[positions[p_lo:p_hi]] = _sums(entries, values, p_hi - p_lo) + on_diagonal[
        p_lo:p_hi
    ] * (2 * alpha)


def _compact_layout(scatter: Scatter, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The Hessian's distinct positions (sorted), each entry's index among them, and which
    positions are on a diagonal: kept on ``scatter`` (they depend on its cells only)."""
    layout = scatter.__dict__.get("_compact")
    if layout is None:
        positions, compact = np.unique(scatter.hessian, return_inverse=True)
        rest = positions % (n * n)
        layout = (positions, compact.reshape(-1), np.where(rest // n == rest % n, 1.0, 0.0))
        object.__setattr__(scatter, "_compact", layout)
    return layout


def batched_bradley_terry(
    wins: np.ndarray | WinCells,
    alpha: float = DEFAULT_ALPHA,
    *,
    initial: np.ndarray | None = None,
    prior_mean: np.ndarray | None = None,
    max_iter: int = 100,
    tol: float = 1e-10,
) -> np.ndarray:
    """MAP Bradley-Terry strengths for every prompt at once.

    Minimises, per prompt, ``sum_ij wins_ij * log(1 + exp(theta_j - theta_i)) + alpha *
    ||theta||^2`` (the objective of `curation.graph.bradley_terry_scores`) by damped Newton
    steps, each a batched ``[P, N, N]`` solve. Padding candidates (no wins either way) get 0.

    Args:
        wins: ``[P, N, N]`` (possibly fractional) wins of i over j per prompt, dense or
            as `WinCells`.
        alpha: Gaussian prior strength, > 0.
        initial: Warm start ``[P, N]``.
        prior_mean: ``[P, N]`` centre of the Gaussian prior (default 0): the prior becomes
            ``alpha * ||theta - prior_mean||^2``.
        max_iter: Newton steps at most (a warm-started EM step needs few).
        tol: Stop once no strength moves more than this.

    Returns:
        ``[P, N]`` strengths in natural-log odds units.
    """
    if alpha <= 0:
        raise ValueError("alpha must be positive: the strengths are unbounded without it")
    theta = np.zeros(wins.shape[:2]) if initial is None else initial.astype(float).copy()
    if theta.size == 0:
        return theta
    mean = np.zeros_like(theta) if prior_mean is None else prior_mean
    theta, _ = _newton(theta, _cells(wins), alpha, mean, max_iter=max_iter, tol=tol)
    return theta


# `_newton` takes the step with the inverse Hessian, and keeps it, once the previous step
# moved less than this: then the step is almost surely the last but one (Newton's
# convergence is quadratic: at MR2Bench scale a step of 1e-5 is followed by one of 1e-11).
_NEAR = 1e-4


def _newton(
    theta: np.ndarray,
    cells: _Cells,
    alpha: float,
    mean: np.ndarray | float,
    *,
    max_iter: int,
    tol: float,
    keep_inverse: bool = False,
    workspace: HessianBuffer | None = None,
) -> tuple[np.ndarray, InverseHessian | None]:
    """`batched_bradley_terry`'s damped Newton steps from ``theta``.

    With ``keep_inverse``, also the inverse Hessian at the start of the last step, where the
    step that stopped the fit (moved less than ``tol``) was taken with it (None otherwise):
    the leave-one-out margins' inverse (`_loo_from_inverse`) without a Hessian and an
    inverse more. It is the Hessian at strengths less than ``tol`` from the returned ones,
    so the margins it gives differ from the exact ones by about ``tol`` times the
    curvature's change. ``workspace``: the Hessian buffer to write into (`HessianBuffer`;
    by default one of its own, or none for a single step).
    """
    if theta.size == 0:
        return theta, None
    value = _objective(theta, cells, alpha, mean)
    inverse = None
    moved = np.inf
    if workspace is None and max_iter > 1:
        workspace = HessianBuffer(theta.shape)
    for _ in range(max_iter):
        buffer = workspace.for_cells(cells) if workspace is not None else None
        grad, hess = _gradient_hessian(theta, cells, alpha, mean, out=buffer)
        if keep_inverse and moved < _NEAR:
            inverse = InverseHessian(hess)
            step = inverse.apply(grad)
        else:
            inverse = None
            step = _spd_solve(hess, grad)
        scale = np.ones(step.shape[0])
        # Newton can overshoot on near-separable prompts: halve each prompt's step until its
        # objective drops.
        for _halving in range(30):
            candidate = theta - scale[:, None] * step
            new = _objective(candidate, cells, alpha, mean)
            worse = new > value + 1e-12 * np.abs(value)
            if not worse.any():
                break
            scale[worse] /= 2
        moved = float(np.max(np.abs(scale[:, None] * step)))
        theta, value = candidate, new
        if moved < tol:
            break
    return theta, inverse if moved < tol else None


class HessianBuffer:
    """One ``[P, N, N]`` array that successive dense Hessians are written into
    (`_hessian_rows`) instead of a fresh bincount into ``P * N * N`` cells each (17M at 940K
    judgments): the EM writes two per step (the leave-one-out margins' and the Newton
    step's), always on the same cells. `for_cells` answers it ready for ``cells``: as it
    is when the last Hessian written was of the same cells (the same `Scatter` object:
    every other entry is still 0), zeroed otherwise. The same floats as a fresh Hessian."""

    def __init__(self, shape: tuple[int, int]) -> None:
        self.array = np.zeros(shape + shape[1:])
        self.scatter: Scatter | None = None

    def for_cells(self, cells: _Cells) -> np.ndarray:
        scatter = cells[4]
        if scatter is not self.scatter:
            self.array.fill(0.0)
            self.scatter = scatter
        return self.array


def _hessian(
    theta: np.ndarray, cells: _Cells, alpha: float, workspace: HessianBuffer | None = None
) -> np.ndarray:
    """The Hessian of `_gradient_hessian` without the gradient (same arithmetic); written
    into ``workspace``'s array when given."""
    p, _, _, w, scatter = cells
    flat = theta.reshape(-1)
    if workspace is None:
        win = _win(flat, scatter, 0, len(w))
        return _fresh_hessian(scatter, w * win * (1 - win), alpha, theta.shape)
    out = workspace.for_cells(cells)
    _compact_layout(scatter, theta.shape[1])  # once, before the halves read it

    def part(rows: slice) -> None:
        lo, hi = _cell_range(p, rows)
        win = _win(flat, scatter, lo, hi)
        _hessian_rows(out, scatter, w[lo:hi] * win * (1 - win), alpha, rows, lo, hi)

    _by_halves(part, theta.shape[0], SPLIT_MIN_PROMPTS)
    return out


def _inverse_hessian(theta: np.ndarray, wins: np.ndarray | WinCells, alpha: float) -> np.ndarray:
    return np.linalg.inv(_hessian(theta, _cells(wins), alpha))


# --------------------------------------------------------------------------- two cores
# numpy's batched LAPACK (`np.linalg.cholesky` on a ``[P, N, N]`` stack), `np.einsum` and
# integer gathers release the GIL while they work, and each prompt's matrix is factorised
# and substituted on its own. So the SPD algebra below splits a large batch into two halves
# of prompts (of votes, for the pairs' quadratic forms), the second worked by a helper
# thread while the caller works the first: the same LAPACK call and the same row
# operations on each prompt's rows, whichever batch it sits in, so the same floats
# (`tests/curation/test_h18e_halves.py`). On one core, or below the sizes here, the batch
# is worked whole, as before.
#
# The helper is one thread per process, started by the first batch large enough to split,
# never at import: the processes that fork workers (Celery's prefork parent, a gunicorn
# master) import this module but do not fit, so they fork without threads. A child forked
# from a process that has the helper forgets it (its thread does not exist in the child)
# and starts its own when it needs one. Nothing but `_by_halves`' work runs on the helper,
# and that work never waits on the helper, so callers in several threads queue, never
# deadlock.

# Prompts per batch, and votes per gather, from which the work is split: below, the hand-off
# to the helper and the substitutions' per-row Python (both threads need the GIL between
# row operations) outweigh the second core. A solve and an inverse factor of [P, 19, 19],
# halves against whole, alternated 15x at load 12 (fastest): 1.5-1.95x at P = 1000,
# 0.77-0.88x at 2000, 0.83x at 4700.
SPLIT_MIN_PROMPTS = 2000
SPLIT_MIN_VOTES = 40000
# Prompts factorised and substituted together (`_by_cholesky_halves`): a half is worked in
# blocks of this many, each block's factor and its substitutions' rows one after the other
# while they sit in the core's cache (256 x [19, 19] floats: 0.7 MB a stack). A whole half
# at MR2Bench x10 (23,500 prompts, 68 MB a stack) went through memory once per row
# operation, 19-38 times per factor. Each prompt's LAPACK call and row operations are the
# same in a block as in the half: the same floats.
SPD_BLOCK_PROMPTS = 256
# Votes per block of the pairs' quadratic forms (`InverseHessian.pair_quadratic`).
FORM_BLOCK_VOTES = 8192

_T = TypeVar("_T")
_helper: ThreadPoolExecutor | None = None
_helper_lock = threading.Lock()


def _forget_helper() -> None:
    """In a forked child: no helper thread, and no lock held by a thread it does not have."""
    global _helper, _helper_lock
    _helper = None
    _helper_lock = threading.Lock()


os.register_at_fork(after_in_child=_forget_helper)


def available_cores() -> int:
    """The cores this process may run on (its affinity, as a container or taskset sets it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _helper_thread() -> ThreadPoolExecutor:
    global _helper
    with _helper_lock:
        if _helper is None:
            _helper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="crowd-bt")
        return _helper


def _halves(size: int, minimum: int) -> tuple[slice, slice] | None:
    """The two halves ``range(size)`` is worked in, or None to work it whole."""
    if size < minimum or available_cores() < 2:
        return None
    middle = size // 2
    return slice(0, middle), slice(middle, size)


def _by_halves(work: Callable[[slice], _T], size: int, minimum: int) -> list[_T]:
    """``work`` of each half of ``range(size)`` (`_halves`), the second on the helper thread,
    or of the whole range; the results in order. ``work`` must touch only its own part of
    any array it writes."""
    halves = _halves(size, minimum)
    if halves is None:
        return [work(slice(0, size))]
    second = _helper_thread().submit(work, halves[1])
    try:
        first = work(halves[0])
    finally:
        # Also when the caller's half failed: nothing may write into its arrays afterwards.
        wait_for([second])
    return [first, second.result()]


# The objective, gradient and Hessians (`_objective`, `_gradient_hessian`, `_hessian` into
# a buffer) of large batches are worked in the same two halves of prompts: their cells are
# in flat-index order, so each half's cells are one contiguous run (found by a search on the
# cells' prompts), and each prompt's sums (`_sums`, a bincount adding in index order) see
# the same terms in the same order in its half as in the whole batch: the same floats. A
# Hessian's entries of one half are one run of its sorted positions too (`_hessian_rows`).


def _cell_range(prompt: np.ndarray, rows: slice) -> tuple[int, int]:
    """The run of cells (``prompt``: each cell's prompt, non-decreasing) of prompts ``rows``."""
    lo, hi = np.searchsorted(prompt, (rows.start, rows.stop)).tolist()
    return lo, hi


# --------------------------------------------------------------------------- SPD algebra
# Every Hessian here is ``2 alpha I`` plus a weighted graph Laplacian (non-negative vote
# weights): symmetric positive definite, its smallest eigenvalue at least ``2 alpha``. numpy
# batches LAPACK's Cholesky factorisation (potrf, about 6 ms for [4700, 19, 19]) but not the
# triangular solves; an LU solve costs about 14 ms and an explicit inverse 35-40 ms. So the
# factor is LAPACK's and the triangular work is vectorised over the prompts: a solve is the
# factor plus 38 row operations, and the leave-one-out margins read ``M = L^-1`` (one
# forward substitution with N right-hand sides) instead of the inverse: ``H^-1 = M^T M``.
# Where a factorisation fails (a matrix that is not positive definite, which these never
# are), the LU solve and the explicit inverse answer instead, for the whole batch. Large
# batches are worked in two halves on two cores (above).


def _spd_solve(hess: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """``H^-1 rhs`` per prompt (``hess`` ``[P, N, N]`` positive definite, ``rhs`` ``[P, N]``):
    the Cholesky factor and two vectorised triangular substitutions."""
    x = np.empty(rhs.shape)

    def solve(lower: np.ndarray, part: slice) -> None:
        _substitute(lower, rhs[part], x[part])

    if not _by_cholesky_halves(hess, solve):
        return np.linalg.solve(hess, rhs[:, :, None])[:, :, 0]
    return x


def _by_cholesky_halves(hess: np.ndarray, work: Callable[[np.ndarray, slice], None]) -> bool:
    """``work(L, part)`` with the Cholesky factor ``L`` of ``hess[part]``, for each block of
    `SPD_BLOCK_PROMPTS` prompts of each half (`_by_halves`) or of the whole batch; False
    where a factorisation failed (the caller then answers for the whole batch by LU, and
    ignores what the blocks before it wrote)."""

    def factor(part: slice) -> bool:
        for start in range(part.start, part.stop, SPD_BLOCK_PROMPTS):
            block = slice(start, min(start + SPD_BLOCK_PROMPTS, part.stop))
            try:
                lower = np.linalg.cholesky(hess[block])
            except np.linalg.LinAlgError:
                return False
            work(lower, block)
        return True

    return all(_by_halves(factor, hess.shape[0], SPLIT_MIN_PROMPTS))


def _substitute(lower: np.ndarray, rhs: np.ndarray, x: np.ndarray) -> None:
    """``x = (L L^T)^-1 rhs`` per prompt, written into ``x``: forward then backward
    substitution, vectorised over the prompts."""
    n = rhs.shape[1]
    diag = np.diagonal(lower, axis1=1, axis2=2)
    y = np.empty(rhs.shape)
    for i in range(n):
        y[:, i] = (rhs[:, i] - np.einsum("pk,pk->p", lower[:, i, :i], y[:, :i])) / diag[:, i]
    for i in range(n - 1, -1, -1):
        dot = np.einsum("pk,pk->p", lower[:, i + 1 :, i], x[:, i + 1 :])
        x[:, i] = (y[:, i] - dot) / diag[:, i]


def _lower_inverse_columns(lower: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The columns of ``M = L^-1`` for lower-triangular ``[P, N, N]`` factors ``L``:
    ``out[p, a] = M[p, :, a]`` (zero above the diagonal of M: ``out[p, a, k] = 0`` for
    ``k < a``). Forward substitution row by row (row i of M depends on rows ``< i`` only),
    vectorised over the prompts, written straight in this layout (no transposed copy);
    into ``out`` (zeros of ``lower``'s shape) when given."""
    n_prompts, n, _ = lower.shape
    if out is None:
        out = np.zeros(lower.shape)
    diag = np.diagonal(lower, axis1=1, axis2=2)
    for i in range(n):
        if i:
            row = np.einsum("pk,pjk->pj", lower[:, i, :i], out[:, :i, :i])
            out[:, :i, i] = row / -diag[:, i, None]
        out[:, i, i] = 1.0 / diag[:, i]
    return out


class InverseHessian:
    """``H^-1`` of a ``[P, N, N]`` batch of positive-definite Hessians, for what the fits
    read of it: products ``H^-1 v`` (`apply`) and the quadratic forms
    ``(e_a - e_b)^T H^-1 (e_a - e_b)`` of pairs (`pair_quadratic`). Kept as the inverse
    Cholesky factor ``M = L^-1`` (``H^-1 = M^T M``: a product is two matrix-vector
    products, a pair's form the squared norm of ``M``'s column difference); the explicit
    inverse only where a factorisation fails. `dense` gives the whole inverse (tests)."""

    def __init__(self, hess: np.ndarray) -> None:
        self.n = hess.shape[-1]
        self.inverse: np.ndarray | None = None
        self.columns: np.ndarray | None = None
        # columns[p, a] = M[p, :, a], contiguous: a pair's form gathers two rows of it.
        columns = np.zeros(hess.shape)

        def factor(lower: np.ndarray, part: slice) -> None:
            _lower_inverse_columns(lower, columns[part])

        if _by_cholesky_halves(hess, factor):
            self.columns = columns
        else:
            self.inverse = np.linalg.inv(hess)

    def apply(self, v: np.ndarray) -> np.ndarray:
        """``H^-1 v`` per prompt, ``v`` ``[P, N]``."""
        if self.columns is None:
            return np.einsum("pij,pj->pi", self.inverse, v)
        columns = self.columns
        out = np.empty(v.shape)

        def product(part: slice) -> None:
            mv = np.einsum("pak,pa->pk", columns[part], v[part])
            out[part] = np.einsum("pak,pk->pa", columns[part], mv)

        _by_halves(product, v.shape[0], SPLIT_MIN_PROMPTS)
        return out

    def pair_quadratic(self, flat_a: np.ndarray, flat_b: np.ndarray) -> np.ndarray:
        """``(e_a - e_b)^T H_p^-1 (e_a - e_b)`` for flat indices ``p * N + a`` and
        ``p * N + b`` (one per pair)."""
        n = self.n
        if self.columns is None:
            inverse = self.inverse.reshape(-1)
            row_a, row_b = flat_a * n, flat_b * n
            col_a, col_b = flat_a % n, flat_b % n
            return inverse[row_a + col_a] + inverse[row_b + col_b] - 2 * inverse[row_a + col_b]
        rows = self.columns.reshape(-1, n)
        out = np.empty(len(flat_a))

        def forms(part: slice) -> None:
            # In blocks: each block's gathered differences stay in the cache (1.2 MB)
            # instead of a [votes, N] array written out and read back (143 MB at 940K).
            for start in range(part.start, part.stop, FORM_BLOCK_VOTES):
                block = slice(start, min(start + FORM_BLOCK_VOTES, part.stop))
                diff = rows[flat_a[block]] - rows[flat_b[block]]
                out[block] = np.einsum("vk,vk->v", diff, diff)

        _by_halves(forms, len(flat_a), SPLIT_MIN_VOTES)
        return out

    def dense(self) -> np.ndarray:
        """The whole ``[P, N, N]`` inverse."""
        if self.columns is None:
            return self.inverse
        return np.einsum("pak,pbk->pab", self.columns, self.columns)


def loo_margins(
    comparisons: Comparisons,
    theta: np.ndarray,
    weight: np.ndarray,
    alpha: float = DEFAULT_ALPHA,
) -> np.ndarray:
    """Each vote's margin ``theta_winner - theta_loser`` from a fit without that vote.

    ``theta`` must be the weighted fit of ``comparisons`` (weights ``weight``). Removing vote
    i changes the fit by one Newton step, computed with Sherman-Morrison on the prompt's
    Hessian: ``d_-i = d_i - w_i (1 - p_i) h_i / (1 - w_i p_i (1 - p_i) h_i)``, where
    ``h_i = (e_a - e_b)^T H^-1 (e_a - e_b)``.
    """
    return _loo_margins(comparisons, theta, weight, _cells(win_cells(comparisons, weight)), alpha)


def _loo_margins(
    comparisons: Comparisons,
    theta: np.ndarray,
    weight: np.ndarray,
    cells: _Cells,
    alpha: float,
    workspace: HessianBuffer | None = None,
) -> np.ndarray:
    """`loo_margins` given the weighted fit's cells, its Hessian written into ``workspace``."""
    inverse = InverseHessian(_hessian(theta, cells, alpha, workspace))
    return _loo_from_inverse(comparisons, theta, weight, inverse)


def _loo_from_inverse(
    comparisons: Comparisons, theta: np.ndarray, weight: np.ndarray, inverse: InverseHessian
) -> np.ndarray:
    """`loo_margins` given the inverse Hessian of the weighted fit."""
    c = comparisons
    # Flat indices of each vote's winner and loser into theta (and the inverse's rows),
    # worked out once per `Comparisons`.
    at = c.__dict__.get("_loo_index")
    if at is None:
        n = c.n_candidates
        at = (c.prompt * n + c.winner, c.prompt * n + c.loser)
        object.__setattr__(c, "_loo_index", at)
    flat_a, flat_b = at
    h = inverse.pair_quadratic(flat_a, flat_b)
    flat = theta.reshape(-1)
    d = flat[flat_a] - flat[flat_b]
    prob = expit(d)
    curvature = weight * prob * (1 - prob)
    # h * curvature < 1 holds for a positive-definite Hessian that contains the vote.
    return d - weight * (1 - prob) * h / np.maximum(1 - curvature * h, 1e-9)


# --------------------------------------------------------------------------- Crowd-BT


@dataclass(frozen=True)
class CrowdBTFit:
    """The joint model's estimates.

    Attributes:
        theta: ``[P, N]`` strengths per prompt (padding candidates: 0).
        alpha: Prior strength of the final strengths, chosen on leave-one-out votes.
        eta: Per annotator, probability that a vote is a real judgment.
        pi: Per annotator, probability that a noise vote picks the candidate shown first
            (0.5 where no display order is known).
        accuracy: Per annotator, ``eta + (1 - eta) / 2``: the share of their votes that go
            the way their real judgment would.
        weight: Per annotator, ``log(accuracy / (1 - accuracy))``: the log-likelihood ratio
            one vote carries; 0 for a spammer.
        loo_agreement: Per annotator, share of their votes that agree with the sign of the
            leave-one-out margin (a zero margin counts one half); NaN without votes.
        responsibility: Per vote, posterior probability that it is a real judgment.
        loo_margin: Per vote, the leave-one-out margin of winner over loser in the final fit.
        loo_log_likelihood: ``sum eta_k * log sigmoid(loo_margin)`` over the votes: how well
            the final strengths predict votes they were not fitted on.
        n_votes: Per annotator, strict votes.
        n_positioned: Per annotator, votes whose display order is known.
        n_separable: Per annotator, votes that can tell a real judgment from their slot habit
            (`separable_votes`): below a handful, a low ``eta`` says nothing about them.
        iterations: EM iterations run.
    """

    theta: np.ndarray
    alpha: float
    eta: np.ndarray
    pi: np.ndarray
    accuracy: np.ndarray
    weight: np.ndarray
    loo_agreement: np.ndarray
    responsibility: np.ndarray
    loo_margin: np.ndarray
    loo_log_likelihood: float
    n_votes: np.ndarray
    n_positioned: np.ndarray
    n_separable: np.ndarray
    iterations: int


def separable_votes(comparisons: Comparisons, pi: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Per annotator, votes on which a real judgment and a noise vote predict different picks.

    A noise vote picks the slot the annotator favours (``pi`` above 1/2: the first); a real
    judgment picks the candidate the leave-one-out consensus favours (the sign of
    ``margin``). Where both are the same candidate on every vote - everybody shown the
    candidates in one order that the consensus follows, and an annotator who agrees with it
    - "careful" and "always clicks the first" fit their votes alike, and EM prefers the
    latter (``pi`` near 1 explains every vote, a held-out margin less than all). Their
    ``eta`` is then low for a reason their votes cannot confirm. A vote with no known display
    order, or from an annotator with no slot habit, separates the two; else a zero margin does not.
    """
    c = comparisons
    k = c.annotator
    habit = np.sign(pi - 0.5)[k]
    consensus_first = np.where(margin > 0, c.winner_first == 1, c.winner_first == 0)
    separable = (
        (c.winner_first < 0) | (habit == 0) | ((margin != 0) & (consensus_first != (habit > 0)))
    )
    return np.bincount(k, weights=separable.astype(float), minlength=c.n_annotators)


def best_alpha(
    comparisons: Comparisons,
    vote_weight: np.ndarray,
    alphas: Iterable[float],
    initial: np.ndarray,
    prior_mean: np.ndarray | None = None,
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """The prior strength with the best weighted leave-one-out log-likelihood.

    Each prior's fit starts from the previous one's, moved along the path of the optimum
    (the first from ``initial``), and its margins read the inverse Hessian that the last
    Newton step was taken with (`_newton`): at MR2Bench scale 14 Newton steps (10 solves,
    4 inverses) instead of 17 solves and then 4 Hessians and inverses more, the same
    strengths and margins (within 1e-10, `test_each_prior_in_the_choice_equals_a_fit_from_the_start`).

    Returns ``(alpha, theta, loo margins, loo log-likelihood)``.
    """
    wins = win_cells(comparisons, vote_weight)
    cells = _cells(wins)
    mean = np.zeros_like(initial, dtype=float) if prior_mean is None else prior_mean
    best: tuple[float, np.ndarray, np.ndarray, float] | None = None
    previous: tuple[float, np.ndarray, np.ndarray] | None = None
    for alpha in alphas:
        if alpha <= 0:
            raise ValueError("alpha must be positive: the strengths are unbounded without it")
        start = initial.astype(float)
        if previous is not None:
            # The previous prior's fit, moved along its path in log(alpha): at the fit,
            # d theta / d alpha = -H^-1 2 (theta - mean), and the inverse is at hand. One
            # Newton step fewer per prior at MR2Bench scale than from ``initial``; the same
            # optimum (the objective is strictly convex), reached to ``tol`` either way.
            last_alpha, last_theta, last_inverse = previous
            slope = last_inverse.apply(2 * (last_theta - mean))
            start = last_theta - last_alpha * np.log(alpha / last_alpha) * slope
        theta, inverse = _newton(
            start, cells, alpha, mean, max_iter=100, tol=1e-10, keep_inverse=True
        )
        if inverse is None:
            inverse = InverseHessian(_hessian(theta, cells, alpha))
        previous = (alpha, theta, inverse)
        margin = _loo_from_inverse(comparisons, theta, vote_weight, inverse)
        score = float(np.sum(vote_weight * np.log(expit(margin))))
        if best is None or score > best[3]:
            best = (alpha, theta, margin, score)
    assert best is not None, "alphas must not be empty"
    return best


@dataclass(frozen=True)
class EMState:
    """Where `crowd_bt_em` stopped: the estimates the final strengths start from.

    Attributes:
        theta: ``[P, N]`` strengths under the EM's prior ``alpha``.
        eta, pi: Per annotator, as in `CrowdBTFit`.
        responsibility: Per vote, posterior probability that it is a real judgment.
        iterations: EM iterations run.
    """

    theta: np.ndarray
    eta: np.ndarray
    pi: np.ndarray
    responsibility: np.ndarray
    iterations: int


def _annotator_map(
    comparisons: Comparisons,
    real: np.ndarray,
    eta: np.ndarray,
    pi: np.ndarray,
    eta_prior: tuple[float, float],
    pi_prior: float,
    *,
    max_iter: int = 50,
    tol: float = 1e-10,
) -> tuple[np.ndarray, np.ndarray]:
    """Every annotator's ``(eta, pi)`` at the EM's fixed point for fixed vote likelihoods.

    ``real`` is each vote's probability as a real judgment (``sigmoid`` of its leave-one-out
    margin). With it held fixed, the fixed point of the E-step and the counting M-step
    (``eta = (sum r + a) / (n + a + b)``, ``pi`` likewise over the noise votes of known order)
    is a stationary point of, per annotator,
    ``sum_i log(eta * real_i + (1 - eta) * q_i(pi)) + a log eta + b log(1 - eta)
    + c log pi + c log(1 - pi)``, where ``q_i`` is the noise vote's chance of the pick
    (``pi``, ``1 - pi`` or 1/2 if the order is unknown), ``(a, b) = eta_prior`` and
    ``c = pi_prior``. Plain EM crawls there (a spammer's ``eta`` fell 3e-3 per step); a
    2-D Newton step per annotator, batched over annotators, with halving until the objective
    rises, gets there in a few. The objective is concave in each of ``eta`` and ``pi`` but
    not always jointly: where the 2-D Hessian is not negative definite, each coordinate
    takes its own Newton step (still an ascent direction).
    """
    c = comparisons
    size = c.n_annotators
    # The votes by annotator (a stable sort, kept per `Comparisons`): each per-annotator sum
    # below is then a `np.add.reduceat` over contiguous runs, about a tenth of a weighted
    # bincount's time (five or six sums per Newton step, about 290 at MR2Bench scale).
    layout = c.__dict__.get("_by_annotator")
    if layout is None:
        order = np.argsort(c.annotator, kind="stable")
        k = c.annotator[order]
        starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]]) if len(k) else k
        shown = c.winner_first[order]
        # d q_i / d pi: +1 where the vote picked the candidate shown first, -1 the other,
        # 0 unknown.
        slope = np.where(shown >= 0, np.where(shown == 1, 1.0, -1.0), 0.0)
        # q_i as one gather from [pi, 1 - pi, 1/2]: picked first, picked second, unknown.
        pick = np.where(slope > 0, k, np.where(slope < 0, size + k, 2 * size))
        layout = (order, k, starts, slope, pick)
        object.__setattr__(c, "_by_annotator", layout)
    order, k, starts, slope, pick = layout
    real = real[order]
    present = k[starts] if len(k) else k

    def _sums_by_annotator(values: np.ndarray) -> np.ndarray:
        out = np.zeros(size)
        if len(values):
            out[present] = np.add.reduceat(values, starts)
        return out

    a, b = eta_prior

    def noise_pick(pi_: np.ndarray) -> np.ndarray:
        return np.concatenate([pi_, 1 - pi_, [0.5]])[pick]

    def objective(eta_: np.ndarray, pi_: np.ndarray) -> np.ndarray:
        e = eta_[k]
        mix = e * real + (1 - e) * noise_pick(pi_)
        prior = a * np.log(eta_) + b * np.log1p(-eta_)
        return _sums_by_annotator(np.log(mix)) + prior + pi_prior * (np.log(pi_) + np.log1p(-pi_))

    value = objective(eta, pi)
    for _ in range(max_iter):
        e = eta[k]
        q = noise_pick(pi)
        mix = e * real + (1 - e) * q
        d_eta = (real - q) / mix
        d_pi = (1 - e) * slope / mix
        g_eta = _sums_by_annotator(d_eta) + a / eta - b / (1 - eta)
        g_pi = _sums_by_annotator(d_pi) + pi_prior * (1 / pi - 1 / (1 - pi))
        h_ee = -_sums_by_annotator(d_eta * d_eta) - a / eta**2 - b / (1 - eta) ** 2
        h_pp = -_sums_by_annotator(d_pi * d_pi) - pi_prior * (1 / pi**2 + 1 / (1 - pi) ** 2)
        h_ep = -_sums_by_annotator(slope / mix + d_eta * d_pi)
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


def crowd_bt_em(
    comparisons: Comparisons,
    *,
    alpha: float = DEFAULT_ALPHA,
    eta_prior: tuple[float, float] = ETA_PRIOR,
    pi_prior: float = PI_PRIOR,
    max_iter: int = EM_MAX_ITER,
    tol: float = EM_TOL,
    newton_steps: int = 1,
    extrapolate: bool = True,
) -> EMState:
    """The EM of `fit_crowd_bt`, run to its fixed point: ``eta``, ``pi``, strengths under
    ``alpha``.

    With ``extrapolate``, it also stops once two successive Aitken estimates of the fixed
    point (`_aitken`, from the last two steps of ``eta`` and ``pi``) agree within ``tol``,
    and answers the later estimate (``theta`` is then the last step's, one Newton step for
    the weights before it; `crowd_bt_final` fits the strengths for the answered ``eta`` to
    1e-10). ``extrapolate=False``: the plain stop only.

    Each step: leave-one-out margins of the current strengths (E-step's likelihoods), then
    the annotators' ``eta`` and ``pi`` solved to the fixed point of the E-step and counting
    M-step for those margins (`_annotator_map`, a few cheap Newton steps over annotators
    instead of hundreds of plain EM steps), then ``newton_steps`` warm-started Newton steps
    of the ``eta``-weighted strengths. It stops when no ``eta`` or ``pi`` moves more than
    ``tol``; the strengths and the margins then no longer move either, so one more plain EM
    step changes nothing beyond that tolerance (a fixed point of the plain EM, which would
    need hundreds of steps to reach it).
    """
    c = comparisons
    k = c.annotator
    known = c.winner_first >= 0
    first = c.winner_first == 1
    eta = np.full(c.n_annotators, eta_prior[0] / sum(eta_prior))
    pi = np.full(c.n_annotators, 0.5)
    vote_weight = np.ones(len(c))
    # Every Hessian of the EM (each step's margins' and Newton step's) is written into one
    # buffer: `batched_bradley_terry` and `loo_margins` with their arithmetic, not their
    # fresh [P, N, N] arrays (the same floats).
    workspace = HessianBuffer((c.n_prompts, c.n_candidates))
    zero_mean = np.zeros((c.n_prompts, c.n_candidates))
    # The first margins need a rough fit only (three Newton steps: one left the first steps'
    # margins too rough, four more steps measured no fewer EM steps at MR2Bench scale).
    cells = _cells(win_cells(c, vote_weight))
    theta, _ = _newton(
        np.zeros_like(zero_mean),
        cells,
        alpha,
        zero_mean,
        max_iter=3,
        tol=1e-10,
        workspace=workspace,
    )
    margin = np.zeros(len(c))
    iterations = 0
    previous_step: np.ndarray | None = None
    previous_estimate: np.ndarray | None = None
    extrapolated: np.ndarray | None = None
    for iterations in range(1, max_iter + 1):  # noqa: B007 - reported in the fit
        margin = _loo_margins(c, theta, vote_weight, cells, alpha, workspace)
        new_eta, new_pi = _annotator_map(c, expit(margin), eta, pi, eta_prior, pi_prior)
        moved = max(
            float(np.max(np.abs(new_eta - eta), initial=0.0)),
            float(np.max(np.abs(new_pi - pi), initial=0.0)),
        )
        step = np.concatenate([new_eta - eta, new_pi - pi])
        eta, pi = new_eta, new_pi
        if extrapolate:
            estimate = _aitken(np.concatenate([eta, pi]), step, previous_step)
            extrapolated = (
                estimate
                if estimate is not None
                and previous_estimate is not None
                and float(np.max(np.abs(estimate - previous_estimate))) < tol
                else None
            )
            previous_step, previous_estimate = step, estimate
        # The M-step weighs votes by their annotator's eta, not by their own posterior: a
        # vote that agrees with its neighbours would otherwise pull them its way and be
        # confirmed by them (EM feeding on itself: spammers came out "reliable").
        vote_weight = eta[k]
        # One warm-started Newton step: the next step's margins need the strengths to
        # improve, not to finish; at the fixed point the weights stop moving and they finish
        # (Newton's convergence is quadratic). Three steps cost 45 % more at MR2Bench scale
        # for the same number of EM steps.
        cells = _cells(win_cells(c, vote_weight))
        theta, _ = _newton(
            theta,
            cells,
            alpha,
            zero_mean,
            max_iter=newton_steps,
            tol=1e-10,
            workspace=workspace,
        )
        if moved < tol:
            break
        if extrapolated is not None:
            eta, pi = _clip_unit(extrapolated[: len(eta)]), _clip_unit(extrapolated[len(eta) :])
            break
    # The E-step's posteriors at the fitted eta and pi.
    real = eta[k] * expit(margin)
    noise = (1 - eta[k]) * np.where(known, np.where(first, pi[k], 1 - pi[k]), 0.5)
    r = real / np.maximum(real + noise, 1e-300)
    return EMState(theta=theta, eta=eta, pi=pi, responsibility=r, iterations=iterations)


def _aitken(
    current: np.ndarray, step: np.ndarray, previous: np.ndarray | None
) -> np.ndarray | None:
    """The fixed point of a geometrically converging iteration estimated from its last two
    steps: ``current + step * r / (1 - r)``, ``r`` the least-squares ratio of ``step`` to
    ``previous`` (one ratio for all coordinates: the slowest mode dominates). None when
    there is no previous step or the steps do not contract steadily (``|r|`` at least
    `_AITKEN_RATIO`)."""
    if previous is None:
        return None
    norm = float(np.dot(previous, previous))
    if norm == 0.0:
        return current.copy()
    ratio = float(np.dot(step, previous)) / norm
    if not abs(ratio) < _AITKEN_RATIO:
        return None
    return current + step * (ratio / (1 - ratio))


def _clip_unit(values: np.ndarray) -> np.ndarray:
    """``values`` kept inside (0, 1), where ``eta`` and ``pi`` live (an extrapolation from
    the edge could step over it)."""
    return np.clip(values, 1e-12, 1 - 1e-12)


@dataclass(frozen=True)
class FinalStrengths:
    """`crowd_bt_final`'s part of a fit: the strengths under the chosen prior."""

    theta: np.ndarray
    alpha: float
    loo_margin: np.ndarray
    loo_log_likelihood: float


def crowd_bt_final(
    comparisons: Comparisons,
    em: EMState,
    *,
    alpha: float = DEFAULT_ALPHA,
    final_alphas: tuple[float, ...] = FINAL_ALPHAS,
) -> FinalStrengths:
    """The final strengths: votes weighted by ``eta``, the prior chosen on held-out votes."""
    chosen, theta, margin, loo_ll = best_alpha(
        comparisons, em.eta[comparisons.annotator], final_alphas or (alpha,), em.theta
    )
    return FinalStrengths(theta=theta, alpha=chosen, loo_margin=margin, loo_log_likelihood=loo_ll)


def assemble_fit(comparisons: Comparisons, em: EMState, final: FinalStrengths) -> CrowdBTFit:
    """A `CrowdBTFit` from its two stages (the per-annotator counts are the votes')."""
    c = comparisons
    k = c.annotator
    n_votes = np.bincount(k, minlength=c.n_annotators).astype(float)
    known = (c.winner_first >= 0).astype(float)
    n_positioned = np.bincount(k, weights=known, minlength=c.n_annotators)
    margin = final.loo_margin
    agree = np.where(margin > 0, 1.0, np.where(margin < 0, 0.0, 0.5))
    with np.errstate(invalid="ignore", divide="ignore"):
        loo_agreement = np.bincount(k, weights=agree, minlength=c.n_annotators) / n_votes
    eta = em.eta
    accuracy = eta + (1 - eta) / 2
    weight = np.log(accuracy / np.maximum(1 - accuracy, 1e-6))
    return CrowdBTFit(
        theta=final.theta,
        alpha=final.alpha,
        eta=eta,
        pi=em.pi,
        accuracy=accuracy,
        weight=weight,
        loo_agreement=loo_agreement,
        responsibility=em.responsibility,
        loo_margin=margin,
        loo_log_likelihood=final.loo_log_likelihood,
        n_votes=n_votes,
        n_positioned=n_positioned,
        n_separable=separable_votes(c, em.pi, margin),
        iterations=em.iterations,
    )


def fit_crowd_bt(
    comparisons: Comparisons,
    *,
    alpha: float = DEFAULT_ALPHA,
    final_alphas: tuple[float, ...] = FINAL_ALPHAS,
    eta_prior: tuple[float, float] = ETA_PRIOR,
    pi_prior: float = PI_PRIOR,
    max_iter: int = EM_MAX_ITER,
    tol: float = EM_TOL,
    newton_steps: int = 1,
) -> CrowdBTFit:
    """Fits Crowd-BT with a position term by EM on leave-one-out margins (module docstring).

    Args:
        comparisons: Every strict vote of a project.
        alpha: Bradley-Terry prior strength per prompt during EM.
        final_alphas: Prior strengths tried for the final strengths (votes weighted by
            their annotator's ``eta``); the one with the best leave-one-out log-likelihood
            wins. How spread out a prompt's candidates are is a property of the data: noisy
            votes call for a stronger prior.
        eta_prior: Beta pseudo-counts (real, noise) for ``eta``.
        pi_prior: Beta pseudo-count per side for ``pi``.
        max_iter: EM iterations at most (a safety net: the fit stops on ``tol``).
        tol: Stop when no ``eta`` or ``pi`` moves more than this.
        newton_steps: Newton steps per M-step for the strengths.

    Returns:
        A `CrowdBTFit`.
    """
    em = crowd_bt_em(
        comparisons,
        alpha=alpha,
        eta_prior=eta_prior,
        pi_prior=pi_prior,
        max_iter=max_iter,
        tol=tol,
        newton_steps=newton_steps,
    )
    final = crowd_bt_final(comparisons, em, alpha=alpha, final_alphas=final_alphas)
    return assemble_fit(comparisons, em, final)


# --------------------------------------------------------------------------- fit cache

# Part of every cache key: bump it when the fit's arithmetic changes, so that no process
# reads a fit an older code made.
# 2: the EM runs to its fixed point (`crowd_bt_em`), not 30 steps; 3: it stops on agreeing
# Aitken estimates of the fixed point too (`_aitken`); 4: Cholesky solves and the inverse
# factor instead of LU solves and explicit inverses (`InverseHessian`, the floats move by
# about 1e-15).
FIT_VERSION = 4


def fit_key(indexed: Indexed, **settings: object) -> str:
    """A digest of everything a fit depends on: the votes' columns, the keys their indices
    stand for, the fit's settings and `FIT_VERSION`.

    Any new, removed or changed strict vote (its winner, its display order, its annotator)
    changes the key; a change the fit cannot see (a tie, a duration) does not.
    """
    c = indexed.comparisons
    digest = hashlib.sha256()
    for column in (c.prompt, c.winner, c.loser, c.annotator, c.winner_first):
        digest.update(np.ascontiguousarray(column, dtype=np.int64).tobytes())
        digest.update(b"|")
    digest.update(_keys_bytes(indexed.prompts))
    digest.update(np.array([len(x) for x in indexed.candidates], dtype=np.int64).tobytes())
    digest.update(_keys_bytes([key for keys in indexed.candidates for key in keys]))
    digest.update(_keys_bytes(indexed.annotators))
    digest.update(
        json.dumps({"version": FIT_VERSION, **settings}, sort_keys=True, default=repr).encode()
    )
    return digest.hexdigest()


def _keys_bytes(keys: list[Hashable]) -> bytes:
    if all(type(key) is int for key in keys):
        return b"i" + np.array(keys, dtype=np.int64).tobytes()
    return b"r" + "\x1f".join(map(repr, keys)).encode()


def _em_arrays(key: str, em: EMState, annotators: list[Hashable]) -> dict[str, np.ndarray]:
    return {
        "em_key": np.array(key),
        # The annotators' keys as text, for readers that fit one prompt with the project's
        # ``eta`` (`cached_reliability`) without loading the whole project.
        "em_annotators": np.array([str(a) for a in annotators], dtype=str),
        "em_theta": em.theta,
        "em_eta": em.eta,
        "em_pi": em.pi,
        "em_responsibility": em.responsibility,
        "em_iterations": np.array(em.iterations),
    }


def _final_tag(final_alphas: tuple[float, ...], alpha: float) -> str:
    return "final[" + ",".join(repr(float(a)) for a in (final_alphas or (alpha,))) + "]"


def _read_cache(path: Path, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of the file at ``path`` (only ``names`` of them, those it holds, if given)."""
    try:
        with np.load(path, allow_pickle=False) as stored:
            wanted = stored.files if names is None else [n for n in names if n in stored.files]
            return {name: stored[name] for name in wanted}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        # Missing, half-written by a crashed process, or of an older layout: a miss.
        return {}


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            np.savez(out, **arrays)
        # Readers in other processes see the old file or the new one, never half of one.
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fit_crowd_bt_cached(
    indexed: Indexed,
    cache: Path | None,
    *,
    alpha: float = DEFAULT_ALPHA,
    final_alphas: tuple[float, ...] = FINAL_ALPHAS,
) -> tuple[CrowdBTFit, str]:
    """`fit_crowd_bt` with its two stages kept in the file ``cache`` (an ``.npz``).

    The EM (the costly part) is reused while `fit_key` of the votes is unchanged, whichever
    process made it (the flags pass in a worker, an export in another); the final strengths
    are kept per ``final_alphas`` beside it. The file holds one set of votes: a fit of other
    votes replaces it. ``cache=None`` fits without a cache.

    Returns:
        The fit, and how it was obtained: ``"hit"`` (nothing fitted), ``"em-hit"`` (only the
        final strengths fitted), ``"miss"`` or ``"off"``.
    """
    c = indexed.comparisons
    if cache is None:
        return fit_crowd_bt(c, alpha=alpha, final_alphas=final_alphas), "off"
    key = fit_key(indexed, alpha=alpha, stage="em")
    tag = _final_tag(final_alphas, alpha)
    stored = _read_cache(cache)
    if stored.get("em_key") is not None and str(stored["em_key"]) == key:
        em = EMState(
            theta=stored["em_theta"],
            eta=stored["em_eta"],
            pi=stored["em_pi"],
            responsibility=stored["em_responsibility"],
            iterations=int(stored["em_iterations"]),
        )
        if f"{tag}:theta" in stored:
            final = FinalStrengths(
                theta=stored[f"{tag}:theta"],
                alpha=float(stored[f"{tag}:alpha"]),
                loo_margin=stored[f"{tag}:loo_margin"],
                loo_log_likelihood=float(stored[f"{tag}:loo_log_likelihood"]),
            )
            return assemble_fit(c, em, final), "hit"
        outcome = "em-hit"
    else:
        em = crowd_bt_em(c, alpha=alpha)
        stored = _em_arrays(key, em, indexed.annotators)
        outcome = "miss"
    final = crowd_bt_final(c, em, alpha=alpha, final_alphas=final_alphas)
    stored.update(
        {
            f"{tag}:theta": final.theta,
            f"{tag}:alpha": np.array(final.alpha),
            f"{tag}:loo_margin": final.loo_margin,
            f"{tag}:loo_log_likelihood": np.array(final.loo_log_likelihood),
        }
    )
    try:
        _write_cache(cache, stored)
    except OSError:
        # The fit is right without the file; the next pass fits again.
        logger.warning("could not keep the joint model's fit in %s", cache, exc_info=True)
    return assemble_fit(c, em, final), outcome


@dataclass(frozen=True)
class CachedReliability:
    """The part of a kept fit that one prompt's strengths depend on (`cached_reliability`).

    Attributes:
        eta: Per annotator (its key as text), as in `CrowdBTFit`.
        alpha: The final strengths' prior strength chosen on held-out votes.
    """

    eta: dict[str, float]
    alpha: float


def cached_reliability(
    cache: Path, *, alpha: float = DEFAULT_ALPHA, final_alphas: tuple[float, ...] = FINAL_ALPHAS
) -> CachedReliability | None:
    """The annotators' ``eta`` and the chosen final prior of the fit kept in ``cache``.

    Given those, a prompt's final strengths depend on its own votes only (the final fit is
    a separate weighted Bradley-Terry fit per prompt), so `fit_prompt_strengths` gives one
    prompt the strengths `fit_crowd_bt_cached` would, without the project's other votes.
    None when there is no such fit (never written, another layout, or fitted with other
    ``final_alphas``).
    """
    tag = _final_tag(final_alphas, alpha)
    # Three small arrays: a review page does not read the strengths and margins of every vote.
    stored = _read_cache(cache, ("em_annotators", "em_eta", f"{tag}:alpha"))
    if "em_annotators" not in stored or f"{tag}:alpha" not in stored:
        return None
    names = [str(a) for a in stored["em_annotators"]]
    eta = stored["em_eta"]
    if len(names) != len(eta):
        return None
    return CachedReliability(
        eta={name: float(e) for name, e in zip(names, eta, strict=True)},
        alpha=float(stored[f"{tag}:alpha"]),
    )


def fit_prompt_strengths(indexed: Indexed, reliability: CachedReliability) -> np.ndarray:
    """Final strengths ``[P, N]`` of ``indexed``'s prompts with a kept fit's ``eta`` and prior.

    Each vote weighs its annotator's ``eta`` (an annotator the fit did not see: the prior's
    mean), as in `crowd_bt_final`; each prompt's fit is independent of the others.
    """
    c = indexed.comparisons
    default = ETA_PRIOR[0] / sum(ETA_PRIOR)
    eta = np.array([reliability.eta.get(str(a), default) for a in indexed.annotators])
    weight = eta[c.annotator] if len(c) else np.ones(0)
    return batched_bradley_terry(win_cells(c, weight), reliability.alpha)


# --------------------------------------------------------------------------- reward model


@dataclass(frozen=True)
class ScorePrior:
    """`with_score_prior`'s result.

    Attributes:
        theta: ``[P, N]`` strengths (``fit.theta`` when the scores are not used).
        used: Whether the scores improved the held-out fit of the human votes.
        beta: Weight of the standardised score in the strengths (0 when not used).
        alpha: Prior strength of the deviations from ``beta * z``.
        loo_log_likelihood: Leave-one-out log-likelihood of the human votes with the scores.
        human_log_likelihood: The same for the human-only fit (``fit.loo_log_likelihood``).
        agreement: Share of human votes whose leave-one-out direction the scores agree with
            (a tie counts one half).
        median_agreement: The median annotator's share of votes agreeing with their own
            leave-one-out direction (annotators with at least ``min_votes`` votes).
        n_pairs: Human votes compared.
    """

    theta: np.ndarray
    used: bool
    beta: float
    alpha: float
    loo_log_likelihood: float
    human_log_likelihood: float
    agreement: float
    median_agreement: float
    n_pairs: int


def _agreement_with_humans(
    comparisons: Comparisons, fit: CrowdBTFit, scores: np.ndarray, min_votes: int
) -> tuple[float, float, int]:
    # The evaluator is compared with the same reference as every annotator: each vote's
    # leave-one-out direction. With a reference right a share q of the time, accuracy c
    # shows as agreement 1/2 + (c - 1/2)(2q - 1): the two figures compare c with the
    # median annotator's accuracy whatever q is.
    c = comparisons
    sw, sl = scores[c.prompt, c.winner], scores[c.prompt, c.loser]
    scored = ~(np.isnan(sw) | np.isnan(sl))
    reference = np.sign(fit.loo_margin[scored])
    says = np.sign(sw[scored] - sl[scored])
    hits = np.where((reference == 0) | (says == 0), 0.5, (reference == says).astype(float))
    agreement = float(hits.mean()) if hits.size else 0.5
    counted = (fit.n_votes >= min_votes) & ~np.isnan(fit.loo_agreement)
    if not counted.any():
        counted = (fit.n_votes > 0) & ~np.isnan(fit.loo_agreement)
    median = float(np.median(fit.loo_agreement[counted])) if counted.any() else 0.5
    return agreement, median, int(hits.size)


def with_score_prior(
    comparisons: Comparisons,
    fit: CrowdBTFit,
    scores: np.ndarray,
    *,
    alphas: tuple[float, ...] = FINAL_ALPHAS,
    rounds: int = 20,
    min_votes: int = 10,
) -> ScorePrior:
    """An evaluator that scores every candidate (the reward model) as the prior's centre.

    ``theta = beta * z + delta``: ``z`` is the evaluator's score standardised over the
    project's scored candidates (0 where unscored), ``delta`` a per-candidate deviation with
    the prior ``alpha * ||delta||^2``, and the single ``beta >= 0`` is fitted by maximum
    likelihood on the human votes (weighted by their annotator's ``eta``), alternately with
    the strengths. ``alpha`` - how far a candidate may stray from the evaluator's score -
    is the value of ``alphas`` with the best leave-one-out log-likelihood of the human votes.

    The gate: the scores are used only if that held-out log-likelihood beats the human-only
    fit's. The humans decide, on the pairs they judged and on votes the strengths were not
    fitted on, what the evaluator is worth on the pairs nobody judged; a scorer no better
    than noise gets ``beta`` near 0 or is left out, and cannot drag the consensus down.
    An annotator-style weight (agreement relative to the median annotator) would not do:
    a scorer worse than a careful annotator on the few judged pairs is still the only
    evidence on the ~150 of 171 pairs nobody judged. Those agreement figures are reported.
    """
    c = comparisons
    agreement, median, n_pairs = _agreement_with_humans(c, fit, scores, min_votes)
    not_used = ScorePrior(
        theta=fit.theta,
        used=False,
        beta=0.0,
        alpha=fit.alpha,
        loo_log_likelihood=fit.loo_log_likelihood,
        human_log_likelihood=fit.loo_log_likelihood,
        agreement=agreement,
        median_agreement=median,
        n_pairs=n_pairs,
    )
    usable = ~np.isnan(scores)
    if usable.sum() < 2 or len(c) == 0:
        return not_used
    weight = fit.eta[c.annotator]
    wins = win_cells(c, weight)
    values = scores[usable]
    z = np.where(usable, (np.nan_to_num(scores) - values.mean()) / (values.std() or 1.0), 0.0)
    dz = z[c.prompt, c.winner] - z[c.prompt, c.loser]
    best: ScorePrior = not_used
    for alpha in alphas:
        beta = 0.0
        theta = fit.theta
        for _ in range(rounds):
            theta = batched_bradley_terry(wins, alpha, initial=theta, prior_mean=beta * z)
            delta = theta - beta * z
            base = delta[c.prompt, c.winner] - delta[c.prompt, c.loser]
            previous = beta
            for _newton in range(20):
                prob = expit(beta * dz + base)
                grad = np.sum(weight * (1 - prob) * dz)
                curvature = np.sum(weight * prob * (1 - prob) * dz * dz)
                if curvature <= 0:
                    break
                step = grad / curvature
                beta = max(0.0, beta + step)
                if abs(step) < 1e-6:
                    break
            if abs(beta - previous) < 1e-4:
                break
        _, theta, _, score = best_alpha(c, weight, (alpha,), theta, prior_mean=beta * z)
        if beta > 0 and score > best.loo_log_likelihood:
            best = ScorePrior(
                theta=theta,
                used=True,
                beta=float(beta),
                alpha=alpha,
                loo_log_likelihood=score,
                human_log_likelihood=fit.loo_log_likelihood,
                agreement=agreement,
                median_agreement=median,
                n_pairs=n_pairs,
            )
    return best


def scores_matrix(
    indexed: Indexed, scores: Mapping[Hashable, float], fill: float = np.nan
) -> np.ndarray:
    """``[P, N]`` array of per-candidate scores aligned with ``indexed``."""
    c = indexed.comparisons
    out = np.full((c.n_prompts, c.n_candidates), fill)
    for p, cands in enumerate(indexed.candidates):
        for i, cand in enumerate(cands):
            value = scores.get(cand)
            if value is not None:
                out[p, i] = value
    return out
