"""Is the work queue flat in project size? Next task and submit at 100k and at 1M tasks.

Loads two scratch PostgreSQL databases with ``bench/bench_queue.py --load-only`` (the same
shape of project, the large one ten times the small: by default 100,000 tasks with 1,000,000
judgments, and 1,000,000 tasks with 10,000,000 judgments), then measures them in alternating
rounds, each round a fresh ``bench_queue.py --reuse`` process per database, so load on this
shared machine falls on both sizes alike. Prints p50/p95 per size and the large/small ratio
per round and over all rounds, and the SQL statements per request. Drops both databases
unless ``--keep``.

    python bench/bench_queue_scale.py [--rounds 3] [--cycles 100]
    python bench/bench_queue_scale.py --small 2000:20000 --large 20000:200000 --rounds 2   # quick

A flat queue shows ratios near 1.0: no request scans work that grows with the project.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUEUE = REPO / "bench" / "bench_queue.py"


def _size(text: str) -> tuple[int, int]:
    tasks, judgments = text.split(":")
    return int(tasks), int(judgments)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def _run(args: list[str]) -> None:
    subprocess.run([sys.executable, str(QUEUE), *args], check=True, cwd=REPO)


def _load(database: str, tasks: int, judgments: int, common: list[str]) -> float:
    started = time.perf_counter()
    _run(
        [
            "--load-only",
            "--database",
            database,
            "--tasks",
            str(tasks),
            "--judgments",
            str(judgments),
            *common,
        ]
    )
    return time.perf_counter() - started


def _drop(server: str, database: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _size_of(server: str, database: str) -> str:
    import psycopg

    with psycopg.connect(f"{server}/{database}") as conn:
        tasks = conn.execute("SELECT count(*) FROM annotate_task").fetchone()[0]
        judgments = conn.execute("SELECT count(*) FROM annotate_judgment").fetchone()[0]
        size = conn.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        return f"{tasks:,} tasks, {judgments:,} judgments, {size.fetchone()[0]} on disk"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=_size, default=(100_000, 1_000_000), help="TASKS:JUDGMENTS")
    parser.add_argument(
        "--large", type=_size, default=(1_000_000, 10_000_000), help="TASKS:JUDGMENTS"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cycles", type=int, default=100, help="measured cycles per round")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--prefix", default="quorum_bench_scale")
    parser.add_argument("--keep", action="store_true", help="keep both databases afterwards")
    parser.add_argument("--reuse", action="store_true", help="measure databases kept earlier")
    args = parser.parse_args()

    common = ["--server", args.server]
    sizes = {"small": args.small, "large": args.large}
    databases = {name: f"{args.prefix}_{name}" for name in sizes}
    results: dict[str, dict[str, list[float]]] = {
        name: {"next": [], "submit": []} for name in sizes
    }
    queries: dict[str, dict[str, set[int]]] = {
        name: {"next": set(), "submit": set()} for name in sizes
    }
    per_round: list[dict[str, dict[str, float]]] = []
    try:
        if not args.reuse:
            for name, (tasks, judgments) in sizes.items():
                seconds = _load(databases[name], tasks, judgments, common)
                print(f"loaded {name}: {tasks:,} tasks, {judgments:,} judgments in {seconds:.0f} s")
        for name in sizes:
            print(f"{name}: {_size_of(args.server, databases[name])}")
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(args.rounds):
                # Alternate which size goes first, so a load spike does not favour one.
                order = list(sizes) if round_no % 2 == 0 else list(reversed(sizes))
                this_round: dict[str, dict[str, float]] = {}
                for name in order:
                    out = Path(tmp) / f"{name}-{round_no}.json"
                    _run(
                        [
                            "--reuse",
                            "--database",
                            databases[name],
                            "--cycles",
                            str(args.cycles),
                            "--json",
                            str(out),
                            *common,
                        ]
                    )
                    measured = json.loads(out.read_text())
                    this_round[name] = {}
                    for kind in ("next", "submit"):
                        results[name][kind].extend(measured[kind]["ms"])
                        queries[name][kind].update(measured[kind]["queries"])
                        this_round[name][kind] = _percentile(measured[kind]["ms"], 95)
                per_round.append(this_round)
                print(
                    f"round {round_no + 1}: p95 large/small next "
                    f"{this_round['large']['next'] / this_round['small']['next']:.2f}x, submit "
                    f"{this_round['large']['submit'] / this_round['small']['submit']:.2f}x "
                    f"(load average {os.getloadavg()[0]:.1f})"
                )
    finally:
        if not args.keep:
            for database in databases.values():
                _drop(args.server, database)

    print()
    print(f"{args.rounds} rounds x {args.cycles} cycles per size, PostgreSQL:")
    print(
        f"{'request':<8} {'size':<6} {'p50 ms':>8} {'p95 ms':>8} {'queries':>8} "
        f"{'p50 large/small':>16} {'p95 large/small':>16}"
    )
    for kind in ("next", "submit"):
        small, large = results["small"][kind], results["large"][kind]
        for name, values in (("small", small), ("large", large)):
            ratio = ""
            if name == "large":
                ratio = (
                    f"{statistics.median(large) / statistics.median(small):>16.2f}"
                    f"{_percentile(large, 95) / _percentile(small, 95):>17.2f}"
                )
            spread = sorted(queries[name][kind])
            counted = str(spread[0]) if len(spread) == 1 else f"{spread[0]}-{spread[-1]}"
            print(
                f"{kind:<8} {name:<6} {statistics.median(values):>8.1f} "
                f"{_percentile(values, 95):>8.1f} {counted:>8} {ratio}"
            )


if __name__ == "__main__":
    main()
