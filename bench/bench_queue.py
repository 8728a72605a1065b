"""Work-queue latency on PostgreSQL: next task and submit, with 100k tasks and 1M judgments.

Creates a scratch database (``quorum_bench`` by default), migrates it, loads a project with
COPY -- prompts, 4 candidates per task, task slots, and for the judgments both the submitted
assignments and the judgment rows, spread over past days and a pool of annotators -- then
drives the real views through Django's test client: ``GET`` the task fragment (leases the
next task) and ``POST`` the judgment, as the annotation page does. Prints p50/p95/max latency
and the SQL statements per request (and with the BEGIN/COMMIT of the request's transaction),
and drops the database unless ``--keep``.

    python bench/bench_queue.py [--tasks 100000] [--judgments 1000000] [--k 12] [--cycles 300]

Targets: at most 10 queries per request, p95 under 50 ms. The server is PostgreSQL at
``--server`` (default ``postgres://postgres@127.0.0.1:5432``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

N = 4  # candidates per task


def _admin_sql(server: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


def _copy(cursor, table: str, columns: list[str], rows) -> int:
    n = 0
    with cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def load(*, tasks: int, judgments: int, k: int, annotators: int, seed: int) -> dict:
    """Loads one ranking project with COPY; returns ids the measurement needs."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.db import connection

    from annotate.models import Membership, Project
    from annotate.rendering import markdown_html

    if judgments > tasks * min(k, annotators):
        raise SystemExit("--judgments must fit: at most tasks x min(k, annotators)")
    rng = random.Random(seed)
    now = datetime.now(UTC)
    user_model = get_user_model()
    password = make_password("bench-pw")
    users = user_model.objects.bulk_create(
        user_model(username=f"bench{i}", password=password) for i in range(annotators)
    )
    project = Project.objects.create(
        name="bench", mode="ranking", candidates_per_task=N, annotators_per_task=k
    )
    Membership.objects.bulk_create(Membership(project=project, user=u) for u in users)
    user_ids = [u.pk for u in users]

    # Judgments per task: most tasks complete (k each), the rest open with a few each, served
    # by priority -- the shape of a project well under way.
    full = min(tasks - 1, int(0.96 * judgments / k))
    rest = judgments - full * k
    open_tasks = tasks - full
    counts = [k] * full + [
        rest // open_tasks + (1 if i < rest % open_tasks else 0) for i in range(open_tasks)
    ]
    if max(counts[full:], default=0) >= k:
        raise SystemExit("too many judgments for the open tasks; raise --k or --tasks")

    pid = project.pk
    stamp = now - timedelta(days=30)
    meta = json.dumps({})
    with connection.cursor() as django_cursor:
        cur = django_cursor.cursor  # the psycopg cursor: COPY
        _copy(
            cur,
            "annotate_prompt",
            [
                "id", "project_id", "external_id", "text", "text_html", "image", "video", "metadata",
                "created_at",
            ],
            (
                (t + 1, pid, f"q{t}", text, markdown_html(text), "", "", meta, stamp)
                for t in range(tasks)
                for text in (f"Question {t}: what is shown?",)
            ),
        )  # fmt: skip
        _copy(
            cur,
            "annotate_candidate",
            [
                "id",
                "project_id",
                "prompt_id",
                "external_id",
                "model_name",
                "kind",
                "text",
                "text_html",
                "media",
                "metadata",
                "created_at",
            ],
            (
                (
                    t * N + i + 1,
                    pid,
                    t + 1,
                    f"q{t}-{i}",
                    f"model-{i}",
                    "text",
                    f"Answer {i} to {t}.",
                    f"<p>Answer {i} to {t}.</p>",
                    "",
                    meta,
                    stamp,
                )
                for t in range(tasks)
                for i in range(N)
            ),
        )
        priorities = [rng.random() for _ in range(tasks)]
        # Completed tasks are the ones served first: the highest priorities.
        by_priority = sorted(range(tasks), key=lambda t: -priorities[t])
        count_of = dict(zip(by_priority, counts, strict=True))
        _copy(
            cur,
            "annotate_task",
            ["id", "project_id", "prompt_id", "candidate_key", "priority", "is_gold", "status", "judgment_count", "created_at"],
            (
                (
                    t + 1, pid, t + 1, "-".join(str(t * N + i + 1) for i in range(N)), priorities[t],
                    False, "complete" if count_of[t] >= k else "open", count_of[t], stamp,
                )
                for t in range(tasks)
            ),
        )  # fmt: skip
        _copy(
            cur,
            "annotate_taskcandidate",
            ["task_id", "candidate_id", "position"],
            ((t + 1, t * N + i + 1, i) for t in range(tasks) for i in range(N)),
        )

        def history():
            next_id = 1
            for t in range(tasks):
                order = [t * N + i + 1 for i in range(N)]
                for j in range(count_of[t]):
                    user = user_ids[(t + j) % annotators]
                    when = now - timedelta(days=1 + (next_id % 29), seconds=next_id % 86_400)
                    yield next_id, t + 1, user, when, order
                    next_id += 1

        _copy(
            cur,
            "annotate_assignment",
            [
                "id",
                "task_id",
                "annotator_id",
                "status",
                "leased_until",
                "presented_order",
                "skip_reason",
                "created_at",
                "updated_at",
            ],
            ((i, t, u, "submitted", w, json.dumps(o), "", w, w) for i, t, u, w, o in history()),
        )
        _copy(
            cur,
            "annotate_judgment",
            [
                "id", "project_id", "task_id", "assignment_id", "annotator_id", "source", "source_name",
                "external_annotator", "kind", "ranking", "outcome", "presented_order", "rationale",
                "ratings", "duration_ms", "idempotency_key", "created_at", "updated_at",
            ],
            (
                (
                    i, pid, t, i, u, "human", "", "", "ranking", json.dumps([[c] for c in o]), "",
                    json.dumps(o), "", "{}", 4000, f"bench-{i}", w, w,
                )
                for i, t, u, w, o in history()
            ),
        )  # fmt: skip
        for table in (
            "annotate_prompt",
            "annotate_candidate",
            "annotate_task",
            "annotate_taskcandidate",
            "annotate_assignment",
            "annotate_judgment",
        ):
            cur.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT COALESCE(MAX(id), 1) FROM {table}))"
            )
    with connection.cursor() as c:
        c.execute("ANALYZE")
    return {"project_id": pid, "user_ids": user_ids, "open_tasks": open_tasks}


