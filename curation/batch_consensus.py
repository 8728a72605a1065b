"""The denoised export's per-prompt consensus for every prompt at once, on columns.

Pure: no Django. `consensus.prompt_consensus` builds, per prompt, a dict of `PairEvidence`,
a networkx graph of the human net preferences and a ranking; the export then walks them
pair by pair (`exporting._pair_rows`) and arc by arc (`overruled.overruled_arcs`). With the
joint annotator model's strengths that is all bookkeeping (the ranking is the strengths'
order), so here it is computed for all prompts' pair votes together with numpy: evidence
counts by ``bincount`` over one pair key, each evaluator's net preference per pair summed
with its weight in the order the per-prompt path sums it (so every float is the same bit
for bit), arcs the ranking reverses by comparing positions.

A ranking judgment counts as the pairs it orders (ties as tied pairs), as `_pair_evidence`
reads it. A prompt is left to the per-prompt path (`prompt_consensus`, networkx, the exact
feedback arc set) when this cannot stand for it: candidates of equal strength joined by an
arc (a tie group that path splits by a feedback arc set; a tie group without one stays a
group here as there), or a ranking naming a candidate twice. The test
`tests/curation/test_batch_consensus.py` holds this module equal to the per-prompt path on
random prompts.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import NamedTuple

import numpy as np

from curation import consensus as C
from curation import graph as G
from curation import prior as MP
from curation.overruled import OverruledArc

# Above this many adjacency cells (prompts x N x N) the cycle check stays per prompt.
MAX_CYCLE_CELLS = 50_000_000

# A pair judgment's outcome as the sign of slot a's win (a tie or both bad: 0).
_SIGN = {"a": 1, "b": -1}

# Reasons a judged pair yields no pair row, as `exporting._pair_rows` names them.
OVERRULED = "overruled by denoising (feedback arcs)"
NO_NET = "no net human preference"
TIED = "tied in the final ranking"


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
class PairColumns:
    """The exported pairs of every batched prompt, one row per pair, as columns (what
    `PairRow` holds, in the same order: prompt by prompt, each prompt's pairs in the order
    of its evidence). ``agreement`` is NaN where ``n_judgments`` < 2 (None in a `PairRow`);
    the judgment ids of row ``r`` are ``judgment_ids[jid_offsets[r]:jid_offsets[r + 1]]``."""

    better: np.ndarray
    worse: np.ndarray
    votes_for: np.ndarray
    votes_against: np.ndarray
    ties: np.ndarray
    n_judgments: np.ndarray
    agreement: np.ndarray
    human_margin: np.ndarray
    margin: np.ndarray
    jid_offsets: np.ndarray
    judgment_ids: np.ndarray

    @classmethod
    def empty(cls) -> PairColumns:
        none = np.zeros(0, dtype=np.int64)
        return cls(*(none,) * 6, *(np.zeros(0),) * 3, np.zeros(1, dtype=np.int64), none)

    def rows(self, lo: int, hi: int) -> list[PairRow]:
        """Rows ``lo:hi`` as `PairRow`s."""
        ids = self.judgment_ids.tolist()
        offsets = self.jid_offsets.tolist()
        return [
            PairRow(
                *row[:6],
                None if row[6] != row[6] else row[6],
                row[7],
                row[8],
                ids[offsets[r] : offsets[r + 1]],
            )
            for r, row in zip(
                range(lo, hi),
                zip(
                    *(
                        column[lo:hi].tolist()
                        for column in (
                            self.better,
                            self.worse,
                            self.votes_for,
                            self.votes_against,
                            self.ties,
                            self.n_judgments,
                            self.agreement,
                            self.human_margin,
                            self.margin,
                        )
                    ),
                    strict=True,
                ),
                strict=True,
            )
        ]


@dataclass(frozen=True)
class BatchPrompt:
    """What the export reads from one prompt's consensus (`consensus.PromptConsensus`).

    Attributes:
        ranking: Tie groups best first (a group of equal strengths no arc joins).
        agreement / comparisons / n_votes: As in `PromptConsensus`.
        removed_arcs: Human arcs the ranking reverses, in the human graph's arc order.
        columns / span: The prompt's pair rows are ``columns``' rows ``span[0]:span[1]``
            (`pairs` as `PairRow`s), in the order of the prompt's evidence (first judgment
            of each pair); shared by every prompt of one `batch_consensus` call.
        drops: (reason, pairs) for judged pairs left out, in order of first occurrence.
        overruled: `overruled.overruled_arcs` of the prompt.
    """

    ranking: list[list[int]]
    agreement: float | None
    comparisons: int
    n_votes: int
    removed_arcs: tuple[G.Edge, ...]
    columns: PairColumns
    span: tuple[int, int]
    drops: list[tuple[str, int]]
    overruled: list[OverruledArc]

    @property
    def pairs(self) -> list[PairRow]:
        """The prompt's pair rows."""
        return self.columns.rows(*self.span)


