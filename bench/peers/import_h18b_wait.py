"""What a client waiting on an import costs the web server: ``import_job_wait`` (the status
endpoint's ``?wait=``) on a job that stays running, in-process, an older tree against a newer
one, alternating run by run: CPU seconds (user + system) per second of waiting, and the polls.

    .venv/bin/python bench/peers/import_h18b_wait.py --before var/h18b-base [--after DIR]
        [--runs 4] [--seconds 3]

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
    CHILD_SETUP,
    SELF_CPU,
    alternating,
    before_after_parser,
    before_after_trees,
    run_child,
)

CHILD = (
    CHILD_SETUP
    + SELF_CPU
    + r"""
from annotate.models import ImportJob
from annotate.services import import_job_wait
job = ImportJob.objects.create(source_file="/nowhere.jsonl", status=ImportJob.Status.RUNNING)
seconds = float(os.environ["WAIT_SECONDS"])
w0, c0 = time.perf_counter(), cpu()
waited = import_job_wait(job=job, seconds=seconds)
wall, used = time.perf_counter() - w0, cpu() - c0
assert waited.status == ImportJob.Status.RUNNING
print("WAITED", wall, "CPU", used)
"""
)


def main() -> None:
    parser = before_after_parser(__doc__, runs=4, tasks=None)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    os.environ["WAIT_SECONDS"] = str(args.seconds)
    trees = before_after_trees(args)
    per_second: dict[str, list[float]] = {n: [] for n in trees}
    for name in alternating(trees, args.runs):
        out = run_child(trees[name], 0, CHILD, "WAITED", tag="wait").split()
        i = out.index("WAITED")
        wall, cpu = float(out[i + 1]), float(out[i + 3])
        per_second[name].append(cpu / wall)
        print(
            f"{name}: waited {wall:.2f} s, CPU {cpu * 1000:.0f} ms (load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
        )
    b, a = (statistics.median(per_second[n]) for n in trees)
    print(
        f"medians of {args.runs}: CPU per second of waiting {b * 1000:.1f} -> {a * 1000:.1f} ms "
        f"({b / a:.1f}x)"
    )


if __name__ == "__main__":
    main()
