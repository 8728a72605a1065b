"""In-process CPU of a next and a submit request with database sessions and with Quorum's
Redis-backed session store (annotate/session_store.py), alternated in one process.

Needs PostgreSQL and Redis; makes a scratch database, drops it at the end:

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_h13s_inproc \
      CELERY_BROKER_URL=redis://127.0.0.1:6379/3 \
      .venv/bin/python bench/bench_session_store.py [--loops 300] [--rounds 4]

Prints, per engine, the median CPU (``time.process_time``) and wall time of a next (GET the
task fragment) and a submit (POST the ranking), and of one session load alone.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("QUORUM_JOBS_PUBLISH_INLINE", "0")

ENGINES = {"db": "django.contrib.sessions.backends.db", "store": "annotate.session_store"}
SUBMIT = re.compile(r'data-submit-url="([^"]+)"')
CARD = re.compile(r'data-candidate data-candidate-id="(\d+)"')


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--loops", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()

    if not os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://")):
        parser.error("set DATABASE_URL to a PostgreSQL database (created and dropped here)")
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scratch_postgres import in_fresh_database

    in_fresh_database(lambda: run(args))


def run(args) -> None:
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import override_settings, setup_test_environment

    setup_test_environment()
    call_command("migrate", verbosity=0)
    from tests.factories import add_member, make_project, make_user

    assert settings.QUORUM_SESSION_REDIS_URL, "needs a Redis (CELERY_BROKER_URL=redis://...)"
    tasks = (args.loops + 20) * args.rounds * len(ENGINES) + 50
    project = make_project(name="bench-sessions", n_prompts=tasks, n_candidates=4, k=1)
    user = make_user("bench-ann")
    add_member(project, user, "annotator")
    work = f"/projects/{project.pk}/annotate/"
    from django.db import connection

    with connection.cursor() as cursor:  # planner statistics, as after an import
        cursor.execute("ANALYZE")

    results: dict[str, dict[str, list[float]]] = {
        e: {"next_cpu": [], "next_wall": [], "submit_cpu": [], "submit_wall": [], "load_cpu": []}
        for e in ENGINES
    }
    for rnd in range(args.rounds):
        order = list(ENGINES) if rnd % 2 == 0 else list(reversed(ENGINES))
        for engine in order:
            with override_settings(SESSION_ENGINE=ENGINES[engine]):
                from importlib import import_module

                client = Client()
                client.force_login(user)
                key = client.cookies["sessionid"].value
                csrf = None
                for i in range(args.loops + 20):
                    c0, w0 = time.process_time(), time.perf_counter()
                    page = client.get(work, HTTP_X_REQUESTED_WITH="fetch")
                    c1, w1 = time.process_time(), time.perf_counter()
                    assert page.status_code == 200, page.status_code
                    text = page.content.decode()
                    found = SUBMIT.search(text)
                    assert found, text[:1500]
                    submit = found.group(1)
                    ids = [int(x) for x in CARD.findall(text)]
                    csrf = csrf or client.cookies.get("csrftoken")
                    body = {
                        "ranking": [[x] for x in ids],
                        "idempotency_key": str(uuid.uuid4()),
                        "duration_ms": 1000,
                    }
                    c2, w2 = time.process_time(), time.perf_counter()
                    response = client.post(
                        submit,
                        data=json.dumps(body),
                        content_type="application/json",
                        HTTP_X_REQUESTED_WITH="fetch",
                    )
                    c3, w3 = time.process_time(), time.perf_counter()
                    assert response.status_code == 201, response.content[:300]
                    if i >= 20:  # warm-up
                        r = results[engine]
                        r["next_cpu"].append(c1 - c0)
                        r["next_wall"].append(w1 - w0)
                        r["submit_cpu"].append(c3 - c2)
                        r["submit_wall"].append(w3 - w2)
                store = import_module(ENGINES[engine]).SessionStore
                for _ in range(args.loops):
                    c0 = time.process_time()
                    store(key).load()
                    results[engine]["load_cpu"].append(time.process_time() - c0)

    print(f"{args.loops} loops x {args.rounds} rounds per engine, medians in ms")
    print("| engine | next CPU | next wall | submit CPU | submit wall | session load CPU |")
    print("|---|---|---|---|---|---|")
    for engine, r in results.items():
        cells = [
            f"{statistics.median(r[m]) * 1000:.2f}"
            for m in ("next_cpu", "next_wall", "submit_cpu", "submit_wall", "load_cpu")
        ]
        print(f"| {engine} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
