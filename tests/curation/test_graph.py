"""Tests for curation.graph: pure functions, no database."""

from __future__ import annotations

import functools
import itertools
import json
import math
import time
from collections import Counter
from pathlib import Path

import choix
import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curation import graph as G

ARENA = Path("/work/shared/data/genai_arena_clean_battle_20240220.json")
ARENA_OUTCOME = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "both_bad"}

FAST = settings(max_examples=60, deadline=None)


@pytest.fixture(autouse=True)
def _media_root():
    """Shadows the suite-wide media fixture, which needs Django: these tests are pure."""


def digraph(arcs, nodes=()):
    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    for u, v, w in arcs:
        graph.add_edge(u, v, weight=w)
    return graph


@st.composite
def weighted_digraphs(draw, max_nodes=7, max_arcs=None):
    n = draw(st.integers(2, max_nodes))
    pairs = [(u, v) for u in range(n) for v in range(n) if u != v]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=max_arcs or len(pairs)))
    weights = draw(st.lists(st.integers(1, 5), min_size=len(chosen), max_size=len(chosen)))
    return digraph(
        [(u, v, float(w)) for (u, v), w in zip(chosen, weights, strict=True)], nodes=range(n)
    )


@st.composite
def random_dags(draw, max_nodes=9):
    """A DAG: arcs only from a lower to a higher position of a random permutation."""
    n = draw(st.integers(1, max_nodes))
    order = draw(st.permutations(range(n)))
    pairs = [(order[i], order[j]) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True)) if pairs else []
    weights = draw(st.lists(st.integers(1, 4), min_size=len(chosen), max_size=len(chosen)))
    return digraph(
        [(u, v, float(w)) for (u, v), w in zip(chosen, weights, strict=True)], nodes=range(n)
    )


def brute_force_min_fas_weight(graph):
    arcs = list(graph.edges(data="weight"))
    best = math.inf
    for size in range(len(arcs) + 1):
        for subset in itertools.combinations(arcs, size):
            weight = sum(w for _, _, w in subset)
            if weight >= best:
                continue
            rest = graph.copy()
            rest.remove_edges_from((u, v) for u, v, _ in subset)
            if nx.is_directed_acyclic_graph(rest):
                best = weight
    return best


@functools.cache
def ranks_of_every_order(n):
    """``rank[k, i]``: position of node i in the k-th permutation of ``range(n)``."""
    return np.argsort(np.array(list(itertools.permutations(range(n)))), axis=1)


def min_backward_weight_over_orders(graph):
    """Least weight of a feedback arc set, by enumerating every order of the nodes.

    An arc set is a feedback arc set exactly when some order makes every other arc point
    forwards, so the minimum is the least weight of backward arcs over all orders. A
    self-loop is backward in every order: `feedback_arc_set` documents that it always
    removes them.
    """
    nodes = list(graph.nodes)
    rank = ranks_of_every_order(len(nodes))
    index = {node: i for i, node in enumerate(nodes)}
    backward = np.zeros(len(rank))
    for u, v, w in graph.edges(data="weight"):
        backward += w * (rank[:, index[u]] >= rank[:, index[v]])
    return float(backward.min())


NODE_LABELS = st.one_of(st.integers(-3, 40), st.text("abxyz", min_size=1, max_size=2))
# A few repeated values make equal weights (ties between candidate cuts) common.
ARC_WEIGHTS = st.one_of(
    st.sampled_from([0.1, 0.2, 0.3, 0.5, 1.0, 2.5]),
    st.floats(min_value=0.0, max_value=10.0, allow_nan=False, allow_infinity=False),
)


@st.composite
def labelled_float_digraphs(draw, max_nodes=8):
    """Graphs on mixed int and str labels (in drawn insertion order), float weights and
    self-loops."""
    nodes = draw(st.lists(NODE_LABELS, min_size=1, max_size=max_nodes, unique=True))
    pairs = [(u, v) for u in nodes for v in nodes]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=len(pairs)))
    weights = draw(st.lists(ARC_WEIGHTS, min_size=len(chosen), max_size=len(chosen)))
    return digraph([(u, v, w) for (u, v), w in zip(chosen, weights, strict=True)], nodes=nodes)


