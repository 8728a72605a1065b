"""The joint model's SPD algebra at MR2Bench size and ten times it: `crowd_bt.InverseHessian`
(Cholesky + the inverse factor's columns, 20 votes' pair forms per prompt) and
`crowd_bt._spd_solve` on a random batch of
``[P, 19, 19]`` positive-definite Hessians (``2 alpha I`` + a weighted Laplacian), timed in
CPU and wall, alternating cache-block sizes (``crowd_bt.SPD_BLOCK_PROMPTS``; the forms'
``FORM_BLOCK_VOTES`` 32 times it) with working each half whole (0); the answers compared bit
for bit.

    python bench/bench_h20h_spd.py --prompts 47000 --rounds 4 --blocks 0 256
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curation import crowd_bt as CB  # noqa: E402


def hessians(prompts: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = rng.exponential(size=(prompts, n, n)) * (rng.random((prompts, n, n)) < 0.15)
    w = w + w.transpose(0, 2, 1)
    lap = -w
    lap[:, np.arange(n), np.arange(n)] = w.sum(axis=2)
    return lap + 2 * 0.05 * np.eye(n)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=47000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--blocks", type=int, nargs="+", default=[0, 256])
    args = parser.parse_args()
    hess = hessians(args.prompts, 19, 0)
    rng = np.random.default_rng(1)
    rhs = rng.normal(size=hess.shape[:2])
    prompt = np.repeat(np.arange(args.prompts), 20)
    flat_a = prompt * 19 + rng.integers(0, 19, len(prompt))
    flat_b = prompt * 19 + (flat_a % 19 + rng.integers(1, 19, len(prompt))) % 19
    times: dict[int, list[tuple[float, float]]] = {b: [] for b in args.blocks}
    answers: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for r in range(args.rounds):
        for block in args.blocks if r % 2 == 0 else args.blocks[::-1]:
            CB.SPD_BLOCK_PROMPTS = block or hess.shape[0]
            CB.FORM_BLOCK_VOTES = 32 * block or len(flat_a)
            t0, c0 = time.perf_counter(), time.process_time()
            inverse = CB.InverseHessian(hess)
            forms = inverse.pair_quadratic(flat_a, flat_b)
            x = CB._spd_solve(hess, rhs)
            times[block].append((time.process_time() - c0, time.perf_counter() - t0))
            answers.setdefault(block, (inverse.columns, forms, x))
    base = answers[args.blocks[0]]
    for block, runs in times.items():
        same = all(np.array_equal(a, b) for a, b in zip(answers[block], base, strict=True))
        cpu = statistics.median(c for c, _ in runs)
        wall = statistics.median(w for _, w in runs)
        print(
            f"block {block or 'whole'}: median {cpu:.3f} s CPU, {wall:.3f} s wall "
            f"(fastest {min(c for c, _ in runs):.3f} s CPU); identical to the first: {same}"
        )


if __name__ == "__main__":
    main()
