"""How long a scoring call takes to fail, and how many times it starts its row-building pool,
when the pool's processes cannot start (each ends during its start-up, as an import error or
out of memory there would end it): this tree against another one (a worktree), alternated.

    .venv/bin/python bench/bench_h18f_start_failure.py --against var/h18f-base --items 8 --rounds 2

Each leg is a fresh interpreter in its tree (a tiny text scorer, 2 processes, no Django) whose
processes' start-up function is replaced by one that ends the process; it prints the call's wall
time, the pool starts (executors created) and the first item's error.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def _die_at_start(*args):
    os._exit(71)


def _leg(items: int) -> dict:
    from concurrent.futures import ProcessPoolExecutor

    from workers.reward_model import CandidateInput, RewardScorer, ScoringItem, row_building
    from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

    built = build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer(), seed=5, max_length=400)
    starts = []

    class Counted(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            starts.append(1)
            super().__init__(*args, **kwargs)

    row_building.ProcessPoolExecutor = Counted
    # By reference: the spawned processes import this module from the tree's bench/.
    row_building._start_process = _die_at_start
    scorer = RewardScorer(built.model, built.builder, device="cpu", build_processes=2)
    text = [CandidateInput(kind="text", text="Yes."), CandidateInput(kind="text", text="No.")]
    batch = [ScoringItem(f"Question {i}?", text) for i in range(items)]
    began = time.perf_counter()
    try:
        results = scorer.score(batch)
        outcome = results[0].error
    except Exception as exc:  # noqa: BLE001 - a tree whose call fails whole
        outcome = f"raised {type(exc).__name__}: {exc}"
    wall = time.perf_counter() - began
    scorer.close()
    return {"wall_s": round(wall, 2), "pool_starts": len(starts), "error": outcome}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", type=Path, help="the other tree (a worktree)")
    parser.add_argument("--items", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--leg", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.leg:
        print(json.dumps(_leg(args.items)))
        return
    here = Path(__file__).resolve().parent.parent
    trees = {"this": here, "base": args.against.resolve()}
    walls: dict[str, list[float]] = {name: [] for name in trees}
    for round_ in range(args.rounds):
        order = list(trees) if round_ % 2 == 0 else list(reversed(trees))
        for name in order:
            tree = trees[name]
            out = subprocess.run(
                [str(here / ".venv/bin/python"), "-m", "bench.bench_h18f_start_failure", "--leg"]
                + ["--items", str(args.items)],
                cwd=tree,
                env={**os.environ, "PYTHONPATH": str(tree)},
                capture_output=True,
                text=True,
                check=True,
            )
            leg = json.loads(out.stdout.strip().splitlines()[-1])
            walls[name].append(leg["wall_s"])
            print(f"round {round_} {name}: {leg} load {os.getloadavg()[0]:.1f}", flush=True)
    for i, (a, b) in enumerate(zip(walls["this"], walls["base"], strict=True)):
        print(f"round {i}: base/this wall {b / a:.1f}x ({b:.1f} s -> {a:.1f} s)")


if __name__ == "__main__":
    sys.exit(main())