def assert_a_valid_inclusion_minimal_fas(graph, result, exact_max_nodes):
    """What every `denoise` result must satisfy, whichever solver ran."""
    assert nx.is_directed_acyclic_graph(result.dag)
    removed = Counter((u, v) for u, v, _ in result.removed_arcs)
    # Kept and removed arcs split the input arcs: none invented, none lost, none twice.
    assert removed + Counter(iter(result.dag.edges)) == Counter(iter(graph.edges))
    assert set(result.dag.nodes) == set(graph.nodes)
    for u, v, w in result.removed_arcs:
        assert w == graph[u][v]["weight"]
        # Inclusion-minimal: an arc put back must close a cycle (a self-loop always does).
        assert u == v or nx.has_path(result.dag, v, u)
    assert removed.keys() >= set(nx.selfloop_edges(graph))
    cyclic = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    assert result.exact == all(len(c) <= exact_max_nodes for c in cyclic)


def position_of(ranking):
    return {node: g for g, group in enumerate(ranking) for node in group}


# --------------------------------------------------------------------------- edges


def test_it_turns_a_ranking_into_arcs_between_groups():
    assert G.edges_from_ranking([[1], [2, 3], [4]]) == [
        (1, 2, 1.0),
        (1, 3, 1.0),
        (1, 4, 1.0),
        (2, 4, 1.0),
        (3, 4, 1.0),
    ]


def test_it_lists_tied_pairs_separately():
    assert G.tie_pairs([[1], [2, 3, 5], [4]]) == [(2, 3), (2, 5), (3, 5)]


def test_it_rejects_a_candidate_ranked_twice():
    with pytest.raises(ValueError, match="appears twice"):
        G.edges_from_ranking([[1], [2, 1]])


def test_it_rejects_an_empty_tie_group():
    with pytest.raises(ValueError, match="empty"):
        G.edges_from_ranking([[1], [], [2]])


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [("a", [(7, 8, 1.0)]), ("b", [(8, 7, 1.0)]), ("tie", []), ("both_bad", [])],
)
def test_it_maps_a_pair_outcome_to_at_most_one_arc(outcome, expected):
    assert G.edges_from_pair(7, 8, outcome) == expected


def test_it_rejects_an_unknown_pair_outcome():
    with pytest.raises(ValueError, match="outcome"):
        G.edges_from_pair(7, 8, "left")


# --------------------------------------------------------------------------- graphs


def test_it_nets_opposite_judgments_of_one_evaluator():
    graph = G.evaluator_graph([(1, 2, 1.0), (1, 2, 1.0), (2, 1, 1.0)])
    assert list(graph.edges(data="weight")) == [(1, 2, 1.0)]


def test_it_drops_a_pair_one_evaluator_judged_equally_both_ways():
    graph = G.evaluator_graph([(1, 2, 1.0), (2, 1, 1.0)])
    assert graph.number_of_edges() == 0
    assert set(graph.nodes) == {1, 2}


def test_it_keeps_candidates_given_only_as_nodes():
    graph = G.evaluator_graph([(1, 2, 1.0)], nodes=[3])
    assert set(graph.nodes) == {1, 2, 3}


def test_it_rejects_a_self_preference():
    with pytest.raises(ValueError, match="itself"):
        G.evaluator_graph([(1, 1, 1.0)])


def test_it_sums_evaluators_with_their_weights():
    graphs = {"ann": digraph([(1, 2, 2.0)]), "rm": digraph([(1, 2, 1.0), (2, 3, 1.0)])}
    ensemble = G.ensemble_graph(graphs, {"ann": 1.0, "rm": 0.5})
    assert dict(((u, v), w) for u, v, w in ensemble.edges(data="weight")) == {
        (1, 2): 2.5,
        (2, 3): 0.5,
    }


def test_it_keeps_the_heavier_direction_with_the_difference():
    graphs = {"x": digraph([(1, 2, 3.0)]), "y": digraph([(2, 1, 1.0)])}
    ensemble = G.ensemble_graph(graphs)
    assert list(ensemble.edges(data="weight")) == [(1, 2, 2.0)]


def test_it_drops_both_arcs_when_weighted_sums_are_equal():
    # 0.1 + 0.2 != 0.3 in floating point: the cancellation must still happen.
    graphs = {"x": digraph([(1, 2, 1.0)]), "y": digraph([(1, 2, 1.0)]), "z": digraph([(2, 1, 1.0)])}
    ensemble = G.ensemble_graph(graphs, {"x": 0.1, "y": 0.2, "z": 0.3})
    assert ensemble.number_of_edges() == 0


