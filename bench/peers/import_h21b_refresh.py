"""The statistics refresh an import job runs after it marks the job done, which the worker's
next job waits for (issue 13, h21b: PostgreSQL's ANALYZE sampled at a lower target), an older
tree against a newer one, alternating run by run. Each run imports the peer workload twice
through ``import_job_create`` inline (the worker's code), as back-to-back API imports do, and
prints per import the wall seconds of ``statistics_refresh`` and the server backend's CPU in
it, then the medians.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/x QUORUM_PEERS_DB_PREFIX=quorum_<tag> \\
    .venv/bin/python bench/peers/import_h21b_refresh.py --before var/<tag>-base [--runs 5]

A scratch PostgreSQL database per run (SQLite: a fresh data folder). Nothing here asserts a
timing.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import (  # noqa: E402
    BACKEND_CPU,
    CHILD_SETUP,
    JOB_FILE,
    alternating,
    before_after_parser,
    before_after_trees,
    run_child,
)

CHILD = (
    CHILD_SETUP
    + JOB_FILE
    + BACKEND_CPU
    + r"""
from annotate import services
refresh = services.statistics_refresh
spent = []
def timed(tables):
    s0, t0 = backend_cpu(), time.perf_counter()
    refresh(tables)
    spent.append((time.perf_counter() - t0, backend_cpu() - s0))
services.statistics_refresh = timed
for i in range(2):
    job = import_job_create(path=path, project_name=f"refresh-{i}", run_async=False)
    assert job.status == ImportJob.Status.DONE, job.errors
print("REFRESH", " ".join(f"{w:.4f} {s:.4f}" for w, s in spent))
"""
)


def main() -> None:
    args = before_after_parser(__doc__, runs=5).parse_args()
    trees = before_after_trees(args)
    got: dict[str, list[list[float]]] = {name: [] for name in trees}
    for name in alternating(trees, args.runs):
        out = run_child(trees[name], args.tasks, CHILD, "REFRESH", tag="h21b")
        values = [float(w) for w in out.split("REFRESH")[-1].split()]
        got[name].append(values)
        print(
            f"{name:6} refresh 1: {values[0]:.3f} s (server {values[1]:.3f})  "
            f"2: {values[2]:.3f} s (server {values[3]:.3f})  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    for name, rows in got.items():
        m = [statistics.median(v[i] for v in rows) for i in range(4)]
        print(
            f"median {name:6} refresh 1: {m[0]:.3f} s (server {m[1]:.3f})  "
            f"2: {m[2]:.3f} s (server {m[3]:.3f})"
        )


if __name__ == "__main__":
    main()
