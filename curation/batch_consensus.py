"""The denoised export's per-prompt consensus for every prompt at once, on columns.

Pure: no Django. `consensus.prompt_consensus` builds, per prompt, a dict of `PairEvidence`,
a networkx graph of the human net preferences and a ranking; the export then walks them
pair by pair (`exporting._pair_rows`) and arc by arc (`overruled.overruled_arcs`). With the
joint annotator model's strengths that is all bookkeeping (the ranking is the strengths'
order), so here it is computed for all prompts' pair votes together with numpy: evidence
counts by ``bincount`` over one pair key, each evaluator's net preference per pair summed
with its weight in the order the per-prompt path sums it (so every float is the same bit
for bit), arcs the ranking reverses by comparing positions.

A prompt is left to the per-prompt path (`prompt_consensus`, networkx, the exact feedback
arc set) when this cannot stand for it: a ranking judgment among its votes, or candidates
of equal strength (a tie group, which that path splits by a feedback arc set). The test
`tests/curation/test_batch_consensus.py` holds this module equal to the per-prompt path on
random prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from curation import consensus as C
from curation import graph as G
from curation import prior as MP
from curation.overruled import OverruledArc

# Reasons a judged pair yields no pair row, as `exporting._pair_rows` names them.
OVERRULED = "overruled by denoising (feedback arcs)"
NO_NET = "no net human preference"


class PairRow(NamedTuple):
    """One exported pair of a prompt, ``better`` over ``worse`` (what a pair row needs; a
    tuple: one per exported pair, built fast)."""

    better: int
    worse: int
    votes_for: int
    votes_against: int
    ties: int
    n_judgments: int
    agreement: float | None
    human_margin: float  # weighted human net preference of ``better`` over ``worse``
    margin: float  # the same in the consensus graph (0.0 at or below graph._EPS)
    judgment_ids: list[int]


@dataclass(frozen=True)
class BatchPrompt:
    """What the export reads from one prompt's consensus (`consensus.PromptConsensus`).

    Attributes:
        ranking: Tie groups best first; here every group holds one candidate.
        agreement / comparisons / n_votes: As in `PromptConsensus`.
        removed_arcs: Human arcs the ranking reverses, in the human graph's arc order.
        pairs: Pair rows in the order of the prompt's evidence (first judgment of each pair).
        drops: (reason, pairs) for judged pairs left out, in order of first occurrence.
        overruled: `overruled.overruled_arcs` of the prompt.
    """

    ranking: list[list[int]]
    agreement: float | None
    comparisons: int
    n_votes: int
    removed_arcs: tuple[G.Edge, ...]
    pairs: list[PairRow]
    drops: list[tuple[str, int]]
    overruled: list[OverruledArc]


def _first_order(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Group index of each key, groups numbered in order of their first occurrence."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    renumber = np.empty(len(first), dtype=np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(len(first))
    return renumber[inverse.reshape(-1)], len(first)


def batch_consensus(
    votes_by_prompt: Mapping[int, Sequence[C.Vote]],
    *,
    weights: Mapping[str, float],
    scores: Mapping[int, Mapping[int, float]],
    eta: Mapping[str, float] | None,
) -> dict[int, BatchPrompt]:
    """The denoised consensus (joint-model strengths ``scores`` per prompt) of every prompt
    this can stand for (see the module docstring); other prompts are absent.

    Equal to `consensus.prompt_consensus` with ``denoise=True``, no reward-model arcs and
    ``scores=scores.get(prompt, {})``, followed by the pair selection of
    `exporting._pair_rows` (consensus origin) and `overruled.overruled_arcs` with ``eta``.
    """
    prompts: list[int] = []
    rankings: dict[int, list[list[int]]] = {}
    position: dict[int, int] = {}
    cols_p, cols_a, cols_b, cols_s, cols_e, cols_j = [], [], [], [], [], []
    n_votes: dict[int, int] = {}
    evaluator_index: dict[str, int] = {}
    for prompt_id, votes in votes_by_prompt.items():
        if not votes or any(v.pair is None for v in votes):
            continue
        nodes = sorted({c for v in votes for c in v.pair})  # type: ignore[union-attr]
        strengths = scores.get(prompt_id, {})
        ranking = C.groups_from_scores({n: float(strengths.get(n, 0.0)) for n in nodes}, tol=1e-6)
        if len(ranking) != len(nodes):
            continue  # a tie group: the per-prompt path splits it by a feedback arc set
        prompts.append(prompt_id)
        rankings[prompt_id] = ranking
        for g, (c,) in enumerate(ranking):
            position[c] = g
        n_votes[prompt_id] = len(votes)
        for v in votes:
            a, b = v.pair  # type: ignore[misc]
            if a == b:
                continue
            cols_p.append(prompt_id)
            cols_a.append(a)
            cols_b.append(b)
            cols_s.append(1 if v.outcome == "a" else -1 if v.outcome == "b" else 0)
            cols_e.append(evaluator_index.setdefault(v.evaluator, len(evaluator_index)))
            cols_j.append(v.judgment_id)
    out: dict[int, BatchPrompt] = {}
    if not prompts:
        return out
    evaluators = list(evaluator_index)
    if not cols_p:
        for p in prompts:
            out[p] = BatchPrompt(rankings[p], None, 0, n_votes[p], (), [], [], [])
        return out

    a = np.asarray(cols_a, dtype=np.int64)
    b = np.asarray(cols_b, dtype=np.int64)
    slot = np.asarray(cols_s, dtype=np.int64)  # +1: slot a won, -1: slot b won, 0: a tie
    e = np.asarray(cols_e, dtype=np.int64)
    x, y = np.minimum(a, b), np.maximum(a, b)
    # +1: x (the smaller id) won, -1: y won, 0: tie; as `_pair_evidence` counts them.
    s = np.where(a == x, slot, -slot)
    xi = np.unique(x, return_inverse=True)[1].reshape(-1)
    yi = np.unique(y, return_inverse=True)[1].reshape(-1)
    # A candidate belongs to one prompt, so (x, y) names the prompt's pair; ids in order of
    # first judgment, as the per-prompt evidence dict holds them.
    pair, n_pairs = _first_order(xi * (int(yi.max()) + 1) + yi)
    first_vote = np.full(n_pairs, len(pair), dtype=np.int64)
    np.minimum.at(first_vote, pair, np.arange(len(pair)))
    px, py = x[first_vote], y[first_vote]
    pair_prompt = np.asarray(cols_p, dtype=np.int64)[first_vote]
    x_over_y = np.bincount(pair, weights=s == 1, minlength=n_pairs).astype(np.int64)
    y_over_x = np.bincount(pair, weights=s == -1, minlength=n_pairs).astype(np.int64)
    ties = np.bincount(pair, weights=s == 0, minlength=n_pairs).astype(np.int64)

    # Each evaluator's net preference per pair, then summed with its weight in the order
    # `_pair_evidence` sums them (first judgment of each evaluator-pair): the same floats.
    group, n_groups = _first_order(pair * len(evaluators) + e)
    group_net = np.bincount(group, weights=s, minlength=n_groups)
    group_first = np.full(n_groups, len(group), dtype=np.int64)
    np.minimum.at(group_first, group, np.arange(len(group)))
    group_pair = pair[group_first]
    w = np.array([float(weights.get(ev, 1.0)) for ev in evaluators])[e[group_first]]
    net = np.bincount(group_pair, weights=w * group_net, minlength=n_pairs)

    # Distinct evaluators saying x over y / y over x (for the overruled arcs).
    said = {}
    for sign in (1, -1):
        mask = s == sign
        keys = np.unique(pair[mask] * len(evaluators) + e[mask])
        said[sign] = (keys // len(evaluators), keys % len(evaluators))

    # Per pair: the ranking's positions, the human arc, the decision.
    pos_x = np.array([position[c] for c in px.tolist()], dtype=np.int64)
    pos_y = np.array([position[c] for c in py.tolist()], dtype=np.int64)
    x_better = pos_x < pos_y
    net_better = np.where(x_better, net, -net)
    strict = (x_over_y + y_over_x) > 0
    arc = np.abs(net) > G._EPS  # the arcs `graph.net_graph` keeps
    reversed_arc = arc & ((net > 0) != x_better)

    # Judgments per pair, in judgment order (every vote on the pair, ties too).
    by_pair = np.argsort(pair, kind="stable")
    bounds = np.searchsorted(pair[by_pair], np.arange(n_pairs + 1))
    jids = np.asarray(cols_j, dtype=np.int64)[by_pair].tolist()

    reliable = None
    if eta is not None:
        reliable = np.array([eta.get(ev, 0.0) >= MP.RELIABLE_ETA for ev in evaluators])
    pro_count = {
        sign: np.bincount(said[sign][0], minlength=n_pairs) for sign in (1, -1)
    }  # evaluators saying x over y (1) / y over x (-1)
    rel_count = (
        {
            sign: np.bincount(said[sign][0], weights=reliable[said[sign][1]], minlength=n_pairs)
            .round()
            .astype(np.int64)
            for sign in (1, -1)
        }
        if reliable is not None
        else None
    )

    # Agreement: per pair, and per prompt over its pairs of two or more judgments.
    n = x_over_y + y_over_x + ties
    k = x_over_y * (x_over_y - 1) + y_over_x * (y_over_x - 1) + ties * (ties - 1)
    overlapping = n >= 2
    prompt_bounds = np.flatnonzero(np.diff(pair_prompt)) + 1
    starts = np.concatenate(([0], prompt_bounds))
    prompt_of_pair = np.cumsum(np.isin(np.arange(n_pairs), prompt_bounds))
    same = np.bincount(prompt_of_pair, weights=np.where(overlapping, k // 2, 0)).astype(np.int64)
    total = np.bincount(prompt_of_pair, weights=np.where(overlapping, n * (n - 1) // 2, 0))
    total = total.astype(np.int64)
    # What becomes of each pair: 0 nothing (ties only), 1 overruled, 2 no net, 3 a row.
    fate = np.where(~strict, 0, np.where(net_better < 0, 1, np.where(net_better == 0, 2, 3)))
    visit = np.flatnonzero((fate > 0) | reversed_arc)
    visit_bounds = np.searchsorted(visit, np.append(starts, n_pairs)).tolist()
    L = {
        name: arr.tolist()
        for name, arr in (
            ("px", px),
            ("py", py),
            ("xo", x_over_y),
            ("yo", y_over_x),
            ("ti", ties),
            ("n", n),
            ("k", k),
            ("net", net),
            ("nb", net_better),
            ("xb", x_better),
            ("fate", fate),
            ("arc", arc),
            ("rev", reversed_arc),
            ("pro1", pro_count[1]),
            ("pro-1", pro_count[-1]),
        )
    }
    rel = {sign: rel_count[sign].tolist() for sign in (1, -1)} if rel_count else None
    visit_list = visit.tolist()
    same_list, total_list = same.tolist(), total.tolist()
    with_pairs = {
        p: g for g, p in enumerate(pair_prompt[starts].tolist())
    }  # prompt id -> its index among prompts with pairs
    for prompt_id in prompts:
        g = with_pairs.get(prompt_id)
        rows: list[PairRow] = []
        drops: dict[str, int] = {}
        reversed_arcs: list[tuple[int, int, int, float]] = []  # (u, pair index, v, weight)
        overruled: list[OverruledArc] = []
        if g is None:
            out[prompt_id] = BatchPrompt(
                rankings[prompt_id], None, 0, n_votes[prompt_id], (), [], [], []
            )
            continue
        for i in visit_list[visit_bounds[g] : visit_bounds[g + 1]]:
            cx, cy = L["px"][i], L["py"][i]
            if L["rev"][i]:
                u, v = (cx, cy) if L["net"][i] > 0 else (cy, cx)
                weight = abs(L["net"][i])
                reversed_arcs.append((u, i, v, weight))
                u_sign = 1 if u == cx else -1
                if rel is not None:
                    rel_pro, rel_con = rel[u_sign][i], rel[-u_sign][i]
                    strong = rel_pro >= MP.STRONG_MIN_VOTES and rel_con == 0
                else:
                    rel_pro = rel_con = None
                    strong = False
                overruled.append(
                    OverruledArc(
                        prompt_id=prompt_id,
                        preferred=u,
                        over=v,
                        net_weight=weight,
                        evaluators_for=L["pro1" if u_sign == 1 else "pro-1"][i],
                        evaluators_against=L["pro-1" if u_sign == 1 else "pro1"][i],
                        reliable_for=rel_pro,
                        reliable_against=rel_con,
                        strong=strong,
                    )
                )
            fate_i = L["fate"][i]
            if fate_i == 1:
                drops[OVERRULED] = drops.get(OVERRULED, 0) + 1
            elif fate_i == 2:
                drops[NO_NET] = drops.get(NO_NET, 0) + 1
            elif fate_i == 3:
                xo, yo, ni, nb = L["xo"][i], L["yo"][i], L["n"][i], L["nb"][i]
                x_better = L["xb"][i]
                rows.append(
                    PairRow(
                        cx if x_better else cy,
                        cy if x_better else cx,
                        xo if x_better else yo,
                        yo if x_better else xo,
                        L["ti"][i],
                        ni,
                        L["k"][i] / (ni * (ni - 1)) if ni >= 2 else None,
                        nb,
                        nb if L["arc"][i] else 0.0,
                        jids[bounds[i] : bounds[i + 1]],
                    )
                )
        # networkx lists arcs by tail in node order (sorted ids), then in insertion order.
        reversed_arcs.sort()
        out[prompt_id] = BatchPrompt(
            ranking=rankings[prompt_id],
            agreement=same_list[g] / total_list[g] if total_list[g] else None,
            comparisons=total_list[g],
            n_votes=n_votes[prompt_id],
            removed_arcs=tuple((u, v, w) for u, _, v, w in reversed_arcs),
            pairs=rows,
            drops=list(drops.items()),
            overruled=sorted(
                overruled, key=lambda r: (not r.strong, -r.net_weight, r.preferred, r.over)
            ),
        )
    return out