def test_it_keeps_the_nodes_of_every_evaluator_graph():
    graphs = {"x": digraph([(1, 2, 1.0)]), "y": digraph([], nodes=[5])}
    assert set(G.ensemble_graph(graphs, nodes=[9]).nodes) == {1, 2, 5, 9}


def test_it_rejects_an_evaluator_without_a_weight():
    with pytest.raises(ValueError, match="no weight"):
        G.ensemble_graph({"x": digraph([(1, 2, 1.0)])}, {"y": 1.0})


@FAST
@given(
    st.dictionaries(
        st.sampled_from("abcd"), weighted_digraphs(max_nodes=5), min_size=1, max_size=4
    ),
    st.lists(st.sampled_from([0.0, 0.25, 0.5, 1.0, 2.0]), min_size=4, max_size=4),
)
def test_it_ensembles_to_the_weighted_net_preference_per_pair(graphs, factors):
    weights = dict(zip("abcd", factors, strict=True))
    ensemble = G.ensemble_graph(graphs, weights)
    nodes = set().union(*(g.nodes for g in graphs.values()))
    assert set(ensemble.nodes) == nodes
    for u, v in itertools.permutations(nodes, 2):
        net = sum(
            weights[name] * (g[u][v]["weight"] if g.has_edge(u, v) else 0.0)
            - weights[name] * (g[v][u]["weight"] if g.has_edge(v, u) else 0.0)
            for name, g in graphs.items()
        )
        assert not (ensemble.has_edge(u, v) and ensemble.has_edge(v, u))
        if net > 1e-9:
            assert ensemble[u][v]["weight"] == pytest.approx(net)
        else:
            assert not ensemble.has_edge(u, v)


# --------------------------------------------------------------------------- cycles


@settings(max_examples=300, deadline=None)
@given(weighted_digraphs(max_nodes=9), st.booleans())
def test_it_tells_a_cycle_as_networkx_does(graph, self_loop):
    if self_loop:
        graph.add_edge(0, 0, weight=1.0)
    assert G.has_cycle(graph) == (not nx.is_directed_acyclic_graph(graph))


@settings(max_examples=200, deadline=None)
@given(
    st.integers(2, 9),
    st.lists(st.tuples(st.integers(0, 8), st.integers(0, 8), st.booleans(), st.integers(0, 4))),
)
def test_it_builds_a_net_graph_as_evaluator_graph_does(n, drawn):
    """Net arcs (one per pair, either way, weights 0 / tiny / real): the same nodes, arcs,
    weights and adjacency order in both directions."""
    arcs, seen = [], set()
    for u, v, flip, w in drawn:
        u, v = u % n, v % n
        if u == v or frozenset((u, v)) in seen:
            continue
        seen.add(frozenset((u, v)))
        arcs.append(
            (v, u, [0.0, 1e-12, 0.5, 1.25, 3.0][w])
            if flip
            else (u, v, [0.0, 1e-12, 0.5, 1.25, 3.0][w])
        )
    nodes = list(range(n))[::-1]
    fast, reference = G.net_graph(nodes, arcs), G.evaluator_graph(arcs, nodes)
    assert list(fast.nodes) == list(reference.nodes)
    assert list(fast.edges(data=True)) == list(reference.edges(data=True))
    assert {x: list(fast.pred[x]) for x in nodes} == {x: list(reference.pred[x]) for x in nodes}
    assert fast.out_degree(0) == reference.out_degree(0)
    assert G.has_cycle(fast) == G.has_cycle(reference)


def test_a_net_graph_rejects_an_arc_outside_its_nodes():
    with pytest.raises(ValueError):
        G.net_graph([1, 2], [(1, 3, 1.0)])
    with pytest.raises(ValueError):
        G.net_graph([1, 2], [(1, 1, 1.0)])


def test_it_finds_a_preference_cycle():
    graph = digraph([(1, 2, 1.0), (2, 3, 1.0), (3, 1, 1.0), (3, 4, 1.0)])
    assert G.has_cycle(graph)
    assert [sorted(c) for c in G.find_cycles(graph)] == [[1, 2, 3]]


def test_it_reports_no_cycle_in_a_dag():
    graph = digraph([(1, 2, 1.0), (2, 3, 1.0), (1, 3, 1.0)])
    assert not G.has_cycle(graph)
    assert G.find_cycles(graph) == []


