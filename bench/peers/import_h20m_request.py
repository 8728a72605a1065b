"""Where the API import's request leg goes, SQLite beside PostgreSQL (issue 13, h20m): in one
process per run, the peer file (10,000 tasks, ~17 MB) is imported inline (the worker's code,
its statistics refresh included), then, ``--pause`` seconds later, posted to ``/api/imports``
through Django's WSGI handler (no socket, no broker: the job's publish is dropped), as the
peer benchmark's next rep does right after the client saw the previous import done. Per
request: wall, process CPU (user + system), off-CPU (wall - CPU), the time in SQL statements
and commits, and ``_count_rows``. Runs alternate SQLite and PostgreSQL; prints medians.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
    QUORUM_PEERS_DB_PREFIX=quorum_h20m .venv/bin/python bench/peers/import_h20m_request.py \\
        [--runs 4] [--rounds 3] [--pause 0] [--overlap] [--tasks 10000]

SQLite on a fresh data folder, PostgreSQL on a scratch database per run (``DATABASE_URL``
names the server). Nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import CHILD_SETUP, REPO, alternating, run_child  # noqa: E402

CHILD = (
    CHILD_SETUP
    + r"""
import resource, shutil
import httpx
from workload import write_quorum_jsonl
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from django.db import connection, connections
import workers.jobs
import annotate.services as services
workers.jobs._publish_soon = lambda kind, ids: None  # no broker here; the job row is written
from annotate.services import api_token_create, import_job_create
folder = Path(tempfile.mkdtemp())
path = write_quorum_jsonl(folder / "tasks.jsonl", int(os.environ["IMPORT_TASKS"]), judged=False)
user = get_user_model().objects.create_user("bench", password="x", is_staff=True)
_, key = api_token_create(user=user)
client = httpx.Client(transport=httpx.WSGITransport(app=WSGIHandler()), base_url="http://testserver")
spent = {"sql": 0.0, "count": 0.0}
def statement(execute, sql, params, many, context):
    t = time.perf_counter()
    try:
        return execute(sql, params, many, context)
    finally:
        spent["sql"] += time.perf_counter() - t
wrapper = type(connections["default"])
plain_commit, plain_count = wrapper._commit, services._count_rows
def timed_commit(self):
    t = time.perf_counter()
    try:
        return plain_commit(self)
    finally:
        spent["sql"] += time.perf_counter() - t
def timed_count(path):
    t = time.perf_counter()
    try:
        return plain_count(path)
    finally:
        spent["count"] += time.perf_counter() - t
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
def post(name):
    copy = Path(tempfile.mkdtemp()) / "upload.jsonl"
    shutil.copyfile(path, copy)
    spent.update(sql=0.0, count=0.0)
    settings.QUORUM_ASYNC_IMPORT_ROWS = 0  # queued, as the peer file is: nothing runs inline
    wrapper._commit, services._count_rows = timed_commit, timed_count
    try:
        with connection.execute_wrapper(statement), open(copy, "rb") as fh:
            t0, c0 = time.perf_counter(), cpu()
            response = client.post("/api/imports", data={"project_name": name},
                files={"file": ("upload.jsonl", fh, "application/jsonl")},
                headers={"Authorization": f"Bearer {key}"})
            wall, used = time.perf_counter() - t0, cpu() - c0
    finally:
        wrapper._commit, services._count_rows = plain_commit, plain_count
    assert response.status_code == 201, response.text[:300]
    shutil.rmtree(copy.parent, ignore_errors=True)
    return wall, used, spent["sql"], spent["count"]
import threading
from annotate import table_stats
overlap, stale = os.environ["IMPORT_OVERLAP"] == "1", []
if overlap:  # the job's refresh held back, to run on its own connection beside the request
    services.statistics_refresh = lambda tables: stale.append(tables)
def refresh(tables):
    try:
        table_stats.statistics_refresh(tables)
    finally:
        connection.close()
post("warm-up")  # the process's first request (imports, caches) is not counted
rows = []
for i in range(int(os.environ["IMPORT_ROUNDS"])):
    settings.QUORUM_ASYNC_IMPORT_ROWS = 10**9
    job = import_job_create(path=path, project_name=f"import-{i}", run_async=False)
    assert job.status == "done", job.errors
    time.sleep(float(os.environ["IMPORT_PAUSE"]))
    beside = overlap and threading.Thread(target=refresh, args=(stale.pop(),))
    if beside:
        beside.start()
    rows.append(post(f"request-{i}"))
    if beside:
        beside.join()
print("ROWS", json.dumps(rows))
shutil.rmtree(folder, ignore_errors=True)
"""
)

FIELDS = ("wall", "cpu", "off-CPU", "SQL + commits", "_count_rows")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3, help="import + request pairs per run")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds after the import")
    parser.add_argument(
        "--overlap",
        action="store_true",
        help="the import's statistics refresh runs beside the request, as the worker's does "
        "beside the peer benchmark's next upload",
    )
    parser.add_argument("--tasks", type=int, default=10_000)
    args = parser.parse_args()
    server = os.environ.get("DATABASE_URL", "")
    if not server.startswith("postgres"):
        raise SystemExit("DATABASE_URL must name the PostgreSQL server (scratch databases)")
    os.environ.update(
        IMPORT_ROUNDS=str(args.rounds),
        IMPORT_PAUSE=str(args.pause),
        IMPORT_OVERLAP=str(int(args.overlap)),
    )
    got: dict[str, list[list[float]]] = {"sqlite": [], "postgres": []}
    for db in alternating(got, args.runs):
        if db == "sqlite":
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = server
        out = run_child(REPO, args.tasks, CHILD, "ROWS", tag="req")
        rows = __import__("json").loads(out.split("ROWS", 1)[1])
        for wall, cpu, sql, count in rows:
            got[db].append([wall, cpu, wall - cpu, sql, count])
        print(
            f"{db}: "
            + ", ".join(f"{r[0] * 1000:.0f}/{r[1] * 1000:.0f}" for r in rows)
            + f" ms wall/CPU (load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
        )
    os.environ["DATABASE_URL"] = server
    beside = ", its statistics refresh beside the request" if args.overlap else ""
    print(f"{args.tasks:,} tasks, request {args.pause} s after an import{beside}, medians (ms):")
    print("| database | " + " | ".join(FIELDS) + " |")
    print("|---" * (len(FIELDS) + 1) + "|")
    for db, samples in got.items():
        medians = [statistics.median(s[i] for s in samples) * 1000 for i in range(len(FIELDS))]
        print(f"| {db} | " + " | ".join(f"{m:.1f}" for m in medians) + " |")


if __name__ == "__main__":
    main()