def _first_order(keys: np.ndarray) -> tuple[np.ndarray, int]:
    """Group index of each key, groups numbered in order of their first occurrence."""
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    renumber = np.empty(len(first), dtype=np.int64)
    renumber[np.argsort(first, kind="stable")] = np.arange(len(first))
    return renumber[inverse.reshape(-1)], len(first)


@dataclass(frozen=True)
class _Columns:
    """Pair judgments of some prompts as columns, and each judged pair's evidence.

    Per judgment (not naming one candidate twice): ``s`` +1 when the smaller candidate id
    won, -1 when the larger did, 0 for a tie; ``e`` the evaluator's index; ``pair`` the
    pair's index. Pairs are numbered in order of their first judgment, so a prompt's pairs
    are contiguous and in the order of its `consensus._pair_evidence` dict; per pair the
    counts, the weighted net preference of ``px`` (the smaller id) over ``py`` and the gross
    weight, summed in the order `_pair_evidence` sums them (the same floats).
    """

    evaluators: list[str]
    s: np.ndarray
    e: np.ndarray
    pair: np.ndarray
    judgment_ids: np.ndarray
    n_pairs: int
    px: np.ndarray
    py: np.ndarray
    pair_prompt: np.ndarray
    x_over_y: np.ndarray
    y_over_x: np.ndarray
    ties: np.ndarray
    net: np.ndarray
    gross: np.ndarray

    @classmethod
    def of(
        cls, prompts: Sequence[tuple[int, Sequence[C.Vote]]], weights: Mapping[str, float]
    ) -> _Columns | None:
        """The columns of ``(prompt id, its votes)``; None without a judged pair. Built for
        all judgments at once (a ranking's pairs by size class, on arrays); a ranking must not
        name a candidate twice (callers leave such prompts to the per-prompt path)."""
        votes = [v for _, prompt_votes in prompts for v in prompt_votes]
        if not votes:
            return None
        vote_prompt = np.repeat(
            np.array([p for p, _ in prompts], dtype=np.int64),
            [len(prompt_votes) for _, prompt_votes in prompts],
        )
        # One pass over the judgments: evaluator and id of each, a pair's slots and outcome,
        # a ranking as it is (expanded below on arrays).
        evaluator_index: dict[str, int] = {}
        index_of = evaluator_index.setdefault
        cols_e: list[int] = []
        cols_j: list[int] = []
        pair_flags: list[bool] = []
        pa_list: list[int] = []
        pb_list: list[int] = []
        sign_list: list[int] = []
        rankings = []
        sign_of = _SIGN.get
        for v in votes:
            cols_e.append(index_of(v.evaluator, len(evaluator_index)))
            cols_j.append(v.judgment_id)
            pair = v.pair
            if pair is None:
                pair_flags.append(False)
                rankings.append(v.ranking)
                continue
            pair_flags.append(True)
            pa_list.append(pair[0])
            pb_list.append(pair[1])
            sign_list.append(sign_of(v.outcome, 0))
        vote_e = np.array(cols_e, dtype=np.int64)
        vote_j = np.array(cols_j, dtype=np.int64)
        is_pair = np.array(pair_flags, dtype=bool)
        # Pair judgments: one row each (none for a self-pair).
        pair_votes = np.flatnonzero(is_pair)
        pa = np.array(pa_list, dtype=np.int64)
        pb = np.array(pb_list, dtype=np.int64)
        pair_sign = np.array(sign_list, dtype=np.int64)
        # Ranking judgments, flattened: each member's candidate and tie group's position.
        rank_votes = np.flatnonzero(~is_pair)
        group_sizes = np.array([len(g) for r in rankings for g in r], dtype=np.int64)
        n_groups = np.array([len(r) for r in rankings], dtype=np.int64)
        members = np.array(list(chain.from_iterable(chain.from_iterable(rankings))), dtype=np.int64)
        group_rank = np.repeat(np.arange(len(rankings)), n_groups)
        group_pos = np.arange(len(group_sizes)) - np.repeat(
            np.cumsum(n_groups) - n_groups, n_groups
        )
        sizes = np.bincount(group_rank, weights=group_sizes, minlength=len(rankings)).astype(
            np.int64
        )
        member_rank = np.repeat(np.arange(len(rankings)), sizes)
        member_pos = np.repeat(group_pos, group_sizes)
        by_id = np.lexsort((members, member_rank))  # each ranking's members by id
        members, member_pos = members[by_id], member_pos[by_id]
        member_start = np.cumsum(sizes) - sizes
        # Rows per judgment, in judgment order: a ranking's pairs (smaller id first) in the
        # order `consensus._pair_evidence` takes them (row-major over its sorted members).
        count = np.zeros(len(votes), dtype=np.int64)
        count[pair_votes] = pa != pb
        count[rank_votes] = sizes * (sizes - 1) // 2
        offsets = np.cumsum(count) - count
        n_rows = int(count.sum())
        if n_rows == 0:
            return None
        a = np.empty(n_rows, dtype=np.int64)
        b = np.empty(n_rows, dtype=np.int64)
        slot = np.empty(n_rows, dtype=np.int64)  # +1: slot a won, -1: slot b won, 0: a tie
        valid = pa != pb
        at = offsets[pair_votes[valid]]
        a[at], b[at], slot[at] = pa[valid], pb[valid], pair_sign[valid]
        for m in np.unique(sizes[sizes >= 2]).tolist():
            chosen_rankings = np.flatnonzero(sizes == m)
            cells = member_start[chosen_rankings][:, None] + np.arange(m)
            ids, pos = members[cells], member_pos[cells]
            i, j = np.triu_indices(m, 1)
            at = offsets[rank_votes[chosen_rankings]][:, None] + np.arange(len(i))
            a[at], b[at] = ids[:, i], ids[:, j]
            # +1 where the smaller id ranks higher, 0 where tied.
            slot[at] = np.sign(pos[:, j] - pos[:, i])
        row_vote = np.repeat(np.arange(len(votes)), count)
        e = vote_e[row_vote]
        cols_j = vote_j[row_vote]
        cols_p = vote_prompt[row_vote]
        evaluators = list(evaluator_index)
        x, y = np.minimum(a, b), np.maximum(a, b)
        s = np.where(a == x, slot, -slot)
        xi = np.unique(x, return_inverse=True)[1].reshape(-1)
        yi = np.unique(y, return_inverse=True)[1].reshape(-1)
        # A candidate belongs to one prompt, so (x, y) names the prompt's pair.
        pair, n_pairs = _first_order(xi * (int(yi.max()) + 1) + yi)
        first_vote = np.full(n_pairs, len(pair), dtype=np.int64)
        np.minimum.at(first_vote, pair, np.arange(len(pair)))
        # Each evaluator's net preference per pair, then summed with its weight in the order
        # `_pair_evidence` sums them (first judgment of each evaluator-pair).
        group, n_groups = _first_order(pair * len(evaluators) + e)
        group_net = np.bincount(group, weights=s, minlength=n_groups)
        group_first = np.full(n_groups, len(group), dtype=np.int64)
        np.minimum.at(group_first, group, np.arange(len(group)))
        group_pair = pair[group_first]
        w = np.array([float(weights.get(ev, 1.0)) for ev in evaluators])[e[group_first]]
        return cls(
            evaluators=evaluators,
            s=s,
            e=e,
            pair=pair,
            judgment_ids=cols_j,
            n_pairs=n_pairs,
            px=x[first_vote],
            py=y[first_vote],
            pair_prompt=cols_p[first_vote],
            x_over_y=np.bincount(pair, weights=s == 1, minlength=n_pairs).astype(np.int64),
            y_over_x=np.bincount(pair, weights=s == -1, minlength=n_pairs).astype(np.int64),
            ties=np.bincount(pair, weights=s == 0, minlength=n_pairs).astype(np.int64),
            net=np.bincount(group_pair, weights=w * group_net, minlength=n_pairs),
            gross=np.bincount(group_pair, weights=w * np.abs(group_net), minlength=n_pairs),
        )


