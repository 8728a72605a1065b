"""curation.consensus: the pure maths behind flags and exports (no database)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import consensus as C
from curation import graph as G

FAST = settings(max_examples=80, deadline=None)


def rank_vote(jid: int, evaluator: str, ranking, prompt: int = 1, **kw) -> C.Vote:
    return C.Vote(
        jid,
        task_id=prompt,
        prompt_id=prompt,
        evaluator=evaluator,
        ranking=tuple(tuple(g) for g in ranking),
        **kw,
    )


def pair_vote(
    jid: int, evaluator: str, a: int, b: int, outcome: str, prompt: int = 1, **kw
) -> C.Vote:
    return C.Vote(
        jid, task_id=jid, prompt_id=prompt, evaluator=evaluator, pair=(a, b), outcome=outcome, **kw
    )


@st.composite
def vote_sets(draw):
    n = draw(st.integers(2, 6))
    evaluators = [f"e{i}" for i in range(draw(st.integers(1, 4)))]
    votes = []
    for jid in range(draw(st.integers(1, 8))):
        evaluator = draw(st.sampled_from(evaluators))
        if draw(st.booleans()):
            a, b = draw(st.lists(st.integers(0, n - 1), min_size=2, max_size=2, unique=True))
            votes.append(pair_vote(jid, evaluator, a, b, draw(st.sampled_from(C.A.OUTCOMES))))
        else:
            order = draw(st.permutations(range(n)))
            cuts = draw(st.lists(st.booleans(), min_size=n - 1, max_size=n - 1))
            groups, current = [], [order[0]]
            for node, cut in zip(order[1:], cuts, strict=True):
                if cut:
                    groups.append(current)
                    current = [node]
                else:
                    current.append(node)
            groups.append(current)
            votes.append(rank_vote(jid, evaluator, groups))
    weights = {e: draw(st.sampled_from([0.0, 0.25, 0.5, 1.0])) for e in evaluators}
    return votes, weights


def _same_graph(g1: nx.DiGraph, g2: nx.DiGraph) -> bool:
    arcs1 = {(u, v): round(w, 9) for u, v, w in g1.edges(data="weight")}
    arcs2 = {(u, v): round(w, 9) for u, v, w in g2.edges(data="weight")}
    return set(g1.nodes) == set(g2.nodes) and arcs1 == arcs2


@FAST
@given(vote_sets())
def test_it_builds_the_same_graph_as_ensemble_graph(case):
    votes, weights = case
    by_evaluator: dict[str, list] = {}
    for vote in votes:
        by_evaluator.setdefault(vote.evaluator, []).extend(vote.edges())
    graphs = {e: G.evaluator_graph(edges) for e, edges in by_evaluator.items()}
    nodes = sorted({c for v in votes for c in v.candidates})
    expected = G.ensemble_graph(graphs, {e: weights[e] for e in graphs}, nodes=nodes)
    consensus = C.prompt_consensus(1, votes, weights=weights)
    assert _same_graph(consensus.human, expected)


@FAST
@given(vote_sets())
def test_it_ranks_every_judged_candidate_and_respects_the_kept_arcs(case):
    votes, weights = case
    consensus = C.prompt_consensus(1, votes, weights=weights)
    ranked = [c for group in consensus.ranking for c in group]
    assert sorted(ranked) == list(consensus.candidates)
    position = {c: i for i, group in enumerate(consensus.ranking) for c in group}
    removed = {(u, v) for u, v, _ in consensus.removed_arcs}
    for u, v in consensus.ensemble.edges:
        if (u, v) not in removed:
            assert position[u] < position[v]


@FAST
@given(vote_sets())
def test_it_counts_a_pair_vote_as_the_two_candidate_ranking_it_is(case):
    """The pair fast path of the evidence equals the same votes written as rankings."""
    import dataclasses

    votes, weights = case
    as_rankings = [
        dataclasses.replace(
            v, pair=None, outcome="", ranking=tuple(tuple(g) for g in v.as_ranking())
        )
        for v in votes
    ]
    fast, reference = C._pair_evidence(votes, weights), C._pair_evidence(as_rankings, weights)
    assert list(fast.items()) == list(reference.items())


def test_it_follows_the_majority_and_counts_the_evidence():
    votes = [
        rank_vote(1, "x", [[1], [2], [3]]),
        rank_vote(2, "y", [[1], [2], [3]]),
        rank_vote(3, "z", [[3], [2], [1]]),
    ]
    consensus = C.prompt_consensus(1, votes)
    assert consensus.ranking == [[1], [2], [3]]
    evidence = consensus.evidence[(1, 3)]
    assert (evidence.x_over_y, evidence.y_over_x, evidence.ties) == (2, 1, 0)
    assert evidence.agreement == pytest.approx(1 / 3)
    assert consensus.agreement == pytest.approx(1 / 3)
    assert consensus.comparisons == 9


def test_it_lets_reliable_evaluators_outvote_many_unreliable_ones():
    votes = [rank_vote(1, "expert", [[1], [2]])] + [
        rank_vote(i, f"s{i}", [[2], [1]]) for i in range(2, 5)
    ]
    weights = {"expert": 1.0, "s2": 0.1, "s3": 0.1, "s4": 0.1}
    assert C.prompt_consensus(1, votes, weights=weights).ranking == [[1], [2]]
    assert C.prompt_consensus(1, votes).ranking == [[2], [1]]


def test_it_breaks_human_silence_with_the_reward_model():
    votes = [rank_vote(1, "x", [[1], [2, 3]])]
    scores = {1: 0.0, 2: 1.0, 3: 2.0}
    assert C.prompt_consensus(1, votes).ranking == [[1], [2, 3]]
    with_rm = C.prompt_consensus(1, votes, rm_scores=scores, rm_weight=0.5)
    assert with_rm.ranking == [[1], [3], [2]]
    assert not with_rm.human.has_edge(3, 2)  # the human graph stays human


def test_it_needs_two_human_judgments_before_calling_a_model_conflict():
    one = C.prompt_consensus(1, [pair_vote(1, "x", 1, 2, "a")])
    assert C.rm_conflicts(one, {1: 0.0, 2: 5.0}) == []
    two = C.prompt_consensus(1, [pair_vote(1, "x", 1, 2, "a"), pair_vote(2, "y", 1, 2, "a")])
    (conflict,) = C.rm_conflicts(two, {1: 0.0, 2: 5.0})
    assert (conflict.model_prefers, conflict.over) == (2, 1)
    assert conflict.p_model > 0.99 and conflict.human_share == 1.0


def test_it_scores_gold_mistakes_with_ties_as_half():
    gold = [[1], [2], [3]]
    assert C.gold_wrong_share([[1], [2], [3]], gold) == 0
    assert C.gold_wrong_share([[3], [2], [1]], gold) == 1
    assert C.gold_wrong_share([[1, 2], [3]], gold) == pytest.approx(0.5 / 3)
    assert C.gold_wrong_share([[1], [2]], [[1, 2]]) is None


def test_it_writes_competition_ranks():
    assert C.competition_ranks([[5], [6, 7], [8]], [8, 6, 5, 7]) == [4, 2, 1, 2]


def test_it_adjusts_p_values_by_holm():
    adjusted = C.holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adjusted == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


@FAST
@given(
    st.lists(st.integers(1, 10_000), unique=True, max_size=60),
    st.sampled_from([{"train": 1.0}, {"train": 0.8, "test": 0.2}, {"a": 0.5, "b": 0.3, "c": 0.2}]),
    st.integers(0, 5),
)
def test_it_puts_every_prompt_in_exactly_one_split(prompts, fractions, seed):
    split_of = C.assign_splits(prompts, fractions, seed)
    assert set(split_of) == set(prompts)
    for name, fraction in fractions.items():
        size = sum(1 for s in split_of.values() if s == name)
        assert abs(size - fraction * len(prompts)) < 1
    assert C.assign_splits(list(reversed(prompts)), fractions, seed) == split_of


def test_it_samples_distinct_four_candidate_variants():
    ranking = [[1], [2, 3], [4], [5], [6]]
    variants = C.sample_variants(ranking, count=3, rng=random.Random(0))
    assert len(variants) == 3
    assert len({tuple(sorted(c for g in v for c in g)) for v in variants}) == 3
    for variant in variants:
        assert variant == C.restrict_ranking(ranking, [c for g in variant for c in g])
    assert C.sample_variants([[1, 2, 3, 4, 5]], rng=random.Random(0)) == []
    assert C.sample_variants([[1], [2], [3]], rng=random.Random(0)) == []


def test_it_tracks_agreement_over_time():
    day = datetime(2026, 1, 1, tzinfo=UTC)
    votes = [
        rank_vote(1, "x", [[1], [2]], created_at=day),
        rank_vote(2, "y", [[1], [2]], created_at=day),
        rank_vote(3, "z", [[2], [1]], created_at=day + timedelta(days=1)),
    ]
    first, second = C.agreement_by_period(votes)
    assert (first.start, first.n_judgments) == (day.date(), 2)
    assert first.agreement == pytest.approx(2 / 4)  # each agrees with one of two others
    assert second.agreement == 0


def test_it_turns_rankings_into_model_comparisons():
    votes = [rank_vote(1, "x", [[1], [2, 3]]), pair_vote(2, "y", 3, 1, "b")]
    models = {1: "m1", 2: "m2", 3: "m3"}
    assert sorted(C.model_comparisons(votes, models)) == [
        ("m1", "m2", "a"),
        ("m1", "m3", "a"),
        ("m2", "m3", "tie"),
        ("m3", "m1", "b"),
    ]


def test_it_flags_annotators_only_relative_to_their_peers():
    def quality(evaluator, weight):
        return C.EvaluatorQuality(evaluator, 30, 0.5, 0.5, None, 0, weight, 40)

    hard_task = {f"e{i}": quality(f"e{i}", 0.2) for i in range(4)}
    assert C.evaluator_flags(hard_task) == []
    one_bad = {**hard_task, "bad": quality("bad", 0.001)}
    (flag,) = C.evaluator_flags(one_bad)
    assert flag.evaluator == "bad" and flag.kind == "unreliable_annotator"
