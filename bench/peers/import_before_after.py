"""The peer workload's import (10,000 ranking tasks of 4 text candidates) in-process, an older
commit against the working tree, alternating run by run; prints both medians and their ratio.

    .venv/bin/python bench/peers/import_before_after.py --before 664bf2e [--after DIR] [--runs 3]
        [--tasks 10000]

``--before`` may name a folder instead (a ``git worktree`` of the older commit).

The older tree is unpacked with ``git archive`` into ``/tmp/quorum-import-before-<rev>`` (once);
``--after`` names a folder holding another tree (default: this working tree, as it is while
the runs go on; a copy keeps later edits out). Both run with this virtualenv, each in a fresh
process on a fresh data folder (SQLite), or on a scratch PostgreSQL database per run when
``DATABASE_URL`` is set. Times ``import_file`` alone: no HTTP, no job hand-off, no start-up.
Prints wall time and CPU time: the importing process's plus, on PostgreSQL on this machine, its
connection's server process (``/proc``; autovacuum and the WAL writer not counted). On a shared
machine CPU time varies far less than wall time. Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# What every child runs first: the tree under test and the workload on the path, Django
# set up, the scratch database migrated.
CHILD_SETUP = r"""
import json, os, sys, tempfile, time
from pathlib import Path
tree = os.environ["IMPORT_TREE"]
sys.path[:0] = [tree, os.environ["IMPORT_WORKLOAD"]]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
"""

# After CHILD_SETUP: the import job's entry points, and the peer workload's tasks at ``path``.
JOB_FILE = r"""
from workload import write_quorum_jsonl
from annotate.models import ImportJob
from annotate.services import import_job_create
path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", int(os.environ["IMPORT_TASKS"]), judged=False)
"""

# After CHILD_SETUP: ``backend_cpu()``, the CPU seconds of this connection's PostgreSQL server
# process on this machine (``/proc``; 0.0 on SQLite), its pid read once.
BACKEND_CPU = r"""
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
"""

# After CHILD_SETUP: ``cpu()``, this process's CPU seconds (user + system).
SELF_CPU = r"""
import resource
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
"""

CHILD = (
    CHILD_SETUP
    + r"""
from workload import write_quorum_jsonl
from annotate.services import import_file
path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", int(os.environ["IMPORT_TASKS"]), judged=False)
from django.db import connection
def backend_cpu():
    # PostgreSQL on this machine: the CPU seconds of this connection's server process.
    if connection.vendor != "postgresql":
        return 0.0
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
s0 = backend_cpu()
t0, c0 = time.perf_counter(), time.process_time()
import_file(path=path, project_name="before-after")
print("CPU", time.process_time() - c0 + backend_cpu() - s0)
print("SECONDS", time.perf_counter() - t0)
import shutil
shutil.rmtree(path.parent, ignore_errors=True)
"""
)


def _tree(rev: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"quorum-import-before-{rev}"
    if not path.exists():
        path.mkdir()
        archive = subprocess.run(
            ["git", "archive", rev], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    return path


def before_after_parser(
    doc: str, *, runs: int, tasks: int | None = 10_000
) -> argparse.ArgumentParser:
    """The options of a script that runs an older tree against a newer one: ``--before``,
    ``--after``, ``--runs`` and (unless ``tasks`` is None) ``--tasks``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="the older tree (a folder)")
    parser.add_argument("--after", type=Path, default=REPO, help="the newer tree (a folder)")
    parser.add_argument("--runs", type=int, default=runs)
    if tasks is not None:
        parser.add_argument("--tasks", type=int, default=tasks)
    return parser


def before_after_trees(args: argparse.Namespace) -> dict[str, Path]:
    return {"before": args.before.resolve(), "after": args.after.resolve()}


def alternating(names: Iterable[str], runs: int) -> Iterator[str]:
    """``names`` once per run, in order on even runs and reversed on odd ones (ABBA...)."""
    names = list(names)
    for run in range(runs):
        yield from names if run % 2 == 0 else names[::-1]


def run_child(tree: Path, tasks: int, child: str, marker: str, *, tag: str) -> str:
    """Runs ``child`` (Python source) in ``tree`` on a fresh data folder, or on a scratch
    PostgreSQL database when ``DATABASE_URL`` names one (dropped after), and returns its stdout
    once it printed ``marker`` (its stderr's tail ends the script otherwise)."""
    data = Path(tempfile.mkdtemp(prefix=f"quorum-import-{tag}-"))
    # The child's own temporary folders (its tasks.jsonl) go under ``data``, removed below even
    # when the child fails or is killed before removing them itself.
    (data / "tmp").mkdir()
    env = {
        **os.environ,
        "TMPDIR": str(data / "tmp"),
        "IMPORT_TREE": str(tree),
        "IMPORT_WORKLOAD": str(Path(__file__).parent),
        "IMPORT_TASKS": str(tasks),
        "QUORUM_DATA_DIR": str(data),
    }
    db = None
    if env.get("DATABASE_URL", "").startswith("postgres"):
        db = f"{env.get('QUORUM_PEERS_DB_PREFIX', 'quorum_peers')}_{tag}_{uuid.uuid4().hex[:8]}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
        env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db
    try:
        out = subprocess.run(
            [sys.executable, "-c", child], env=env, cwd=tree, capture_output=True, text=True
        )
        if marker not in out.stdout:
            raise SystemExit(out.stderr[-3000:])
        return out.stdout
    finally:
        if db:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db])
        subprocess.run(["rm", "-rf", str(data)], check=False)


def _once(tree: Path, tasks: int) -> tuple[float, float]:
    out = run_child(tree, tasks, CHILD, "SECONDS", tag="ab")
    cpu = float(out.split("CPU")[-1].split()[0])
    return float(out.split("SECONDS")[-1]), cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before", required=True, help="the older commit, or a folder holding its tree"
    )
    parser.add_argument("--after", type=Path, default=REPO, help="the newer tree (a folder)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    before = Path(args.before)
    trees = {
        "before": before.resolve() if before.is_dir() else _tree(args.before),
        "after": args.after.resolve(),
    }
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    cpu: dict[str, list[float]] = {name: [] for name in trees}
    for name in alternating(trees, args.runs):
        wall, used = _once(trees[name], args.tasks)
        seconds[name].append(wall)
        cpu[name].append(used)
        load = os.getloadavg()[0]
        print(f"{name}: {wall:.2f} s, CPU {used:.2f} s (load {load:.1f})", file=sys.stderr)
    before, after = (statistics.median(seconds[n]) for n in ("before", "after"))
    cpu_before, cpu_after = (statistics.median(cpu[n]) for n in ("before", "after"))
    print(
        f"{args.tasks:,} tasks, median of {args.runs}: before ({args.before}) {before:.2f} s, "
        f"after {after:.2f} s, {before / after:.2f}x; CPU (the importing process and its "
        f"database connection) {cpu_before:.2f} -> {cpu_after:.2f} s, "
        f"{cpu_before / cpu_after:.2f}x"
    )
    print(json.dumps({"seconds": seconds, "cpu": cpu}))


if __name__ == "__main__":
    main()
