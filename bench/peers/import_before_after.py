"""The peer workload's import (10,000 ranking tasks of 4 text candidates) in-process, an older
commit against the working tree, alternating run by run; prints both medians and their ratio.

    .venv/bin/python bench/peers/import_before_after.py --before 664bf2e [--runs 3] [--tasks 10000]

The older tree is unpacked with ``git archive`` into ``/tmp/quorum-import-before-<rev>`` (once);
both run with this virtualenv, each in a fresh process on a fresh data folder (SQLite), or on a
scratch PostgreSQL database per run when ``DATABASE_URL`` is set. Times ``import_file`` alone:
no HTTP, no job hand-off, no start-up. Nothing here asserts a timing.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import os, sys, tempfile, time
from pathlib import Path
tree = os.environ["IMPORT_TREE"]
sys.path[:0] = [tree, os.environ["IMPORT_WORKLOAD"]]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from workload import write_quorum_jsonl
from annotate.services import import_file
path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", int(os.environ["IMPORT_TASKS"]), judged=False)
t0 = time.perf_counter()
import_file(path=path, project_name="before-after")
print("SECONDS", time.perf_counter() - t0)
"""


def _tree(rev: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"quorum-import-before-{rev}"
    if not path.exists():
        path.mkdir()
        archive = subprocess.run(
            ["git", "archive", rev], cwd=REPO, check=True, capture_output=True
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(path)], input=archive, check=True)
    return path


def _once(tree: Path, tasks: int) -> float:
    data = Path(tempfile.mkdtemp(prefix="quorum-import-ab-"))
    env = {
        **os.environ,
        "IMPORT_TREE": str(tree),
        "IMPORT_WORKLOAD": str(Path(__file__).parent),
        "IMPORT_TASKS": str(tasks),
        "QUORUM_DATA_DIR": str(data),
    }
    db = None
    if env.get("DATABASE_URL", "").startswith("postgres"):
        db = f"{env.get('QUORUM_PEERS_DB_PREFIX', 'quorum_peers')}_ab_{uuid.uuid4().hex[:8]}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", db], check=True)
        env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + db
    try:
        out = subprocess.run(
            [sys.executable, "-c", CHILD], env=env, cwd=tree, capture_output=True, text=True
        )
        if "SECONDS" not in out.stdout:
            raise SystemExit(out.stderr[-3000:])
        return float(out.stdout.split("SECONDS")[-1])
    finally:
        if db:
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", db])
        subprocess.run(["rm", "-rf", str(data)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the older commit")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    trees = {"before": _tree(args.before), "after": REPO}
    seconds: dict[str, list[float]] = {name: [] for name in trees}
    for run in range(args.runs):
        for name in list(trees) if run % 2 == 0 else list(trees)[::-1]:
            seconds[name].append(_once(trees[name], args.tasks))
            load = os.getloadavg()[0]
            print(f"{name}: {seconds[name][-1]:.2f} s (load {load:.1f})", file=sys.stderr)
    before, after = (statistics.median(seconds[n]) for n in ("before", "after"))
    print(
        f"{args.tasks:,} tasks, median of {args.runs}: before ({args.before}) {before:.2f} s, "
        f"after {after:.2f} s, {before / after:.2f}x"
    )
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
