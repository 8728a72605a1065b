"""The peer workload's import run as an import job in-process (``import_job_create``, inline:
the code the worker runs), an older tree against a newer one, alternating run by run: seconds
until the job's row says done (what a client waiting on the job sees) and until the call returns
(the statistics refresh after "done" included), and the CPU seconds of the whole call (the
process plus, on PostgreSQL, its server backend).

    .venv/bin/python bench/peers/import_h15a_until_done.py --before var/h15a-base [--after DIR]
        [--runs 5] [--tasks 10000]

SQLite on a fresh data folder, or a scratch PostgreSQL database per run when ``DATABASE_URL``
is set (``QUORUM_PEERS_DB_PREFIX`` names it). Nothing here asserts a timing.
"""

from __future__ import annotations

import json
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
s0 = backend_cpu()
w0, c0 = time.time(), time.process_time()
job = import_job_create(path=path, project_name="until-done", run_async=False)
cpu = time.process_time() - c0 + backend_cpu() - s0
returned = time.time() - w0
assert job.status == ImportJob.Status.DONE, job.errors
print("DONE", job.finished_at.timestamp() - w0, "RETURNED", returned, "CPU", cpu)
"""
)


def main() -> None:
    args = before_after_parser(__doc__, runs=5).parse_args()
    trees = before_after_trees(args)
    got: dict[str, dict[str, list[float]]] = {
        n: {"done": [], "returned": [], "cpu": []} for n in trees
    }
    for name in alternating(trees, args.runs):
        out = run_child(trees[name], args.tasks, CHILD, "DONE", tag="done").split()
        i = out.index("DONE")
        done, returned, cpu = float(out[i + 1]), float(out[i + 3]), float(out[i + 5])
        for key, value in (("done", done), ("returned", returned), ("cpu", cpu)):
            got[name][key].append(value)
        print(
            f"{name}: done after {done:.2f} s, returned {returned:.2f} s, CPU {cpu:.2f} s "
            f"(load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
        )
    med = {n: {k: statistics.median(v) for k, v in got[n].items()} for n in trees}
    b, a = med["before"], med["after"]
    print(
        f"{args.tasks:,} tasks, medians of {args.runs}: until done {b['done']:.2f} -> "
        f"{a['done']:.2f} s ({b['done'] / a['done']:.2f}x); until returned {b['returned']:.2f} -> "
        f"{a['returned']:.2f} s; CPU {b['cpu']:.2f} -> {a['cpu']:.2f} s"
    )
    print(json.dumps(got))


if __name__ == "__main__":
    main()
