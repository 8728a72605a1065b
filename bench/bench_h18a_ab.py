"""Two trees' denoised export build of 10,000 judged ranking tasks, alternated, in-process.

Runs ``bench/bench_export_legs.py --json --repeat R --code <tree>`` for tree A, then B, then B,
then A, ... (``--rounds`` pairs), every run a fresh process on the same SQLite workload under
``--data`` (imported by the first run), and prints each side's median build wall, CPU (all
threads), main-thread CPU and download wall, with the load average at each run's start and
the ratios A / B.

    python bench/bench_h18a_ab.py --data /tmp/h18a-data/ab --a var/h18a-base --b var/h18a-new
        [--rounds 3] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KEYS = ("build_wall", "build_cpu", "build_main_thread_cpu", "download_wall")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--a", required=True, help="tree A (the baseline)")
    parser.add_argument("--b", required=True, help="tree B")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    trees = {"A": Path(args.a).resolve(), "B": Path(args.b).resolve()}
    results: dict[str, list[dict]] = {"A": [], "B": []}
    for r in range(args.rounds):
        for side in ("A", "B") if r % 2 == 0 else ("B", "A"):
            load = os.getloadavg()[0]
            out = subprocess.run(
                [
                    sys.executable,
                    str(REPO / "bench" / "bench_export_legs.py"),
                    f"--data={args.data}",
                    f"--code={trees[side]}",
                    f"--repeat={args.repeat}",
                    "--json",
                ],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONHASHSEED": "0"},
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            row["load"] = round(load, 1)
            results[side].append(row)
            print(side, {k: row[k] for k in (*KEYS, "load")}, flush=True)
    print(f"\nmedians of {args.rounds} runs x {args.repeat} builds (each run's median)")
    print("| | " + " | ".join(KEYS) + " | loads |")
    print("|---|" + "---|" * (len(KEYS) + 1))
    med = {}
    for side, rows in results.items():
        med[side] = {k: statistics.median(r[k] for r in rows) for k in KEYS}
        loads = " ".join(str(r["load"]) for r in rows)
        print(
            f"| {side} {trees[side].name} | "
            + " | ".join(f"{med[side][k]:.3f}" for k in KEYS)
            + f" | {loads} |"
        )
    print("| A / B | " + " | ".join(f"{med['A'][k] / med['B'][k]:.3f}x" for k in KEYS) + " | |")


if __name__ == "__main__":
    main()
