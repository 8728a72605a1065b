"""Preference graphs: build them from judgments, ensemble, denoise, rank, leaderboards.

Pure core: no Django, no other Quorum module. Plain records in, plain records out; the
Django layer converts its rows into these shapes.

Conventions
    - A *candidate* (or model) is any hashable; the app uses integer ids.
    - A weighted *arc* ``(u, v, w)`` means "u is preferred to v" with weight ``w > 0``.
    - A *ranking* is a sequence of tie groups, best first: ``[[a], [b, c], [d]]``.
    - A pairwise *outcome* is one of ``"a"``, ``"b"``, ``"tie"``, ``"both_bad"``.
    - Ties (a shared tie group, ``"tie"``, ``"both_bad"``) carry no arc: a preference graph
      holds strict preferences only. `tie_pairs` lists the tied pairs of a ranking for the
      measures that need them (agreement, Bradley-Terry with ties); the leaderboard counts a
      tie as half a win each way.
    - Graphs are ``networkx.DiGraph`` with a float ``"weight"`` on every arc (missing = 1).

Per-prompt pipeline (GED / PGED, arXiv 2410.12869)::

    edges = edges_from_ranking(r)            # or edges_from_pair(a, b, outcome)
    graphs = {annotator: evaluator_graph(edges_of_annotator), ...}
    ensemble = ensemble_graph(graphs, weights={annotator: reliability, "rm": 0.3})
    result = denoise(ensemble)               # DAG + removed arcs (min-weight FAS)
    ranking = consensus_ranking(result.dag)  # tie groups, respects every kept arc
    margins = pair_margins(ensemble, ranking)

Public API
    edges_from_ranking(ranking)                  every cross-group pair as a weight-1 arc
    tie_pairs(ranking)                           every within-group pair
    edges_from_pair(a, b, outcome)               zero or one arc for a pairwise judgment
    evaluator_graph(edges, nodes=())             one evaluator's net-preference graph
    ensemble_graph(graphs, weights=None, nodes=())  reliability-weighted sum, opposites cancel
    has_cycle(g) / find_cycles(g, limit=100)     cycle checks for flags
    feedback_arc_set(g, exact_max_nodes=12)      minimum-weight FAS (exact per SCC, else greedy)
    denoise(g, exact_max_nodes=12)               DenoiseResult(dag, removed_arcs, exact)
    consensus_ranking(dag, method=...)           tie groups best -> worst, respecting the DAG
    pair_margins(g, ranking)                     net arc weight for every ordered pair
    bradley_terry_scores(g, alpha=...)           MAP Bradley-Terry strengths from arc weights
    bradley_terry_leaderboard(comparisons, ...)  Arena-style model leaderboard with bootstrap CIs
    leaderboard_stability(comparisons, ...)      how many votes must go to change the top model

Ranking method: judged by recovery of a hidden order in bench/bench_denoise.py (figures in
bench/results_denoise.md). On MR2Bench-Video-like sparse data (19 responses, ~19 of 171
pairs judged) Copeland on the denoised DAG has the best Kendall tau of the three methods at
10-40% flipped votes (0.335 vs 0.325 Bradley-Terry vs 0.289 descendant count at 20%), so it
is the default. Note that plain majority vote + Copeland, which need not respect every
surviving arc, scores higher still there (0.354): on sparse graphs there are few cycles to
remove, and an arc left by one flipped vote becomes a hard constraint. The reward model as
an extra, down-weighted evaluator is what lifts recovery (0.515 at 20%).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import math
import operator
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    # Imported by the functions that use them: every Django process imports this module (through
    # the curation services and admin) and most never build a graph.
    import networkx as nx
    import numpy as np

Node = Hashable
Edge = tuple[Node, Node, float]
Arc = tuple[Node, Node]
RankingMethod = Literal["copeland", "bradley_terry", "descendants"]

OUTCOMES = ("a", "b", "tie", "both_bad")
RANKING_METHODS: tuple[str, ...] = ("copeland", "bradley_terry", "descendants")
DEFAULT_RANKING_METHOD: RankingMethod = "copeland"

# Net weights are sums of float reliabilities: 0.1 + 0.2 - 0.3 must count as "no preference".
_EPS = 1e-9
# 2**20 subsets x 20 nodes of float64 is 160 MB: the exact DP stops being cheap well before.
_EXACT_LIMIT = 20
# Elo-like display scale of Chatbot Arena: 400 points = 10x odds, centred on 1000.
_ELO_SCALE = 400.0
_ELO_BASE = 10.0
_ELO_INIT = 1000.0


# --------------------------------------------------------------------------- edges


def edges_from_ranking(ranking: Sequence[Sequence[Node]], *, weight: float = 1.0) -> list[Edge]:
    """Arcs implied by a ranking given as tie groups, best first.

    Every pair of candidates in different groups yields ``(better, worse, weight)``; pairs
    inside a group yield nothing (see `tie_pairs`).

    Args:
        ranking: Tie groups best -> worst, e.g. ``[[1], [2, 3], [4]]``.
        weight: Weight of each arc.

    Returns:
        Arcs in ranking order.

    Raises:
        ValueError: On an empty group or a candidate listed twice.
    """
    groups = _check_ranking(ranking)
    edges: list[Edge] = []
    for i, better in enumerate(groups):
        for worse in groups[i + 1 :]:
            edges.extend((u, v, float(weight)) for u in better for v in worse)
    return edges


def tie_pairs(ranking: Sequence[Sequence[Node]]) -> list[tuple[Node, Node]]:
    """Unordered pairs of candidates that share a tie group.

    Args:
        ranking: Tie groups best -> worst.

    Returns:
        One ``(x, y)`` per tied pair, in ranking order.
    """
    return [pair for group in _check_ranking(ranking) for pair in itertools.combinations(group, 2)]


def edges_from_pair(a: Node, b: Node, outcome: str, *, weight: float = 1.0) -> list[Edge]:
    """The arc of one pairwise judgment.

    Args:
        a: Candidate shown as "a".
        b: Candidate shown as "b".
        outcome: ``"a"`` or ``"b"`` (that candidate won), ``"tie"`` or ``"both_bad"``.
        weight: Weight of the arc.

    Returns:
        ``[(winner, loser, weight)]``, or ``[]`` for a tie or both-bad judgment.

    Raises:
        ValueError: On an unknown outcome or ``a == b``.
    """
    if outcome not in OUTCOMES:
        raise ValueError(f"outcome must be one of {OUTCOMES}, got {outcome!r}")
    if a == b:
        raise ValueError(f"a pair needs two different candidates, got {a!r} twice")
    if outcome == "a":
        return [(a, b, float(weight))]
    if outcome == "b":
        return [(b, a, float(weight))]
    return []


def _check_ranking(ranking: Sequence[Sequence[Node]]) -> list[list[Node]]:
    groups = [list(group) for group in ranking]
    seen: set[Node] = set()
    for position, group in enumerate(groups):
        if not group:
            raise ValueError(f"ranking group {position} is empty")
        for candidate in group:
            if candidate in seen:
                raise ValueError(f"candidate {candidate!r} appears twice in the ranking")
            seen.add(candidate)
    return groups


# --------------------------------------------------------------------------- graphs


def evaluator_graph(edges: Iterable[Edge], nodes: Iterable[Node] = ()) -> nx.DiGraph:
    """One evaluator's preference graph: net preference per pair.

    Arc ``u -> v`` has weight ``sum(w for u > v) - sum(w for v > u)``; only positive nets are
    kept, so a pair judged both ways equally often has no arc.

    Args:
        edges: ``(better, worse, weight)`` arcs, e.g. from `edges_from_ranking`.
        nodes: Candidates to include even without a strict preference (e.g. only tied).

    Returns:
        A DiGraph with a ``"weight"`` on every arc.

    Raises:
        ValueError: On a self-preference or a negative weight.
    """
    totals: dict[Arc, float] = defaultdict(float)
    order: dict[Node, None] = dict.fromkeys(nodes)
    for u, v, w in edges:
        if u == v:
            raise ValueError(f"candidate {u!r} cannot be preferred to itself")
        if w < 0:
            raise ValueError(f"arc {u!r} -> {v!r} has negative weight {w}")
        totals[(u, v)] += w
        order.setdefault(u)
        order.setdefault(v)
    return _net_graph(order, totals)


def ensemble_graph(
    graphs: Mapping[Hashable, nx.DiGraph],
    weights: Mapping[Hashable, float] | None = None,
    nodes: Iterable[Node] = (),
) -> nx.DiGraph:
    """Reliability-weighted sum of evaluator graphs.

    ``w_E(u, v) = sum_a weights[a] * w_a(u, v)``; where both directions exist, the heavier
    one is kept with the difference as weight, and equal sums drop both (PGED step 2).

    Args:
        graphs: One preference graph per evaluator (annotator, reward model, ...).
        weights: Reliability per evaluator (default 1.0 each). Every evaluator in ``graphs``
            must have one; zero is allowed and silences the evaluator.
        nodes: Candidates to include even if no evaluator judged them.

    Returns:
        A DiGraph holding ``nodes``, the nodes of every input graph, and only positive net
        arcs.

    Raises:
        ValueError: On a missing or negative evaluator weight.
    """
    totals: dict[Arc, float] = defaultdict(float)
    order: dict[Node, None] = dict.fromkeys(nodes)
    for evaluator, graph in graphs.items():
        if weights is None:
            factor = 1.0
        elif evaluator not in weights:
            raise ValueError(f"no weight given for evaluator {evaluator!r}")
        else:
            factor = float(weights[evaluator])
        if factor < 0:
            raise ValueError(f"evaluator {evaluator!r} has negative weight {factor}")
        order.update(dict.fromkeys(graph.nodes))
        for u, v, w in graph.edges(data="weight", default=1.0):
            totals[(u, v)] += factor * w
    return _net_graph(order, totals)


def _net_graph(order: Mapping[Node, None], totals: Mapping[Arc, float]) -> nx.DiGraph:
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(order)
    for (u, v), w in totals.items():
        net = w - totals.get((v, u), 0.0)
        if net > _EPS:
            graph.add_edge(u, v, weight=net)
    return graph


def net_graph(nodes: Iterable[Node], arcs: Iterable[Edge]) -> nx.DiGraph:
    """`evaluator_graph` of arcs that are already net: at most one arc per pair, in either
    direction, each weight >= 0, every end in ``nodes``. The same graph (nodes, arcs and
    their order; arcs of weight <= 1e-9 left out) built without summing both directions.

    Filled through the adjacency dicts, as ``add_edge`` fills them, minus its per-arc
    checks: a consensus pass builds one such graph per prompt.
    """
    import networkx as nx

    graph = nx.DiGraph()
    graph.add_nodes_from(nodes)
    succ, pred = graph._succ, graph._pred
    for u, v, w in arcs:
        if w > _EPS:
            if u == v or u not in succ or v not in succ:
                raise ValueError(f"arc {u!r} -> {v!r} is a self-loop or leaves the nodes")
            data = {"weight": w}
            succ[u][v] = data
            pred[v][u] = data
    return graph


def has_cycle(graph: nx.DiGraph) -> bool:
    """Whether the graph has a directed cycle (a self-loop counts).

    Kahn's algorithm on the adjacency: the nodes left with arcs into them once every source
    is peeled off lie on or behind a cycle (as ``not nx.is_directed_acyclic_graph``, a
    fifth of its cost on a prompt's graph).
    """
    succ = graph._succ  # the adjacency dict itself: its public view costs a wrapper per node
    waiting = dict.fromkeys(succ, 0)
    for nbrs in succ.values():
        for v in nbrs:
            waiting[v] += 1
    ready = [n for n, count in waiting.items() if count == 0]
    peeled = 0
    while ready:
        u = ready.pop()
        peeled += 1
        for v in succ[u]:
            waiting[v] -= 1
            if waiting[v] == 0:
                ready.append(v)
    return peeled != len(waiting)


def find_cycles(graph: nx.DiGraph, limit: int | None = 100) -> list[list[Node]]:
    """Elementary directed cycles, shortest first, for flags and reviewer display.

    Args:
        graph: A preference graph.
        limit: Stop after this many cycles (None: all). A dense tournament has exponentially
            many cycles, so the default is bounded.

    Returns:
        Each cycle as its node list ``[n0, n1, ...]`` (arc ``n_last -> n0`` closes it).
    """
    import networkx as nx

    cycles = nx.simple_cycles(graph)
    found = list(cycles if limit is None else itertools.islice(cycles, limit))
    return sorted(found, key=len)


# --------------------------------------------------------------------------- feedback arcs


def feedback_arc_set(graph: nx.DiGraph, exact_max_nodes: int = 12) -> list[Arc]:
    """Minimum-weight feedback arc set: arcs whose removal leaves a DAG.

    Solved per strongly connected component: arcs between components never belong to a
    minimum set (ordering components topologically makes them all forward). A component of
    at most ``exact_max_nodes`` nodes is solved exactly by dynamic programming over node
    subsets; larger ones use the weighted Eades-Lin-Smyth greedy order, after which removed
    arcs are put back, heaviest first, wherever they close no cycle (so the set is at least
    inclusion-minimal). Self-loops are always in the set.

    Args:
        graph: A DiGraph with non-negative ``"weight"`` arcs.
        exact_max_nodes: Largest component solved exactly (at most 20; the DP is
            ``O(2**n * n**2)`` and 12 nodes take about a millisecond).

    Returns:
        The arcs to remove, as ``(u, v)``.

    Raises:
        ValueError: On a negative weight or ``exact_max_nodes`` above 20.
    """
    arcs, _ = _feedback_arcs(graph, exact_max_nodes)
    return arcs


@dataclass(frozen=True)
class DenoiseResult:
    """Outcome of `denoise`.

    Attributes:
        dag: Copy of the input graph without the removed arcs; acyclic.
        removed_arcs: ``(u, v, weight)`` of every removed arc: the evidence overruled.
        exact: True when every cyclic component was solved exactly (minimum weight).
    """

    dag: nx.DiGraph
    removed_arcs: tuple[Edge, ...]
    exact: bool

    @property
    def removed_weight(self) -> float:
        """Total weight of the removed arcs."""
        return sum(w for _, _, w in self.removed_arcs)


def denoise(graph: nx.DiGraph, exact_max_nodes: int = 12) -> DenoiseResult:
    """Remove a minimum-weight feedback arc set so the graph becomes a DAG.

    Args:
        graph: Usually an `ensemble_graph`.
        exact_max_nodes: See `feedback_arc_set`.

    Returns:
        The DAG, the removed arcs with their weights, and whether the removal is provably
        minimum.
    """
    arcs, exact = _feedback_arcs(graph, exact_max_nodes)
    removed = tuple((u, v, float(graph[u][v].get("weight", 1.0))) for u, v in arcs)
    dag = graph.copy()
    dag.remove_edges_from(arcs)
    return DenoiseResult(dag=dag, removed_arcs=removed, exact=exact)


def _feedback_arcs(graph: nx.DiGraph, exact_max_nodes: int) -> tuple[list[Arc], bool]:
    import networkx as nx
    import numpy as np

    if exact_max_nodes > _EXACT_LIMIT:
        raise ValueError(f"exact_max_nodes must be at most {_EXACT_LIMIT}")
    for u, v, w in graph.edges(data="weight", default=1.0):
        if w < 0:
            raise ValueError(f"arc {u!r} -> {v!r} has negative weight {w}")
    arcs: list[Arc] = [(u, v) for u, v in nx.selfloop_edges(graph)]
    exact = True
    order = _stable_order(graph.nodes)
    succ = graph.succ
    for component in nx.strongly_connected_components(graph):
        if len(component) < 2:
            continue
        nodes = sorted(component, key=order.__getitem__)
        index = {node: i for i, node in enumerate(nodes)}
        inner = [
            (index[u], index[v], float(data.get("weight", 1.0)))
            for u in nodes
            for v, data in succ[u].items()
            if v in index and v != u
        ]
        adjacent = np.zeros((len(nodes), len(nodes)), dtype=bool)
        weight = np.zeros((len(nodes), len(nodes)))
        for i, j, w in inner:
            adjacent[i, j] = True
            weight[i, j] = w
        if len(nodes) <= exact_max_nodes:
            positions = _exact_order(weight)
        else:
            exact = False
            positions = _sift(weight, _greedy_order(adjacent, weight))
        rank = np.empty(len(nodes), dtype=np.int64)
        rank[positions] = np.arange(len(nodes))
        kept = _restore_arcs(inner, rank)
        arcs.extend((nodes[i], nodes[j]) for i, j in kept)
    return arcs, exact


def _exact_order(weight: np.ndarray) -> list[int]:
    """Node order minimising the weight of backward arcs, by DP over subsets.

    ``cost[S]`` is the least backward weight of any order of S placed first; appending v
    after S turns every arc ``v -> s`` (s in S) backwards, which ``into[v, S]`` sums.
    """
    import numpy as np

    n = weight.shape[0]
    size = 1 << n
    into = np.zeros((n, size))
    for bit in range(n):
        into[:, 1 << bit : 2 << bit] = into[:, : 1 << bit] + weight[:, bit : bit + 1]
    masks = np.arange(size)
    popcount = np.zeros(size, dtype=np.int64)
    for bit in range(n):
        popcount += (masks >> bit) & 1
    cost = np.full(size, np.inf)
    cost[0] = 0.0
    last = np.full(size, -1, dtype=np.int64)
    for k in range(1, n + 1):
        layer = masks[popcount == k]
        best = np.full(layer.size, np.inf)
        choice = np.full(layer.size, -1, dtype=np.int64)
        for v in range(n):
            holds = np.flatnonzero((layer >> v) & 1)
            previous = layer[holds] ^ (1 << v)
            candidate = cost[previous] + into[v, previous]
            # Strictly better only: ties keep the lowest v, so the answer is deterministic.
            better = candidate < best[holds] - _EPS
            best[holds[better]] = candidate[better]
            choice[holds[better]] = v
        cost[layer] = best
        last[layer] = choice
    order: list[int] = []
    mask = size - 1
    while mask:
        v = int(last[mask])
        order.append(v)
        mask ^= 1 << v
    return order[::-1]


def _greedy_order(adjacent: np.ndarray, weight: np.ndarray) -> list[int]:
    """Eades-Lin-Smyth order, weighted: sinks to the back, sources to the front, else the
    node with the largest out-weight minus in-weight to the front."""
    import numpy as np

    n = weight.shape[0]
    active = np.ones(n, dtype=bool)
    out_count = adjacent.sum(axis=1)
    in_count = adjacent.sum(axis=0)
    delta = weight.sum(axis=1) - weight.sum(axis=0)
    front: list[int] = []
    back: list[int] = []

    def take(v: int) -> None:
        active[v] = False
        out_count[:] -= adjacent[:, v]
        in_count[:] -= adjacent[v, :]
        # Dropping v removes its arcs: a predecessor loses out-weight, a successor in-weight.
        delta[:] += weight[v, :] - weight[:, v]

    while active.any():
        sinks = np.flatnonzero(active & (out_count == 0))
        if sinks.size:
            back.append(int(sinks[0]))
            take(int(sinks[0]))
            continue
        sources = np.flatnonzero(active & (in_count == 0))
        if sources.size:
            front.append(int(sources[0]))
            take(int(sources[0]))
            continue
        v = int(np.argmax(np.where(active, delta, -np.inf)))
        front.append(v)
        take(v)
    return front + back[::-1]


def _sift(weight: np.ndarray, order: list[int], max_passes: int = 20) -> list[int]:
    """Local search on a node order: move single nodes to their cheapest position.

    Eades-Lin-Smyth alone leaves easy gains (on random 12-node tournaments its backward
    weight is often 10-20% above the optimum); re-inserting one node at a time while that
    strictly helps recovers most of the gap in O(n**2) per pass.
    """
    import numpy as np

    order = list(order)
    for _ in range(max_passes):
        improved = False
        for node in list(order):
            rest = [v for v in order if v != node]
            out_w = weight[node, rest]  # backward if node lands after these
            in_w = weight[rest, node]  # backward if node lands before these
            # cost[q] for inserting node before rest[q] (q == len(rest): at the end).
            cost = np.concatenate(([0.0], np.cumsum(out_w))) + np.concatenate(
                (np.cumsum(in_w[::-1])[::-1], [0.0])
            )
            current = order.index(node)
            best = int(np.argmin(cost))
            if cost[best] < cost[current] - _EPS:
                rest.insert(best, node)
                order = rest
                improved = True
        if not improved:
            break
    return order


def _restore_arcs(arcs: list[tuple[int, int, float]], rank: np.ndarray) -> list[tuple[int, int]]:
    """Arcs pointing backwards in ``rank`` order, minus those that can be put back.

    Backward arcs are put back, heaviest first, wherever they close no cycle; what stays
    out is an inclusion-minimal feedback arc set.
    """
    import networkx as nx

    dag = nx.DiGraph()
    dag.add_nodes_from(range(len(rank)))
    backward = []
    for position, (i, j, w) in enumerate(arcs):
        if rank[i] > rank[j]:
            backward.append((-w, position, i, j))
        else:
            dag.add_edge(i, j)
    removed = []
    for _, _, i, j in sorted(backward):
        if nx.has_path(dag, j, i):
            removed.append((i, j))
        else:
            dag.add_edge(i, j)
    return removed


# --------------------------------------------------------------------------- ranking


def consensus_ranking(
    dag: nx.DiGraph,
    method: RankingMethod = DEFAULT_RANKING_METHOD,
    *,
    alpha: float = 0.1,
) -> list[list[Node]]:
    """Consensus ranking of a DAG as tie groups, best first.

    Every method respects every arc: for each ``u -> v`` in the DAG, u lands in an earlier
    group than v. Scores only decide what the arcs leave open: the order is a topological
    sort that takes the best-scored available node first, and consecutive nodes share a
    group only when their scores are equal and no arc joins them.

    Methods (recovery measured by bench/bench_denoise.py, see bench/results_denoise.md):
        ``"copeland"`` (default): arcs out minus arcs in, i.e. pairwise-majority wins minus
        losses. Best Kendall tau and precision of the three at 10-40% flipped votes on
        sparse data, and it leaves candidates with equal evidence tied instead of
        inventing an order.
        ``"bradley_terry"``: MAP Bradley-Terry strength fitted on the arc weights. Orders
        nearly every pair; slightly better pairwise accuracy at 0-10% noise.
        ``"descendants"``: number of nodes reachable (GED's choice). Worst on sparse data:
        sinks and unjudged candidates all score 0.

    Args:
        dag: An acyclic preference graph, e.g. ``denoise(g).dag``.
        method: Scoring method, see above.
        alpha: Bradley-Terry prior strength (see `bradley_terry_scores`).

    Returns:
        Tie groups best -> worst covering every node; deterministic for a given graph.

    Raises:
        ValueError: On a cyclic graph or an unknown method.
    """
    # Rounded so that scores equal in exact arithmetic compare equal whatever the node
    # insertion order (floating-point sums depend on it).
    scores = {node: round(score, 9) for node, score in _scores(dag, method, alpha).items()}
    order = _stable_order(dag.nodes)
    topo = _topological_order(dag, key=lambda n: (-scores[n], order[n]))
    groups: list[list[Node]] = []
    for node in topo:
        if (
            groups
            and scores[node] == scores[groups[-1][0]]
            and not any(dag.has_edge(member, node) for member in groups[-1])
        ):
            groups[-1].append(node)
        else:
            groups.append([node])
    return [sorted(group, key=order.__getitem__) for group in groups]


def _topological_order(dag: nx.DiGraph, key: Callable[[Node], tuple]) -> list[Node]:
    """Kahn's algorithm taking the smallest key among the available nodes each step.

    Same result as ``nx.lexicographical_topological_sort`` with that key, in a quarter of the
    time, which matters over thousands of prompts per export.
    """
    indegree = dict(dag.in_degree())
    heap = [(key(n), i, n) for i, n in enumerate(dag.nodes) if indegree[n] == 0]
    heapq.heapify(heap)
    position = {n: i for i, n in enumerate(dag.nodes)}
    topo = []
    while heap:
        _, _, node = heapq.heappop(heap)
        topo.append(node)
        for successor in dag.succ[node]:
            indegree[successor] -= 1
            if indegree[successor] == 0:
                heapq.heappush(heap, (key(successor), position[successor], successor))
    if len(topo) < len(indegree):
        raise ValueError("consensus_ranking needs a DAG: call denoise() first")
    return topo


def _scores(dag: nx.DiGraph, method: str, alpha: float) -> dict[Node, float]:
    import networkx as nx

    if method == "copeland":
        out_degree, in_degree = dict(dag.out_degree()), dict(dag.in_degree())
        return {n: float(out_degree[n] - in_degree[n]) for n in dag.nodes}
    if method == "descendants":
        return {n: float(len(nx.descendants(dag, n))) for n in dag.nodes}
    if method == "bradley_terry":
        return bradley_terry_scores(dag, alpha=alpha)
    raise ValueError(f"method must be one of {RANKING_METHODS}, got {method!r}")


def bradley_terry_scores(graph: nx.DiGraph, *, alpha: float = 0.1) -> dict[Node, float]:
    """MAP Bradley-Terry strengths treating arc weight ``w(u, v)`` as u's wins over v.

    Args:
        graph: A preference graph (cycles allowed).
        alpha: Gaussian prior ``alpha * ||theta||^2`` (choix's convention). It keeps the
            strengths finite on a DAG, where every comparison is one-sided, and pulls
            candidates with no evidence to 0.

    Returns:
        Strength per node in natural-log odds units, summing to 0 over each connected part.
    """
    import numpy as np

    nodes = list(graph.nodes)
    index = {node: i for i, node in enumerate(nodes)}
    wins = np.zeros((len(nodes), len(nodes)))
    for u, v, w in graph.edges(data="weight", default=1.0):
        if u != v:
            wins[index[u], index[v]] += w
    theta = _fit_bradley_terry(wins, alpha)
    return {node: float(theta[index[node]]) for node in nodes}


def _fit_bradley_terry(
    wins: np.ndarray, alpha: float, initial: np.ndarray | None = None
) -> np.ndarray:
    """MAP strengths for ``wins[i, j]`` (possibly fractional) wins of i over j.

    Minimises ``sum_ij wins_ij * log(1 + exp(theta_j - theta_i)) + alpha * ||theta||^2`` by
    damped Newton steps. Written here rather than taken from choix because it must accept
    fractional counts (half-win ties, reliability weights), warm-start thousands of
    bootstrap refits, and expose the Hessian for `leaderboard_stability`; the tests check it
    against ``choix.opt_pairwise``.
    """
    import numpy as np

    if alpha <= 0:
        raise ValueError("alpha must be positive: the strengths are unbounded without it")
    n = wins.shape[0]
    theta = np.zeros(n) if initial is None else initial.astype(float).copy()
    if n == 0:
        return theta
    games = wins + wins.T

    def objective(t: np.ndarray) -> float:
        diff = t[:, None] - t[None, :]
        return float(np.sum(wins * np.logaddexp(0.0, -diff)) + alpha * t @ t)

    value = objective(theta)
    for _ in range(200):
        grad, hess = _bt_gradient_hessian(theta, wins, games, alpha)
        step = np.linalg.solve(hess, grad)
        # Newton can overshoot on near-separable data; halve until the objective drops.
        scale = 1.0
        while True:
            candidate = theta - scale * step
            new_value = objective(candidate)
            if new_value <= value + 1e-12 * abs(value) or scale < 1e-8:
                break
            scale /= 2
        theta, value = candidate, new_value
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    return theta


def _fit_bradley_terry_many(wins: np.ndarray, alpha: float, initial: np.ndarray) -> np.ndarray:
    """`_fit_bradley_terry` of each ``wins[b]``, all from ``initial``, stepped together.

    Each fit takes the steps, halvings and stop its own `_fit_bradley_terry` would take (the
    same arithmetic, a row each); one numpy call per step for all of them instead of one per
    fit (the bootstrap's 200 refits of a handful of models were a tenth of a second of
    Python).
    """
    import numpy as np

    count, n = wins.shape[0], wins.shape[1]
    theta = np.repeat(initial.astype(float)[None, :], count, axis=0)
    if n == 0 or count == 0:
        return theta
    games = wins + np.swapaxes(wins, 1, 2)

    def objective(t: np.ndarray, w: np.ndarray) -> np.ndarray:
        diff = t[:, :, None] - t[:, None, :]
        loss = w * np.logaddexp(0.0, -diff)
        return np.array([float(np.sum(loss[b]) + alpha * t[b] @ t[b]) for b in range(len(t))])

    value = objective(theta, wins)
    active = np.arange(count)
    for _ in range(200):
        if not len(active):
            break
        t, w, g = theta[active], wins[active], games[active]
        grad, hess = _bt_gradient_hessian_many(t, w, g, alpha)
        step = np.linalg.solve(hess, grad[:, :, None])[:, :, 0]
        scale = np.ones(len(active))
        candidate = t - step
        new_value = objective(candidate, w)
        searching = np.ones(len(active), dtype=bool)
        while True:
            done = (new_value <= value[active] + 1e-12 * np.abs(value[active])) | (scale < 1e-8)
            searching &= ~done
            if not searching.any():
                break
            scale[searching] /= 2
            candidate[searching] = t[searching] - scale[searching, None] * step[searching]
            new_value[searching] = objective(candidate[searching], w[searching])
        theta[active], value[active] = candidate, new_value
        moved = np.max(np.abs(scale[:, None] * step), axis=1)
        active = active[moved >= 1e-10]
    return theta


def _bt_gradient_hessian_many(
    theta: np.ndarray, wins: np.ndarray, games: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """`_bt_gradient_hessian` of each row of ``theta`` with its ``wins`` and ``games``."""
    import numpy as np
    from scipy.special import expit

    p = expit(theta[:, :, None] - theta[:, None, :])
    grad = -(wins - games * p).sum(axis=2) + 2 * alpha * theta
    curvature = games * p * (1 - p)
    hess = -curvature
    n = theta.shape[1]
    diagonal = curvature.sum(axis=2) - curvature[:, np.arange(n), np.arange(n)] + 2 * alpha
    hess[:, np.arange(n), np.arange(n)] = diagonal
    return grad, hess


def _bt_gradient_hessian(
    theta: np.ndarray, wins: np.ndarray, games: np.ndarray, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    import numpy as np
    from scipy.special import expit

    p = expit(theta[:, None] - theta[None, :])
    grad = -(wins - games * p).sum(axis=1) + 2 * alpha * theta
    curvature = games * p * (1 - p)
    hess = -curvature
    np.fill_diagonal(hess, curvature.sum(axis=1) - np.diag(curvature) + 2 * alpha)
    return grad, hess


@dataclass(frozen=True)
class PairMargin:
    """How strongly the evidence supports one ordered pair of a ranking.

    Attributes:
        better: Candidate ranked higher.
        worse: Candidate ranked lower.
        margin: Net arc weight ``w(better, worse) - w(worse, better)`` in the graph given to
            `pair_margins`; 0 when unjudged, negative when the ranking overrules evidence.
    """

    better: Node
    worse: Node
    margin: float


def pair_margins(graph: nx.DiGraph, ranking: Sequence[Sequence[Node]]) -> list[PairMargin]:
    """Margin of every ordered pair in a ranking (pairs in one tie group are skipped).

    Pass the ensemble graph (before denoising) to see how much evidence backs each pair
    of the exported ranking, including the overruled pairs (negative margins).

    Args:
        graph: Preference graph holding the net weights.
        ranking: Tie groups best -> worst, e.g. from `consensus_ranking`.

    Returns:
        One `PairMargin` per cross-group pair, in ranking order.
    """
    weight = {(u, v): float(w) for u, v, w in graph.edges(data="weight", default=1.0)}
    return [
        PairMargin(u, v, weight.get((u, v), 0.0) - weight.get((v, u), 0.0))
        for u, v, _ in edges_from_ranking(ranking)
    ]


def _stable_order(nodes: Iterable[Node]) -> dict[Node, int]:
    """Deterministic position per node: sorted when the ids compare, else insertion order."""
    listed = list(nodes)
    with contextlib.suppress(TypeError):
        listed = sorted(listed)  # type: ignore[type-var]
    return {node: i for i, node in enumerate(listed)}


# --------------------------------------------------------------------------- leaderboards

Comparison = tuple[Hashable, Hashable, str]
TiePolicy = Literal["half", "drop"]


@dataclass(frozen=True)
class LeaderboardRow:
    """One model on a Bradley-Terry leaderboard.

    Attributes:
        model: Model id.
        score: Elo-like score: 1000 + 400 * log10(odds) per unit of strength.
        ci_low: Lower bound of the bootstrap interval (NaN without bootstrap).
        ci_high: Upper bound of the bootstrap interval (NaN without bootstrap).
        n_comparisons: Votes involving the model that entered the fit.
        component: Connected part of the comparison graph (0 = most votes). Scores of
            different components are not comparable: no vote links them.
    """

    model: Hashable
    score: float
    ci_low: float
    ci_high: float
    n_comparisons: int
    component: int


@dataclass(frozen=True)
class _Tally:
    """Votes grouped into ``(model_a, model_b, outcome)`` cells with a count each."""

    models: list[Hashable]
    cells: list[tuple[Hashable, Hashable, str]]
    first: np.ndarray  # index of model_a per cell
    second: np.ndarray  # index of model_b per cell
    share: np.ndarray  # wins of model_a per vote: 1, 0, or 1/2 for a tie
    counts: np.ndarray

    def wins(self, counts: np.ndarray) -> np.ndarray:
        """``wins[i, j]``: (fractional) wins of model i over model j for these cell counts."""
        import numpy as np

        n = len(self.models)
        wins = np.zeros((n, n))
        np.add.at(wins, (self.first, self.second), counts * self.share)
        np.add.at(wins, (self.second, self.first), counts * (1 - self.share))
        return wins

    def wins_many(self, counts: np.ndarray) -> np.ndarray:
        """`wins` of each row of ``counts`` (one draw of cell counts a row), stacked."""
        import numpy as np

        n = len(self.models)
        wins = np.zeros((len(counts), n, n))
        rows = np.arange(len(counts))[:, None]
        np.add.at(wins, (rows, self.first[None, :], self.second[None, :]), counts * self.share)
        np.add.at(
            wins, (rows, self.second[None, :], self.first[None, :]), counts * (1 - self.share)
        )
        return wins


# The last `_tally`: (its rows, tie policy, answer), replaced and read as one reference.
_last_tally: list[tuple[tuple[Comparison, ...], str, _Tally] | None] = [None]


def _tally(comparisons: Iterable[Comparison], ties: TiePolicy) -> _Tally:
    """The comparisons counted per ``(model_a, model_b, outcome)`` cell. The answer is kept
    for the next call on the very same row objects in the same order and the same ``ties``
    (an export's leaderboard, then its stability on the main component's rows: the same
    rows when every model is linked); its arrays are read-only and callers copy before
    changing counts."""
    import numpy as np

    if ties not in ("half", "drop"):
        raise ValueError(f"ties must be 'half' or 'drop', got {ties!r}")
    rows = comparisons if isinstance(comparisons, list | tuple) else list(comparisons)
    kept = _last_tally[0]
    if (
        kept is not None
        and kept[1] == ties
        and len(kept[0]) == len(rows)
        and all(map(operator.is_, kept[0], rows))
    ):
        return kept[2]
    counter = _counted(rows, ties)
    if counter is None:
        counter = _counted_row_by_row(rows, ties)
    models = list(_stable_order({m for a, b, _ in counter for m in (a, b)}))
    index = {m: i for i, m in enumerate(models)}
    cells = list(counter)
    tally = _Tally(
        models=models,
        cells=cells,
        first=np.array([index[a] for a, _, _ in cells], dtype=np.int64),
        second=np.array([index[b] for _, b, _ in cells], dtype=np.int64),
        share=np.array([{"a": 1.0, "b": 0.0}.get(o, 0.5) for _, _, o in cells]),
        counts=np.array(list(counter.values()), dtype=float),
    )
    for column in (tally.first, tally.second, tally.share, tally.counts):
        column.setflags(write=False)
    _last_tally[0] = (tuple(rows), ties, tally)
    return tally


def _counted(
    rows: Sequence[Comparison], ties: TiePolicy
) -> Counter[tuple[Hashable, Hashable, str]] | None:
    """`_counted_row_by_row`'s counter from one ``Counter(rows)`` (counted in C, 5x faster
    at 94K votes), the skipped cells taken out after: the same counts in the same order
    (first appearance among the kept rows). None where a row is not a plain 3-tuple of
    hashables or an outcome is unknown: the row-by-row count says which row."""
    try:
        counter: Counter = Counter(rows)
    except TypeError:  # an unhashable row (a list) or member
        return None
    for key in counter:
        if type(key) is not tuple or len(key) != 3 or key[2] not in OUTCOMES:
            return None
    for key in [k for k in counter if k[0] == k[1] or (ties == "drop" and k[2] in _TIES)]:
        del counter[key]
    return counter


_TIES = ("tie", "both_bad")


def _counted_row_by_row(
    rows: Iterable[Comparison], ties: TiePolicy
) -> Counter[tuple[Hashable, Hashable, str]]:
    counter: Counter[tuple[Hashable, Hashable, str]] = Counter()
    for row, (a, b, outcome) in enumerate(rows):
        if outcome not in OUTCOMES:
            raise ValueError(
                f"comparison {row}: outcome must be one of {OUTCOMES}, got {outcome!r}"
            )
        # A model against itself says nothing about strengths (the GenAI-Arena dump holds
        # one such vote); Arena's own pipeline skips them too.
        if a == b or (ties == "drop" and outcome in ("tie", "both_bad")):
            continue
        counter[(a, b, outcome)] += 1
    return counter


def _to_elo(theta: np.ndarray) -> np.ndarray:
    return _ELO_INIT + _ELO_SCALE * theta / math.log(_ELO_BASE)


def bradley_terry_leaderboard(
    comparisons: Iterable[Comparison],
    *,
    ties: TiePolicy = "half",
    bootstrap: int = 100,
    seed: int = 0,
    alpha: float = 1e-3,
    confidence: float = 0.95,
) -> list[LeaderboardRow]:
    """Chatbot-Arena-style Bradley-Terry leaderboard with bootstrap confidence intervals.

    A tie (and a both-bad vote, which is a tie on preference) counts as half a win each way.
    The bootstrap resamples the vote counts of each ``(model_a, model_b, outcome)`` cell
    multinomially, which is the same as resampling votes and costs one small fit per round.

    Args:
        comparisons: ``(model_a, model_b, outcome)`` records, outcome as in `OUTCOMES`.
        ties: ``"half"`` (tie = half a win each way) or ``"drop"`` (ignore ties).
        bootstrap: Number of bootstrap rounds; 0 skips intervals.
        seed: Seed of the bootstrap.
        alpha: Gaussian prior strength on the strengths; keeps unbeaten models and
            disconnected groups finite while staying negligible for well-sampled ones.
        confidence: Coverage of the percentile interval.

    Returns:
        Rows sorted by score (highest first, then model id).

    Raises:
        ValueError: On an unknown outcome or tie policy. Self-comparisons are skipped.
    """
    import networkx as nx
    import numpy as np

    tally = _tally(comparisons, ties)
    if not tally.models:
        return []
    theta = _fit_bradley_terry(tally.wins(tally.counts), alpha)
    scores = _to_elo(theta)
    low = np.full(len(tally.models), math.nan)
    high = np.full(len(tally.models), math.nan)
    if bootstrap > 0:
        rng = np.random.default_rng(seed)
        total = int(tally.counts.sum())
        draws = rng.multinomial(total, tally.counts / total, size=bootstrap)
        samples = _to_elo(_fit_bradley_terry_many(tally.wins_many(draws), alpha, theta))
        tail = (1 - confidence) / 2 * 100
        low, high = np.percentile(samples, [tail, 100 - tail], axis=0)

    n_votes = np.zeros(len(tally.models), dtype=int)
    np.add.at(n_votes, tally.first, tally.counts.astype(int))
    np.add.at(n_votes, tally.second, tally.counts.astype(int))
    linked = nx.Graph()
    linked.add_nodes_from(range(len(tally.models)))
    linked.add_edges_from(zip(tally.first.tolist(), tally.second.tolist(), strict=True))
    components = sorted(
        nx.connected_components(linked), key=lambda c: (-sum(n_votes[i] for i in c), min(c))
    )
    component_of = {i: k for k, members in enumerate(components) for i in members}
    order = _stable_order(tally.models)
    rows = [
        LeaderboardRow(
            model=model,
            score=float(scores[i]),
            ci_low=float(low[i]),
            ci_high=float(high[i]),
            n_comparisons=int(n_votes[i]),
            component=component_of[i],
        )
        for i, model in enumerate(tally.models)
    ]
    return sorted(rows, key=lambda r: (-r.score, order[r.model]))


@dataclass(frozen=True)
class StabilityReport:
    """How many votes hold the top of a leaderboard in place.

    Attributes:
        leader: Top model on all votes.
        votes_to_change: Votes whose removal put another model strictly above the leader, or
            None if ``max_removals`` votes did not. Found greedily, so it is an upper bound
            on the true minimum (which is a combinatorial search).
        removed: The removed votes, in removal order, as ``(model_a, model_b, outcome)``.
        new_leader: Top model after the removal (None if the top did not change).
        n_votes: Votes that entered the fit.
    """

    leader: Hashable
    votes_to_change: int | None
    removed: tuple[Comparison, ...]
    new_leader: Hashable | None
    n_votes: int


def leaderboard_stability(
    comparisons: Iterable[Comparison],
    *,
    ties: TiePolicy = "half",
    alpha: float = 1e-3,
    max_removals: int | None = None,
) -> StabilityReport:
    """Fewest votes whose removal changes the top model (greedy; arXiv 2508.11847).

    Each round estimates, by a first-order influence step (the fit's Hessian), how much
    removing one vote of each ``(model_a, model_b, outcome)`` cell would shrink the gap
    between the leader and the closest rival, removes one vote from the best cell, and
    refits exactly. It stops as soon as a refit shows another model strictly on top.

    Pass the votes of one connected board (one `LeaderboardRow.component`): scores of
    models no vote links are not comparable, so neither is "the top" across them.

    Args:
        comparisons: ``(model_a, model_b, outcome)`` records.
        ties: Tie policy, as in `bradley_terry_leaderboard`.
        alpha: Prior strength, as in `bradley_terry_leaderboard`.
        max_removals: Give up after this many votes (default: all of them).

    Returns:
        A `StabilityReport`. Leaderboards with fewer than two models report None.
    """
    import numpy as np
    from scipy.special import expit

    tally = _tally(comparisons, ties)
    total = int(tally.counts.sum())
    if len(tally.models) < 2:
        leader = tally.models[0] if tally.models else None
        return StabilityReport(leader, None, (), None, total)
    order = _stable_order(tally.models)
    counts = tally.counts.copy()
    theta = _fit_bradley_terry(tally.wins(counts), alpha)

    def top(t: np.ndarray) -> int:
        return min(range(len(t)), key=lambda i: (-t[i], order[tally.models[i]]))

    leader = top(theta)
    removed: list[Comparison] = []
    limit = total if max_removals is None else min(max_removals, total)
    wins = tally.wins(counts)  # of the current counts: each refit's, reused by the next round
    while len(removed) < limit:
        rivals = np.delete(np.arange(len(theta)), leader)
        rival = int(rivals[np.argmax(theta[rivals])])
        _, hess = _bt_gradient_hessian(theta, wins, wins + wins.T, alpha)
        direction = np.zeros(len(theta))
        direction[leader], direction[rival] = 1.0, -1.0
        u = np.linalg.solve(hess, direction)
        # Removing one win of i over j moves the gap by -(1 - p_ij) * (u_i - u_j); a vote
        # worth a share s of a win to model_a removes s of (a over b) and 1 - s of (b over a).
        p = expit(theta[:, None] - theta[None, :])
        effect = -(1 - p) * (u[:, None] - u[None, :])
        i, j = tally.first, tally.second
        change = tally.share * effect[i, j] + (1 - tally.share) * effect[j, i]
        change = np.where(counts >= 1, change, np.inf)
        best_cell = int(np.argmin(change))
        best_effect = float(change[best_cell])
        if best_effect >= 0:
            # No single vote narrows the gap any more, so greedy removal cannot flip it.
            break
        counts[best_cell] -= 1
        removed.append(tally.cells[best_cell])
        wins = tally.wins(counts)
        theta = _fit_bradley_terry(wins, alpha, initial=theta)
        if np.max(np.delete(theta, leader)) > theta[leader] + 1e-9:
            return StabilityReport(
                leader=tally.models[leader],
                votes_to_change=len(removed),
                removed=tuple(removed),
                new_leader=tally.models[top(theta)],
                n_votes=total,
            )
    return StabilityReport(tally.models[leader], None, tuple(removed), None, total)
