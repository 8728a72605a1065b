"""Benchmark: does preference-graph denoising recover the hidden order, and how fast is it?

Simulates a world with known candidate qualities, lets noisy annotators judge it, and
compares rankings against the truth (pairwise accuracy, Kendall tau-b) for:

- majority vote + Copeland (per pair majority of raw votes, rank by wins minus losses),
- plain Bradley-Terry on the raw votes,
- the denoised ensemble (`curation.graph`: evaluator graphs -> ensemble -> minimum-weight
  feedback arc set -> consensus ranking) with each ranking method,
- the same with a simulated noisy reward model as one more, down-weighted evaluator,
- a naive networkx pipeline (sum votes, cancel 2-cycles, unweighted greedy FAS over the
  whole graph, plain topological sort), the kind of code the REFERENCE timed at 1.2 s.

Workloads:
- ``rank4``: prompts with N=4 candidates, 3 annotators each submit a full ranking.
  Annotators are Thurstonian (quality + Gaussian noise), the noise scale set so that the
  expected share of flipped pairs equals the noise level: flip = arccos(1/sqrt(1+s^2))/pi.
- ``sparse``: MR2Bench-Video-like, 4,700 prompts x 19 responses, 20 pairwise judgments per
  prompt (~19 of the 171 pairs) spread over a panel of 3-5 annotators; each judgment is
  flipped with probability equal to the noise level (94,000 judgments in all).

The reward model scores every candidate: quality + Thurstonian noise flipping a share of all
candidate pairs (``--rm-flip``, default 25 %; the trained demo reward model sits near 35-39 %),
and enters as a full ranking with weight 0.5, so one human vote outweighs it. Its order alone
is one more row ("reward model alone"), so that "+ RM" can be read against it.

Then the full 94K-judgment denoise pass (graphs, ensemble, FAS, ranking, margins) is timed
against the naive pipeline on the same data in the same run.

Usage::

    python bench/bench_denoise.py [--seed 0] [--quick] [--repeat 3] [--rm-flip 0.25]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import networkx as nx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation import graph as G  # noqa: E402

NOISE_LEVELS = (0.0, 0.1, 0.2, 0.3, 0.4)
RM_FLIP = 0.25
RM_WEIGHT = 0.5


@dataclass
class Prompt:
    quality: np.ndarray  # hidden quality per candidate 0..n-1
    votes: list[tuple[int, int, int]]  # (annotator, winner, loser)
    rm_scores: np.ndarray


Ranking = list[list[int]]


# --------------------------------------------------------------------------- worlds


def thurstone_scale(flip: float) -> float:
    """Noise s.d. giving the wanted flip rate for qualities ~ N(0, 1)."""
    return math.tan(math.pi * flip)


def simulate_rank4(
    rng: np.random.Generator,
    n_prompts: int,
    flip: float,
    n_cand: int = 4,
    panel: int = 3,
    rm_flip: float = RM_FLIP,
) -> list[Prompt]:
    prompts = []
    scale = thurstone_scale(flip)
    for p in range(n_prompts):
        quality = rng.normal(size=n_cand)
        votes = []
        for k in range(panel):
            seen = quality + scale * rng.normal(size=n_cand)
            order = [[int(c)] for c in np.argsort(-seen)]
            votes.extend((p * panel + k, u, v) for u, v, _ in G.edges_from_ranking(order))
        rm = quality + thurstone_scale(min(rm_flip, 0.4999)) * rng.normal(size=n_cand)
        prompts.append(Prompt(quality, votes, rm))
    return prompts


def simulate_sparse(
    rng: np.random.Generator,
    n_prompts: int,
    flip: float,
    n_cand: int = 19,
    judgments: int = 20,
    rm_flip: float = RM_FLIP,
) -> list[Prompt]:
    pairs = np.array([(i, j) for i in range(n_cand) for j in range(i + 1, n_cand)])
    prompts = []
    for p in range(n_prompts):
        quality = rng.normal(size=n_cand)
        panel = int(rng.integers(3, 6))
        chosen = pairs[rng.integers(0, len(pairs), size=judgments)]
        judges = rng.integers(0, panel, size=judgments)
        flips = rng.random(judgments) < flip
        votes = []
        for (i, j), judge, flipped in zip(chosen, judges, flips, strict=True):
            better, worse = (i, j) if quality[i] > quality[j] else (j, i)
            if flipped:
                better, worse = worse, better
            votes.append((p * 10 + int(judge), int(better), int(worse)))
        rm = quality + thurstone_scale(min(rm_flip, 0.4999)) * rng.normal(size=n_cand)
        prompts.append(Prompt(quality, votes, rm))
    return prompts


# --------------------------------------------------------------------------- methods


def groups_from_scores(scores: np.ndarray) -> Ranking:
    """Tie groups of equal score, best first."""
    groups: Ranking = []
    last = None
    for c in sorted(range(len(scores)), key=lambda c: (-scores[c], c)):
        if last is not None and math.isclose(scores[c], last, abs_tol=1e-9):
            groups[-1].append(c)
        else:
            groups.append([c])
        last = scores[c]
    return groups


def majority_copeland(prompt: Prompt) -> Ranking:
    n = len(prompt.quality)
    wins = np.zeros((n, n))
    for _, u, v in prompt.votes:
        wins[u, v] += 1
    return groups_from_scores(np.sign(wins - wins.T).sum(axis=1))


def plain_bradley_terry(prompt: Prompt) -> Ranking:
    raw = nx.DiGraph()
    raw.add_nodes_from(range(len(prompt.quality)))
    for _, u, v in prompt.votes:
        weight = raw[u][v]["weight"] + 1 if raw.has_edge(u, v) else 1.0
        raw.add_edge(u, v, weight=weight)
    scores = G.bradley_terry_scores(raw)
    return groups_from_scores(np.array([scores[c] for c in range(len(prompt.quality))]))


def ensemble_for(prompt: Prompt, with_rm: bool) -> nx.DiGraph:
    n = len(prompt.quality)
    by_judge: dict[object, list[G.Edge]] = defaultdict(list)
    for judge, u, v in prompt.votes:
        by_judge[judge].append((u, v, 1.0))
    graphs = {judge: G.evaluator_graph(edges) for judge, edges in by_judge.items()}
    weights = dict.fromkeys(graphs, 1.0)
    if with_rm:
        rm_order = [[int(c)] for c in np.argsort(-prompt.rm_scores)]
        graphs["rm"] = G.evaluator_graph(G.edges_from_ranking(rm_order))
        weights["rm"] = RM_WEIGHT
    return G.ensemble_graph(graphs, weights, nodes=range(n))


def naive_denoise(prompt: Prompt) -> tuple[nx.DiGraph, float]:
    """Sum votes, cancel 2-cycles, unweighted Eades-Lin-Smyth on the whole graph."""
    graph = nx.DiGraph()
    graph.add_nodes_from(range(len(prompt.quality)))
    for _, u, v in prompt.votes:
        weight = graph[u][v]["weight"] + 1 if graph.has_edge(u, v) else 1
        graph.add_edge(u, v, weight=weight)
    for u, v in list(graph.edges):
        if graph.has_edge(u, v) and graph.has_edge(v, u):
            net = graph[u][v]["weight"] - graph[v][u]["weight"]
            graph.remove_edges_from([(u, v), (v, u)])
            if net > 0:
                graph.add_edge(u, v, weight=net)
            elif net < 0:
                graph.add_edge(v, u, weight=-net)
    work = graph.copy()
    front: list[int] = []
    back: list[int] = []
    while work:
        sinks = [n for n in work if work.out_degree(n) == 0]
        sources = [n for n in work if work.in_degree(n) == 0]
        if sinks:
            back.extend(sinks)
            work.remove_nodes_from(sinks)
        elif sources:
            front.extend(sources)
            work.remove_nodes_from(sources)
        else:
            best = max(work, key=lambda n: work.out_degree(n) - work.in_degree(n))
            front.append(best)
            work.remove_node(best)
    position = {n: i for i, n in enumerate(front + back[::-1])}
    backward = [(u, v) for u, v in graph.edges if position[u] > position[v]]
    removed = sum(graph[u][v]["weight"] for u, v in backward)
    graph.remove_edges_from(backward)
    return graph, float(removed)


def naive_pipeline(prompt: Prompt) -> Ranking:
    """`naive_denoise`, then a plain topological sort (one candidate per group)."""
    dag, _ = naive_denoise(prompt)
    return [[n] for n in nx.topological_sort(dag)]


# --------------------------------------------------------------------------- metrics


@dataclass(frozen=True)
class Recovery:
    accuracy: float  # share of all pairs ordered as in the truth, a predicted tie = 1/2
    tau: float  # Kendall tau-b against the true order
    precision: float  # share correct among the pairs the ranking does order
    coverage: float  # share of pairs the ranking orders (not tied)


def recovery(prompts: Sequence[Prompt], rankings: Sequence[Ranking]) -> Recovery:
    accuracy, tau, precision, coverage = [], [], [], []
    for prompt, ranking in zip(prompts, rankings, strict=True):
        position = np.empty(len(prompt.quality))
        for g, group in enumerate(ranking):
            position[group] = g
        upper = np.triu_indices(len(position), k=1)
        pred = np.sign(position[upper[1]] - position[upper[0]])  # +1: first ranked higher
        true = np.sign(prompt.quality[upper[0]] - prompt.quality[upper[1]])
        ordered = pred != 0
        accuracy.append(np.mean(np.where(ordered, pred == true, 0.5)))
        if ordered.any():
            precision.append(np.mean(pred[ordered] == true[ordered]))
        coverage.append(np.mean(ordered))
        denominator = math.sqrt(np.count_nonzero(pred) * np.count_nonzero(true))
        tau.append(float(pred @ true) / denominator if denominator else 0.0)
    return Recovery(
        float(np.mean(accuracy)),
        float(np.mean(tau)),
        float(np.mean(precision)),
        float(np.mean(coverage)),
    )


BASELINES: dict[str, Callable[[Prompt], Ranking]] = {
    "majority + Copeland": majority_copeland,
    "plain Bradley-Terry": plain_bradley_terry,
    "naive nx pipeline": naive_pipeline,
    "reward model alone": lambda prompt: groups_from_scores(prompt.rm_scores),
}


def evaluate(prompts: list[Prompt]) -> dict[str, Recovery]:
    rows = {name: recovery(prompts, [run(p) for p in prompts]) for name, run in BASELINES.items()}
    for with_rm, label in ((False, "denoised"), (True, "denoised + RM")):
        # One ensemble and one FAS per prompt, ranked by every method.
        dags = [G.denoise(ensemble_for(p, with_rm)).dag for p in prompts]
        for method in G.RANKING_METHODS:
            rankings = [G.consensus_ranking(dag, method) for dag in dags]  # type: ignore[arg-type]
            rows[f"{label}, {method}"] = recovery(prompts, rankings)
    return rows


def print_table(
    title: str,
    results: dict[float, dict[str, Recovery]],
    metrics: tuple[str, str] = ("accuracy", "tau"),
) -> None:
    print(f"\n## {title}: {metrics[0]} / {metrics[1]}\n")
    names = list(next(iter(results.values())))
    header = " | ".join(f"{int(f * 100)}% flipped" for f in results)
    print(f"| method | {header} |")
    print("|---|" + "---|" * len(results))
    for name in names:
        cells = " | ".join(
            f"{getattr(results[f][name], metrics[0]):.3f} / {getattr(results[f][name], metrics[1]):.3f}"
            for f in results
        )
        print(f"| {name} | {cells} |")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="fewer prompts, for a smoke run")
    parser.add_argument("--repeat", type=int, default=3, help="timing runs; the best counts")
    parser.add_argument(
        "--rm-flip", type=float, default=RM_FLIP, help="share of pairs the reward model flips"
    )
    args = parser.parse_args(argv)
    n_rank4 = 300 if args.quick else 2000
    n_sparse = 400 if args.quick else 4700

    print(
        f"seed={args.seed} quick={args.quick} rank4 prompts={n_rank4} sparse prompts={n_sparse}"
        f" reward model flips {args.rm_flip:.0%} of pairs"
    )
    print(f"default consensus_ranking method: {G.DEFAULT_RANKING_METHOD}")
    for title, simulate, n in (
        ("rank4: N=4 full rankings, 3 annotators", simulate_rank4, n_rank4),
        ("sparse: 19 responses, 20 pairwise judgments per prompt", simulate_sparse, n_sparse),
    ):
        results = {}
        for flip in NOISE_LEVELS:
            rng = np.random.default_rng([args.seed, int(flip * 100)])
            results[flip] = evaluate(simulate(rng, n, flip, rm_flip=args.rm_flip))
        print_table(title, results)
        print_table(title, results, ("precision", "coverage"))

    rng = np.random.default_rng([args.seed, 999])
    prompts = simulate_sparse(rng, n_sparse, 0.2)
    n_votes = sum(len(p.votes) for p in prompts)
    print(f"\n## Timing: full denoise pass, {n_votes:,} judgments, 20% flipped\n")

    def naive_pass() -> float:
        removed = 0.0
        for prompt in prompts:
            dag, weight = naive_denoise(prompt)
            list(nx.topological_sort(dag))
            removed += weight
        return removed

    def our_pass(with_rm: bool) -> Callable[[], float]:
        def run() -> float:
            removed = 0.0
            for prompt in prompts:
                ensemble = ensemble_for(prompt, with_rm)
                result = G.denoise(ensemble)
                G.pair_margins(ensemble, G.consensus_ranking(result.dag))
                removed += result.removed_weight
            return removed

        return run

    def our_lean_pass() -> float:
        removed = 0.0
        for prompt in prompts:
            graph = G.evaluator_graph(
                [(u, v, 1.0) for _, u, v in prompt.votes], nodes=range(len(prompt.quality))
            )
            result = G.denoise(graph)
            G.consensus_ranking(result.dag)
            removed += result.removed_weight
        return removed

    # Best of --repeat runs, wall and CPU: the machine may be shared, and contention only
    # ever adds time.
    print(f"best of {args.repeat} runs\n")
    print("| pipeline | wall s | CPU s | vs naive (CPU) | removed arc weight |")
    print("|---|---|---|---|---|")
    naive_cpu = None
    for name, run in (
        ("naive nx pipeline (no margins)", naive_pass),
        ("ours, naive's steps: one summed graph, FAS, ranking", our_lean_pass),
        (f"ours: graphs, ensemble, FAS, {G.DEFAULT_RANKING_METHOD}, margins", our_pass(False)),
        ("ours + RM evaluator (dense graphs)", our_pass(True)),
    ):
        walls, cpus = [], []
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            removed = run()
            walls.append(time.perf_counter() - wall)
            cpus.append(time.process_time() - cpu)
        naive_cpu = naive_cpu or min(cpus)
        print(
            f"| {name} | {min(walls):.2f} | {min(cpus):.2f} | {min(cpus) / naive_cpu:.2f}x "
            f"| {removed:.0f} |"
        )


if __name__ == "__main__":
    main()
