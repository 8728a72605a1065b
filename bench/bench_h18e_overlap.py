"""What a second thread can overlap with the flags pass's Python, measured in one process:

1. the joint fit (`curation.crowd_bt.fit_crowd_bt`, 94K judgments of the demo world) on a
   thread beside 0.6 s of pure-Python work, against the fit alone: the fit releases and
   takes the GIL again around every numpy call (thousands per fit), and can wait each time
   for the Python thread to give it up (the GIL's switch interval, 5 ms). Why the flags pass
   does not fit early on a thread while `consensus.evaluator_quality` builds its records
   (tried, h18e: the pass's annotator phase got slower);
2. a project's judgments read with one ``fetchall`` on a second SQLite connection (a thread)
   beside as much Python as `selectors.project_data` does after its reads, against the two
   one after the other: what overlapping the loading's reads would give.

    python bench/bench_h18e_overlap.py --world /tmp/h18e-data/world94k [--repeat 3]

``--world``: a folder `bench/bench_curation_scale.py --repeat 0 --world ...` wrote (SQLite).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

JUDGMENTS = (
    "SELECT id, task_id, kind, outcome, CAST(presented_order AS TEXT), duration_ms"
    " FROM annotate_judgment ORDER BY id"
)


def python_for(seconds: float) -> int:
    """Dict and tuple work, as a vote loop does, for ``seconds``."""
    end = time.perf_counter() + seconds
    table: dict[int, tuple[int, str]] = {}
    n = 0
    while time.perf_counter() < end:
        table[n % 1000] = (n, str(n))
        n += 1
    return n


def beside_python(work, seconds: float) -> tuple[float, float]:
    """``work()`` on a thread while this one runs ``seconds`` of Python: (the work's wall
    seconds, both done)."""
    took: list[float] = []

    def run() -> None:
        started = time.perf_counter()
        work()
        took.append(time.perf_counter() - started)

    started = time.perf_counter()
    thread = threading.Thread(target=run)
    thread.start()
    python_for(seconds)
    thread.join()
    return took[0], time.perf_counter() - started


def load() -> str:
    return f"load average {os.getloadavg()[0]:.1f}"


def fit_beside_python(repeat: int) -> None:
    from bench_crowd_bt_fit import world_votes

    from curation import crowd_bt as CB

    votes, _ = world_votes(4700, 0)
    for _ in range(repeat):
        comparisons = CB.index_comparisons(votes).comparisons
        started = time.perf_counter()
        CB.fit_crowd_bt(comparisons)
        alone = time.perf_counter() - started
        comparisons = CB.index_comparisons(votes).comparisons
        fit, both = beside_python(lambda c=comparisons: CB.fit_crowd_bt(c), 0.6)
        print(
            f"fit alone {alone:.2f} s wall; beside 0.6 s of Python on another thread:"
            f" fit {fit:.2f} s, both done {both:.2f} s (one after the other:"
            f" {alone + 0.6:.2f} s); {load()}",
            flush=True,
        )


def fetch_beside_python(world: Path, repeat: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="h18e-overlap-"))
    try:
        database = folder / "quorum.sqlite3"
        shutil.copy(world / "quorum.sqlite3", database)

        def fetch() -> int:
            connection = sqlite3.connect(database, check_same_thread=False)
            try:
                return len(connection.execute(JUDGMENTS).fetchall())
            finally:
                connection.close()

        for _ in range(repeat):
            started = time.perf_counter()
            rows = fetch()
            alone = time.perf_counter() - started
            fetched, both = beside_python(fetch, 1.5 * alone)
            print(
                f"{rows:,} judgments fetched alone in {alone:.3f} s; on a second connection"
                f" beside {1.5 * alone:.3f} s of Python: fetch {fetched:.3f} s, both done"
                f" {both:.3f} s (one after the other: {2.5 * alone:.3f} s,"
                f" {both / (2.5 * alone):.2f}x); {load()}",
                flush=True,
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    fit_beside_python(args.repeat)
    fetch_beside_python(Path(args.world), args.repeat)


if __name__ == "__main__":
    main()