_pair_of = operator.attrgetter("pair")


def _strength_groups(nodes: Sequence[int], strengths: Mapping[int, float]) -> list[list[int]]:
    """``consensus.groups_from_scores({n: float(strengths.get(n, 0.0)) for n in nodes},
    tol=1e-6)``: nodes by strength, best first, a new group where the strength moves by more
    than the tolerance from the previous node's, ids ascending inside a group (strengths
    equal within roundoff do not order a group). The same sort keys compared in the same
    order, without a key function per node."""
    get = strengths.get
    groups: list[list[int]] = []
    last: float | None = None
    isclose = math.isclose
    for negative, node in sorted([(-float(get(n, 0.0)), n) for n in nodes]):
        score = -negative
        if last is not None and isclose(score, last, abs_tol=1e-6):
            groups[-1].append(node)
        else:
            groups.append([node])
        last = score
    for group in groups:
        if len(group) > 1:
            group.sort()
    return groups


def _strength_rankings(
    nodes: Sequence[Sequence[int]], strengths: Sequence[Mapping[int, float]]
) -> tuple[list[list[list[int]]], np.ndarray, np.ndarray]:
    """`_strength_groups` of every prompt's ``nodes`` (distinct candidate ids, any order) and
    ``strengths`` at once, on arrays: the rankings; every node's candidate id, ascending, and
    its tie group's position in its prompt's ranking. The same sort (strength descending,
    then id, as float and int compare) and the same tolerance (``math.isclose(score, last,
    abs_tol=1e-6)`` of each node's strength and the previous one's, term for term); with a
    strength that is not finite, `_strength_groups` per prompt."""
    sizes = np.fromiter(map(len, nodes), np.int64, len(nodes))
    node_c = np.fromiter(chain.from_iterable(nodes), np.int64, int(sizes.sum()))
    node_p = np.repeat(np.arange(len(nodes), dtype=np.int64), sizes)
    values: list[float] = []
    for prompt_nodes, prompt_strengths in zip(nodes, strengths, strict=True):
        get = prompt_strengths.get
        values.extend([float(get(n, 0.0)) for n in prompt_nodes])
    score = np.array(values, dtype=np.float64)
    if not np.isfinite(score).all():
        rankings = [_strength_groups(n, s) for n, s in zip(nodes, strengths, strict=True)]
        n = len(node_c)
        ids = np.fromiter((c for r in rankings for group in r for c in group), np.int64, n)
        at = np.fromiter(
            (g for r in rankings for g, group in enumerate(r) for _ in group), np.int64, n
        )
        by_id = np.argsort(ids, kind="stable")
        return rankings, ids[by_id], at[by_id]
    order = np.lexsort((node_c, -score, node_p))
    p, c, now = node_p[order], node_c[order], score[order]
    new = np.ones(len(order), dtype=bool)
    if len(order) > 1:
        last, cur = now[:-1], now[1:]
        diff = np.abs(last - cur)
        close = (cur == last) | (diff <= np.abs(1e-9 * last)) | (diff <= np.abs(1e-9 * cur))
        new[1:] = (p[1:] != p[:-1]) | ~(close | (diff <= 1e-6))
    group = np.cumsum(new) - 1
    # Ids ascending inside a group, groups in strength order.
    inside = np.lexsort((c, group))
    p, c, group = p[inside], c[inside], group[inside]
    # Prompts stay in order (the first sort key): a node's position is its group's number
    # less that of its prompt's first node.
    position = group - group[np.searchsorted(p, p)]
    starts = np.ones(len(group), dtype=bool)
    starts[1:] = group[1:] != group[:-1]
    rankings: list[list[list[int]]] = [[] for _ in nodes]
    current: list[int] = []
    for prompt, candidate, is_new in zip(p.tolist(), c.tolist(), starts.tolist(), strict=True):
        if is_new:
            current = []
            rankings[prompt].append(current)
        current.append(candidate)
    by_id = np.argsort(c, kind="stable")
    return rankings, c[by_id], position[by_id]


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
    prompt_nodes: list[set[int]] = []
    n_votes: dict[int, int] = {}
    kept: list[tuple[int, Sequence[C.Vote]]] = []
    for prompt_id, votes in votes_by_prompt.items():
        if not votes:
            continue
        pairs = list(map(_pair_of, votes))
        if None in pairs:
            if any(v.pair is None and len(set(v.candidates)) != len(v.candidates) for v in votes):
                continue  # a ranking naming a candidate twice: the per-prompt path's reading
            nodes = {c for v in votes for c in v.candidates}
        else:  # pair judgments only: their candidates are their pairs
            nodes = set(chain.from_iterable(pairs))
        prompts.append(prompt_id)
        prompt_nodes.append(nodes)
        n_votes[prompt_id] = len(votes)
        kept.append((prompt_id, votes))
    empty: Mapping[int, float] = {}
    ranked, node_ids, node_position = _strength_rankings(
        prompt_nodes, [scores.get(p, empty) for p in prompts]
    )
    rankings = dict(zip(prompts, ranked, strict=True))

    def position(candidates: np.ndarray) -> np.ndarray:
        # A candidate's tie group's position (candidates are one prompt's each).
        return node_position[np.searchsorted(node_ids, candidates)]

    cols = _Columns.of(kept, weights)
    if cols is None:
        return _without_pairs(prompts, rankings, n_votes)
    pos_x, pos_y = position(cols.px), position(cols.py)
    # A tie group of equal strengths stays one group where no arc joins two of its members;
    # one with an arc inside (a balanced cycle) is split by a feedback arc set
    # (`consensus._break_ties`): such prompts go to the per-prompt path.
    split = np.abs(cols.net) > G._EPS
    split &= pos_x == pos_y
    if split.any():
        cyclic = set(cols.pair_prompt[split].tolist())
        prompts = [p for p in prompts if p not in cyclic]
        kept = [(p, votes) for p, votes in kept if p not in cyclic]
        cols = _Columns.of(kept, weights)
        if cols is None:
            return _without_pairs(prompts, rankings, n_votes)
        pos_x, pos_y = position(cols.px), position(cols.py)
    return _assemble(cols, prompts, rankings, n_votes, pos_x < pos_y, eta, tied=pos_x == pos_y)


