"""Per-prompt consensus, noise checks and flag rules: the curation maths of the Django layer.

Pure: no Django. The services load judgment rows into `Vote` records, call these functions
and store what comes back (flags, annotator quality, exports). Everything here is built on
the two pure cores, `curation.graph` (preference graphs, denoising, ranking) and
`curation.agreement` (agreement, reliability, bias, speed).

The curation unit is the *prompt*: a pairwise project judges a prompt's candidates through
many two-candidate tasks, and only their union shows cycles or a full ranking. Agreement and
reliability therefore compare relations on ``(prompt, x, y)``.

Evaluators are strings (``Judgment.evaluator``: ``"user:7"``, ``"ext:source:annotator"``); the
reward model enters as `RM_EVALUATOR` when asked to.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import operator
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from curation import agreement as A
from curation import graph as G

if TYPE_CHECKING:  # networkx and numpy load on first use: the web process rarely needs them
    from pathlib import Path

    import networkx as nx

logger = logging.getLogger(__name__)

RM_EVALUATOR = "reward-model"
# Cells of the joint model's [prompts, N, N] arrays (float64) beyond which it is not fitted:
# 40M cells are 320 MB per array; 47K prompts of 19 candidates are 17M.
JOINT_MAX_CELLS = 40_000_000
RANKING_METHOD: G.RankingMethod = "bradley_terry"
PROMPT_FLAG_KINDS = ("low_agreement", "rm_disagreement", "cycle")
EVALUATOR_FLAG_KINDS = ("unreliable_annotator", "position_bias", "too_fast")
JUDGMENT_FLAG_KINDS = ("failed_gold",)

Ranking = list[list[int]]


@dataclass(frozen=True)
class Thresholds:
    """When a check raises a flag. Defaults are documented in the README's curation section.

    Attributes:
        low_agreement: Prompt agreement (share of annotator pairs giving the same relation on
            a candidate pair) below which a prompt is flagged.
        rm_confident: Model probability ``sigmoid(s_u - s_v)`` from which the reward model
            counts as confident that u beats v (its training loss reads scores that way).
        rm_human_share: Net human share (net weight / all weight on the pair) the humans
            need against the model before a conflict counts ...
        rm_min_judgments: ... from at least this many judgments (one vote is no consensus).
        unreliable_weight: CROWDLAB weight below which an annotator is flagged ...
        unreliable_relative: ... when it is also below this share of the median weight of
            their peers (on a hard task everybody disagrees; that is not one person's fault) ...
        unreliable_eta: ... or when the joint annotator model (`curation.crowd_bt`) reads
            more than this share of their votes as noise (``eta`` below it), again relative
            to their peers' median ``eta`` ...
        min_overlap: ... once this many of their relations were compared with others (for
            ``eta``: once this many of their votes could tell a real judgment from their
            slot habit, `crowd_bt.separable_votes`).
        gold_fail: Share of a gold task's strict pairs ordered wrongly (a tie counts half)
            from which a gold judgment fails; also the annotator flag's gold-accuracy floor
            is ``1 - gold_fail``.
        bias_alpha: Holm-adjusted p-value below which an annotator's slot preference counts.
        bias_min_n: Usable judgments an annotator needs before the bias test runs.
        fast_ratio: `agreement.too_fast` ratio.
        fast_share: Share of an annotator's timed judgments that must be too fast ...
        fast_min: ... and how many at least.
    """

    low_agreement: float = 0.6
    rm_confident: float = 0.75
    rm_human_share: float = 0.5
    rm_min_judgments: int = 2
    unreliable_weight: float = 0.3
    unreliable_relative: float = 0.5
    unreliable_eta: float = 0.3
    min_overlap: int = 10
    gold_fail: float = 1 / 3
    bias_alpha: float = 0.01
    bias_min_n: int = 20
    fast_ratio: float = 0.25
    fast_share: float = 0.2
    fast_min: int = 5


DEFAULT_THRESHOLDS = Thresholds()


# --------------------------------------------------------------------------- votes


@dataclass(frozen=True)
class Vote:
    """One judgment as curation sees it.

    Attributes:
        judgment_id: Judgment id.
        task_id: Task id.
        prompt_id: Prompt id (the curation unit).
        evaluator: Stable evaluator id.
        ranking: Tie groups best first (ranking judgments); empty for pairs.
        pair: The task's two candidates in slot order (pair judgments): outcome "a" means
            ``pair[0]`` won.
        outcome: ``"a"``, ``"b"``, ``"tie"``, ``"both_bad"``; empty for rankings.
        presented_order: Candidates as displayed, slot 0 first; empty if unknown.
        duration_ms: Time taken; None if unknown.
        created_at: When it was stored.
    """

    judgment_id: int
    task_id: int
    prompt_id: int
    evaluator: str
    ranking: tuple[tuple[int, ...], ...] = ()
    pair: tuple[int, int] | None = None
    outcome: str = ""
    presented_order: tuple[int, ...] = ()
    duration_ms: int | None = None
    created_at: datetime | None = None

    @property
    def is_pair(self) -> bool:
        return self.pair is not None

    @property
    def candidates(self) -> tuple[int, ...]:
        if self.pair is not None:
            return self.pair
        return tuple(c for group in self.ranking for c in group)

    def edges(self, weight: float = 1.0) -> list[G.Edge]:
        if self.pair is not None:
            return G.edges_from_pair(self.pair[0], self.pair[1], self.outcome, weight=weight)
        return G.edges_from_ranking(self.ranking, weight=weight)

    def as_ranking(self) -> Ranking:
        """The judgment as tie groups (a pair becomes a two-candidate ranking)."""
        if self.pair is None:
            return [list(g) for g in self.ranking]
        a, b = self.pair
        return {"a": [[a], [b]], "b": [[b], [a]]}.get(self.outcome, [[a, b]])

    def record(self) -> A.RankingRecord | A.PairRecord:
        """An `agreement` record on the prompt unit; an inconsistent display order is dropped.

        Built once per vote (an export reads them twice: weights, then agreement figures).
        """
        cached = self.__dict__.get("_record")
        if cached is None:
            cached = _pair_record(self) or self._make_record()
            object.__setattr__(self, "_record", cached)  # not a field: eq and hash ignore it
        return cached

    def _make_record(self) -> A.RankingRecord | A.PairRecord:
        if self.pair is not None:
            if len(self.pair) != 2:
                raise ValueError(unpaired_message(self))
            shown = self.presented_order
            presented = shown if len(shown) == 2 and set(shown) == set(self.pair) else None
            a, b = self.pair
            if self.outcome in A.OUTCOMES and a != b:
                # What `PairRecord.__post_init__` accepts (the display order is checked
                # above), built without its per-field ``object.__setattr__``: a pass builds
                # one record per judgment. Anything else goes to the constructor and raises.
                record = _new_object(A.PairRecord)
                record.__dict__.update(
                    task=self.prompt_id,
                    annotator=self.evaluator,
                    a=a,
                    b=b,
                    outcome=self.outcome,
                    presented_order=None if presented is None else tuple(presented),
                    duration_ms=self.duration_ms,
                )
                return record
            return A.PairRecord(
                task=self.prompt_id,
                annotator=self.evaluator,
                a=self.pair[0],
                b=self.pair[1],
                outcome=self.outcome,
                presented_order=presented,  # type: ignore[arg-type]
                duration_ms=self.duration_ms,
            )
        members = self.candidates
        shown = self.presented_order
        presented = shown if len(shown) == len(members) and set(shown) == set(members) else ()
        return A.RankingRecord(
            task=self.prompt_id,
            annotator=self.evaluator,
            ranking=self.ranking,
            presented_order=presented,
            duration_ms=self.duration_ms,
        )


def loaded_vote(
    judgment_id: int,
    task_id: int,
    prompt_id: int,
    evaluator: str,
    ranking: tuple[tuple[int, ...], ...],
    pair: tuple[int, int] | None,
    outcome: str,
    presented_order: tuple[int, ...],
    duration_ms: int | None,
    created_at: datetime | None,
) -> Vote:
    """``Vote(...)`` with every field given, built without the frozen dataclass's
    ``object.__setattr__`` per field (a loader builds one per judgment; 2.5x faster): the
    same object, as frozen, equal and hashing the same."""
    vote = _new_object(Vote)
    # Field by field in field order: cheaper than ``update`` of keywords (no dict between).
    fields = vote.__dict__
    fields["judgment_id"] = judgment_id
    fields["task_id"] = task_id
    fields["prompt_id"] = prompt_id
    fields["evaluator"] = evaluator
    fields["ranking"] = ranking
    fields["pair"] = pair
    fields["outcome"] = outcome
    fields["presented_order"] = presented_order
    fields["duration_ms"] = duration_ms
    fields["created_at"] = created_at
    return vote


_new_object = object.__new__


def unpaired(vote: Vote) -> bool:
    """A pair judgment whose task does not hold two candidate slots (one was removed, or
    the task never had two): it names no pair to prefer one of, so curation skips it
    (`usable_votes`, `evaluator_quality`, `gold_flags`) and its `Vote.record` raises."""
    pair = vote.pair
    return pair is not None and len(pair) != 2


def unpaired_message(vote: Vote) -> str:
    return (
        f"judgment {vote.judgment_id}: a pair judgment needs a task with two candidate "
        f"slots; its task {vote.task_id} has {len(vote.pair or ())}"
    )


def any_unpaired(votes: Iterable[Vote]) -> bool:
    """``any(map(unpaired, votes))`` by C-level maps (no Python call per vote): the sizes
    of the pairs the votes name are all 2."""
    return not set(map(len, filter(_is_not_none, map(_pair_of, votes)))) <= {2}


_is_not_none = functools.partial(operator.is_not, None)


def without_unpaired(votes: Sequence[Vote]) -> Sequence[Vote]:
    """``votes`` without `unpaired` ones (the same list when there is none), each skipped
    one logged."""
    if not any_unpaired(votes):
        return votes
    skipped = [vote for vote in votes if vote.pair is not None and len(vote.pair) != 2]
    if not skipped:
        return votes
    for vote in skipped:
        logger.warning("skipped: %s", unpaired_message(vote))
    drop = {id(vote) for vote in skipped}
    return [vote for vote in votes if id(vote) not in drop]


def _pair_record(vote: Vote) -> A.PairRecord | None:
    """`Vote.record` of a valid pair judgment (a known outcome, two different candidates),
    without `PairRecord.__post_init__`'s checks (its display order is checked here) and its
    per-field ``object.__setattr__``: a pass builds one per judgment. None for anything
    else, which goes to the constructor and raises where it is invalid."""
    pair = vote.pair
    if pair is None or len(pair) != 2:
        return None  # `Vote._make_record` says what is wrong with a pair of another size
    a, b = pair
    outcome = vote.outcome
    if a == b or outcome not in A.OUTCOMES:
        return None
    shown = vote.presented_order
    # ``set(shown) == {a, b}`` for two different candidates, as a tuple.
    if len(shown) == 2 and ((shown[0] == a and shown[1] == b) or (shown[0] == b and shown[1] == a)):
        presented = tuple(shown)
    else:
        presented = None
    record = _new_object(A.PairRecord)
    record.__dict__.update(
        task=vote.prompt_id,
        annotator=vote.evaluator,
        a=a,
        b=b,
        outcome=outcome,
        presented_order=presented,
        duration_ms=vote.duration_ms,
    )
    return record


def vote_records(votes: Iterable[Vote]) -> list[A.RankingRecord | A.PairRecord]:
    """``[vote.record() for vote in votes]`` (each kept on its vote) in one loop."""
    out = []
    append = out.append
    for vote in votes:
        kept = vote.__dict__
        record = kept.get("_record")
        if record is None:
            record = _pair_record(vote) or vote._make_record()
            kept["_record"] = record  # not a field: eq and hash ignore it
        append(record)
    return out


def rm_records(
    votes_by_prompt: Mapping[int, Sequence[Vote]], scores: Mapping[int, float]
) -> list[A.RankingRecord]:
    """The reward model as an annotator: its score ranking of each prompt's judged candidates."""
    records = []
    for prompt_id, votes in votes_by_prompt.items():
        judged = {c for vote in votes for c in vote.candidates}
        scored = {c: scores[c] for c in judged if scores.get(c) is not None}
        if len(scored) >= 2:
            ranking = tuple(tuple(g) for g in groups_from_scores(scored))
            records.append(A.RankingRecord(task=prompt_id, annotator=RM_EVALUATOR, ranking=ranking))
    return records


def groups_from_scores(scores: Mapping[int, float], *, tol: float = 1e-9) -> Ranking:
    """Tie groups of (numerically) equal score, best first, ids ascending inside a group.

    A group's members are ordered by id, not by score: their scores are equal only within
    roundoff, and an order that follows roundoff moves exported rows whenever the fit's
    numerics change (`batch_consensus._strength_groups` orders them the same way).
    """
    groups: Ranking = []
    last: float | None = None
    for node in sorted(scores, key=lambda n: (-scores[n], n)):
        if last is not None and math.isclose(scores[node], last, abs_tol=tol):
            groups[-1].append(node)
        else:
            groups.append([node])
        last = scores[node]
    for group in groups:
        if len(group) > 1:
            group.sort()
    return groups


def competition_ranks(ranking: Sequence[Sequence[int]], order: Sequence[int]) -> list[int]:
    """Seed-format ranks for ``order``: 1 = best, tied candidates share the rank ("1134")."""
    rank_of: dict[int, int] = {}
    position = 1
    for group in ranking:
        for c in group:
            rank_of[c] = position
        position += len(group)
    return [rank_of[c] for c in order]


def restrict_ranking(ranking: Sequence[Sequence[int]], keep: Iterable[int]) -> Ranking:
    """The ranking induced on ``keep`` (empty groups dropped)."""
    wanted = set(keep)
    induced = []
    for group in ranking:
        if len(group) == 1:  # most groups: no list comprehension for one candidate
            if group[0] in wanted:
                induced.append([group[0]])
            continue
        kept = [c for c in group if c in wanted]
        if kept:  # no set per group: the export restricts every prompt's ranking 3 times
            induced.append(kept)
    return induced


# --------------------------------------------------------------------------- consensus


@dataclass(frozen=True)
class PairEvidence:
    """What the humans said about one unordered pair ``(x, y)``, x < y.

    Attributes:
        x_over_y: Raw judgments preferring x.
        y_over_x: Raw judgments preferring y.
        ties: Raw judgments tying them (tie group, "tie", "both_bad").
        net: Reliability-weighted net preference for x (negative: for y).
        gross: Reliability-weighted strict weight on the pair, both directions.
        evaluators: How many evaluators judged the pair.
    """

    x_over_y: int = 0
    y_over_x: int = 0
    ties: int = 0
    net: float = 0.0
    gross: float = 0.0
    evaluators: int = 0

    @property
    def n_judgments(self) -> int:
        return self.x_over_y + self.y_over_x + self.ties

    @property
    def agreement(self) -> float | None:
        """Share of evaluator pairs stating the same relation; None below two judgments."""
        n = self.n_judgments
        if n < 2:
            return None
        same = sum(k * (k - 1) for k in (self.x_over_y, self.y_over_x, self.ties))
        return same / (n * (n - 1))


@dataclass
class PromptConsensus:
    """Consensus of one prompt.

    Attributes:
        prompt_id: The prompt.
        candidates: Candidates that appear in at least one judgment, sorted.
        ranking: Consensus tie groups, best first (covers ``candidates``).
        human: Reliability-weighted ensemble of the human evaluators (no reward model).
        ensemble: The graph the ranking came from (human, plus the reward model if used).
        removed_arcs: Arcs of ``ensemble`` removed as a feedback arc set (denoise only).
        exact: Whether the removal is provably minimum.
        evidence: Human evidence per unordered pair ``(x, y)``, x < y.
        agreement: Prompt agreement over evaluator pairs (None without overlap).
        comparisons: (Evaluator pair, candidate pair) combinations behind ``agreement``.
        n_votes: Judgments used.
        denoised: Whether a feedback arc set was removed before ranking.
    """

    prompt_id: int
    candidates: tuple[int, ...]
    ranking: Ranking
    human: nx.DiGraph
    ensemble: nx.DiGraph
    removed_arcs: tuple[G.Edge, ...]
    exact: bool
    evidence: dict[tuple[int, int], PairEvidence]
    agreement: float | None
    comparisons: int
    n_votes: int
    denoised: bool

    def human_net(self, better: int, worse: int) -> float:
        """Weighted human net preference of ``better`` over ``worse``."""
        x, y = (better, worse) if better < worse else (worse, better)
        net = self.evidence.get((x, y), PairEvidence()).net
        return net if better == x else -net

    def margin(self, better: int, worse: int) -> float:
        """Net weight of ``better`` over ``worse`` in the ranking's graph."""
        g = self.ensemble
        forward = g[better][worse]["weight"] if g.has_edge(better, worse) else 0.0
        backward = g[worse][better]["weight"] if g.has_edge(worse, better) else 0.0
        return float(forward - backward)


def _pair_evidence(
    votes: Sequence[Vote], weights: Mapping[str, float]
) -> dict[tuple[int, int], PairEvidence]:
    raw: dict[tuple[int, int], list] = defaultdict(lambda: [0, 0, 0, 0.0, 0.0, set()])
    # Net per evaluator first: an evaluator judging a pair twice counts once, as in the graph.
    per_evaluator: dict[tuple[str, int, int], float] = defaultdict(float)
    for vote in votes:
        if vote.pair is not None:
            # A pair is a two-candidate ranking: the same counts without building one.
            a, b = vote.pair
            if a == b:
                continue
            x, y = sorted(vote.pair)
            winner = a if vote.outcome == "a" else b if vote.outcome == "b" else None
            cell = raw[(x, y)]
            if winner == x:
                cell[0] += 1
                per_evaluator[(vote.evaluator, x, y)] += 1
            elif winner == y:
                cell[1] += 1
                per_evaluator[(vote.evaluator, x, y)] -= 1
            else:
                cell[2] += 1
                per_evaluator.setdefault((vote.evaluator, x, y), 0.0)
            cell[5].add(vote.evaluator)
            continue
        ranking = vote.as_ranking()
        position = {c: g for g, group in enumerate(ranking) for c in group}
        for x, y in itertools.combinations(sorted(position), 2):
            cell = raw[(x, y)]
            if position[x] < position[y]:
                cell[0] += 1
                per_evaluator[(vote.evaluator, x, y)] += 1
            elif position[y] < position[x]:
                cell[1] += 1
                per_evaluator[(vote.evaluator, x, y)] -= 1
            else:
                cell[2] += 1
                per_evaluator.setdefault((vote.evaluator, x, y), 0.0)
            cell[5].add(vote.evaluator)
    for (evaluator, x, y), net in per_evaluator.items():
        w = weights.get(evaluator, 1.0)
        raw[(x, y)][3] += w * net
        raw[(x, y)][4] += w * abs(net)
    return {
        pair: PairEvidence(c[0], c[1], c[2], float(c[3]), float(c[4]), len(c[5]))
        for pair, c in raw.items()
    }


def prompt_consensus(
    prompt_id: int,
    votes: Sequence[Vote],
    *,
    weights: Mapping[str, float] | None = None,
    rm_scores: Mapping[int, float] | None = None,
    rm_weight: float = 0.0,
    denoise: bool = True,
    method: G.RankingMethod = RANKING_METHOD,
    scores: Mapping[int, float] | None = None,
) -> PromptConsensus:
    """Consensus ranking of one prompt from its judgments.

    Each evaluator's judgments become one net-preference graph; the graphs are summed with
    the evaluators' reliability weights (default 1.0). With ``rm_weight > 0`` and scores, the
    reward model's score ranking joins as one more evaluator. With ``denoise`` a
    minimum-weight feedback arc set is removed and the DAG ranked by ``method``; without it
    the (possibly cyclic) ensemble is ranked by Copeland score, i.e. weighted majority vote.

    The weighted sum is `graph.ensemble_graph` over the evaluators' `graph.evaluator_graph`s,
    computed in one pass: each evaluator's net preference per pair is summed with its weight
    and the sums become one `evaluator_graph` (the same graph; the tests check it). At
    MR2Bench scale this halves the cost of building graphs.

    Args:
        prompt_id: The prompt.
        votes: Its judgments (already filtered: no discarded tasks, no excluded evaluators).
        weights: Reliability per evaluator.
        rm_scores: Reward-model score per candidate.
        rm_weight: Weight of the reward model as an evaluator (0: not used).
        denoise: Remove a feedback arc set before ranking.
        method: `curation.graph.consensus_ranking` method.
        scores: Strengths per candidate from the joint annotator model (`joint_estimates`).
            With ``denoise``, the ranking is their order (candidates without one score 0)
            and ``removed_arcs`` are the arcs of the ensemble it contradicts: the human
            evidence the consensus overrules, for review. The order is acyclic by
            construction; a feedback arc set is searched only to split candidates of equal
            strength joined by arcs (a balanced cycle), ranked there by ``method``.
            ``exact`` is False once an arc is overruled.

    Returns:
        A `PromptConsensus`.
    """
    weights = weights or {}
    evidence = _pair_evidence(votes, weights)
    agreement, comparisons = _agreement_from_evidence(evidence)
    nodes = sorted({c for vote in votes for c in vote.candidates})
    human_edges = [
        (x, y, e.net) if e.net > 0 else (y, x, -e.net)
        for (x, y), e in evidence.items()
        if e.net != 0
    ]
    # One arc per pair, already net: `evaluator_graph` of these arcs, without summing.
    human = G.net_graph(nodes, human_edges)
    ensemble = human
    scored = {c: rm_scores[c] for c in nodes if rm_scores and rm_scores.get(c) is not None}
    if rm_weight > 0 and len(scored) >= 2:
        rm_edges = G.edges_from_ranking(groups_from_scores(scored), weight=rm_weight)
        ensemble = G.evaluator_graph(human_edges + rm_edges, nodes)
    if denoise and scores is not None:
        ranking = groups_from_scores({n: float(scores.get(n, 0.0)) for n in nodes}, tol=1e-6)
        if any(len(group) > 1 for group in ranking):
            ranking = _break_ties(ranking, ensemble, method)
        position = {c: g for g, group in enumerate(ranking) for c in group}
        removed = [
            (u, v, float(w))
            for u, v, w in ensemble.edges(data="weight", default=1.0)
            if position[v] < position[u]
        ]
        exact = not removed
    elif denoise:
        result = G.denoise(ensemble)
        ranking = G.consensus_ranking(result.dag, method) if nodes else []
        removed, exact = result.removed_arcs, result.exact
    else:
        succ, pred = ensemble._succ, ensemble._pred  # out and in degree, without the views
        copeland = {n: float(len(succ[n]) - len(pred[n])) for n in nodes}
        ranking, removed, exact = groups_from_scores(copeland), (), True
    return PromptConsensus(
        prompt_id=prompt_id,
        candidates=tuple(nodes),
        ranking=[list(g) for g in ranking],
        human=human,
        ensemble=ensemble,
        removed_arcs=tuple(removed),
        exact=exact,
        evidence=evidence,
        agreement=agreement,
        comparisons=comparisons,
        n_votes=len(votes),
        denoised=denoise,
    )


def _break_ties(ranking: Ranking, ensemble: nx.DiGraph, method: G.RankingMethod) -> Ranking:
    """Splits tie groups of equal strength by the arcs among their members, denoised.

    Equal strengths with arcs between them come from a balanced cycle (a > b > c > a, once
    each): the minimum feedback arc set decides there, as in the plain denoised export.
    """
    out: Ranking = []
    for group in ranking:
        inside = ensemble.subgraph(group)
        if len(group) == 1 or inside.number_of_edges() == 0:
            out.append(group)
            continue
        out.extend(G.consensus_ranking(G.denoise(inside.copy()).dag, method))
    return out


def _agreement_from_evidence(
    evidence: Mapping[tuple[int, int], PairEvidence],
) -> tuple[float | None, int]:
    same = total = 0
    for pair in evidence.values():
        n = pair.n_judgments
        if n >= 2:
            same += sum(k * (k - 1) for k in (pair.x_over_y, pair.y_over_x, pair.ties)) // 2
            total += n * (n - 1) // 2
    return (same / total if total else None), total


# --------------------------------------------------------------------------- joint model


@dataclass(frozen=True)
class EvaluatorFit:
    """One evaluator in the joint annotator model (`curation.crowd_bt`).

    Attributes:
        eta: Probability that a vote of theirs is a real judgment (1 careful, 0 noise).
        shown_first: Probability that a noise vote picks the candidate shown first (0.5:
            none, or no display order known).
        weight: Vote weight in the consensus graphs (``eta``, as in the model's fit).
        loo_agreement: Share of their votes agreeing with the leave-one-out consensus.
        n_votes: Strict pairwise preferences they stated.
        n_positioned: Of those, how many with a known display order.
        n_separable: Of those, how many can tell a real judgment from their slot habit
            (`crowd_bt.separable_votes`): what ``eta`` rests on.
    """

    eta: float
    shown_first: float
    weight: float
    loo_agreement: float | None
    n_votes: int
    n_positioned: int
    n_separable: int = 0


@dataclass(frozen=True)
class JointEstimates:
    """Strengths per prompt and evaluator reliabilities from one fit over a project.

    Attributes:
        scores: Strength per candidate, per prompt (judged candidates only).
        evaluators: `EvaluatorFit` per evaluator with strict votes.
        alpha: Prior strength chosen on leave-one-out votes.
        reward_model: The reward model's part (`crowd_bt.ScorePrior` without the strengths)
            as a dict, or None when no scores were given.
        model_prior: The model-strength prior's report (`curation.prior.apply_model_prior`),
            or None when not asked for.
        fit_source: How the fit was obtained (`crowd_bt.fit_crowd_bt_cached`): ``"hit"``,
            ``"em-hit"``, ``"miss"`` or ``"off"`` (no cache).
    """

    scores: dict[int, dict[int, float]]
    evaluators: dict[str, EvaluatorFit]
    alpha: float
    reward_model: dict | None
    model_prior: dict | None = None
    fit_source: str = "off"

    @property
    def weights(self) -> dict[str, float]:
        return {e: f.weight for e, f in self.evaluators.items()}


def _strict_preferences(
    votes: Iterable[Vote],
) -> Iterable[tuple[int, int, int, str, int | None]]:
    """``(prompt, winner, loser, evaluator, shown first)`` per strict preference of a vote."""
    for vote in votes:
        shown = vote.presented_order
        if vote.pair is not None:
            a, b = vote.pair
            if vote.outcome not in ("a", "b"):
                continue
            first = shown[0] if len(shown) == 2 and set(shown) == {a, b} else None
            winner, loser = (a, b) if vote.outcome == "a" else (b, a)
            yield vote.prompt_id, winner, loser, vote.evaluator, first
            continue
        slot = {c: i for i, c in enumerate(shown)}
        for winner, loser, _ in G.edges_from_ranking(vote.ranking):
            if winner in slot and loser in slot:
                first = winner if slot[winner] < slot[loser] else loser
            else:
                first = None
            yield vote.prompt_id, winner, loser, vote.evaluator, first


def preference_columns(votes: Sequence[Vote]) -> Any:
    """``crowd_bt.index_comparisons(_strict_preferences(votes))``: the same columns, keys
    and key order. Pair judgments only (a project's usual load) are indexed with numpy
    (`_pair_preference_columns`); anything else goes through the per-vote generator."""
    from curation import crowd_bt as CB

    columns = _pair_preference_columns(votes)
    if columns is None:
        columns = CB.index_comparisons(_strict_preferences(votes))
    return columns


_pair_of, _outcome_of = operator.attrgetter("pair"), operator.attrgetter("outcome")
_shown_of, _prompt_of = operator.attrgetter("presented_order"), operator.attrgetter("prompt_id")
_evaluator_of, _duration_of = operator.attrgetter("evaluator"), operator.attrgetter("duration_ms")


def _int_columns(rows: list[Any], width: int) -> Any:
    """``rows`` (tuples of ``width`` items, or items when ``width`` is 0) as an int64 array
    of that shape, or None where any item is not an int (floats, bools, strings, None) or
    does not fit int64: those keep the generator's path."""
    import numpy as np

    items = itertools.chain.from_iterable(rows) if width else rows
    if width:
        if rows and set(map(len, rows)) != {width}:
            return None
        items = list(items)
    if set(map(type, items)) != {int}:
        return None
    try:
        array = np.fromiter(items, np.int64, len(items))
    except OverflowError:
        return None
    return array.reshape(-1, width) if width else array


def _first_appearance(keys: Any) -> tuple[Any, Any]:
    """``(index per key, distinct keys)`` numbered by first appearance, as a dict's
    ``setdefault(key, len(dict))`` numbers them."""
    import numpy as np

    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(len(distinct), dtype=np.int64)
    rank[order] = np.arange(len(distinct))
    return rank[inverse.reshape(-1)], distinct[order]


def _pair_preference_columns(votes: Sequence[Vote]) -> Any:
    """`crowd_bt.index_comparisons` of the strict preferences of pair judgments, column-wise:
    attributes read with ``attrgetter`` maps, prompts, candidates (per prompt, winner before
    loser) and annotators numbered by first appearance as the per-row dicts number them.
    None when a vote is a ranking, a pair is not two ints, a display order holds anything
    but ints, or no vote is strict: the caller takes the generator's path."""
    import numpy as np

    from curation import crowd_bt as CB

    n = len(votes)
    pairs = list(map(_pair_of, votes))
    if n == 0 or None in pairs:
        return None
    ab = _int_columns(pairs, 2)
    prompt = _int_columns(list(map(_prompt_of, votes)), 0)
    if ab is None or prompt is None:
        return None
    outcomes = list(map(_outcome_of, votes))
    is_a = np.fromiter(map(operator.eq, outcomes, itertools.repeat("a")), bool, n)
    is_b = np.fromiter(map(operator.eq, outcomes, itertools.repeat("b")), bool, n)
    strict = is_a | is_b
    m = int(strict.sum())
    if m == 0:
        return None
    shown = list(map(_shown_of, votes))
    two = np.fromiter(map(len, shown), np.int64, n) == 2
    if not two.all():
        shown = [s if len(s) == 2 else (0, 0) for s in shown]
    s = _int_columns(shown, 2)
    if s is None:
        return None
    a, b, s0, s1 = ab[:, 0], ab[:, 1], s[:, 0], s[:, 1]
    # ``len(shown) == 2 and set(shown) == {a, b}``: the display order is known.
    known = two & (((s0 == a) & (s1 == b)) | ((s0 == b) & (s1 == a)))
    winner = np.where(is_a, a, b)[strict]
    loser = np.where(is_a, b, a)[strict]
    winner_first = np.where(known, (s0 == np.where(is_a, a, b)).astype(np.int64), -1)[strict]

    p, prompt_keys = _first_appearance(prompt[strict])
    n_prompts = len(prompt_keys)
    # Candidates per prompt in the order a row meets them: its winner, then its loser.
    sequence = np.stack([winner, loser], axis=1).reshape(-1)
    low = int(sequence.min())
    span = int(sequence.max()) - low + 1
    if span * n_prompts >= 2**62:
        return None
    key = np.repeat(p, 2) * span + (sequence - low)
    cells, first, inverse = np.unique(key, return_index=True, return_inverse=True)
    cell_prompt = cells // span
    by_prompt = np.lexsort((first, cell_prompt))  # each prompt's candidates as first met
    counts = np.bincount(cell_prompt, minlength=n_prompts)
    starts = np.cumsum(counts) - counts
    local = np.empty(len(cells), dtype=np.int64)
    local[by_prompt] = np.arange(len(cells)) - np.repeat(starts, counts)
    local_of = local[inverse.reshape(-1)]
    candidate_keys = sequence[first[by_prompt]].tolist()

    evaluators = list(itertools.compress(map(_evaluator_of, votes), strict.tolist()))
    annotator_ix = {e: i for i, e in enumerate(dict.fromkeys(evaluators))}

    data = np.empty((m, 5), dtype=np.int64)
    data[:, 0] = p
    data[:, 1] = local_of[0::2]
    data[:, 2] = local_of[1::2]
    data[:, 3] = np.fromiter(map(annotator_ix.__getitem__, evaluators), np.int64, m)
    data[:, 4] = winner_first
    bounds = np.cumsum(counts).tolist()
    return CB.Indexed(
        comparisons=CB.Comparisons(
            prompt=data[:, 0],
            winner=data[:, 1],
            loser=data[:, 2],
            annotator=data[:, 3],
            winner_first=data[:, 4],
            n_prompts=n_prompts,
            n_candidates=int(counts.max()),
            n_annotators=len(annotator_ix),
        ),
        prompts=prompt_keys.tolist(),
        candidates=[
            candidate_keys[start:end] for start, end in zip([0, *bounds[:-1]], bounds, strict=True)
        ],
        annotators=list(annotator_ix),
    )


# The last `_indexed_preferences`: (its votes, their columns), replaced and read as one
# reference (threads never pair one call's votes with another's columns).
_last_indexed: list[Any] = [None]


def _indexed_preferences(votes: Sequence[Vote]) -> Any:
    """``crowd_bt.index_comparisons`` of the votes' strict preferences, kept for the next call
    with the very same vote objects in the same order (the flags pass, then an export over
    the votes of the shared load, `selectors.project_data`): votes are frozen, so the same
    objects give the same columns. The columns are read-only; the entry holds the votes."""
    kept = _last_indexed[0]
    if kept is not None and len(kept[0]) == len(votes) and all(map(operator.is_, kept[0], votes)):
        return kept[1]
    indexed = preference_columns(votes)
    c = indexed.comparisons
    for column in (c.prompt, c.winner, c.loser, c.annotator, c.winner_first):
        column.setflags(write=False)
    _last_indexed[0] = (tuple(votes), indexed)
    return indexed


def joint_estimates(
    votes: Sequence[Vote],
    *,
    rm_scores: Mapping[int, float] | None = None,
    select_prior: bool = True,
    model_of: Mapping[int, str] | None = None,
    fit_cache: Path | None = None,
) -> JointEstimates | None:
    """Fits the joint annotator model (`curation.crowd_bt`) on a project's judgments.

    Ties carry no preference and are left out; a ranking counts as its strict pairs. With
    ``rm_scores`` the reward model centres the strengths' prior where the human held-out
    votes say it helps (`crowd_bt.with_score_prior`). None without any strict preference,
    or when the ``[prompts, N, N]`` arrays would exceed `JOINT_MAX_CELLS` (every prompt is
    padded to the largest one: a single prompt with hundreds of candidates would cost
    gigabytes); callers then fall back to the per-prompt consensus. Without
    ``select_prior`` the strengths keep the EM's prior instead of one chosen on held-out votes
    (a third cheaper, for callers that only read the evaluators). With ``model_of`` (model
    name per candidate) the strengths take the model-strength prior (`curation.prior`).
    ``fit_cache`` (an ``.npz`` path) keeps the fit for the next caller with the same votes
    (`crowd_bt.fit_crowd_bt_cached`): the flags pass and the export share one fit.
    """
    from curation import crowd_bt as CB

    indexed = _indexed_preferences(votes)
    c = indexed.comparisons
    if len(c) == 0 or c.n_prompts * c.n_candidates**2 > JOINT_MAX_CELLS:
        return None
    fit, fit_source = CB.fit_crowd_bt_cached(
        indexed, fit_cache, final_alphas=CB.FINAL_ALPHAS if select_prior else ()
    )
    theta, reward_model = fit.theta, None
    if rm_scores:
        prior = CB.with_score_prior(indexed.comparisons, fit, CB.scores_matrix(indexed, rm_scores))
        theta = prior.theta
        reward_model = {
            "used": prior.used,
            "beta": round(prior.beta, 4),
            "alpha": prior.alpha,
            "loo_log_likelihood": round(prior.loo_log_likelihood, 3),
            "human_loo_log_likelihood": round(prior.human_log_likelihood, 3),
            "agreement": round(prior.agreement, 4),
            "median_annotator_agreement": round(prior.median_agreement, 4),
            "pairs_compared": prior.n_pairs,
        }
    model_prior = None
    if model_of is not None:
        from curation import prior as MP

        applied = MP.apply_model_prior(indexed, fit, model_of)
        theta, model_prior = applied.theta, applied.report
    scores = {
        prompt: {cand: float(theta[p, i]) for i, cand in enumerate(cands)}
        for p, (prompt, cands) in enumerate(zip(indexed.prompts, indexed.candidates, strict=True))
    }
    evaluators = {}
    for i, evaluator in enumerate(indexed.annotators):
        loo = fit.loo_agreement[i]
        evaluators[str(evaluator)] = EvaluatorFit(
            eta=float(fit.eta[i]),
            shown_first=float(fit.pi[i]),
            weight=float(fit.eta[i]),
            loo_agreement=None if math.isnan(loo) else float(loo),
            n_votes=int(fit.n_votes[i]),
            n_positioned=int(fit.n_positioned[i]),
            n_separable=int(fit.n_separable[i]),
        )
    return JointEstimates(
        scores=scores,
        evaluators=evaluators,
        alpha=fit.alpha,
        reward_model=reward_model,
        model_prior=model_prior,
        fit_source=fit_source,
    )


def cached_prompt_scores(
    votes: Sequence[Vote], fit_cache: Path
) -> tuple[dict[int, float], dict[str, float]] | None:
    """One prompt's joint-model strengths as the denoised export computes them, without
    loading the project: the annotators' ``eta`` and the chosen prior come from the fit the
    flags pass or the last export kept in ``fit_cache`` (`crowd_bt.cached_reliability`),
    and the prompt's own votes are fitted with them (its final strengths depend on nothing
    else). While the project's votes are those of the kept fit, the ranking is the export's.

    Returns ``(scores, weights)`` - strengths per judged candidate and the ``eta`` weights
    for `prompt_consensus` - or None without a kept fit (callers fall back to the
    per-prompt consensus).
    """
    from curation import crowd_bt as CB

    reliability = CB.cached_reliability(fit_cache)
    if reliability is None:
        return None
    indexed = preference_columns(votes)
    theta = CB.fit_prompt_strengths(indexed, reliability)
    scores = {
        cand: float(theta[p, i])
        for p, cands in enumerate(indexed.candidates)
        for i, cand in enumerate(cands)
    }
    return scores, reliability.eta


# --------------------------------------------------------------------------- prompt checks


@dataclass(frozen=True)
class FlagSpec:
    """A flag a check wants raised (or kept open).

    Attributes:
        kind: One of the flag kinds.
        key: Subject within the project: ``prompt:<id>``, ``evaluator:<id>``,
            ``judgment:<id>``. A project holds one flag per (kind, key).
        severity: 0..1, higher first in the queue.
        evidence: Judgments behind the check; a resolved flag reopens when it grows.
        prompt_id / task_id / judgment_id / evaluator: What the flag is about.
        details: JSON-ready facts for the reviewer.
    """

    kind: str
    key: str
    severity: float
    evidence: int
    prompt_id: int | None = None
    task_id: int | None = None
    judgment_id: int | None = None
    evaluator: str = ""
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ModelConflict:
    """The reward model confidently prefers ``model_prefers`` while humans prefer ``over``."""

    model_prefers: int
    over: int
    p_model: float
    human_share: float


def rm_conflicts(
    consensus: PromptConsensus,
    rm_scores: Mapping[int, float],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[ModelConflict]:
    """Pairs where a confident reward model contradicts a clear human preference."""
    conflicts = []
    for (x, y), pair in consensus.evidence.items():
        if pair.gross <= 0 or pair.n_judgments < thresholds.rm_min_judgments:
            continue
        if rm_scores.get(x) is None or rm_scores.get(y) is None:
            continue
        share = pair.net / pair.gross  # > 0: humans prefer x
        diff = float(rm_scores[x]) - float(rm_scores[y])
        p_x = 1.0 / (1.0 + math.exp(-max(-50.0, min(50.0, diff))))
        if share <= -thresholds.rm_human_share and p_x >= thresholds.rm_confident:
            conflicts.append(ModelConflict(x, y, p_x, -share))
        elif share >= thresholds.rm_human_share and 1 - p_x >= thresholds.rm_confident:
            conflicts.append(ModelConflict(y, x, 1 - p_x, share))
    return sorted(conflicts, key=lambda c: -(2 * c.p_model - 1) * c.human_share)


def prompt_flags(
    consensus: PromptConsensus,
    *,
    rm_scores: Mapping[int, float] | None = None,
    rm_label: str = "",
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[FlagSpec]:
    """Low agreement, intransitive cycle and reward-model conflict checks for one prompt.

    ``consensus`` must come from `prompt_consensus` without the reward model (its ``human``
    graph is what the cycle check reads).
    """
    key = f"prompt:{consensus.prompt_id}"
    flags: list[FlagSpec] = []
    if consensus.agreement is not None and consensus.agreement < thresholds.low_agreement:
        disputed = sorted(
            (
                [x, y, round(p.agreement, 3)]
                for (x, y), p in consensus.evidence.items()
                if p.agreement is not None and p.agreement < 1
            ),
            key=lambda row: row[2],
        )
        flags.append(
            FlagSpec(
                kind="low_agreement",
                key=key,
                # Disagreement, discounted when it rests on few comparisons: one split
                # pair of votes ranks below a prompt where three annotators disagree.
                severity=round(
                    (1 - consensus.agreement) * consensus.comparisons / (consensus.comparisons + 1),
                    4,
                ),
                evidence=consensus.n_votes,
                prompt_id=consensus.prompt_id,
                details={
                    "agreement": round(consensus.agreement, 4),
                    "comparisons": consensus.comparisons,
                    "disputed_pairs": disputed,
                },
            )
        )
    if G.has_cycle(consensus.human):
        result = G.denoise(consensus.human)
        total = sum(w for _, _, w in consensus.human.edges(data="weight", default=1.0))
        share = result.removed_weight / total if total else 0.0
        flags.append(
            FlagSpec(
                kind="cycle",
                key=key,
                severity=round(min(1.0, share * 2), 4),
                evidence=consensus.n_votes,
                prompt_id=consensus.prompt_id,
                details={
                    "cycles": [list(c) for c in G.find_cycles(consensus.human, limit=10)],
                    "removed_arcs": [[u, v, round(w, 4)] for u, v, w in result.removed_arcs],
                    "removed_share": round(share, 4),
                    "exact": result.exact,
                },
            )
        )
    if rm_scores:
        conflicts = rm_conflicts(consensus, rm_scores, thresholds=thresholds)
        if conflicts:
            top = conflicts[0]
            flags.append(
                FlagSpec(
                    kind="rm_disagreement",
                    key=key,
                    severity=round((2 * top.p_model - 1) * top.human_share, 4),
                    evidence=consensus.n_votes,
                    prompt_id=consensus.prompt_id,
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
    return flags


def gold_wrong_share(given: Sequence[Sequence[int]], gold: Sequence[Sequence[int]]) -> float | None:
    """Share of the gold ranking's strict pairs the judgment orders wrongly (a tie: half).

    Only candidates present in both count; None if the gold orders none of them.
    """
    pos_gold = {c: g for g, group in enumerate(gold) for c in group}
    pos_given = {c: g for g, group in enumerate(given) for c in group}
    common = sorted(set(pos_gold) & set(pos_given))
    wrong = total = 0.0
    for x, y in itertools.combinations(common, 2):
        if pos_gold[x] == pos_gold[y]:
            continue
        total += 1
        expected = pos_gold[x] < pos_gold[y]
        if pos_given[x] == pos_given[y]:
            wrong += 0.5
        elif (pos_given[x] < pos_given[y]) != expected:
            wrong += 1
    return wrong / total if total else None


def gold_flags(
    votes: Iterable[Vote],
    gold: Mapping[int, Sequence[Sequence[int]]],
    *,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
) -> list[FlagSpec]:
    """One flag per judgment on a gold task that orders the gold wrongly.

    Args:
        votes: Judgments; those whose task is not in ``gold`` are ignored.
        gold: Gold ranking (tie groups) per gold task id.
    """
    flags: list[FlagSpec] = []
    if not gold:
        return flags  # no vote to look at
    for vote in votes:
        if vote.task_id not in gold or unpaired(vote):
            continue
        wrong = gold_wrong_share(vote.as_ranking(), gold[vote.task_id])
        if wrong is None or wrong < thresholds.gold_fail:
            continue
        flags.append(
            FlagSpec(
                kind="failed_gold",
                key=f"judgment:{vote.judgment_id}",
                severity=round(wrong, 4),
                evidence=1,
                prompt_id=vote.prompt_id,
                task_id=vote.task_id,
                judgment_id=vote.judgment_id,
                evaluator=vote.evaluator,
                details={
                    "gold": [list(g) for g in gold[vote.task_id]],
                    "given": vote.as_ranking(),
                    "wrong_share": round(wrong, 4),
                },
            )
        )
    return flags


# --------------------------------------------------------------------------- evaluators


@dataclass(frozen=True)
class EvaluatorQuality:
    """Everything the project knows about one evaluator's judgments.

    Attributes mirror `agreement.AnnotatorReliability`, plus the position-bias test (Holm
    adjusted over the project's evaluators), speed, the Arena anomaly test and the joint
    annotator model's reading (`EvaluatorFit`: ``eta``, ``shown_first``, over ``n_strict``
    strict preferences, ``n_separable`` of them able to tell a real judgment from a slot
    habit; None when it was not fitted).
    """

    evaluator: str
    n_judgments: int
    agreement: float | None
    loo_agreement: float | None
    gold_accuracy: float | None
    n_gold: int
    weight: float
    n_compared: int
    bias_n: int = 0
    bias_p: float | None = None
    bias_p_adjusted: float | None = None
    favoured_slot: int | None = None
    bias_counts: tuple[int, ...] = ()
    bias_expected: tuple[float, ...] = ()
    n_timed: int = 0
    n_fast: int = 0
    median_ms: float | None = None
    fast_threshold_ms: float | None = None
    fast_examples: tuple[int, ...] = ()
    anomalous: bool = False
    eta: float | None = None
    shown_first: float | None = None
    n_strict: int = 0
    n_separable: int = 0

    @property
    def fast_share(self) -> float | None:
        return self.n_fast / self.n_timed if self.n_timed else None


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1)."""
    ordered = sorted(p_values.items(), key=lambda kv: kv[1])
    m = len(ordered)
    adjusted: dict[str, float] = {}
    running = 0.0
    for i, (key, p) in enumerate(ordered):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[key] = running
    return adjusted


def evaluator_quality(
    votes: Sequence[Vote],
    *,
    gold: Mapping[int, Sequence[Sequence[int]]] | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    anomaly_test: bool = True,
    joint: bool = True,
    fit_cache: Path | None = None,
) -> dict[str, EvaluatorQuality]:
    """Reliability, position bias, speed and anomaly checks for every evaluator.

    Args:
        votes: All judgments of a project (reward model excluded).
        gold: Gold ranking per gold *task* id.
        thresholds: Check parameters.
        anomaly_test: Run Chatbot Arena's anomalous-voter test on pair judgments.
        joint: Fit the joint annotator model (`joint_estimates`) for ``eta`` and
            ``shown_first``.
        fit_cache: Where that fit is kept for the export (`joint_estimates`).
    """
    import numpy as np

    votes = without_unpaired(votes)
    records = vote_records(votes)
    gold_by_prompt: dict[int, list[list[int]]] = {}
    if gold:  # the task -> prompt map only where there is gold to place
        task_prompt = {vote.task_id: vote.prompt_id for vote in votes}
        for task_id, ranking in gold.items():
            if task_id in task_prompt:
                gold_by_prompt[task_prompt[task_id]] = [list(g) for g in ranking]
    reliability = A.annotator_reliability(records, gold=gold_by_prompt)
    # Records are of two types (`Vote.record`); pair judgments only is a project's usual load.
    pairs_only = set(map(type, records)) == {A.PairRecord}
    compared = _compared_counts(records, pairs_only=pairs_only)

    pair_kind, ranking_kind = _by_kind(votes, records, pairs_only=pairs_only)
    pair_records = pair_kind[1]

    bias: dict = {}
    for _, subset in (pair_kind, ranking_kind):
        if subset:
            bias.update(A.position_bias(subset))
    testable = {e: b.p_value for e, b in bias.items() if b.n >= thresholds.bias_min_n}
    adjusted = holm(testable)

    fast_by: dict[str, list[int]] = defaultdict(list)
    # Pair judgments only, every one timed (a project's usual load): on arrays.
    timed = _durations_by_evaluator(votes, records) if pairs_only else None
    durations: Mapping[str, Sequence[int] | Any] = timed if timed is not None else defaultdict(list)
    threshold_of: dict[str, float] = {}
    for kind_votes, subset in (pair_kind, ranking_kind):
        if not subset:
            continue
        fast_records = A.too_fast(subset, ratio=thresholds.fast_ratio)
        if fast_records:
            wanted = {id(fast.record) for fast in fast_records}
            by_record = {
                id(r): v for v, r in zip(kind_votes, subset, strict=True) if id(r) in wanted
            }
            for fast in fast_records:
                vote = by_record[id(fast.record)]
                fast_by[vote.evaluator].append(vote.judgment_id)
                threshold_of[vote.evaluator] = fast.threshold_ms
        if timed is None:
            for vote in kind_votes:
                if vote.duration_ms is not None:
                    durations[vote.evaluator].append(vote.duration_ms)  # type: ignore[index]

    anomalous: set[str] = set()
    if anomaly_test and pair_records:
        anomalous = {e for e, c in A.anomalous_voters(pair_records).items() if c.flagged}

    fits = {}
    if joint:
        # The prior is chosen here as the export chooses it, so that the kept fit holds the
        # export's final strengths too: the export then fits nothing, and the review page
        # ranks a prompt as the export would (`cached_prompt_scores`).
        estimates = joint_estimates(votes, fit_cache=fit_cache)
        fits = estimates.evaluators if estimates is not None else {}

    result = {}
    for evaluator, rel in reliability.items():
        b = bias.get(evaluator)
        fit = fits.get(evaluator)
        result[evaluator] = EvaluatorQuality(
            evaluator=evaluator,
            n_judgments=rel.n_judgments,
            agreement=rel.agreement,
            loo_agreement=rel.loo_agreement,
            gold_accuracy=rel.gold_accuracy,
            n_gold=rel.n_gold,
            weight=rel.weight,
            n_compared=compared.get(evaluator, 0),
            bias_n=b.n if b else 0,
            bias_p=b.p_value if b else None,
            bias_p_adjusted=adjusted.get(evaluator),
            favoured_slot=b.favoured_slot if b else None,
            bias_counts=b.counts if b else (),
            bias_expected=b.expected if b else (),
            n_timed=len(durations.get(evaluator, ())),
            n_fast=len(fast_by.get(evaluator, ())),
            median_ms=float(np.median(durations[evaluator])) if evaluator in durations else None,
            fast_threshold_ms=threshold_of.get(evaluator),
            fast_examples=tuple(fast_by.get(evaluator, ())[:20]),
            anomalous=evaluator in anomalous,
            eta=fit.eta if fit else None,
            shown_first=fit.shown_first if fit else None,
            n_strict=fit.n_votes if fit else 0,
            n_separable=fit.n_separable if fit else 0,
        )
    return result


def _durations_by_evaluator(
    votes: Sequence[Vote], records: Sequence[A.PairRecord]
) -> dict[str, Any] | None:
    """Each evaluator's durations in vote order (``records[i]`` is ``votes[i]``'s pair
    record), as int64 arrays: what appending every ``duration_ms`` per evaluator gives, the
    same medians and counts, by C-level maps and one stable sort on the records' annotator
    numbers (`agreement._annotator_codes`, which the pair table already asked for). None
    where a vote has no duration or one that is not an int64 (the caller's loop then)."""
    import numpy as np

    values = list(map(_duration_of, votes))
    if not values or set(map(type, values)) != {int}:
        return None
    try:
        column = np.array(values, dtype=np.int64)
    except OverflowError:
        return None
    codes, index = A._annotator_codes(records)
    order = np.argsort(codes, kind="stable")
    grouped = column[order]
    ends = np.cumsum(np.bincount(codes, minlength=len(index))).tolist()
    starts = [0, *ends[:-1]]
    return {
        annotator: grouped[starts[k] : ends[k]]
        for annotator, k in index.items()  # type: ignore[misc]
    }


_Kind = tuple[Sequence[Vote], Sequence[A.Record]]


def _by_kind(
    votes: Sequence[Vote], records: Sequence[A.Record], *, pairs_only: bool
) -> tuple[_Kind, _Kind]:
    """The votes and their records (``records[i]`` is ``votes[i]``'s) of each kind, pairs
    first, in input order: one pass where both kinds are there; ``pairs_only`` (the caller
    knows every record is a `PairRecord`): the same lists, no pass."""
    if pairs_only:
        return (votes, records), ([], [])
    pair_kind: tuple[list[Vote], list[A.Record]] = ([], [])
    ranking_kind: tuple[list[Vote], list[A.Record]] = ([], [])
    for vote, record in zip(votes, records, strict=True):
        kind = pair_kind if type(record) is A.PairRecord else ranking_kind
        kind[0].append(vote)
        kind[1].append(record)
    return pair_kind, ranking_kind


def _compared_counts(
    records: Sequence[A.RankingRecord | A.PairRecord], *, pairs_only: bool = False
) -> Counter[str]:
    """Per evaluator, relations on a (prompt, x, y) unit someone else also judged.
    ``pairs_only``: the caller knows every record is a `PairRecord` (not checked again)."""
    if records and (pairs_only or all(isinstance(r, A.PairRecord) for r in records)):
        return A.shared_unit_counts(records)  # type: ignore[arg-type,return-value]
    seen: dict[tuple, set[str]] = defaultdict(set)
    for record in records:
        if isinstance(record, A.PairRecord):
            units = [(record.task, *sorted((record.a, record.b)))]
        else:
            members = sorted(c for group in record.ranking for c in group)
            units = [(record.task, x, y) for x, y in itertools.combinations(members, 2)]
        for unit in units:
            seen[unit].add(record.annotator)
    counts: Counter[str] = Counter()
    for evaluators in seen.values():
        if len(evaluators) >= 2:
            counts.update(evaluators)
    return counts


def evaluator_flags(
    quality: Mapping[str, EvaluatorQuality], *, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> list[FlagSpec]:
    """Unreliable-annotator, position-bias and too-fast flags, one per evaluator and kind."""
    import numpy as np

    flags = []
    overlapping = [q.weight for q in quality.values() if q.n_compared >= thresholds.min_overlap]
    peer_median = float(np.median(overlapping)) if overlapping else 1.0
    etas = [
        q.eta
        for q in quality.values()
        if q.eta is not None and q.n_strict >= thresholds.min_overlap
    ]
    eta_median = float(np.median(etas)) if etas else 1.0
    for evaluator, q in quality.items():
        key = f"evaluator:{evaluator}"
        reasons = []
        severity = 0.0
        if (
            q.n_compared >= thresholds.min_overlap
            and q.weight < thresholds.unreliable_weight
            and q.weight < thresholds.unreliable_relative * peer_median
        ):
            reasons.append("low agreement with other annotators")
            severity = max(severity, 1 - q.weight)
        # A low eta counts only on votes that could show it: an annotator who always picks
        # the first slot when the consensus is always shown first is read as a first-slot
        # clicker as readily as a careful one (`crowd_bt.separable_votes`); the position-bias
        # test still reports the habit.
        if (
            q.eta is not None
            and q.n_separable >= thresholds.min_overlap
            and q.eta < thresholds.unreliable_eta
            and q.eta < thresholds.unreliable_relative * eta_median
        ):
            reasons.append("most votes read as noise by the joint annotator model")
            severity = max(severity, 1 - q.eta)
        gold_floor = 1 - thresholds.gold_fail
        if q.gold_accuracy is not None and q.n_gold >= 5 and q.gold_accuracy < gold_floor:
            reasons.append("fails gold tasks")
            severity = max(severity, 1 - q.gold_accuracy)
        if q.anomalous:
            reasons.append("anomalous voting pattern (Arena test)")
            severity = max(severity, 0.5)
        if reasons:
            flags.append(
                FlagSpec(
                    kind="unreliable_annotator",
                    key=key,
                    severity=round(severity, 4),
                    evidence=q.n_judgments,
                    evaluator=evaluator,
                    details={
                        "reasons": reasons,
                        "weight": round(q.weight, 4),
                        "peer_median_weight": round(peer_median, 4),
                        "agreement": _round(q.agreement),
                        "loo_agreement": _round(q.loo_agreement),
                        "gold_accuracy": _round(q.gold_accuracy),
                        "n_gold": q.n_gold,
                        "n_compared": q.n_compared,
                        "n_judgments": q.n_judgments,
                        "anomalous": q.anomalous,
                        "eta": _round(q.eta),
                        "eta_separable_votes": q.n_separable,
                        "peer_median_eta": round(eta_median, 4),
                    },
                )
            )
        if (
            q.bias_p_adjusted is not None
            and q.bias_p_adjusted < thresholds.bias_alpha
            and q.favoured_slot is not None
        ):
            slot = q.favoured_slot
            excess = q.bias_counts[slot] - q.bias_expected[slot]
            room = q.bias_n - q.bias_expected[slot]
            flags.append(
                FlagSpec(
                    kind="position_bias",
                    key=key,
                    severity=round(max(0.0, min(1.0, excess / room if room else 0.0)), 4),
                    evidence=q.n_judgments,
                    evaluator=evaluator,
                    details={
                        "favoured_slot": slot,
                        "counts": list(q.bias_counts),
                        "expected": [round(e, 2) for e in q.bias_expected],
                        "n": q.bias_n,
                        "p_value": q.bias_p,
                        "p_adjusted": q.bias_p_adjusted,
                        # The joint model's estimate: how often a vote it reads as noise
                        # picks the candidate shown first.
                        "shown_first_when_noise": _round(q.shown_first),
                    },
                )
            )
        share = q.fast_share
        if share is not None and q.n_fast >= thresholds.fast_min and share >= thresholds.fast_share:
            flags.append(
                FlagSpec(
                    kind="too_fast",
                    key=key,
                    severity=round(share, 4),
                    evidence=q.n_judgments,
                    evaluator=evaluator,
                    details={
                        "n_fast": q.n_fast,
                        "n_timed": q.n_timed,
                        "share": round(share, 4),
                        "threshold_ms": _round(q.fast_threshold_ms, 0),
                        "median_ms": _round(q.median_ms, 0),
                        "examples": list(q.fast_examples),
                    },
                )
            )
    return flags


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


# --------------------------------------------------------------------------- over time


@dataclass(frozen=True)
class PeriodAgreement:
    """Agreement of the judgments made in one period with everyone else's.

    Attributes:
        start: First day of the period.
        n_judgments: Judgments made in it.
        agreement: Share of (own relation, another evaluator's relation on the same pair)
            combinations that match, over judgments of the period; None without overlap.
    """

    start: date
    n_judgments: int
    agreement: float | None


def agreement_by_period(votes: Sequence[Vote], *, days: int | None = None) -> list[PeriodAgreement]:
    """Agreement over time, for the dashboard.

    Each judgment is compared with every other evaluator's judgment on the same pairs (made
    at any time), and the matches are pooled by the period the judgment was made in.

    Args:
        votes: Judgments with ``created_at``.
        days: Period length; default one day, or one week when the judgments span more than
            60 days.
    """
    import numpy as np

    dated = [v for v in votes if v.created_at is not None]
    if not dated:
        return []
    first = min(v.created_at for v in dated).date()  # type: ignore[union-attr]
    last = max(v.created_at for v in dated).date()  # type: ignore[union-attr]
    if days is None:
        days = 7 if (last - first).days > 60 else 1
    relations: dict[tuple[int, int, int], dict[str, int]] = defaultdict(dict)
    per_vote: list[list[tuple[tuple[int, int, int], int]]] = []
    for vote in dated:
        ranking = vote.as_ranking()
        position = {c: g for g, group in enumerate(ranking) for c in group}
        mine = []
        for x, y in itertools.combinations(sorted(position), 2):
            unit = (vote.prompt_id, x, y)
            relation = int(np.sign(position[y] - position[x]))
            relations[unit][vote.evaluator] = relation
            mine.append((unit, relation))
        per_vote.append(mine)
    matches: Counter[date] = Counter()
    compared: Counter[date] = Counter()
    counts: Counter[date] = Counter()
    for vote, mine in zip(dated, per_vote, strict=True):
        day = vote.created_at.date()  # type: ignore[union-attr]
        start = first + timedelta(days=((day - first).days // days) * days)
        counts[start] += 1
        for unit, relation in mine:
            for evaluator, other in relations[unit].items():
                if evaluator != vote.evaluator:
                    compared[start] += 1
                    matches[start] += other == relation
    return [
        PeriodAgreement(
            start, counts[start], matches[start] / compared[start] if compared[start] else None
        )
        for start in sorted(counts)
    ]


# --------------------------------------------------------------------------- leaderboards


def model_comparisons(
    votes: Iterable[Vote], model_of: Mapping[int, str]
) -> list[tuple[str, str, str]]:
    """Model-vs-model records for `graph.bradley_terry_leaderboard`.

    A pair judgment is one record; a ranking gives one record per candidate pair (a shared
    tie group is a tie). Candidates of the same model say nothing and are skipped by the
    leaderboard itself.
    """
    out: list[tuple[str, str, str]] = []
    for vote in votes:
        if vote.pair is not None:
            out.append((model_of[vote.pair[0]], model_of[vote.pair[1]], vote.outcome))
            continue
        groups = vote.ranking
        for i, group in enumerate(groups):
            for x, y in itertools.combinations(group, 2):
                out.append((model_of[x], model_of[y], "tie"))
            for worse_group in groups[i + 1 :]:
                for x in group:
                    for y in worse_group:
                        out.append((model_of[x], model_of[y], "a"))
    return out


# --------------------------------------------------------------------------- exports


def assign_splits(
    prompt_ids: Sequence[int], fractions: Mapping[str, float], seed: int
) -> dict[int, str]:
    """Split prompts by a seeded shuffle; sizes follow ``fractions`` by largest remainder.

    Every prompt lands in exactly one split, so no prompt is in two splits.
    """
    ids = sorted(prompt_ids)
    random.Random(f"split:{seed}").shuffle(ids)
    names = list(fractions)
    total = sum(fractions.values())
    exact = [len(ids) * fractions[n] / total for n in names]
    sizes = [int(math.floor(x)) for x in exact]
    for i in sorted(range(len(names)), key=lambda i: -(exact[i] - sizes[i]))[
        : len(ids) - sum(sizes)
    ]:
        sizes[i] += 1
    out: dict[int, str] = {}
    start = 0
    for name, size in zip(names, sizes, strict=True):
        for pid in ids[start : start + size]:
            out[pid] = name
        start += size
    return out


def sample_variants(
    ranking: Sequence[Sequence[int]], *, size: int = 4, count: int = 3, rng: random.Random
) -> list[Ranking]:
    """Up to ``count`` distinct ``size``-candidate sub-rankings of a full ranking (MR2Bench).

    Subsets whose induced ranking is one tie group say nothing and are skipped. A ranking
    of exactly ``size`` candidates yields itself once.
    """
    members = sorted(c for group in ranking for c in group)
    if len(members) < size or len(ranking) < 2:
        return []
    if len(members) == size:
        return [[list(g) for g in ranking]]
    # Each candidate's (group, place in the ranking): a subset's induced ranking is its
    # members in that order, grouped by group (`restrict_ranking` without a pass over every
    # group of the full ranking). A candidate named twice keeps `restrict_ranking`.
    place: dict[int, tuple[int, int]] = {}
    for g, group in enumerate(ranking):
        for c in group:
            place[c] = (g, len(place))
    placed = len(place) == len(members)
    seen: set[tuple[int, ...]] = set()
    variants: list[Ranking] = []
    possible = math.comb(len(members), size)
    attempts = 0
    while len(variants) < count and len(seen) < possible and attempts < 20 * count:
        attempts += 1
        subset = tuple(sorted(rng.sample(members, size)))
        if subset in seen:
            continue
        seen.add(subset)
        if placed:
            induced = []
            last = -1
            for c in sorted(subset, key=place.__getitem__):
                g = place[c][0]
                if g != last:
                    induced.append([c])
                    last = g
                else:
                    induced[-1].append(c)
        else:
            induced = restrict_ranking(ranking, subset)
        if len(induced) >= 2:
            variants.append(induced)
    return variants
