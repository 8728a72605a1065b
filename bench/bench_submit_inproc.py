"""In-process CPU and statements of an annotator's next and submit requests (Django's test
client, the deployed session store and middleware), to compare two trees in one run.

Makes a scratch database on the given server and drops it at the end (PostgreSQL), or a
scratch SQLite file under ``QUORUM_DATA_DIR``:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_h14d_inproc \
      CELERY_BROKER_URL=redis://127.0.0.1:6379/6 QUORUM_DATA_DIR=/tmp/h14d-data \
      .venv/bin/python bench/bench_submit_inproc.py [--loops 200] [--rounds 3] [--sql] [--profile N]

Prints one JSON line: the median CPU (``time.process_time``) and wall time of a next (GET the
task fragment) and a submit (POST the ranking), and the statements each ran (the last loop's,
with ``--sql`` their text). ``--profile N`` prints the N costliest functions of the submits
(``--profile-next``: of the nexts; cProfile of CPU time, cumulative). Run it from each tree's root (a worktree of the baseline) alternately.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path.cwd()
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("QUORUM_JOBS_PUBLISH_INLINE", "0")

SUBMIT = re.compile(r'data-submit-url="([^"]+)"')
CARD = re.compile(r'data-candidate data-candidate-id="(\d+)"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--sql", action="store_true", help="print the statements' text")
    parser.add_argument("--profile", type=int, default=0, help="top N functions of the submits")
    parser.add_argument("--profile-next", action="store_true", help="profile the nexts instead")
    parser.add_argument("--label", default=REPO.name)
    args = parser.parse_args()
    # This folder's helper, whichever tree (the working directory) is measured.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scratch_postgres import in_fresh_database

    in_fresh_database(lambda: run(args))


def run(args) -> None:
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext, setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    from tests.factories import add_member, make_project, make_user

    tasks = (args.loops + 20) * args.rounds + 50
    project = make_project(name="bench-submit", n_prompts=tasks, n_candidates=4, k=1)
    user = make_user("bench-ann")
    add_member(project, user, "annotator")
    work = f"/projects/{project.pk}/annotate/"
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # planner statistics, as after an import
            cursor.execute("ANALYZE")

    client = Client()
    client.force_login(user)
    profile = cProfile.Profile(time.process_time) if args.profile else None
    samples: dict[str, list[float]] = {
        k: [] for k in ("next_cpu", "next_wall", "sub_cpu", "sub_wall")
    }
    statements: dict[str, list[str]] = {}
    for _ in range(args.rounds):
        for i in range(args.loops + 20):
            on_next = profile and args.profile_next and i >= 20
            with CaptureQueriesContext(connection) as got_next:
                if on_next:
                    profile.enable()
                c0, w0 = time.process_time(), time.perf_counter()
                page = client.get(work, HTTP_X_REQUESTED_WITH="fetch")
                c1, w1 = time.process_time(), time.perf_counter()
                if on_next:
                    profile.disable()
            assert page.status_code == 200, page.status_code
            text = page.content.decode()
            found = SUBMIT.search(text)
            assert found, text[:1500]
            ids = [int(x) for x in CARD.findall(text)]
            body = json.dumps(
                {
                    "ranking": [[x] for x in ids],
                    "idempotency_key": uuid.uuid4().hex,
                    "duration_ms": 1000,
                }
            )
            with CaptureQueriesContext(connection) as got_submit:
                if profile and not args.profile_next and i >= 20:
                    profile.enable()
                c2, w2 = time.process_time(), time.perf_counter()
                response = client.post(
                    found.group(1),
                    data=body,
                    content_type="application/json",
                    HTTP_X_REQUESTED_WITH="fetch",
                )
                c3, w3 = time.process_time(), time.perf_counter()
                if profile:
                    profile.disable()
            assert response.status_code == 201, response.content[:300]
            if i >= 20:  # warm-up
                samples["next_cpu"].append(c1 - c0)
                samples["next_wall"].append(w1 - w0)
                samples["sub_cpu"].append(c3 - c2)
                samples["sub_wall"].append(w3 - w2)
        statements = {
            "next": [q["sql"] for q in got_next.captured_queries],
            "submit": [q["sql"] for q in got_submit.captured_queries],
        }
    result = {
        "label": args.label,
        "db": connection.vendor,
        "load": round(os.getloadavg()[0], 1),
        **{k: round(statistics.median(v) * 1000, 3) for k, v in samples.items()},
        "next_statements": len(statements["next"]),
        "submit_statements": len(statements["submit"]),
    }
    print(json.dumps(result))
    if args.sql:
        for kind, texts in statements.items():
            print(f"--- {kind}")
            for text in texts:
                print("  ", text[:400])
    if profile:
        pstats.Stats(profile).sort_stats("cumulative").print_stats(args.profile)


if __name__ == "__main__":
    main()