def test_it_bounds_the_number_of_cycles_listed():
    tournament = digraph([(u, v, 1.0) for u in range(7) for v in range(7) if u != v])
    assert len(G.find_cycles(tournament, limit=10)) == 10


# --------------------------------------------------------------------------- feedback arcs


def test_it_cuts_the_lightest_arc_of_a_cycle():
    graph = digraph([(1, 2, 3.0), (2, 3, 3.0), (3, 1, 1.0)])
    assert G.feedback_arc_set(graph) == [(3, 1)]


def test_it_cuts_two_light_arcs_rather_than_one_heavy_arc():
    # 1->2 (weight 3) closes both cycles; cutting the two weight-1 arcs is cheaper.
    graph = digraph([(1, 2, 3.0), (2, 3, 1.0), (3, 1, 1.0), (2, 4, 1.0), (4, 1, 1.0)])
    assert G.denoise(graph).removed_weight == 2.0
    assert (1, 2) not in G.feedback_arc_set(graph)


def test_it_removes_self_loops():
    graph = digraph([(1, 1, 1.0), (1, 2, 1.0)])
    assert G.feedback_arc_set(graph) == [(1, 1)]


def test_it_solves_each_strongly_connected_component_exactly():
    # Ten 3-cycles chained by arcs: 30 nodes, but no component above 3 nodes.
    arcs = []
    for k in range(10):
        a, b, c = 3 * k, 3 * k + 1, 3 * k + 2
        arcs += [(a, b, 2.0), (b, c, 2.0), (c, a, 1.0)]
        if k:
            arcs.append((a - 1, a, 5.0))
    result = G.denoise(digraph(arcs), exact_max_nodes=3)
    assert result.exact
    assert sorted(result.removed_arcs) == [(3 * k + 2, 3 * k, 1.0) for k in range(10)]


def test_it_falls_back_to_greedy_for_a_large_component():
    cycle = digraph([(k, (k + 1) % 8, 1.0) for k in range(8)])
    result = G.denoise(cycle, exact_max_nodes=5)
    assert not result.exact
    assert len(result.removed_arcs) == 1


def test_it_rejects_negative_arc_weights():
    with pytest.raises(ValueError, match="negative"):
        G.feedback_arc_set(digraph([(1, 2, -1.0), (2, 1, 2.0)]))


def test_it_refuses_an_exact_limit_the_memory_cannot_hold():
    with pytest.raises(ValueError, match="at most 20"):
        G.feedback_arc_set(digraph([(1, 2, 1.0)]), exact_max_nodes=21)


@settings(max_examples=40, deadline=None)
@given(weighted_digraphs(max_nodes=6, max_arcs=10))
def test_it_finds_a_minimum_weight_fas_like_brute_force_over_arc_subsets(graph):
    assert G.denoise(graph).removed_weight == pytest.approx(brute_force_min_fas_weight(graph))


@settings(max_examples=300, deadline=None)
@given(labelled_float_digraphs(max_nodes=8), st.integers(2, 12))
def test_it_removes_a_minimum_weight_fas_wherever_it_claims_exactness(graph, exact_max_nodes):
    result = G.denoise(graph, exact_max_nodes=exact_max_nodes)
    assert_a_valid_inclusion_minimal_fas(graph, result, exact_max_nodes)
    optimum = min_backward_weight_over_orders(graph)
    if result.exact:
        assert result.removed_weight == pytest.approx(optimum, rel=1e-9, abs=1e-9)
    assert sorted(G.feedback_arc_set(graph, exact_max_nodes), key=repr) == sorted(
        ((u, v) for u, v, _ in result.removed_arcs), key=repr
    )


def test_it_beats_the_greedy_where_eades_lin_smyth_is_not_optimal():
    # Cycle 0 -> 1 -> 2 -> 3 -> 0 plus the chord 3 -> 1: cutting 1 -> 2 (weight 2) breaks
    # both cycles, but the greedy order ends up cutting 3 -> 0 and 3 -> 1 (weight 3).
    graph = digraph([(0, 1, 3.0), (1, 2, 2.0), (2, 3, 3.0), (3, 0, 2.0), (3, 1, 1.0)])
    greedy = G.denoise(graph, exact_max_nodes=2)
    exact = G.denoise(graph, exact_max_nodes=4)
    assert (greedy.exact, exact.exact) == (False, True)
    assert exact.removed_arcs == ((1, 2, 2.0),)
    assert greedy.removed_weight == 3.0 > exact.removed_weight == 2.0


