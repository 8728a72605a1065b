"""Where the import job's run goes (issue 13, h19b): the peer workload (10,000 ranking tasks of
a prompt and 4 text candidates) imported through ``import_job_create`` inline (the worker's
code), in a fresh process per run, with cProfile or with phase timers.

    .venv/bin/python bench/peers/import_h19b_profile.py [--tree DIR] [--tasks 10000]
        [--profile] [--top 40] [--runs 3]

SQLite on a fresh data folder, or a scratch PostgreSQL database per run when ``DATABASE_URL`` is
set (``QUORUM_PEERS_DB_PREFIX`` names it). Prints per run the wall until the job row says done,
the process CPU and (PostgreSQL) the server backend's CPU; with ``--profile`` the top functions
by own time and by cumulative time. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import BACKEND_CPU, CHILD_SETUP, JOB_FILE, REPO, run_child  # noqa: E402

CHILD = (
    CHILD_SETUP
    + JOB_FILE
    + BACKEND_CPU
    + r"""
import cProfile, io, pstats
profile = cProfile.Profile() if os.environ.get("H19B_PROFILE") else None
s0 = backend_cpu()
w0, c0 = time.time(), time.process_time()
if profile:
    profile.enable()
job = import_job_create(path=path, project_name="h19b", run_async=False)
if profile:
    profile.disable()
cpu = time.process_time() - c0
server = backend_cpu() - s0
assert job.status == ImportJob.Status.DONE, job.errors
print("DONE", job.finished_at.timestamp() - w0, "CPU", cpu, "SERVER", server)
if profile:
    top = int(os.environ.get("H19B_TOP", "40"))
    for key in ("tottime", "cumulative"):
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats(key).print_stats(top)
        print(out.getvalue())
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=REPO)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--top", type=int, default=40)
    args = parser.parse_args()
    if args.profile:
        os.environ["H19B_PROFILE"] = "1"
        os.environ["H19B_TOP"] = str(args.top)
    got = []
    for _ in range(args.runs):
        out = run_child(args.tree.resolve(), args.tasks, CHILD, "DONE", tag="h19b")
        line = next(x for x in out.splitlines() if x.startswith("DONE"))
        f = line.split()
        got.append((float(f[1]), float(f[3]), float(f[5])))
        print(line, f"load {os.getloadavg()[0]:.1f}", file=sys.stderr)
        if args.profile:
            print(out.split(line, 1)[1])
    if args.runs > 1:
        done, cpu, server = (statistics.median(v) for v in zip(*got, strict=True))
        print(f"medians: done {done:.3f} CPU {cpu:.3f} server {server:.3f}")


if __name__ == "__main__":
    main()
