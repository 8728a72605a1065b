"""Import throughput: 100k candidates through the full import service.

Prints the import time and its ratio to a baseline measured in the same run: a bare
``bulk_create`` of the same prompt/candidate/task rows (no parsing, validation, or
idempotency checks). Runs on a throw-away database in a temporary data dir (SQLite), or on
PostgreSQL when ``DATABASE_URL`` is set (a scratch database is created and dropped).

    python bench/bench_import.py [--candidates 100000] [--per-prompt 4] [--judgments-per-prompt 1]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def write_file(path: Path, n_prompts: int, per_prompt: int, judgments: int) -> None:
    with open(path, "w") as fh:
        for p in range(n_prompts):
            cands = [
                {
                    "id": f"p{p}-c{i}",
                    "model": f"model-{i}",
                    "text": f"Answer {i} to question {p}. " * 3,
                }
                for i in range(per_prompt)
            ]
            row = {
                "id": f"p{p}",
                "prompt": f"Question number {p}: what is shown?",
                "candidates": cands,
            }
            row["judgments"] = [
                {
                    "annotator": f"ann-{j}",
                    "ranking": [
                        [c["id"]] for c in cands[j % per_prompt :] + cands[: j % per_prompt]
                    ],
                }
                for j in range(judgments)
            ]
            fh.write(json.dumps(row) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=100_000)
    parser.add_argument("--per-prompt", type=int, default=4)
    parser.add_argument("--judgments-per-prompt", type=int, default=1)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="quorum-bench-import-"))
    os.environ["QUORUM_DATA_DIR"] = str(tmp)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    pg_url = os.environ.get("DATABASE_URL")
    scratch = f"quorum_bench_import_{os.getpid()}"
    if pg_url:
        import psycopg

        admin_url = pg_url.rsplit("/", 1)[0] + "/postgres"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        os.environ["DATABASE_URL"] = pg_url.rsplit("/", 1)[0] + "/" + scratch

    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection, transaction

    from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
    from annotate.services import candidate_key, import_file

    try:
        call_command("migrate", verbosity=0)
        n_prompts = args.candidates // args.per_prompt
        data = tmp / "bench.jsonl"
        write_file(data, n_prompts, args.per_prompt, args.judgments_per_prompt)
        size_mb = data.stat().st_size / 1e6

        # Baseline: bare bulk inserts of the same rows.
        started = time.perf_counter()
        with transaction.atomic():
            project = Project.objects.create(name="baseline", candidates_per_task=args.per_prompt)
            prompts = Prompt.objects.bulk_create(
                [
                    Prompt(project=project, external_id=f"p{p}", text=f"Question {p}")
                    for p in range(n_prompts)
                ],
                batch_size=2000,
            )
            cands = Candidate.objects.bulk_create(
                [
                    Candidate(
                        project=project,
                        prompt=pr,
                        external_id=f"p{p}-c{i}",
                        model_name=f"model-{i}",
                        text=f"Answer {i}",
                    )
                    for p, pr in enumerate(prompts)
                    for i in range(args.per_prompt)
                ],
                batch_size=2000,
            )
            tasks = Task.objects.bulk_create(
                [
                    Task(
                        project=project,
                        prompt=pr,
                        candidate_key=candidate_key(
                            c.pk for c in cands[p * args.per_prompt : (p + 1) * args.per_prompt]
                        ),
                    )
                    for p, pr in enumerate(prompts)
                ],
                batch_size=2000,
            )
            TaskCandidate.objects.bulk_create(
                [
                    TaskCandidate(task=t, candidate=c, position=i)
                    for p, t in enumerate(tasks)
                    for i, c in enumerate(cands[p * args.per_prompt : (p + 1) * args.per_prompt])
                ],
                batch_size=5000,
            )
        baseline = time.perf_counter() - started

        started = time.perf_counter()
        result = import_file(path=data, project_name="bench")
        full = time.perf_counter() - started

        started = time.perf_counter()
        again = import_file(path=data, project_name="bench")
        reimport = time.perf_counter() - started
        assert again.counts["candidates"] == 0 and again.counts["judgments"] == 0

        print(
            f"database: {connection.vendor}; file {size_mb:.1f} MB, {n_prompts} prompts, {args.candidates} candidates, "
            f"{n_prompts * args.judgments_per_prompt} judgments"
        )
        print(f"counts: {result.counts}")
        print(f"baseline bare bulk_create (prompts+candidates+tasks): {baseline:7.2f} s")
        print(
            f"full import service (parse, validate, write, judgments):  {full:7.2f} s   ratio {full / baseline:5.2f}x"
        )
        print(
            f"re-import of the same file (creates nothing):            {reimport:7.2f} s   ratio {reimport / baseline:5.2f}x"
        )
        print(f"throughput: {args.candidates / full:,.0f} candidates/s")
    finally:
        if pg_url:
            connection.close()
            import psycopg

            with psycopg.connect(admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{scratch}"')


if __name__ == "__main__":
    main()