@FAST
@given(weighted_digraphs(max_nodes=14), st.integers(2, 12))
def test_it_always_leaves_a_dag_made_of_input_arcs(graph, exact_max_nodes):
    result = G.denoise(graph, exact_max_nodes=exact_max_nodes)
    assert_a_valid_inclusion_minimal_fas(graph, result, exact_max_nodes)


def random_sparse_digraph(rng, n, density):
    arcs = [
        (u, v, float(rng.integers(1, 4)))
        for u in range(n)
        for v in range(n)
        if u != v and rng.random() < density
    ]
    return digraph(arcs, nodes=range(n))


def test_it_removes_no_arc_the_greedy_could_have_kept():
    rng = np.random.default_rng(0)
    for _ in range(60):
        graph = random_sparse_digraph(rng, int(rng.integers(10, 40)), rng.uniform(0.05, 0.3))
        result = G.denoise(graph, exact_max_nodes=2)
        for u, v, w in result.removed_arcs:
            restored = result.dag.copy()
            restored.add_edge(u, v, weight=w)
            assert not nx.is_directed_acyclic_graph(restored)


def test_it_cuts_the_light_arc_of_a_long_cycle_greedily():
    chain = [(k + 1, k, 5.0) for k in range(9)]  # 9 -> 8 -> ... -> 0, against id order
    result = G.denoise(digraph([*chain, (0, 9, 1.0)]), exact_max_nodes=2)
    assert not result.exact
    assert result.removed_arcs == ((0, 9, 1.0),)


def test_it_keeps_the_greedy_within_ten_percent_of_the_optimum():
    rng = np.random.default_rng(1)
    greedy = optimum = 0.0
    for _ in range(20):
        arcs = [
            (u, v, float(rng.integers(1, 4))) if rng.random() < 0.5 else (v, u, 1.0)
            for u, v in itertools.combinations(range(10), 2)
        ]
        graph = digraph(arcs)
        greedy += G.denoise(graph, exact_max_nodes=2).removed_weight
        optimum += G.denoise(graph, exact_max_nodes=10).removed_weight
    assert optimum <= greedy <= 1.1 * optimum


@FAST
@given(
    st.permutations(range(8)),
    st.lists(st.lists(st.integers(0, 7), min_size=2, max_size=8, unique=True), min_size=1),
)
def test_it_removes_nothing_when_every_judgment_follows_one_order(order, subsets):
    rank = {c: i for i, c in enumerate(order)}
    graphs = {
        k: G.evaluator_graph(G.edges_from_ranking([[c] for c in sorted(s, key=rank.get)]))
        for k, s in enumerate(subsets)
    }
    result = G.denoise(G.ensemble_graph(graphs))
    assert result.removed_arcs == ()


# --------------------------------------------------------------------------- ranking


@FAST
@given(weighted_digraphs(max_nodes=10), st.sampled_from(G.RANKING_METHODS))
def test_it_ranks_every_kept_arc_in_its_direction(graph, method):
    dag = G.denoise(graph).dag
    ranking = G.consensus_ranking(dag, method)
    position = position_of(ranking)
    assert sorted(position) == sorted(dag.nodes)
    assert sum(len(group) for group in ranking) == dag.number_of_nodes()
    for u, v in dag.edges:
        assert position[u] < position[v]


@FAST
@given(random_dags(), st.sampled_from(G.RANKING_METHODS), st.randoms(use_true_random=False))
def test_it_ranks_the_same_graph_the_same_whatever_the_insertion_order(dag, method, rnd):
    arcs = list(dag.edges(data="weight"))
    nodes = list(dag.nodes)
    rnd.shuffle(arcs)
    rnd.shuffle(nodes)
    assert G.consensus_ranking(digraph(arcs, nodes), method) == G.consensus_ranking(dag, method)


@pytest.mark.parametrize("method", G.RANKING_METHODS)
def test_it_ranks_a_chain_in_its_order(method):
    assert G.consensus_ranking(digraph([(3, 1, 1.0), (1, 2, 1.0)]), method) == [[3], [1], [2]]


@pytest.mark.parametrize("method", ["copeland", "bradley_terry"])
def test_it_ties_candidates_without_evidence(method):
    assert G.consensus_ranking(digraph([(1, 2, 1.0)], nodes=[3, 4]), method) == [[1], [3, 4], [2]]


