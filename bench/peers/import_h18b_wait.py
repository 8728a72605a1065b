"""What a client waiting on an import costs the web server: ``import_job_wait`` (the status
endpoint's ``?wait=``) on a job that stays running, in-process, an older tree against a newer
one, alternating run by run: CPU seconds (user + system) per second of waiting, and the polls.

    .venv/bin/python bench/peers/import_h18b_wait.py --before var/h18b-base [--after DIR]
        [--runs 4] [--seconds 3]

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
from annotate.models import ImportJob
from annotate.services import import_job_wait
job = ImportJob.objects.create(source_file="/nowhere.jsonl", status=ImportJob.Status.RUNNING)
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
seconds = float(os.environ["WAIT_SECONDS"])
w0, c0 = time.perf_counter(), cpu()
waited = import_job_wait(job=job, seconds=seconds)
wall, used = time.perf_counter() - w0, cpu() - c0
assert waited.status == ImportJob.Status.RUNNING
print("WAITED", wall, "CPU", used)
"""
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the older tree (a folder)")
    parser.add_argument("--after", type=Path, default=REPO, help="the newer tree (a folder)")
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    os.environ["WAIT_SECONDS"] = str(args.seconds)
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    per_second: dict[str, list[float]] = {n: [] for n in trees}
    for run in range(args.runs):
        for name in list(trees) if run % 2 == 0 else list(trees)[::-1]:
            out = run_child(trees[name], 0, CHILD, "WAITED", tag="wait").split()
            i = out.index("WAITED")
            wall, cpu = float(out[i + 1]), float(out[i + 3])
            per_second[name].append(cpu / wall)
            print(
                f"{name}: waited {wall:.2f} s, CPU {cpu * 1000:.0f} ms "
                f"(load {os.getloadavg()[0]:.1f})",
                file=sys.stderr,
            )
    b, a = (statistics.median(per_second[n]) for n in trees)
    print(
        f"medians of {args.runs}: CPU per second of waiting {b * 1000:.1f} -> {a * 1000:.1f} ms "
        f"({b / a:.1f}x)"
    )


if __name__ == "__main__":
    main()
