"""The data browser at 100k tasks: each filter and sort, against the same page at 2k tasks.

Loads two scratch PostgreSQL databases with ``bench/bench_queue.py --load-only`` (one ranking
project of the same shape: by default 2,000 tasks with 20,000 judgments, and 100,000 tasks with
1,000,000 judgments), then, in a child process per database, logs in a reviewer and requests
``/curation/projects/<p>/data/`` through Django's test client with each search, filter and
sort the page offers, ``--repeat`` times each after one warm-up. Prints median and p95 per
variant and size, the SQL statements, and the large/small ratio of the medians. Drops both
databases unless ``--keep``.

    python bench/bench_browse.py [--repeat 10]
    python bench/bench_browse.py --large 20000:200000 --repeat 3     # a quick look

A page that stays fast as the project grows shows ratios near 1; a ratio near 50 (the size
ratio) means the request reads the whole project.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
QUEUE = REPO / "bench" / "bench_queue.py"
sys.path.insert(0, str(REPO / "bench"))

from bench_queue_scale import _percentile, _size  # noqa: E402  (the same sizes and percentile)

VARIANTS = {
    "first page": {},
    "page 20": {"page": "20"},
    "search text": {"q": "Question 1234"},
    "status open": {"status": "open"},
    "any open flag": {"flag": "any"},
    "by annotator": {"evaluator": "{evaluator}"},
    "model (not blind)": {"model": "model-2"},
    "sort: most judgments": {"sort": "judgments"},
    "sort: lowest agreement": {"sort": "agreement"},
    "sort: newest": {"sort": "newest"},
}


def measure(database: str, server: str, repeat: int) -> dict:
    """In a child process: every variant ``repeat`` times through the browse view."""
    os.environ["DATABASE_URL"] = f"{server}/{database}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("QUORUM_DATA_DIR", "/tmp/quorum-bench-browse")
    sys.path.insert(0, str(REPO))
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext
    from django.urls import reverse

    from annotate.models import Membership, Project

    project = Project.objects.get(name="bench")
    # The model filter is offered only where reviewers see model names.
    Project.objects.filter(pk=project.pk).update(blind=False)
    reviewer, _ = get_user_model().objects.get_or_create(username="bench-reviewer")
    Membership.objects.get_or_create(project=project, user=reviewer, defaults={"role": "reviewer"})
    annotator = Membership.objects.filter(project=project, role="annotator").order_by("user_id")
    evaluator = f"user:{annotator.first().user_id}"
    client = Client()
    client.force_login(reviewer)
    url = reverse("curation:browse", args=[project.pk])
    out: dict[str, dict] = {}
    for name, params in VARIANTS.items():
        query = {k: v.format(evaluator=evaluator) for k, v in params.items()}
        timings: list[float] = []
        statements = 0
        for i in range(repeat + 1):
            with CaptureQueriesContext(connection) as ctx:
                start = time.perf_counter()
                response = client.get(url, query)
                elapsed = (time.perf_counter() - start) * 1000
            assert response.status_code == 200, (name, response.status_code)
            if i:  # the first request warms caches
                timings.append(elapsed)
                statements = len(ctx.captured_queries)
        out[name] = {"ms": timings, "statements": statements}
    connection.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=_size, default=(2_000, 20_000), help="TASKS:JUDGMENTS")
    parser.add_argument("--large", type=_size, default=(100_000, 1_000_000), help="TASKS:JUDGMENTS")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--server", default="postgres://postgres@127.0.0.1:5432")
    parser.add_argument("--prefix", default="quorum_bench_browse")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--reuse", action="store_true", help="measure databases kept earlier")
    parser.add_argument("--measure", help=argparse.SUPPRESS)  # child: a database name
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.server, args.repeat)))
        return

    sizes = {"small": args.small, "large": args.large}
    databases = {name: f"{args.prefix}_{name}" for name in sizes}
    results: dict[str, dict] = {}
    try:
        for name, (tasks, judgments) in sizes.items():
            if not args.reuse:
                started = time.perf_counter()
                subprocess.run(
                    [sys.executable, str(QUEUE), "--load-only", "--database", databases[name],
                     "--tasks", str(tasks), "--judgments", str(judgments), "--server", args.server],
                    check=True, cwd=REPO,
                )  # fmt: skip
                print(f"loaded {name}: {tasks:,} tasks in {time.perf_counter() - started:.0f} s")
        for name in sizes:
            child = subprocess.run(
                [sys.executable, __file__, "--measure", databases[name], "--server", args.server,
                 "--repeat", str(args.repeat)],
                check=True, cwd=REPO, capture_output=True, text=True,
            )  # fmt: skip
            results[name] = json.loads(child.stdout.strip().splitlines()[-1])
    finally:
        if not args.keep:
            import psycopg

            with psycopg.connect(f"{args.server}/postgres", autocommit=True) as conn:
                for database in databases.values():
                    conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')

    (small_tasks, _), (large_tasks, _) = args.small, args.large
    print(
        f"\n{args.repeat} requests per variant, PostgreSQL, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"| variant | {small_tasks:,} tasks p50 / p95 ms | {large_tasks:,} tasks p50 / p95 ms "
        "| statements | p50 large / small |"
    )
    print("|---|---|---|---|---|")
    for name in VARIANTS:
        small, large = results["small"][name], results["large"][name]
        print(
            f"| {name} | {statistics.median(small['ms']):.0f} / {_percentile(small['ms'], 95):.0f} "
            f"| {statistics.median(large['ms']):.0f} / {_percentile(large['ms'], 95):.0f} "
            f"| {large['statements']} "
            f"| {statistics.median(large['ms']) / statistics.median(small['ms']):.1f}x |"
        )


if __name__ == "__main__":
    main()