def test_it_puts_the_candidate_with_more_wins_first_when_arcs_leave_it_open():
    dag = digraph([(1, 2, 1.0), (3, 4, 1.0), (3, 5, 1.0), (3, 6, 1.0)])
    for method in G.RANKING_METHODS:
        assert G.consensus_ranking(dag, method)[0] == [3]


def test_it_lets_an_arc_override_a_higher_score():
    # Copeland gives 2 a score of +1 and 1 a score of 0, but the arc 1 -> 2 must hold.
    dag = digraph([(1, 2, 1.0), (2, 3, 1.0), (2, 4, 1.0), (5, 1, 1.0)])
    position = position_of(G.consensus_ranking(dag, "copeland"))
    assert position[1] < position[2]


def test_it_refuses_to_rank_a_cyclic_graph():
    with pytest.raises(ValueError, match="denoise"):
        G.consensus_ranking(digraph([(1, 2, 1.0), (2, 1, 1.0)]))


def test_it_rejects_an_unknown_ranking_method():
    with pytest.raises(ValueError, match="method"):
        G.consensus_ranking(digraph([(1, 2, 1.0)]), "borda")  # type: ignore[arg-type]


def test_it_fits_bradley_terry_like_choix():
    rng = np.random.default_rng(3)
    votes = [(int(a), int(b)) for a, b in rng.integers(0, 5, size=(80, 2)) if a != b]
    graph = nx.DiGraph()
    graph.add_nodes_from(range(5))
    for a, b in votes:
        weight = graph[a][b]["weight"] + 1 if graph.has_edge(a, b) else 1.0
        graph.add_edge(a, b, weight=weight)
    ours = G.bradley_terry_scores(graph, alpha=0.05)
    expected = choix.opt_pairwise(5, votes, alpha=0.05)
    np.testing.assert_allclose([ours[i] for i in range(5)], expected, atol=1e-5)


def test_it_reports_the_net_margin_of_every_ranked_pair():
    ensemble = digraph([(1, 2, 2.0), (3, 2, 0.5)], nodes=[4])
    margins = G.pair_margins(ensemble, [[1], [2], [3, 4]])
    assert [(m.better, m.worse, m.margin) for m in margins] == [
        (1, 2, 2.0),
        (1, 3, 0.0),
        (1, 4, 0.0),
        (2, 3, -0.5),
        (2, 4, 0.0),
    ]


def test_it_runs_the_whole_pipeline_from_judgments_to_margins():
    judgments = {
        "ann1": G.edges_from_ranking([[1], [2], [3]]),
        "ann2": G.edges_from_ranking([[2], [3], [1]]),
        "ann3": G.edges_from_pair(1, 3, "a") + G.edges_from_pair(1, 2, "a"),
    }
    graphs = {name: G.evaluator_graph(edges) for name, edges in judgments.items()}
    ensemble = G.ensemble_graph(graphs, {"ann1": 1.0, "ann2": 0.5, "ann3": 1.0})
    result = G.denoise(ensemble)
    # Every pair nets to 1.5 for the better candidate: no cycle survives the ensemble.
    assert result.removed_arcs == ()
    assert G.consensus_ranking(result.dag) == [[1], [2], [3]]
    assert [m.margin for m in G.pair_margins(ensemble, [[1], [2], [3]])] == [1.5, 1.5, 1.5]


# --------------------------------------------------------------------------- leaderboard


@pytest.fixture(scope="module")
def arena_votes():
    rows = json.loads(ARENA.read_text())
    return [(r["model_a"], r["model_b"], ARENA_OUTCOME[r["winner"]]) for r in rows]


def test_it_counts_a_tie_as_half_a_win_each_way():
    votes = [("x", "y", "a"), ("x", "y", "tie"), ("y", "z", "a"), ("z", "x", "tie")]
    rows = G.bradley_terry_leaderboard(votes, bootstrap=0, alpha=0.01)
    # Doubling every vote and writing a tie as one win each way is the same likelihood.
    doubled = [(0, 1), (0, 1), (0, 1), (1, 0), (1, 2), (1, 2), (2, 0), (0, 2)]
    strengths = choix.opt_pairwise(3, doubled, alpha=0.02)
    expected = 1000 + 400 * strengths / math.log(10)
    assert {r.model: r.score for r in rows} == pytest.approx(
        dict(zip("xyz", expected, strict=True)), abs=1e-3
    )


