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

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import CHILD_SETUP, REPO, run_child  # noqa: E402

CHILD = (
    CHILD_SETUP
    + r"""
import resource
from workload import write_quorum_jsonl
from annotate.models import ImportJob
from annotate.services import import_job_create
path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", int(os.environ["IMPORT_TASKS"]), judged=False)
from django.db import connection
connection.ensure_connection()
pid = None
if connection.vendor == "postgresql":
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
def backend_cpu():
    if pid is None:
        return 0.0
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the older tree (a folder)")
    parser.add_argument("--after", type=Path, default=REPO, help="the newer tree (a folder)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    got: dict[str, list[tuple[float, ...]]] = {name: [] for name in trees}
    for run in range(args.runs):
        order = list(trees) if run % 2 == 0 else list(trees)[::-1]
        for name in order:
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
