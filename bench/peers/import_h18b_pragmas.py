"""SQLite pragmas for the import job's connection, measured: the peer workload's import run as an
import job in-process (``import_job_create``, inline: the worker's code) with the settings'
pragmas (``as-is``) and with one more pragma set on the connection first, variants alternated
run by run: seconds until the job's row says done, until the call returns (the deferred
checkpoint included), the CPU seconds of the call (user + system) and the commits' wall.

    .venv/bin/python bench/peers/import_h18b_pragmas.py [--runs 4] [--tasks 10000]
        [--variants as-is,synchronous=OFF,temp_store=MEMORY,mmap_size=268435456]

Each run is a fresh process on a fresh data folder (SQLite only). What each pragma trades is in
the report of the session that ran it (h18b); nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import (  # noqa: E402
    CHILD_SETUP,
    JOB_FILE,
    REPO,
    SELF_CPU,
    alternating,
    run_child,
)

CHILD = (
    CHILD_SETUP
    + JOB_FILE
    + SELF_CPU
    + r"""
from django.db import connection
from django.db.backends.base import base as backend_base
connection.ensure_connection()
pragma = os.environ["PRAGMA_VARIANT"]
if pragma != "as-is":
    with connection.cursor() as cursor:
        cursor.execute(f"PRAGMA {pragma}")
commits = [0.0]
plain_commit = backend_base.BaseDatabaseWrapper._commit
def timed_commit(self):
    t = time.perf_counter()
    try:
        return plain_commit(self)
    finally:
        commits[0] += time.perf_counter() - t
backend_base.BaseDatabaseWrapper._commit = timed_commit
w0, c0 = time.time(), cpu()
job = import_job_create(path=path, project_name="pragmas", run_async=False)
cpu_s, returned = cpu() - c0, time.time() - w0
assert job.status == ImportJob.Status.DONE, job.errors
print("DONE", job.finished_at.timestamp() - w0, "RETURNED", returned, "CPU", cpu_s, "COMMITS", commits[0])
import shutil
shutil.rmtree(path.parent, ignore_errors=True)
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument(
        "--variants", default="as-is,synchronous=OFF,temp_store=MEMORY,mmap_size=268435456"
    )
    args = parser.parse_args()
    os.environ.pop("DATABASE_URL", None)
    variants = args.variants.split(",")
    keys = ("done", "returned", "cpu", "commits")
    got = {v: {k: [] for k in keys} for v in variants}
    for variant in alternating(variants, args.runs):
        os.environ["PRAGMA_VARIANT"] = variant
        out = run_child(REPO, args.tasks, CHILD, "COMMITS", tag="pragma").split()
        i = out.index("DONE")
        values = dict(zip(keys, map(float, out[i + 1 : i + 8 : 2]), strict=True))
        for k in keys:
            got[variant][k].append(values[k])
        print(
            f"{variant}: "
            + ", ".join(f"{k} {values[k]:.3f}" for k in keys)
            + f" (load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
            flush=True,
        )
    print(f"{args.tasks:,} tasks, medians of {args.runs} (s):")
    base = statistics.median(got[variants[0]]["done"])
    for variant in variants:
        med = {k: statistics.median(v) for k, v in got[variant].items()}
        print(
            f"  {variant:24s} "
            + ", ".join(f"{k} {v:.3f}" for k, v in med.items())
            + f"; done {base / med['done']:.2f}x of {variants[0]}"
        )


if __name__ == "__main__":
    main()
