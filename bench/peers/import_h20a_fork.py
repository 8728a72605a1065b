"""The peer workload's import job in-process (``import_job_create`` inline: the worker's
code), an older tree against a newer one, alternating run by run (issue 13, h20a: SQLite's
parse in a forked child). Prints per run and as medians: seconds until the job row says done,
the CPU seconds of the importing process, and those of its reaped children (the forked parse:
``RUSAGE_CHILDREN``), plus, on PostgreSQL, the server backend's.

    .venv/bin/python bench/peers/import_h20a_fork.py --before var/h20a-base [--after DIR]
        [--runs 5] [--tasks 10000]

SQLite on a fresh data folder, or a scratch PostgreSQL database per run when ``DATABASE_URL``
is set (``QUORUM_PEERS_DB_PREFIX`` names it). Nothing here asserts a timing.
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
import resource
def children_cpu():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime
s0, k0 = backend_cpu(), children_cpu()
w0, c0 = time.time(), time.process_time()
job = import_job_create(path=path, project_name="h20a", run_async=False)
cpu = time.process_time() - c0
assert job.status == ImportJob.Status.DONE, job.errors
print("DONE", job.finished_at.timestamp() - w0, "CPU", cpu, "CHILD", children_cpu() - k0,
      "SERVER", backend_cpu() - s0)
"""
)


def main() -> None:
    args = before_after_parser(__doc__, runs=5).parse_args()
    trees = before_after_trees(args)
    got: dict[str, list[tuple[float, ...]]] = {name: [] for name in trees}
    for name in alternating(trees, args.runs):
        out = run_child(trees[name], args.tasks, CHILD, "DONE", tag="h20a")
        words = out.split("DONE")[-1].split()
        values = (float(words[0]), float(words[2]), float(words[4]), float(words[6]))
        got[name].append(values)
        print(
            f"{name:6} done {values[0]:.3f} s  CPU {values[1]:.3f}  child {values[2]:.3f}"
            f"  server {values[3]:.3f}  load {os.getloadavg()[0]:.1f}",
            flush=True,
        )
    medians = {
        name: [statistics.median(v[i] for v in rows) for i in range(4)]
        for name, rows in got.items()
    }
    for name, m in medians.items():
        print(
            f"median {name:6} done {m[0]:.3f} s  CPU {m[1]:.3f}  child {m[2]:.3f}  server {m[3]:.3f}"
        )
    b, a = medians["before"], medians["after"]
    print(
        f"done before/after {b[0] / a[0]:.2f}x  CPU+child+server before {sum(b[1:]):.3f} after {sum(a[1:]):.3f}"
    )


if __name__ == "__main__":
    main()
