"""The joint fit's critical path on two cores: the calling thread's own CPU time
(`time.thread_time`) beside the process's (both threads) and the wall time, for this tree's
`curation/crowd_bt.py` and another commit's, alternated in one process, on the demo world's
``mr2bench`` project (94K judgments at 4,700 prompts, as `bench_crowd_bt_fit.py` builds it).

Where work moves to the helper thread (`crowd_bt._by_halves`), the calling thread's CPU drops
while the process's stays: with a free core the wall follows the calling thread; on a machine
whose cores are all busy (other processes) the wall follows the process's CPU and the load,
so the calling thread's CPU is the figure that says what a free core would give. The fits'
estimates are compared byte for byte.

    python bench/bench_h19c_fit_threads.py --before HEAD [--repeat 6] [--prompts 4700]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from bench_crowd_bt_fit import module_at, world_votes  # noqa: E402

FIELDS = ("theta", "eta", "pi", "responsibility", "loo_margin", "n_separable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True)
    parser.add_argument("--repeat", type=int, default=6)
    parser.add_argument("--prompts", type=int, default=4700)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from curation import crowd_bt as after

    before = module_at(args.before, "crowd_bt_before")
    votes, _ = world_votes(args.prompts, args.seed)
    comparisons = after.index_comparisons(votes).comparisons
    print(f"{len(comparisons):,} strict votes, {comparisons.n_prompts:,} prompts", flush=True)
    codes = {"before": before, "after": after}
    figures: dict[str, list[tuple[float, float, float]]] = {k: [] for k in codes}
    fits = {}
    for rep in range(args.repeat):
        for label in list(codes) if rep % 2 == 0 else list(codes)[::-1]:
            module = codes[label]
            c = module.Comparisons(**{k: v for k, v in comparisons.__dict__.items() if k[0] != "_"})
            load = os.getloadavg()[0]
            t0, p0, m0 = time.perf_counter(), time.process_time(), time.thread_time()
            fit = module.fit_crowd_bt(c)
            wall = time.perf_counter() - t0
            process, main_thread = time.process_time() - p0, time.thread_time() - m0
            figures[label].append((main_thread, process, wall))
            fits.setdefault(label, fit)
            print(
                f"  {label}: calling thread {main_thread:.2f} s CPU, process {process:.2f} s CPU,"
                f" wall {wall:.2f} s; load average {load:.1f} -> {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    for i, name in enumerate(("calling thread CPU", "process CPU", "wall")):
        b = sorted(f[i] for f in figures["before"])
        a = sorted(f[i] for f in figures["after"])
        print(
            f"{name}: fastest before {b[0]:.2f} s, after {a[0]:.2f} s ({a[0] / b[0]:.2f}x);"
            f" median before {b[len(b) // 2]:.2f} s, after {a[len(a) // 2]:.2f} s"
            f" ({a[len(a) // 2] / b[len(b) // 2]:.2f}x)"
        )
    same = all(
        np.ascontiguousarray(getattr(fits["before"], f)).tobytes()
        == np.ascontiguousarray(getattr(fits["after"], f)).tobytes()
        for f in FIELDS
    ) and (fits["before"].alpha, fits["before"].iterations) == (
        fits["after"].alpha,
        fits["after"].iterations,
    )
    print(f"{', '.join(FIELDS)}, alpha and EM steps the same bytes: {same}")


if __name__ == "__main__":
    main()
