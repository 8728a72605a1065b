"""Opt-in model-strength prior, with strong human consensus kept as a hard constraint.

Pure core: numpy (and `curation.crowd_bt` / `curation.graph`, both pure), no Django.

The joint annotator model (`curation.crowd_bt`) gives each candidate of each prompt its own
strength, pulled towards 0. With the model prior each candidate's strength is its model's
strength across prompts plus a prompt-specific deviation::

    theta[p, i] = m[model(p, i)] + delta[p, i],   prior  alpha * ||delta||^2 + MODEL_ALPHA * ||m||^2

``alpha`` sets the spread of the deviations (s.d. ``1 / sqrt(2 alpha)``): large, the candidate
is ranked by its model's record; small, by its own votes. It is chosen on held-out votes
(leave-one-out margins, as the joint model chooses its own prior), and "no model prior" is one
of the choices: where model identity does not predict quality the human-only fit wins and the
export is the default one.

Where model identity predicts quality the prior is worth a great deal (the votes on other
prompts speak for a candidate nobody compared twice), but it can overrule correct votes for
the weaker model. So a *strong* human consensus - two or more reliable annotators
(``eta >= RELIABLE_ETA``), all voting the same way on a pair, no reliable vote against - stays
a hard constraint: the prompt's order is the prior's order, re-sorted so every strong arc
holds. Strong arcs that form a cycle among themselves cannot all hold: the exact minimum
feedback arc set (`curation.graph.feedback_arc_set`) of the strong arcs picks which go.

Off by default (``ExportOptions.model_prior``); the export's datasheet records the choice,
the model strengths and how often the prior contradicted a strong human consensus.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit

from curation import crowd_bt as CB

# Deviation prior strengths tried (spread 1/sqrt(2 alpha): 2.2 ... 0.22 strength units).
MODEL_PRIOR_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0)
# A weak prior on the model strengths themselves: keeps a model seen once finite.
MODEL_ALPHA = 0.01
# Annotators whose votes the joint model reads as real more often than as noise.
RELIABLE_ETA = 0.5
# Distinct reliable annotators agreeing on a pair before it is a hard constraint.
STRONG_MIN_VOTES = 2
# Strong arcs form tiny graphs: every cycle among them is solved exactly.
EXACT_MAX_NODES = 20
# Gap kept between neighbours after re-sorting: above `consensus.groups_from_scores`' tie
# tolerance (1e-6), so a re-sorted order is never read back as a tie.
_GAP = 1e-5


@dataclass(frozen=True)
class ModelPriorFit:
    """`fit_model_prior`'s result.

    Attributes:
        theta: ``[P, N]`` strengths ``m[model] + delta`` (the human-only ``fit.theta`` when
            the prior is not used).
        used: Whether the prior beat the human-only fit on held-out votes.
        alpha: Deviation prior strength chosen (None when not used).
        strength: Per model index, its strength (zeros when not used).
        loo_log_likelihood: Held-out log-likelihood of the votes with the prior (best alpha),
            less one unit per model strength fitted.
        human_log_likelihood: The same for the human-only fit.
        tried: ``alpha -> held-out log-likelihood`` for every alpha tried.
    """

    theta: np.ndarray
    used: bool
    alpha: float | None
    strength: np.ndarray
    loo_log_likelihood: float
    human_log_likelihood: float
    tried: dict[float, float]


def model_index(
    candidates: list[list[Hashable]], model_of: Mapping[Hashable, str], n_candidates: int
) -> tuple[np.ndarray, list[str]]:
    """``[P, N]`` model index per candidate (-1: padding or no model name) and the models."""
    index = np.full((len(candidates), n_candidates), -1, dtype=np.int64)
    models: dict[str, int] = {}
    for p, cands in enumerate(candidates):
        for i, cand in enumerate(cands):
            name = model_of.get(cand) or ""
            if name:
                index[p, i] = models.setdefault(name, len(models))
    return index, list(models)


def _joint_newton(
    wins: np.ndarray,
    alpha: float,
    index: np.ndarray,
    n_models: int,
    theta: np.ndarray,
    strength: np.ndarray,
    *,
    max_iter: int = 100,
    tol: float = 1e-8,
) -> tuple[np.ndarray, np.ndarray]:
    """MAP ``(theta, m)`` by damped Newton steps on both at once.

    The model strengths couple every prompt, so the Newton system is solved through its Schur
    complement on ``m``: the per-prompt blocks ``A_p`` (Bradley-Terry Hessian + ``2 alpha I``)
    are inverted as one ``[P, N, N]`` batch, and ``S = C - B^T A^-1 B`` is ``[M, M]``.
    Alternating between ``theta`` and the closed-form ``m`` crawls here: moving a model and
    all its candidates together costs only ``MODEL_ALPHA``, a direction coordinate steps
    barely see (0.7 away from the optimum after 50 rounds at ``alpha = 10``).
    """
    known = index >= 0
    safe = np.maximum(index, 0)
    cells = CB._cells(wins)
    m_index = index[known]

    def centre(m: np.ndarray) -> np.ndarray:
        return np.where(known, m[safe], 0.0)

    def objective(t: np.ndarray, m: np.ndarray) -> float:
        return float(CB._objective(t, cells, alpha, centre(m)).sum() + MODEL_ALPHA * m @ m)

    # B = -2 alpha E (E: candidate -> its model); C = 2 alpha E^T E + 2 MODEL_ALPHA I.
    counts = np.bincount(m_index, minlength=n_models).astype(float)
    # Cells of A^-1 between two known candidates, and the (model, model) cell each adds to.
    both = known[:, :, None] & known[:, None, :]
    pairs = (safe[:, :, None] * n_models + safe[:, None, :])[both]
    value = objective(theta, strength)
    for _ in range(max_iter):
        mean = centre(strength)
        g_theta, hess = CB._gradient_hessian(theta, cells, alpha, mean)
        g_m = (
            -2 * alpha * np.bincount(m_index, weights=(theta - mean)[known], minlength=n_models)
            + 2 * MODEL_ALPHA * strength
        )
        inverse = np.linalg.inv(hess)
        eae = np.bincount(pairs, weights=inverse[both], minlength=n_models * n_models).reshape(
            n_models, n_models
        )
        schur = np.diag(2 * alpha * counts + 2 * MODEL_ALPHA) - 4 * alpha**2 * eae
        a_inv_g = np.einsum("pij,pj->pi", inverse, g_theta)
        # B^T A^-1 g = -2 alpha E^T (A^-1 g).
        bt = -2 * alpha * np.bincount(m_index, weights=a_inv_g[known], minlength=n_models)
        d_m = np.linalg.solve(schur, g_m - bt)
        # theta step: A^-1 (g - B d_m) = A^-1 (g + 2 alpha E d_m).
        d_theta = np.einsum("pij,pj->pi", inverse, g_theta + 2 * alpha * centre(d_m))
        scale = 1.0
        for _halving in range(30):
            new_theta, new_m = theta - scale * d_theta, strength - scale * d_m
            new = objective(new_theta, new_m)
            if new <= value + 1e-12 * abs(value):
                break
            scale /= 2
        moved = max(float(np.max(np.abs(scale * d_theta))), float(np.max(np.abs(scale * d_m))))
        theta, strength, value = new_theta, new_m, new
        if moved < tol:
            break
    return theta, strength


def fit_model_prior(
    comparisons: CB.Comparisons,
    fit: CB.CrowdBTFit,
    index: np.ndarray,
    *,
    alphas: tuple[float, ...] = MODEL_PRIOR_ALPHAS,
) -> ModelPriorFit:
    """MAP strengths under the model prior, ``alpha`` chosen on held-out votes (module docstring).

    Votes are weighted by their annotator's ``eta`` (as the joint model's final fit); the
    objective, jointly convex in ``(theta, m)``, is minimised by `_joint_newton`. The held-out
    log-likelihood reads each vote's leave-one-out margin with ``m`` held fixed, less one
    unit per model strength fitted (AIC's price for ``m``, which those margins do not see).
    """
    c = comparisons
    n_models = int(index.max(initial=-1)) + 1
    not_used = ModelPriorFit(
        theta=fit.theta,
        used=False,
        alpha=None,
        strength=np.zeros(n_models),
        loo_log_likelihood=fit.loo_log_likelihood,
        human_log_likelihood=fit.loo_log_likelihood,
        tried={},
    )
    if len(c) == 0 or n_models == 0:
        return not_used
    weight = fit.eta[c.annotator]
    wins = CB.win_matrices(c, weight)
    known = index >= 0
    # The leave-one-out margins hold m fixed, so they do not see m fitted on the same votes:
    # one log-likelihood unit per model strength (AIC's price) pays for it. Without it, on a
    # world where models say nothing, noise in m passed the gate by 3 units and cost accuracy.
    n_fitted = int(np.unique(index[known]).size)
    tried: dict[float, float] = {}
    best = not_used
    # Each alpha starts where the previous one ended.
    theta, strength = fit.theta, np.zeros(n_models)
    for alpha in alphas:
        theta, strength = _joint_newton(wins, alpha, index, n_models, theta, strength)
        margin = CB.loo_margins(c, theta, weight, alpha)
        score = float(np.sum(weight * np.log(expit(margin)))) - n_fitted
        tried[alpha] = score
        if score > best.loo_log_likelihood:
            best = ModelPriorFit(
                theta=theta,
                used=True,
                alpha=alpha,
                strength=strength,
                loo_log_likelihood=score,
                human_log_likelihood=fit.loo_log_likelihood,
                tried={},
            )
    return ModelPriorFit(**{**best.__dict__, "tried": tried})


# --------------------------------------------------------------------------- strong consensus


def strong_arcs(
    comparisons: CB.Comparisons,
    eta: np.ndarray,
    *,
    reliable_eta: float = RELIABLE_ETA,
    min_votes: int = STRONG_MIN_VOTES,
) -> np.ndarray:
    """``[K, 4]`` rows ``(prompt, winner, loser, annotators)``: pairs with a strong consensus.

    Strong: at least ``min_votes`` distinct annotators with ``eta >= reliable_eta`` voted
    winner over loser, and no such annotator voted the other way.
    """
    c = comparisons
    reliable = eta[c.annotator] >= reliable_eta
    if not reliable.any():
        return np.zeros((0, 4), dtype=np.int64)
    p, w, lo, k = c.prompt[reliable], c.winner[reliable], c.loser[reliable], c.annotator[reliable]
    # One row per (prompt, winner, loser, annotator): an annotator repeating a vote counts once.
    rows = np.unique(np.stack([p, w, lo, k], axis=1), axis=0)
    arcs, counts = np.unique(rows[:, :3], axis=0, return_counts=True)
    n = max(c.n_candidates, 1)
    key = (arcs[:, 0] * n + arcs[:, 1]) * n + arcs[:, 2]
    reverse = (arcs[:, 0] * n + arcs[:, 2]) * n + arcs[:, 1]
    contested = np.isin(reverse, key)
    keep = (counts >= min_votes) & ~contested
    return np.concatenate([arcs[keep], counts[keep, None]], axis=1)


@dataclass(frozen=True)
class Constrained:
    """`constrain_to_strong_arcs`' result.

    Attributes:
        theta: ``[P, N]`` strengths, re-sorted within each prompt so every kept strong arc holds.
        strong: Strong arcs in all.
        contradicted: Strong arcs the input strengths contradicted (loser ahead, or tied).
        overruled: ``(prompt, winner, loser)`` strong arcs the output still contradicts: those
            the exact minimum feedback arc set removed from a cycle of strong arcs.
        exact: Whether every such removal is provably minimum.
        prompts_reordered: Prompts whose order changed.
    """

    theta: np.ndarray
    strong: int
    contradicted: int
    overruled: list[tuple[int, int, int]]
    exact: bool
    prompts_reordered: int


def constrain_to_strong_arcs(
    theta: np.ndarray, strong: np.ndarray, sizes: np.ndarray
) -> Constrained:
    """Re-sorts each prompt's candidates so that every strong arc holds.

    Within a prompt the new order is the topological order of the strong arcs that always
    takes the strongest candidate free to go next; the prompt's strength values are then
    handed out in that order, so the scale is kept and only constrained candidates move. A
    cycle among strong arcs first loses its minimum feedback arc set (arc weight: the number
    of annotators behind it), solved exactly.

    Args:
        theta: ``[P, N]`` strengths.
        strong: `strong_arcs` rows.
        sizes: Candidates per prompt (indices ``< sizes[p]`` are real, the rest padding).
    """
    import networkx as nx

    from curation import graph as G

    out = theta.copy()
    if strong.shape[0] == 0:
        return Constrained(out, 0, 0, [], True, 0)
    p, w, lo = strong[:, 0], strong[:, 1], strong[:, 2]
    against = theta[p, w] <= theta[p, lo]
    overruled: list[tuple[int, int, int]] = []
    exact = True
    reordered = 0
    for prompt in np.unique(p[against]):
        graph = nx.DiGraph()
        graph.add_weighted_edges_from(
            (int(a), int(b), float(n)) for a, b, n in strong[p == prompt][:, 1:]
        )
        if not nx.is_directed_acyclic_graph(graph):
            result = G.denoise(graph, exact_max_nodes=EXACT_MAX_NODES)
            graph, exact = result.dag, exact and result.exact
            overruled += [(int(prompt), a, b) for a, b, _ in result.removed_arcs]
        values = theta[prompt]
        members = sorted(range(int(sizes[prompt])), key=lambda i: (-values[i], i))
        order = _constrained_order(members, graph, values)
        ranked = np.sort(values[members])[::-1]
        # Strictly decreasing, so the re-sorted order cannot read back as a tie.
        for k in range(1, len(ranked)):
            ranked[k] = min(ranked[k], ranked[k - 1] - _GAP)
        out[prompt, order] = ranked
        reordered += int(order != members)
    return Constrained(out, int(strong.shape[0]), int(against.sum()), overruled, exact, reordered)


def _constrained_order(members: list[int], graph: Any, values: np.ndarray) -> list[int]:
    import heapq

    waiting = {m: graph.in_degree(m) if m in graph else 0 for m in members}
    ready = [(-values[m], m) for m in members if waiting[m] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        _, m = heapq.heappop(ready)
        order.append(m)
        for nxt in graph.successors(m) if m in graph else ():
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, (-values[nxt], nxt))
    return order


# --------------------------------------------------------------------------- one call


@dataclass(frozen=True)
class ModelPrior:
    """`apply_model_prior`'s result: the strengths to rank by and the datasheet's record."""

    theta: np.ndarray
    report: dict[str, Any]


def apply_model_prior(
    indexed: CB.Indexed,
    fit: CB.CrowdBTFit,
    model_of: Mapping[Hashable, str],
    *,
    alphas: tuple[float, ...] = MODEL_PRIOR_ALPHAS,
) -> ModelPrior:
    """The model prior on a fitted joint model, strong consensus enforced (module docstring).

    Args:
        indexed: The votes the joint model was fitted on, with their keys.
        fit: The joint model's fit (its ``eta`` weighs the votes and says who is reliable).
        model_of: Model name per candidate key (missing or empty: no model, prior centre 0).
        alphas: Deviation prior strengths to choose from.

    Returns:
        The strengths (``fit.theta`` when held-out votes reject the prior) and a JSON-ready
        report: the choice, every model's strength and how often the prior contradicted a
        strong human consensus before the constraint put it back.
    """
    c = indexed.comparisons
    index, models = model_index(indexed.candidates, model_of, c.n_candidates)
    fit_prior = fit_model_prior(c, fit, index, alphas=alphas)
    strong = strong_arcs(c, fit.eta)
    report: dict[str, Any] = {
        "used": fit_prior.used,
        "alpha": fit_prior.alpha,
        "spread": None
        if fit_prior.alpha is None
        else round(float(np.sqrt(0.5 / fit_prior.alpha)), 4),
        "held_out_log_likelihood": round(fit_prior.loo_log_likelihood, 3),
        "human_held_out_log_likelihood": round(fit_prior.human_log_likelihood, 3),
        "alphas_tried": {str(a): round(v, 3) for a, v in fit_prior.tried.items()},
        "models": len(models),
        "strengths": {
            models[i]: round(float(fit_prior.strength[i]), 4)
            for i in np.argsort(-fit_prior.strength, kind="stable")
        }
        if fit_prior.used
        else {},
        "strong_pairs": int(strong.shape[0]),
        "strong_rule": f"at least {STRONG_MIN_VOTES} annotators with eta >= {RELIABLE_ETA} "
        "voting the same way on a pair, none against",
        "strong_pairs_contradicted_by_prior": 0,
        "strong_pair_contradiction_rate": 0.0,
        "strong_pairs_overruled": 0,
        "strong_cycles_exact": True,
        "prompts_reordered": 0,
    }
    if not fit_prior.used:
        return ModelPrior(theta=fit.theta, report=report)
    sizes = np.array([len(cands) for cands in indexed.candidates], dtype=np.int64)
    constrained = constrain_to_strong_arcs(fit_prior.theta, strong, sizes)
    report.update(
        strong_pairs_contradicted_by_prior=constrained.contradicted,
        strong_pair_contradiction_rate=round(constrained.contradicted / constrained.strong, 4)
        if constrained.strong
        else 0.0,
        strong_pairs_overruled=len(constrained.overruled),
        strong_cycles_exact=constrained.exact,
        prompts_reordered=constrained.prompts_reordered,
    )
    return ModelPrior(theta=constrained.theta, report=report)
