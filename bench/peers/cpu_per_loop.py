"""CPU seconds per next -> submit loop, by process, with T annotators over HTTP.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum QUORUM_PEERS_BROKER=redis://127.0.0.1:6379/N \
      .venv/bin/python bench/peers/cpu_per_loop.py [--tasks 2000] [--calls 400] [--threads 8]

A fresh deployment as ``quorum_side.py`` starts it (gunicorn with ``config/gunicorn.conf.py``
and one Celery worker); after a warm-up, T annotators run the next -> submit loop and the CPU
time (user + system, from ``/proc``) each side spent is divided by the loops: the web
processes, the Celery worker (the flag update each submit queues), the deployment's
PostgreSQL server processes, and this client. CPU time moves far less with the load of a
shared machine than latency does. ``--nice-worker N`` lowers the worker's priority. The
worker's CPU is counted until it has caught up (no task left marked for a flag update, no
message waiting; ``flags_caught_up_s``, at most ``--catch-up`` seconds). SQLite with the
embedded broker when ``DATABASE_URL`` is unset. Prints one JSON line; never asserts anything.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quorum_side as qs  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def _group(pgid: int) -> float:
    out = subprocess.run(["pgrep", "-g", str(pgid)], capture_output=True, text=True).stdout
    return sum(_cpu(int(pid)) for pid in out.split())


def _server(db: str | None) -> dict[int, float]:
    if not db:
        return {}
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-Atc",
         f"SELECT pid FROM pg_stat_activity WHERE datname = '{db}'"],
        capture_output=True, text=True,
    ).stdout  # fmt: skip
    return {int(pid): _cpu(int(pid)) for pid in out.split()}


def _snapshot(dep: qs.Deployment) -> dict:
    web, worker = dep.procs[0].pid, dep.procs[1].pid
    return {"web": _group(web), "worker": _group(worker), "server": _server(dep.db_name)}


def _owed(dep: qs.Deployment) -> int:
    """Tasks still marked for a flag update, plus messages waiting on the broker."""
    sql = "SELECT count(*) FROM annotate_task WHERE flags_dirty_at IS NOT NULL"
    if dep.db_name:
        out = subprocess.run(
            ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", dep.db_name, "-Atc", sql],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        dirty = int(out.strip() or 0)
    else:
        with sqlite3.connect(f"file:{dep.data_dir / 'quorum.sqlite3'}?mode=ro", uri=True) as db:
            dirty = db.execute(sql).fetchone()[0]
    url = dep.env.get("CELERY_BROKER_URL", "")
    if url.startswith("redis"):
        import redis

        waiting = redis.Redis.from_url(url).llen("default")
    else:
        waiting = sum(1 for _ in (dep.data_dir / "broker" / "queue").glob("*"))
    return dirty + waiting


def _caught_up(dep: qs.Deployment, limit: float) -> float | None:
    """Seconds until nothing is owed (None: still owed after ``limit``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        if _owed(dep) == 0:
            return round(time.monotonic() - started, 2)
        time.sleep(0.1)
    return None


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))] * 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--nice-worker", type=int, default=0)
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--catch-up", type=float, default=60, help="seconds to wait for the last flag updates"
    )
    args = parser.parse_args()
    dep = qs.Deployment(args.threads)
    files = Path(tempfile.mkdtemp(prefix="quorum-cpu-loop-"))
    tasks = qs.write_quorum_jsonl(files / "tasks.jsonl", args.tasks, judged=False)
    try:
        token = dep.start()
        if args.nice_worker:
            subprocess.run(
                ["renice", "-n", str(args.nice_worker), "-g", str(dep.procs[1].pid)],
                check=True,
                capture_output=True,
            )
        _, job = qs.api_import(qs._api(dep.base, token), tasks, "loop")
        dep.shell(qs.MEMBERS, THREADS=args.threads, PROJECT=job["project_id"])
        dep.jobs_idle()
        anns = [qs.Annotator(dep.base, f"ann{i}", job["project_id"]) for i in range(args.threads)]
        for ann in anns:
            for _ in range(3):
                ann.next()
        time.sleep(1)
        before, client0, load = _snapshot(dep), time.process_time(), os.getloadavg()[0]
        got, wall = qs.run_threads(anns, args.calls, qs.step_loop)
        client1 = time.process_time()
        # The worker's last flag updates: counted until none is owed (no task marked dirty,
        # no message waiting), so a worker that fell behind the loop is charged in full.
        catch_up = _caught_up(dep, args.catch_up)
        time.sleep(0.5)
        after = _snapshot(dep)
        loops = len(got["submit"])
        server = sum(v - before["server"].get(pid, 0.0) for pid, v in after["server"].items())
        spent = {
            "web": after["web"] - before["web"],
            "worker": after["worker"] - before["worker"],
            "server": server,
            "client": client1 - client0,
        }
        result = {
            "label": args.label,
            "db": dep.db,
            "loops": loops,
            "errors": len(got["errors"]),
            "wall_s": round(wall, 2),
            "flags_caught_up_s": catch_up,
            "load": round(load, 1),
            "cpu_ms_per_loop": {k: round(v * 1000 / loops, 2) for k, v in spent.items()},
            "submit_p50_p95_ms": [_pct(got["submit"], 50), _pct(got["submit"], 95)],
            "next_p50_p95_ms": [_pct(got["next"], 50), _pct(got["next"], 95)],
        }
        print(json.dumps(result))
    finally:
        dep.stop()
        subprocess.run(["rm", "-rf", str(files)], check=False)


if __name__ == "__main__":
    main()
