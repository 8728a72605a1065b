"""CPU and wall time of the joint annotator model's fit alone (`curation.crowd_bt.fit_crowd_bt`),
before vs after, on the demo world's ``mr2bench`` project (94K judgments at 4,700 prompts).

No database: the strict votes come straight from ``annotate.demo_world`` (shown first: the
pair's first candidate, as `bench_curation_scale` stores ``presented_order``), so the fit sees
what the flags pass would, up to the order of the indices. ``--before`` loads
``curation/crowd_bt.py`` of that commit (``git show``) as a second module; the two fits
alternate, ``--repeat`` times each, and the fastest CPU and wall time of each is reported with
how far their estimates are apart (and whether they are the same bytes). CPU counts every
thread of the process: where the fit works on two cores (h18e) its wall is the figure that
drops, and on a loaded machine it means little (the load average is printed per run).

    python bench/bench_crowd_bt_fit.py --before f1a5d25 [--prompts 4700] [--repeat 2]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def world_votes(prompts: int, seed: int) -> tuple[list[tuple], dict[str, float]]:
    """``(prompt, winner, loser, annotator, shown_first)`` for every strict pair judgment,
    and the world's hidden quality per candidate."""
    from annotate.demo_world import generate_world

    project = generate_world(seed, "mr2bench", prompts=prompts).projects[0]
    quality = {cid: c["quality"] for cid, c in project.truth["candidates"].items()}
    votes = []
    for row in project.rows:
        for j in row.get("judgments", ()):
            if "pair" not in j or j["outcome"] not in ("a", "b"):
                continue
            a, b = j["pair"]
            winner, loser = (a, b) if j["outcome"] == "a" else (b, a)
            votes.append((row["id"], winner, loser, j["annotator"], a))
    return votes, quality


def pairwise_accuracy(indexed, theta: np.ndarray, quality: dict[str, float]) -> float:
    """Share of candidate pairs (of the judged candidates) ordered as the hidden quality
    orders them, a tie counting one half: the recovery benchmark's primary metric."""
    hits = total = 0.0
    for p, keys in enumerate(indexed.candidates):
        q = np.array([quality[key] for key in keys])
        t = theta[p, : len(keys)]
        i, j = np.triu_indices(len(keys), 1)
        predicted = np.sign(t[i] - t[j])
        truth = np.sign(q[i] - q[j])
        hits += float(np.sum(np.where(predicted == 0, 0.5, predicted == truth)))
        total += len(i)
    return hits / total


def module_at(commit: str, name: str):
    """``curation/crowd_bt.py`` as of ``commit``, imported under ``name``."""
    source = subprocess.run(
        ["git", "show", f"{commit}:curation/crowd_bt.py"],
        cwd=REPO,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    path = Path(tempfile.mkdtemp(prefix="crowd-bt-")) / f"{name}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def timed_fit(module, votes):
    """CPU seconds of the EM and of the whole fit (EM + final strengths), the wall seconds
    of both, and the fit."""
    indexed = module.index_comparisons(votes)
    c = indexed.comparisons
    started, wall = time.process_time(), time.perf_counter()
    em = module.crowd_bt_em(c)
    em_seconds, em_wall = time.process_time() - started, time.perf_counter() - wall
    fit = module.assemble_fit(c, em, module.crowd_bt_final(c, em))
    walls = (em_wall, time.perf_counter() - wall)
    return em_seconds, time.process_time() - started, fit, indexed, walls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="commit whose fit is the baseline")
    parser.add_argument("--prompts", type=int, default=4700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from curation import crowd_bt as after

    before = module_at(args.before, "crowd_bt_before")
    votes, quality = world_votes(args.prompts, args.seed)
    print(f"{len(votes)} strict votes, {args.prompts} prompts", flush=True)
    times: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    walls: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    fits = {}
    for rep in range(args.repeat):
        order = (("before", before), ("after", after))
        for label, module in order if rep % 2 == 0 else order[::-1]:
            em_seconds, seconds, fits[label], indexed, wall = timed_fit(module, votes)
            times[label].append((em_seconds, seconds))
            walls[label].append(wall)
            print(
                f"  {label}: EM {em_seconds:.2f} s, final strengths {seconds - em_seconds:.2f} s,"
                f" fit {seconds:.2f} s CPU, {wall[1]:.2f} s wall; load average"
                f" {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    b, a = fits["before"], fits["after"]
    for kind, measured in (("CPU", times), ("wall", walls)):
        for part, column in (("EM", 0), ("final strengths", 2), ("fit (EM + final strengths)", 1)):
            best = {
                label: min(t[1] - t[0] if column == 2 else t[column] for t in values)
                for label, values in measured.items()
            }
            print(
                f"{part} {kind}, fastest of {args.repeat}: before {best['before']:.2f} s,"
                f" after {best['after']:.2f} s, after / before"
                f" {best['after'] / best['before']:.2f}x"
            )
    print(f"EM steps: before {b.iterations}, after {a.iterations}")
    same = all(
        np.ascontiguousarray(getattr(a, name)).tobytes()
        == np.ascontiguousarray(getattr(b, name)).tobytes()
        for name in ("theta", "eta", "pi", "responsibility", "loo_margin", "n_separable")
    )
    print(f"theta, eta, pi, responsibilities, loo margins, separable votes the same bytes: {same}")
    print(
        "pairwise accuracy against the hidden quality:"
        f" before {pairwise_accuracy(indexed, b.theta, quality):.4f},"
        f" after {pairwise_accuracy(indexed, a.theta, quality):.4f}"
    )
    order_b = np.argsort(-b.theta, axis=1, kind="stable")
    order_a = np.argsort(-a.theta, axis=1, kind="stable")
    changed = int(np.sum(np.any(order_b != order_a, axis=1)))
    print(
        f"max |theta after - theta before| {np.max(np.abs(a.theta - b.theta)):.2e},"
        f" max |loo margin after - before| {np.max(np.abs(a.loo_margin - b.loo_margin)):.2e}"
    )
    print(
        f"max |eta after - eta before| {np.max(np.abs(a.eta - b.eta)):.4f};"
        f" strength order differs on {changed} of {b.theta.shape[0]} prompts;"
        f" final alpha {b.alpha} -> {a.alpha}"
    )
    names = sorted(range(len(a.eta)), key=lambda k: a.eta[k])
    print("eta per annotator (before -> after), lowest first:")
    print(", ".join(f"{b.eta[k]:.3f}->{a.eta[k]:.3f}" for k in names))


if __name__ == "__main__":
    main()
