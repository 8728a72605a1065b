"""EXPLAIN (ANALYZE, BUFFERS) of next-task's statements on a database kept by bench_queue.py.

For each annotator given (default: two of the benchmark's workers and two annotators with no
benchmark cycles) runs the statements a next-task request runs -- the live-lease lookup
(``_current_query``), the open pool's pick (``_open_pick_query``), the room check
(``_room_query``) on the task the pick found, and the progress/remaining count
(``_progress_query``) -- each ``--repeat`` times inside a transaction that is rolled back (the
pick locks a row), and prints per statement: execution ms, shared buffers hit/read, and the
rows the plan's nodes removed by filters or anti-joins (the walk past tasks that are full or
the annotator's own). The first repeat shows cold pages; later ones warm.

    python bench/bench_h18h_explain.py --database quorum_s7_scale_large [--plans]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _walk(node: dict, out: dict) -> None:
    for key in ("Rows Removed by Filter", "Rows Removed by Join Filter"):
        out["removed"] += node.get(key, 0) * node.get("Actual Loops", 1)
    if (
        node.get("Node Type") in ("Index Scan", "Index Only Scan")
        and node.get("Relation Name") == "annotate_task"
    ):
        out["task_rows"] += node.get("Actual Rows", 0) * node.get("Actual Loops", 1)
    for child in node.get("Plans", []):
        _walk(child, out)


def _explain(cursor, sql: str, params, *, text: bool) -> tuple[dict, str]:
    cursor.execute("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + sql, params)
    raw = cursor.fetchone()[0]
    plan = (json.loads(raw) if isinstance(raw, str) else raw)[0]
    top = plan["Plan"]
    out = {
        "ms": plan["Execution Time"],
        "hit": top.get("Shared Hit Blocks", 0),
        "read": top.get("Shared Read Blocks", 0),
        "removed": 0,
        "task_rows": 0,
    }
    _walk(top, out)
    shown = ""
    if text:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql, params)
        shown = "\n".join(row[0] for row in cursor.fetchall())
    return out, shown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--database", required=True)
    parser.add_argument("--annotators", help="comma-separated user ids (default: 4 chosen)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--plans", action="store_true", help="print the text plans (last run)")
    args = parser.parse_args()
    os.environ["DATABASE_URL"] = f"{args.server}/{args.database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("QUORUM_DATA_DIR", "/tmp/quorum-bench-queue")
    import django

    django.setup()
    from django.db import connection, transaction
    from django.utils import timezone

    from annotate import queue
    from annotate.models import Membership, Project

    project = Project.objects.get(name="bench")
    members = list(
        Membership.objects.filter(project=project)
        .order_by("user_id")
        .values_list("user_id", flat=True)
    )
    if args.annotators:
        chosen = [int(a) for a in args.annotators.split(",")]
    else:
        chosen = [members[0], members[9], members[30], members[59]]
    print(f"{args.database}: annotators {chosen} (workers are {members[:10]})")
    k = project.annotators_per_task
    for uid in chosen:
        now = timezone.now()
        today = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
        window = now - timedelta(minutes=queue.lease_minutes(project))
        for attempt in range(args.repeat):
            last = attempt == args.repeat - 1
            with transaction.atomic(), connection.cursor() as cursor:
                statements = [
                    (
                        "current",
                        queue._current_query(project_id=project.pk, annotator_id=uid, now=now),
                    ),
                    (
                        "pick",
                        queue._open_pick_query(
                            project_id=project.pk, annotator_id=uid, k=k, now=now
                        ),
                    ),
                ]
                picked = None
                results = []
                for name, qs in statements:
                    sql, params = qs.query.get_compiler(connection=connection).as_sql()
                    out, shown = _explain(cursor, sql, params, text=args.plans and last)
                    results.append((name, out, shown))
                    if name == "pick":
                        cursor.execute(sql, params)
                        picked = cursor.fetchone()
                if picked is not None:
                    qs = queue._room_query(task_id=picked[0], now=now)
                    sql, params = qs.query.get_compiler(connection=connection).as_sql()
                    shown = args.plans and last
                    results.append(("room", *_explain(cursor, sql, params, text=shown)))
                qs = queue._progress_query(
                    project_id=project.pk, annotator_id=uid, today=today, window=window, now=now
                )
                sql, params = qs.query.get_compiler(connection=connection).as_sql()
                shown = args.plans and last
                results.append(("progress", *_explain(cursor, sql, params, text=shown)))
                transaction.set_rollback(True)
            for name, out, shown in results:
                print(
                    f"  user {uid:>3} run {attempt + 1} {name:<9}"
                    f" {out['ms']:8.2f} ms  hit {out['hit']:>6} read {out['read']:>6}"
                    f"  removed {out['removed']:>6}  task rows {out['task_rows']:>6}"
                    + (f"  -> task {picked[0]}" if name == "pick" and picked else "")
                )
                if shown:
                    print(shown)
    connection.close()


if __name__ == "__main__":
    main()