def batch_majority(
    votes_by_prompt: Mapping[int, Sequence[C.Vote]],
    *,
    weights: Mapping[str, float],
    rm_scores: Mapping[int, float] | None = None,
    rm_weight: float = 0.0,
) -> dict[int, BatchPrompt]:
    """The majority-vote consensus (denoising off) of every prompt this can stand for.

    Equal to `consensus.prompt_consensus` with ``denoise=False`` (the ensemble ranked by
    Copeland score: arcs won minus arcs lost, equal scores one tie group, ids ascending
    inside it), followed by the pair selection of `exporting._pair_rows` (consensus origin:
    every pair with a net human preference, the net winner first, cycles and all); no arc is
    removed or overruled. Left to the per-prompt path: a ranking naming a candidate twice,
    and, with ``rm_weight`` > 0, a prompt with two or more candidates the reward model
    scored (its ranking joins the ensemble there).
    """
    prompts: list[int] = []
    n_votes: dict[int, int] = {}
    kept: list[tuple[int, Sequence[C.Vote]]] = []
    node_prompt: list[int] = []  # per node (a prompt's judged candidate): the prompt's index
    node_id: list[int] = []
    for prompt_id, votes in votes_by_prompt.items():
        if not votes:
            continue
        # Its judged candidates (`Vote.candidates` of every vote), and whether a ranking
        # names one twice (the per-prompt path's reading then).
        judged: set[int] = set()
        twice = False
        for v in votes:
            if v.pair is not None:
                judged.update(v.pair)
                continue
            named = list(chain.from_iterable(v.ranking))
            if len(set(named)) != len(named):
                twice = True
                break
            judged.update(named)
        if twice:
            continue
        nodes = sorted(judged)
        if rm_weight > 0 and rm_scores and sum(rm_scores.get(c) is not None for c in nodes) >= 2:
            continue  # the reward model's ranking joins the ensemble
        node_prompt.extend([len(prompts)] * len(nodes))
        node_id.extend(nodes)
        prompts.append(prompt_id)
        n_votes[prompt_id] = len(votes)
        kept.append((prompt_id, votes))
    cols = _Columns.of(kept, weights)
    nodes_p = np.asarray(node_prompt, dtype=np.int64)
    nodes_c = np.asarray(node_id, dtype=np.int64)
    copeland = np.zeros(len(nodes_c), dtype=np.int64)
    if cols is not None:
        # Copeland score: +1 per arc of the human graph won, -1 per arc lost (the arcs
        # `graph.net_graph` keeps, pointing from the net winner).
        arc = np.abs(cols.net) > G._EPS
        index_of = {p: i for i, p in enumerate(prompts)}
        pair_p = np.array([index_of[p] for p in cols.pair_prompt.tolist()], dtype=np.int64)
        winner = np.where(cols.net > 0, cols.px, cols.py)[arc]
        loser = np.where(cols.net > 0, cols.py, cols.px)[arc]
        # Nodes are in (prompt index, id) order: each end's node by a search on one key.
        span = int(nodes_c.max()) + 1
        node_key = nodes_p * span + nodes_c
        for end, sign in ((winner, 1), (loser, -1)):
            at = np.searchsorted(node_key, pair_p[arc] * span + end)
            copeland += sign * np.bincount(at, minlength=len(nodes_c))
    # `consensus.groups_from_scores`: best score first, ids ascending among equals, a new
    # group where the score changes (integers: equal or at least 1 apart).
    order = np.lexsort((nodes_c, -copeland, nodes_p))
    sorted_p, sorted_c, sorted_s = nodes_p[order], nodes_c[order], copeland[order]
    new_group = np.ones(len(order), dtype=bool)
    new_group[1:] = (sorted_p[1:] != sorted_p[:-1]) | (sorted_s[1:] != sorted_s[:-1])
    rankings: dict[int, list[list[int]]] = {p: [] for p in prompts}
    current: list[int] = []
    for p, c, new in zip(sorted_p.tolist(), sorted_c.tolist(), new_group.tolist(), strict=True):
        if new:
            current = []
            rankings[prompts[p]].append(current)
        current.append(c)
    if cols is None:
        return _without_pairs(prompts, rankings, n_votes)
    # The rows' orientation is the net winner's: nothing is reversed, overruled or removed.
    return _assemble(cols, prompts, rankings, n_votes, cols.net > 0, None)