def _existing() -> dict:
    from annotate.models import Judgment, Membership, Project, Task

    project = Project.objects.get(name="bench")
    user_ids = list(
        Membership.objects.filter(project=project)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    sizes = (
        f"{Task.objects.filter(project=project).count():,} tasks, "
        f"{Judgment.objects.filter(project=project).count():,} judgments"
    )
    return {"project_id": project.pk, "user_ids": user_ids, "sizes": sizes}


def _spread(values: list[int]) -> str:
    return str(values[0]) if min(values) == max(values) else f"{min(values)}-{max(values)}"


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(*, project_id: int, user_ids: list[int], cycles: int, workers: int) -> dict:
    """Sequential next/submit cycles through the views, round-robin over ``workers`` users."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from annotate.models import Assignment

    clients = []
    for uid in user_ids[:workers]:
        client = Client()
        client.force_login(get_user_model().objects.get(pk=uid))
        clients.append((uid, client))
    task_url = reverse("annotate_work", args=[project_id])
    results: dict[str, dict[str, list]] = {
        "next": {"ms": [], "queries": [], "round_trips": []},
        "submit": {"ms": [], "queries": [], "round_trips": []},
    }

    def timed(kind: str, call):
        with CaptureQueriesContext(connection) as ctx:
            start = time.perf_counter()
            response = call()
            elapsed = (time.perf_counter() - start) * 1000
        sql = [q["sql"] for q in ctx.captured_queries]
        results[kind]["ms"].append(elapsed)
        results[kind]["queries"].append(sum(s not in ("BEGIN", "COMMIT") for s in sql))
        results[kind]["round_trips"].append(len(sql))
        return response

    warmup = min(10, cycles)
    for cycle in range(cycles + warmup):
        uid, client = clients[cycle % len(clients)]
        response = timed("next", lambda c=client: c.get(task_url, HTTP_X_REQUESTED_WITH="fetch"))
        assert response.status_code == 200, response.status_code
        assignment = (
            Assignment.objects.filter(annotator_id=uid, status="leased").order_by("-id").first()
        )
        assert assignment is not None, "the queue served nothing"
        body = json.dumps(
            {
                "idempotency_key": str(uuid.uuid4()),
                "ranking": [[c] for c in assignment.presented_order],
                "duration_ms": 5000,
            }
        )
        url = reverse("annotate_submit", args=[project_id, assignment.pk])
        response = timed(
            "submit",
            lambda c=client, u=url, b=body: c.post(u, data=b, content_type="application/json"),
        )
        assert response.status_code == 201, response.content
        if cycle < warmup:
            for kind in results.values():
                for values in kind.values():
                    values.pop()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--judgments", type=int, default=1_000_000)
    parser.add_argument("--k", type=int, default=12, help="judgments wanted per task")
    parser.add_argument("--annotators", type=int, default=60, help="annotators in the history")
    parser.add_argument("--cycles", type=int, default=300, help="measured next/submit cycles")
    parser.add_argument("--workers", type=int, default=10, help="annotators doing the cycles")
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="quorum_bench")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="measure a database kept by an earlier --keep run"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--load-only", action="store_true", help="load (and keep) the database, measure nothing"
    )
    parser.add_argument("--json", help="also write the latencies (ms) and query counts here")
    args = parser.parse_args()
    if args.load_only:
        args.keep = True

    db = args.database
    if not args.reuse:
        _admin_sql(args.server, f'DROP DATABASE IF EXISTS "{db}"', f'CREATE DATABASE "{db}"')
    os.environ["DATABASE_URL"] = f"{args.server}/{db}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("QUORUM_DATA_DIR", "/tmp/quorum-bench-queue")
    try:
        import django

        django.setup()
        from django.core.management import call_command
        from django.db import connection

        if args.reuse:
            ids = _existing()
            print(f"reusing {db}: {ids['sizes']}")
        else:
            started = time.perf_counter()
            call_command("migrate", verbosity=0)
            migrated = time.perf_counter()
            ids = load(
                tasks=args.tasks,
                judgments=args.judgments,
                k=args.k,
                annotators=args.annotators,
                seed=args.seed,
            )
            loaded = time.perf_counter()
            print(
                f"loaded {args.tasks:,} tasks ({args.tasks * N:,} candidates), "
                f"{args.judgments:,} judgments and as many assignments, k={args.k}, "
                f"{ids['open_tasks']:,} open tasks, {args.annotators} annotators: "
                f"migrate {migrated - started:.1f} s, load {loaded - migrated:.1f} s"
            )
        if args.load_only:
            connection.close()
            return
        results = measure(
            project_id=ids["project_id"],
            user_ids=ids["user_ids"],
            cycles=args.cycles,
            workers=args.workers,
        )
        print(f"{args.cycles} cycles by {args.workers} annotators on {connection.vendor}:")
        print(
            f"{'request':<8} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'queries':>8} "
            f"{'+BEGIN/COMMIT':>14}"
        )
        for kind, r in results.items():
            print(
                f"{kind:<8} {statistics.median(r['ms']):>8.1f} {_percentile(r['ms'], 95):>8.1f} "
                f"{max(r['ms']):>8.1f} {_spread(r['queries']):>8} {_spread(r['round_trips']):>14}"
            )
        if args.json:
            Path(args.json).write_text(json.dumps(results))
        connection.close()
    finally:
        if not (args.keep or args.reuse):
            _admin_sql(args.server, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


if __name__ == "__main__":
    main()