def test_it_scores_both_bad_like_a_tie():
    tie = G.bradley_terry_leaderboard([("x", "y", "a"), ("x", "y", "tie")], bootstrap=0)
    both_bad = G.bradley_terry_leaderboard([("x", "y", "a"), ("x", "y", "both_bad")], bootstrap=0)
    assert [r.score for r in tie] == [r.score for r in both_bad]


def test_it_ignores_ties_when_asked_to_drop_them():
    votes = [("x", "y", "a"), ("x", "y", "b"), ("x", "y", "tie"), ("x", "z", "tie")]
    rows = G.bradley_terry_leaderboard(votes, ties="drop", bootstrap=0)
    assert {r.model: r.n_comparisons for r in rows} == {"x": 2, "y": 2}


def test_it_skips_a_model_compared_with_itself():
    rows = G.bradley_terry_leaderboard([("x", "x", "a"), ("x", "y", "a")], bootstrap=0)
    assert {r.model: r.n_comparisons for r in rows} == {"x": 1, "y": 1}


def test_it_gives_sparse_edition_models_much_wider_intervals(arena_votes):
    rows = G.bradley_terry_leaderboard(arena_votes, bootstrap=100, seed=0)
    width = {r.model: r.ci_high - r.ci_low for r in rows}
    edition = [w for m, w in width.items() if m.endswith("_edition")]
    generation = [w for m, w in width.items() if m.endswith("_generation")]
    assert len(edition) == 7 and len(generation) == 6
    assert min(edition) > 3 * max(generation)


def test_it_keeps_every_score_inside_its_interval(arena_votes):
    for row in G.bradley_terry_leaderboard(arena_votes, bootstrap=100, seed=0):
        assert row.ci_low <= row.score <= row.ci_high


def test_it_separates_models_no_vote_connects(arena_votes):
    rows = G.bradley_terry_leaderboard(arena_votes, bootstrap=0)
    component = {r.model: r.component for r in rows}
    assert {c for m, c in component.items() if m.endswith("_generation")} == {0}
    assert {c for m, c in component.items() if m.endswith("_edition")} == {1}


def test_it_ranks_playground_first_among_arena_generators(arena_votes):
    rows = G.bradley_terry_leaderboard(arena_votes, bootstrap=0)
    generators = [r.model for r in rows if r.component == 0]
    assert generators[0] == "imagenhub_PlayGroundV2_generation"
    assert generators[-1] == "imagenhub_LCM_generation"


def test_it_reproduces_intervals_for_a_seed(arena_votes):
    first = G.bradley_terry_leaderboard(arena_votes, bootstrap=20, seed=7)
    again = G.bradley_terry_leaderboard(arena_votes, bootstrap=20, seed=7)
    other = G.bradley_terry_leaderboard(arena_votes, bootstrap=20, seed=8)
    assert first == again
    assert first != other


def test_it_bootstraps_two_thousand_votes_in_well_under_a_few_seconds(arena_votes):
    start = time.perf_counter()
    G.bradley_terry_leaderboard(arena_votes, bootstrap=100)
    assert time.perf_counter() - start < 3.0


def test_it_counts_the_votes_that_keep_a_close_leader_on_top():
    votes = [("x", "y", "a")] * 7 + [("x", "y", "b")] * 5
    report = G.leaderboard_stability(votes)
    # Two removed x-wins make 5-5 (no one strictly ahead); the third puts y on top.
    assert (report.leader, report.votes_to_change, report.new_leader) == ("x", 3, "y")
    assert report.removed == (("x", "y", "a"),) * 3


def test_it_removes_votes_that_really_change_the_arena_top(arena_votes):
    generation = [v for v in arena_votes if v[0].endswith("_generation")]
    report = G.leaderboard_stability(generation)
    assert report.votes_to_change is not None

    def top_after_removing(removed):
        remaining = list(generation)
        for vote in removed:
            remaining.remove(vote)
        return G.bradley_terry_leaderboard(remaining, bootstrap=0)[0].model

    assert top_after_removing(report.removed) == report.new_leader != report.leader
    assert top_after_removing(report.removed[:-1]) == report.leader


def test_it_reports_no_change_when_the_removal_budget_is_too_small(arena_votes):
    generation = [v for v in arena_votes if v[0].endswith("_generation")]
    report = G.leaderboard_stability(generation, max_removals=3)
    assert report.votes_to_change is None
    assert report.new_leader is None
    assert len(report.removed) == 3
