"""Curation at MR2Bench-Video scale: flags + denoise + export for ~94K pairwise judgments.

The data is the demo world's ``mr2bench`` project (``annotate.demo_world``: 4,700 prompts x
19 models, ~20 pairwise judgments per prompt from a pool of reliable, noisy, position-biased
and spamming annotators), written straight into the database with ``bulk_create`` (setup, not
timed), plus a reward model scoring every candidate (hidden quality + noise). Then, timed:

1. ``flags_recompute``: annotator quality (CROWDLAB weights, position bias, speed, Arena
   anomaly test) and every flag (agreement, cycles, reward-model conflicts) for the project;
2. ``export_build``: per-prompt ensemble + minimum feedback arc set + Bradley-Terry ranking,
   and every export file (pairs/rankings JSONL, 4-response variants, Parquet, HF datasets,
   datasheet with a bootstrapped leaderboard); once without and once with the reward model
   as an evaluator.

Target: flags + one export under 30 s on the 2-core dev machine. Runs on a throw-away SQLite
database under a temporary data dir, or on PostgreSQL when ``DATABASE_URL`` is set (a scratch
database is created and dropped).

    python bench/bench_curation_scale.py [--prompts 4700] [--seed 0] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _setup_django(tmp: Path) -> str | None:
    """Points Django at a scratch database; returns the PostgreSQL scratch name, if any."""
    os.environ["QUORUM_DATA_DIR"] = str(tmp)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    scratch = None
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith("postgres"):
        import psycopg

        scratch = f"quorum_bench_curation_{os.getpid()}"
        base, _, _ = url.rpartition("/")
        with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        os.environ["DATABASE_URL"] = f"{base}/{scratch}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    return scratch


def _drop_scratch(scratch: str | None, url: str) -> None:
    if not scratch:
        return
    from django.db import connections

    connections.close_all()
    import psycopg

    base, _, _ = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')


def bulk_tasks(project, slots: dict) -> dict:
    """Writes completed tasks and their slots; ``slots`` maps (prompt pk, candidate key) to
    the candidate pks in slot order. Returns the task pk by the same key."""
    from annotate.models import Task, TaskCandidate

    Task.objects.bulk_create(
        [
            Task(project=project, prompt_id=p, candidate_key=key, status=Task.Status.COMPLETE)
            for p, key in slots
        ],
        batch_size=5000,
    )
    task_pk = {
        (p, key): pk
        for pk, p, key in Task.objects.filter(project=project).values_list(
            "pk", "prompt_id", "candidate_key"
        )
    }
    TaskCandidate.objects.bulk_create(
        [
            TaskCandidate(task_id=task_pk[k], candidate_id=c, position=i)
            for k, ids in slots.items()
            for i, c in enumerate(ids)
        ],
        batch_size=10000,
    )
    return task_pk


def load_world(prompts: int, seed: int) -> tuple[int, int]:
    """Writes the mr2bench demo project into the database; returns (project id, judgments)."""
    from annotate.demo_world import generate_world
    from annotate.models import (
        Candidate,
        Judgment,
        ModelScore,
        Project,
        Prompt,
        RewardModel,
    )
    from annotate.services import candidate_key

    world = generate_world(seed, "mr2bench", prompts=prompts)
    demo = world.projects[0]
    quality = {cid: c["quality"] for cid, c in demo.truth["candidates"].items()}
    project = Project.objects.create(
        name=f"bench-mr2-{seed}-{time.time_ns()}",
        mode=Project.Mode.PAIRWISE,
        candidates_per_task=2,
        annotators_per_task=1,
    )
    Prompt.objects.bulk_create(
        [Prompt(project=project, external_id=row["id"], text=row["prompt"]) for row in demo.rows],
        batch_size=2000,
    )
    prompt_pk = dict(Prompt.objects.filter(project=project).values_list("external_id", "pk"))
    Candidate.objects.bulk_create(
        [
            Candidate(
                project=project,
                prompt_id=prompt_pk[row["id"]],
                external_id=c["id"],
                model_name=c["model"],
                text=c["text"],
            )
            for row in demo.rows
            for c in row["candidates"]
        ],
        batch_size=5000,
    )
    cand_pk = dict(Candidate.objects.filter(project=project).values_list("external_id", "pk"))

    task_slots: dict[tuple[int, str], tuple[int, int]] = {}
    for row in demo.rows:
        for j in row["judgments"]:
            a, b = (cand_pk[c] for c in j["pair"])
            task_slots.setdefault((prompt_pk[row["id"]], candidate_key((a, b))), (a, b))
    task_pk = bulk_tasks(project, task_slots)
    judgments = []
    counts: dict[int, int] = {}
    for row in demo.rows:
        for j in row["judgments"]:
            a, b = (cand_pk[c] for c in j["pair"])
            key = (prompt_pk[row["id"]], candidate_key((a, b)))
            outcome = j["outcome"]
            if task_slots[key][0] != a and outcome in ("a", "b"):
                outcome = "b" if outcome == "a" else "a"
            tid = task_pk[key]
            counts[tid] = counts.get(tid, 0) + 1
            judgments.append(
                Judgment(
                    project=project,
                    task_id=tid,
                    source=Judgment.Source.EXTERNAL,
                    source_name="demo-simulation",
                    external_annotator=j["annotator"],
                    kind=Judgment.Kind.PAIR,
                    outcome=outcome,
                    presented_order=[a, b],
                    duration_ms=j["duration_ms"],
                    idempotency_key=f"bench:{project.pk}:{j['key']}",
                )
            )
    Judgment.objects.bulk_create(judgments, batch_size=5000)

    rm = RewardModel.objects.create(
        name="bench-rm", version=str(time.time_ns()), backend="multi_response", path="/nonexistent"
    )
    rng = random.Random(seed)
    ModelScore.objects.bulk_create(
        [
            ModelScore(candidate_id=pk, reward_model=rm, score=quality[ext] * 4 + rng.gauss(0, 1))
            for ext, pk in cand_pk.items()
        ],
        batch_size=10000,
    )
    project.active_reward_model = rm
    project.save(update_fields=["active_reward_model"])
    return project.pk, len(judgments)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    args = parser.parse_args()

    url = os.environ.get("DATABASE_URL", "")
    tmp = Path(tempfile.mkdtemp(prefix="quorum-bench-curation-"))
    scratch = _setup_django(tmp)
    try:
        from django.db import connection

        from curation.models import DatasetExport
        from curation.services import export_build, export_create, flags_recompute

        t0 = time.perf_counter()
        project_id, n_judgments = load_world(args.prompts, args.seed)
        setup = time.perf_counter() - t0
        print(
            f"database: {connection.vendor}; setup (generate + bulk insert, not timed): "
            f"{setup:.1f} s; {n_judgments:,} pairwise judgments, {args.prompts:,} prompts x 19 models"
        )

        t0 = time.perf_counter()
        flags = flags_recompute(project_id=project_id)
        t_flags = time.perf_counter() - t0
        print(f"\nflags_recompute: {t_flags:.1f} s  phases {flags['seconds']}")
        print(f"  flags raised: {flags['flags']}")

        from annotate.models import Project

        project = Project.objects.get(pk=project_id)
        results = {}
        for label, options in (
            ("denoised export", {"splits": {"train": 0.9, "test": 0.1}}),
            (
                "denoised export + RM evaluator",
                {"splits": {"train": 0.9, "test": 0.1}, "rm_evaluator": True},
            ),
        ):
            export = export_create(project=project, options=options, enqueue=False)
            t0 = time.perf_counter()
            export = export_build(export_id=export.pk)
            seconds = time.perf_counter() - t0
            assert export.status == DatasetExport.Status.DONE, export.error
            results[label] = seconds
            c = export.counts
            print(
                f"\n{label}: {seconds:.1f} s  ({c['pairs']:,} pairs, {c['rankings']:,} rankings, "
                f"{c['rankings_4']:,} 4-response variants; cycles removed in "
                f"{export.datasheet['cycles']['prompts_with_cycles']:,} prompts)"
            )
        total = t_flags + results["denoised export"]
        print(
            f"\n| step | seconds |\n|---|---|\n| flags_recompute | {t_flags:.1f} |\n"
            + "".join(f"| {k} | {v:.1f} |\n" for k, v in results.items())
            + f"| flags + denoised export | {total:.1f} (target < 30) |"
        )
    finally:
        _drop_scratch(scratch, url)
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