def _without_pairs(
    prompts: Sequence[int], rankings: Mapping[int, list[list[int]]], n_votes: Mapping[int, int]
) -> dict[int, BatchPrompt]:
    """`BatchPrompt`s of prompts none of whose judgments names two different candidates."""
    empty = PairColumns.empty()
    return {
        p: BatchPrompt(rankings[p], None, 0, n_votes[p], (), empty, (0, 0), [], []) for p in prompts
    }


def _assemble(
    cols: _Columns,
    prompts: Sequence[int],
    rankings: Mapping[int, list[list[int]]],
    n_votes: Mapping[int, int],
    x_better: np.ndarray,
    eta: Mapping[str, float] | None,
    *,
    tied: np.ndarray | None = None,
) -> dict[int, BatchPrompt]:
    """The `BatchPrompt`s of ``prompts`` from their judged pairs ``cols``, given per pair
    whether the consensus ranks its smaller id (``px``) above the larger (``x_better``)
    and whether it ranks the two in one tie group (``tied``: no row, the pair is dropped
    as `TIED`; no arc may join them)."""
    out: dict[int, BatchPrompt] = {}
    evaluators, s, e, pair, n_pairs = cols.evaluators, cols.s, cols.e, cols.pair, cols.n_pairs
    px, py, pair_prompt, net = cols.px, cols.py, cols.pair_prompt, cols.net
    x_over_y, y_over_x, ties = cols.x_over_y, cols.y_over_x, cols.ties

    # Distinct evaluators saying x over y / y over x (for the overruled arcs).
    said = {}
    for sign in (1, -1):
        mask = s == sign
        keys = np.unique(pair[mask] * len(evaluators) + e[mask])
        said[sign] = (keys // len(evaluators), keys % len(evaluators))

    # Per pair: the human arc, the decision.
    net_better = np.where(x_better, net, -net)
    strict = (x_over_y + y_over_x) > 0
    arc = np.abs(net) > G._EPS  # the arcs `graph.net_graph` keeps
    reversed_arc = arc & ((net > 0) != x_better)

    # Judgments per pair, in judgment order (every vote on the pair, ties too).
    by_pair = np.argsort(pair, kind="stable")
    bounds = np.searchsorted(pair[by_pair], np.arange(n_pairs + 1))

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
    if tied is not None:
        # `exporting._pair_rows` asks first whether the two share a group.
        fate = np.where(strict & tied, 4, fate)
    # The rows (fate 3) of every prompt as columns, prompt by prompt in pair order.
    row_pairs = np.flatnonzero(fate == 3)
    xb, nr = x_better[row_pairs], n[row_pairs]
    lengths = (bounds[1:] - bounds[:-1])[row_pairs]
    jid_offsets = np.concatenate(([0], np.cumsum(lengths))).astype(np.int64)
    gather = np.repeat(bounds[row_pairs] - jid_offsets[:-1], lengths) + np.arange(jid_offsets[-1])
    with np.errstate(divide="ignore", invalid="ignore"):
        # k / (n (n - 1)) as Python divides the two ints (both exact as doubles).
        row_agreement = np.where(nr >= 2, k[row_pairs] / (nr * (nr - 1)), np.nan)
    nb_rows = net_better[row_pairs]
    columns = PairColumns(
        better=np.where(xb, px[row_pairs], py[row_pairs]),
        worse=np.where(xb, py[row_pairs], px[row_pairs]),
        votes_for=np.where(xb, x_over_y[row_pairs], y_over_x[row_pairs]),
        votes_against=np.where(xb, y_over_x[row_pairs], x_over_y[row_pairs]),
        ties=ties[row_pairs],
        n_judgments=nr,
        agreement=row_agreement,
        human_margin=nb_rows,
        margin=np.where(arc[row_pairs], nb_rows, 0.0),
        jid_offsets=jid_offsets,
        judgment_ids=cols.judgment_ids[by_pair][gather],
    )
    row_bounds = np.searchsorted(row_pairs, np.append(starts, n_pairs)).tolist()
    # The loop below visits only pairs that give a drop or an overruled arc.
    visit = np.flatnonzero(((fate == 1) | (fate == 2) | (fate == 4)) | reversed_arc)
    visit_bounds = np.searchsorted(visit, np.append(starts, n_pairs)).tolist()
    L = {
        name: arr.tolist()
        for name, arr in (
            ("px", px),
            ("py", py),
            ("net", net),
            ("fate", fate),
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
        drops: dict[str, int] = {}
        reversed_arcs: list[tuple[int, int, int, float]] = []  # (u, pair index, v, weight)
        overruled: list[OverruledArc] = []
        if g is None:
            out[prompt_id] = BatchPrompt(
                rankings[prompt_id], None, 0, n_votes[prompt_id], (), columns, (0, 0), [], []
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
            elif fate_i == 4:
                drops[TIED] = drops.get(TIED, 0) + 1
        # networkx lists arcs by tail in node order (sorted ids), then in insertion order.
        reversed_arcs.sort()
        out[prompt_id] = BatchPrompt(
            ranking=rankings[prompt_id],
            agreement=same_list[g] / total_list[g] if total_list[g] else None,
            comparisons=total_list[g],
            n_votes=n_votes[prompt_id],
            removed_arcs=tuple((u, v, w) for u, _, v, w in reversed_arcs),
            columns=columns,
            span=(row_bounds[g], row_bounds[g + 1]),
            drops=list(drops.items()),
            overruled=sorted(
                overruled, key=lambda r: (not r.strong, -r.net_weight, r.preferred, r.over)
            ),
        )
    return out


def _cyclic(cols: _Columns, arc: np.ndarray, starts: np.ndarray) -> np.ndarray | None:
    """Per prompt with pairs (in ``starts`` order): whether its human graph (the pairs'
    ``arc``s, pointing to the net loser) has a directed cycle. Kahn's algorithm on
    ``[prompts, N, N]`` adjacency arrays: peel every node without an arc into it. None when
    the arrays would exceed `MAX_CYCLE_CELLS`."""
    n_groups = len(starts)
    prompt_of_pair = np.repeat(np.arange(n_groups), np.diff(np.append(starts, cols.n_pairs)))
    ends = np.concatenate((cols.px, cols.py))
    owner = np.concatenate((prompt_of_pair, prompt_of_pair))
    keys, local = np.unique(owner * (int(ends.max()) + 1) + ends, return_inverse=True)
    first_of_owner = np.searchsorted(keys // (int(ends.max()) + 1), np.arange(n_groups))
    local = local.reshape(-1) - first_of_owner[owner]
    size = int(local.max()) + 1
    if n_groups * size * size > MAX_CYCLE_CELLS:
        return None
    lx, ly = local[: cols.n_pairs], local[cols.n_pairs :]
    winner_x = cols.net > 0
    u, v = np.where(winner_x, lx, ly)[arc], np.where(winner_x, ly, lx)[arc]
    adjacency = np.zeros((n_groups, size, size), dtype=bool)
    adjacency[prompt_of_pair[arc], u, v] = True
    alive = np.zeros((n_groups, size), dtype=bool)
    alive[owner, local] = True
    for _ in range(size):
        into = (adjacency & alive[:, :, None]).any(axis=1)
        sources = alive & ~into
        if not sources.any():
            break
        alive &= ~sources
    return alive.any(axis=1)


def batch_prompt_flags(
    votes_by_prompt: Mapping[int, Sequence[C.Vote]],
    *,
    weights: Mapping[str, float],
    rm_scores: Mapping[int, float] | None = None,
    rm_label: str = "",
    thresholds: C.Thresholds = C.DEFAULT_THRESHOLDS,
) -> dict[int, tuple[list[C.FlagSpec], float | None, int]]:
    """Per prompt: `consensus.prompt_flags` of its `prompt_consensus` (``denoise=False``, no
    reward model), with that consensus' agreement and comparison count; for every prompt of
    pair judgments whose human graph has no cycle. Other prompts are absent: a cycle flag
    needs the feedback arc set search (`graph.denoise`) on the prompt's graph."""
    kept = [
        (p, votes)
        for p, votes in votes_by_prompt.items()
        if votes and all(v.pair is not None for v in votes)
    ]
    out: dict[int, tuple[list[C.FlagSpec], float | None, int]] = {}
    cols = _Columns.of(kept, weights)
    if cols is None:
        return {p: ([], None, 0) for p, _ in kept}
    n_pairs = cols.n_pairs
    xo, yo, ti = cols.x_over_y, cols.y_over_x, cols.ties
    n = xo + yo + ti
    k = xo * (xo - 1) + yo * (yo - 1) + ti * (ti - 1)
    overlapping = n >= 2
    bounds = np.flatnonzero(np.diff(cols.pair_prompt)) + 1
    starts = np.concatenate(([0], bounds))
    prompt_of_pair = np.repeat(np.arange(len(starts)), np.diff(np.append(starts, n_pairs)))
    same = np.bincount(prompt_of_pair, weights=np.where(overlapping, k // 2, 0)).astype(np.int64)
    total = np.bincount(prompt_of_pair, weights=np.where(overlapping, n * (n - 1) // 2, 0))
    total = total.astype(np.int64)
    arc = np.abs(cols.net) > G._EPS
    cyclic_array = _cyclic(cols, arc, starts)
    if cyclic_array is None:
        return out
    cyclic = cyclic_array.tolist()
    # Pairs a flag lists: disputed (agreement below 1) and, with scores, rm candidates.
    disputed = overlapping & (k < n * (n - 1))
    rm_candidate = np.zeros(n_pairs, dtype=bool)
    if rm_scores:
        rm_candidate = (cols.gross > 0) & (n >= thresholds.rm_min_judgments)
    visit = np.flatnonzero(disputed | rm_candidate)
    visit_bounds = np.searchsorted(visit, np.append(starts, n_pairs)).tolist()
    visit_list = visit.tolist()
    px, py, nl, kl = cols.px.tolist(), cols.py.tolist(), n.tolist(), k.tolist()
    net, gross = cols.net.tolist(), cols.gross.tolist()
    is_disputed, is_rm = disputed.tolist(), rm_candidate.tolist()
    same_list, total_list = same.tolist(), total.tolist()
    group_of = {p: g for g, p in enumerate(cols.pair_prompt[starts].tolist())}
    for prompt_id, votes in kept:
        g = group_of.get(prompt_id)
        if g is None:
            out[prompt_id] = ([], None, 0)  # only self-pairs: no evidence
            continue
        if cyclic[g]:
            continue
        agreement = same_list[g] / total_list[g] if total_list[g] else None
        comparisons = total_list[g]
        key = f"prompt:{prompt_id}"
        flags: list[C.FlagSpec] = []
        pairs = visit_list[visit_bounds[g] : visit_bounds[g + 1]]
        if agreement is not None and agreement < thresholds.low_agreement:
            listed = sorted(
                (
                    [px[i], py[i], round(kl[i] / (nl[i] * (nl[i] - 1)), 3)]
                    for i in pairs
                    if is_disputed[i]
                ),
                key=lambda row: row[2],
            )
            flags.append(
                C.FlagSpec(
                    kind="low_agreement",
                    key=key,
                    severity=round((1 - agreement) * comparisons / (comparisons + 1), 4),
                    evidence=len(votes),
                    prompt_id=prompt_id,
                    details={
                        "agreement": round(agreement, 4),
                        "comparisons": comparisons,
                        "disputed_pairs": listed,
                    },
                )
            )
        if rm_scores:
            conflicts = []
            for i in pairs:
                if not is_rm[i]:
                    continue
                x, y = px[i], py[i]
                if rm_scores.get(x) is None or rm_scores.get(y) is None:
                    continue
                share = net[i] / gross[i]
                diff = float(rm_scores[x]) - float(rm_scores[y])
                p_x = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, diff))))
                if share <= -thresholds.rm_human_share and p_x >= thresholds.rm_confident:
                    conflicts.append(C.ModelConflict(x, y, p_x, -share))
                elif share >= thresholds.rm_human_share and 1 - p_x >= thresholds.rm_confident:
                    conflicts.append(C.ModelConflict(y, x, 1 - p_x, share))
            conflicts.sort(key=lambda c: -(2 * c.p_model - 1) * c.human_share)
            if conflicts:
                top = conflicts[0]
                flags.append(
                    C.FlagSpec(
                        kind="rm_disagreement",
                        key=key,
                        severity=round((2 * top.p_model - 1) * top.human_share, 4),
                        evidence=len(votes),
                        prompt_id=prompt_id,
                        details={
                            "reward_model": rm_label,
                            "conflicts": [
                                {
                                    "model_prefers": c.model_prefers,
                                    "over": c.over,
                                    "p_model": round(c.p_model, 4),
                                    "human_share": round(c.human_share, 4),
                                }
                                for c in conflicts
                            ],
                        },
                    )
                )
        out[prompt_id] = (flags, agreement, comparisons)
    return out
