"""The API import over HTTP, trees alternated, with what each leg's wall was made of: per import,
the legs ``quorum_side.import_legs`` reports (request, queue, run, notice) beside the CPU
seconds the Celery worker and the web server spent (user + system, children included, from
``psutil``), the machine's steal and I/O-wait seconds over the import (``/proc/stat``) and the
load average. A run leg whose wall moves while the worker's CPU does not is the machine (the
other processes, the hypervisor); one whose CPU moves is the code or the caches.

    .venv/bin/python bench/peers/import_h18b_legs.py --trees var/h18b-base,. [--db sqlite]
        [--imports 3] [--rounds 2] [--tasks 10000] [--redis redis://127.0.0.1:6379/N]

Each tree runs its own ``bench/peers/quorum_side.py`` deployment (gunicorn, one Celery worker:
SQLite with the embedded broker, or PostgreSQL at ``DATABASE_URL``'s server with the Redis
broker ``--redis``, whose database is flushed before each deployment), ``--imports``
back-to-back imports of the peer file into new projects, then stops it. Use your own
``QUORUM_PEERS_PORT`` and ``QUORUM_PEERS_DB_PREFIX`` on a shared machine. Nothing here asserts
a timing.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent


def _side(tree: Path):
    """The tree's own ``quorum_side`` module (its ``REPO`` is that tree)."""
    path = tree / "bench" / "peers" / "quorum_side.py"
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"quorum_side_{abs(hash(tree))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent))
    return module


def _cpu(pid: int) -> float:
    """User + system seconds of ``pid`` and its live children (gunicorn's workers)."""
    try:
        proc = psutil.Process(pid)
        total = sum(proc.cpu_times()[:2])
        for child in proc.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total
    except psutil.NoSuchProcess:
        return 0.0


def _machine() -> tuple[float, float]:
    """Steal and I/O-wait seconds of the whole machine so far (all CPUs)."""
    with open("/proc/stat") as fh:
        fields = fh.readline().split()[1:]
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[7]) / tick, int(fields[4]) / tick


def _one_deployment(tree: Path, args, plain: Path) -> list[dict]:
    side = _side(tree)
    if args.db == "postgres" and args.redis:
        import redis

        redis.Redis.from_url(args.redis).flushdb()
        os.environ["QUORUM_PEERS_BROKER"] = args.redis
    dep = side.Deployment(threads=1)
    try:
        token = dep.start()
        web_pid, worker_pid = dep.procs[0].pid, dep.procs[1].pid
        api = side._api(dep.base, token)
        rows, stamps = [], []
        for i in range(args.imports):
            dep.jobs_idle()  # the previous import's statistics refresh is over
            w0, c0 = _cpu(worker_pid), _cpu(web_pid)
            s0, io0 = _machine()
            load = os.getloadavg()[0]
            seconds, job = side.api_import(api, plain, f"legs-{i}", stamps)
            assert job["counts"]["tasks"] == args.tasks, job["counts"]
            s1, io1 = _machine()
            rows.append(
                {
                    "total": seconds,
                    "worker_cpu": _cpu(worker_pid) - w0,
                    "web_cpu": _cpu(web_pid) - c0,
                    "steal": s1 - s0,
                    "iowait": io1 - io0,
                    "load": load,
                }
            )
        for row, legs in zip(rows, side.import_legs(dep, stamps), strict=True):
            row.update({k: legs[k] for k in ("request", "queue", "run", "notice")})
        return rows
    finally:
        dep.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trees", required=True, help="comma-separated folders, e.g. base,.")
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--imports", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--redis", help="the broker for PostgreSQL (a Redis database of yours)")
    args = parser.parse_args()
    trees = [Path(t).resolve() for t in args.trees.split(",")]
    if args.db == "sqlite":
        os.environ.pop("DATABASE_URL", None)
        os.environ.pop("QUORUM_PEERS_BROKER", None)
    elif not os.environ.get("DATABASE_URL", "").startswith("postgres"):
        raise SystemExit("--db postgres: set DATABASE_URL to the server (any database on it)")
    sys.path.insert(0, str(HERE))
    from workload import write_quorum_jsonl

    files = Path(tempfile.mkdtemp(prefix="quorum-legs-"))
    plain = write_quorum_jsonl(files / "tasks.jsonl", args.tasks, judged=False)
    got: dict[Path, list[dict]] = {t: [] for t in trees}
    keys = ("total", "request", "queue", "run", "notice", "worker_cpu", "web_cpu")
    try:
        for r in range(args.rounds):
            for tree in trees if r % 2 == 0 else trees[::-1]:
                rows = _one_deployment(tree, args, plain)
                got[tree] += rows
                for i, row in enumerate(rows):
                    print(
                        f"{time.strftime('%H:%M:%S')} {tree.name} #{i}: "
                        + " ".join(f"{k} {row[k]:.3f}" for k in keys)
                        + f" steal {row['steal']:.2f} iowait {row['iowait']:.2f}"
                        f" load {row['load']:.1f}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        for path in files.iterdir():
            path.unlink()
        files.rmdir()
    print(f"{args.db}, {args.tasks:,} tasks, medians of {args.rounds} x {args.imports} imports:")
    for tree in trees:
        rows = got[tree]
        med = {k: statistics.median(r[k] for r in rows) for k in keys}
        print(f"  {tree}: " + ", ".join(f"{k} {v:.3f}" for k, v in med.items()))
    if len(trees) == 2:
        a, b = (statistics.median(r["total"] for r in got[t]) for t in trees)
        print(f"  total {trees[0].name} / {trees[1].name}: {a / b:.2f}x")


if __name__ == "__main__":
    main()
