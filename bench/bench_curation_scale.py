"""Curation at MR2Bench-Video scale and ten times that: flags + denoised export, before and after.

The data is the demo world's ``mr2bench`` project (``annotate.demo_world``: 4,700 prompts x
19 models, ~20 pairwise judgments per prompt from a pool of reliable, noisy, position-biased
and spamming annotators; ``--prompts 47000`` generates the same world ten times larger, about
940K judgments), written straight into the database with ``bulk_create`` (setup, not timed),
plus a reward model scoring every candidate (hidden quality + noise). Then, timed, each in a
fresh interpreter on its own copy of that database:

1. ``flags_recompute``: annotator quality (CROWDLAB weights, joint annotator model, position
   bias, speed, Arena anomaly test) and every flag for the project;
2. ``export_build``: the denoised export with every file (pairs/rankings JSONL, 4-response
   variants, Parquet, HF datasets, datasheet with a bootstrapped leaderboard); with ``--rm``
   once more with the reward model as an evaluator.

``--before <commit>`` runs the same steps with the code of that commit (a temporary git
worktree) beside the working tree's, one after the other on identical copies of the
database, and prints after/before ratios of time and of peak memory (the child process's
``ru_maxrss``: imports, loading and the build together). On a shared machine the ratios mean
more than the seconds. Runs on SQLite under a temporary data dir, or on PostgreSQL when
``DATABASE_URL`` is set (scratch databases are created from a template and dropped).

    python bench/bench_curation_scale.py [--prompts 4700] [--seed 0] [--before HEAD] [--rm]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import REPO, commit_worktree


def _use_code(code: Path) -> None:
    """Imports Quorum from ``code`` (the working tree or a worktree of another commit)."""
    sys.path.insert(0, str(code))
    os.chdir(code)


def _pg_admin(url: str, sql: str) -> None:
    import psycopg

    base, _, _ = url.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True) as conn:
        conn.execute(sql)


def _setup_django(data: Path, database: str | None) -> None:
    """Points Django at ``data`` (SQLite) or at the PostgreSQL database ``database``."""
    os.environ["QUORUM_DATA_DIR"] = str(data)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    if database:
        base, _, _ = os.environ["DATABASE_URL"].rpartition("/")
        os.environ["DATABASE_URL"] = f"{base}/{database}"
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


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


def child_setup(args: argparse.Namespace) -> None:
    """Writes the world into a fresh database (run with the oldest code measured)."""
    _use_code(Path(args.code))
    _setup_django(Path(args.data), args.database)
    t0 = time.perf_counter()
    project_id, n_judgments = load_world(args.prompts, args.seed)
    Path(args.out).write_text(
        json.dumps(
            {
                "project": project_id,
                "judgments": n_judgments,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
    )


def child_measure(args: argparse.Namespace) -> None:
    """Times flags + exports on the database it is given and reports its peak memory."""
    _use_code(Path(args.code))
    _setup_django(Path(args.data), args.database)  # migrate: a newer tree may add columns
    from annotate.models import Project
    from curation.models import DatasetExport
    from curation.services import export_build, export_create, flags_recompute

    result: dict = {"steps": {}, "cpu": {}}
    t0, c0 = time.perf_counter(), time.process_time()
    flags = flags_recompute(project_id=args.project)
    result["steps"]["flags_recompute"] = time.perf_counter() - t0
    result["cpu"]["flags_recompute"] = time.process_time() - c0
    result["flag_counts"] = flags["flags"]
    result["phases"] = flags["seconds"]
    project = Project.objects.get(pk=args.project)
    exports = [("denoised export", {"splits": {"train": 0.9, "test": 0.1}})]
    if args.rm:
        exports.append(
            (
                "denoised export + RM evaluator",
                {"splits": {"train": 0.9, "test": 0.1}, "rm_evaluator": True},
            )
        )
    for label, options in exports:
        export = export_create(project=project, options=options, enqueue=False)
        t0, c0 = time.perf_counter(), time.process_time()
        export = export_build(export_id=export.pk)
        result["steps"][label] = time.perf_counter() - t0
        result["cpu"][label] = time.process_time() - c0
        assert export.status == DatasetExport.Status.DONE, export.error
        result.setdefault("counts", {})[label] = {
            k: export.counts[k] for k in ("pairs", "rankings", "rankings_4")
        }
        # The JSONL files carry every row: equal digests before and after, equal exports.
        digest = hashlib.sha256()
        for path in sorted(Path(export.path).rglob("*.jsonl")):
            digest.update(str(path.relative_to(export.path)).encode())
            digest.update(path.read_bytes())
        result.setdefault("jsonl_sha256", {})[label] = digest.hexdigest()[:16]
        result.setdefault("rows", {})[label] = _export_rows(Path(export.path))
    for kind in ("steps", "cpu"):
        result[kind]["flags + denoised export"] = (
            result[kind]["flags_recompute"] + result[kind]["denoised export"]
        )
    # Linux reports kilobytes.
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    Path(args.out).write_text(json.dumps(result))


def _export_rows(path: Path) -> dict:
    """Per prompt, the exported ranking and pairs (from the Parquet files, which hold every
    row): what `_row_changes` compares between two codes."""
    import pyarrow.parquet as pq

    rankings = {}
    for row in pq.read_table(
        path / "parquet" / "rankings.parquet", columns=["prompt_id", "candidate_ids", "rankings"]
    ).to_pylist():
        rankings[row["prompt_id"]] = sorted(zip(row["candidate_ids"], row["rankings"], strict=True))
    pairs: dict = {}
    for row in pq.read_table(
        path / "parquet" / "pairs.parquet",
        columns=["prompt_id", "chosen_id", "rejected_id", "margin", "human_margin"],
    ).to_pylist():
        pairs.setdefault(row["prompt_id"], []).append(
            (row["chosen_id"], row["rejected_id"], row["margin"], row["human_margin"])
        )
    return {"rankings": rankings, "pairs": {k: sorted(v) for k, v in pairs.items()}}


def _row_changes(before: dict, after: dict) -> str:
    """How many prompts' rankings and pair rows differ between two exports."""
    rb, ra = before["rankings"], after["rankings"]
    prompts = set(rb) | set(ra)
    ranking_changed = {p for p in prompts if rb.get(p) != ra.get(p)}
    pb, pa = before["pairs"], after["pairs"]
    pair_prompts = set(pb) | set(pa)

    def sides(rows):
        return sorted((c, r) for c, r, _, _ in rows or [])

    order_changed = {p for p in pair_prompts if sides(pb.get(p)) != sides(pa.get(p))}
    numbers_changed = {p for p in pair_prompts if pb.get(p) != pa.get(p)} - order_changed
    # Candidate pairs ordered one way in one export and the other way (or tied) in the other.
    compared = flipped = 0
    for p in ranking_changed & set(rb) & set(ra):
        one, other = dict(rb[p]), dict(ra[p])
        cands = sorted(set(one) & set(other))
        for i, x in enumerate(cands):
            for y in cands[i + 1 :]:
                compared += 1
                a, b = one[x] - one[y], other[x] - other[y]
                flipped += (a > 0) - (a < 0) != (b > 0) - (b < 0)
    return (
        f"rankings changed on {len(ranking_changed):,} of {len(prompts):,} prompts "
        f"({flipped:,} of their {compared:,} candidate pairs ordered differently); pairs "
        f"(which side chosen, or which pairs) changed on {len(order_changed):,} prompts, "
        f"only their margins on {len(numbers_changed):,} more; identical elsewhere"
    )


def _child(mode: str, code: Path, args: argparse.Namespace, **extra) -> dict:
    out = Path(tempfile.mktemp(prefix=f"bench-{mode}-", suffix=".json"))
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        f"--{mode}",
        "--code",
        str(code),
        "--prompts",
        str(args.prompts),
        "--seed",
        str(args.seed),
        "--out",
        str(out),
    ] + [f"--{k}={v}" for k, v in extra.items() if v is not None]
    if args.rm:
        command.append("--rm")
    subprocess.run(command, check=True, env={**os.environ, "PYTHONHASHSEED": "0"})
    try:
        return json.loads(out.read_text())
    finally:
        out.unlink(missing_ok=True)


def _load_average() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=4700)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--before", help="also measure this commit's code (git worktree)")
    parser.add_argument(
        "--after",
        help="measure this commit's code (git worktree) instead of the working tree, whose "
        "uncommitted changes (other engineers' too) would otherwise be measured with it",
    )
    parser.add_argument("--rm", action="store_true", help="also export with the reward model")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data dir")
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="measure each code this many times, alternating which goes first; the table "
        "shows the fastest run of each (peak memory: the largest); 0: only write --world",
    )
    parser.add_argument(
        "--world",
        help="SQLite only: keep the generated world in this folder and reuse it when it is "
        "there (written by the oldest code measured; generating 940K judgments takes minutes)",
    )
    parser.add_argument(
        "--save-rows", help="write each code's exported rankings and pairs (first run) here"
    )
    parser.add_argument("--setup", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--database", help=argparse.SUPPRESS)
    parser.add_argument("--project", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.setup:
        return child_setup(args)
    if args.measure:
        return child_measure(args)

    url = os.environ.get("DATABASE_URL", "")
    postgres = url.startswith("postgres")
    tmp = Path(tempfile.mkdtemp(prefix="quorum-bench-curation-"))
    scratch: list[str] = []
    worktree = None
    worktrees: list[Path] = []
    try:
        runs = [("after", REPO)]
        if args.after:
            commit, path = commit_worktree(args.after, tmp)
            worktrees.append(path)
            runs = [(f"after ({commit[:7]})", worktrees[-1])]
        if args.before:
            commit, worktree = commit_worktree(args.before, tmp)
            worktrees.append(worktree)
            runs.insert(0, (f"before ({commit[:7]})", worktree))
        # The world is written by the oldest code measured, so every run migrates forwards.
        template = f"quorum_bench_curation_{os.getpid()}"
        if postgres:
            _pg_admin(url, f'CREATE DATABASE "{template}"')
            scratch.append(template)
        # Absolute: the children run in the measured code's folder (a worktree), not here.
        world = Path(args.world).resolve() if args.world and not postgres else tmp / "world"
        if (world / "setup.json").exists():
            setup = json.loads((world / "setup.json").read_text())
        else:
            world.mkdir(parents=True, exist_ok=True)
            setup = _child(
                "setup", runs[0][1], args, data=world, database=template if postgres else None
            )
            (world / "setup.json").write_text(json.dumps(setup))
        print(
            f"database: {'postgresql' if postgres else 'sqlite'}; setup (generate + bulk "
            f"insert, not timed): {setup['seconds']:.1f} s; {setup['judgments']:,} pairwise "
            f"judgments, {args.prompts:,} prompts x 19 models; load average {_load_average()}",
            flush=True,
        )
        if args.repeat < 1:
            return  # --repeat 0: only write the world (--world) for later runs
        results: dict[str, list[dict]] = {label: [] for label, _ in runs}
        for rep in range(args.repeat):
            for i, (label, code) in enumerate(runs if rep % 2 == 0 else runs[::-1]):
                data = tmp / f"run-{rep}-{i}"
                database = None
                if postgres:
                    database = f"{template}_{rep}_{i}"
                    _pg_admin(url, f'CREATE DATABASE "{database}" TEMPLATE "{template}"')
                    scratch.append(database)
                    data.mkdir()
                else:
                    shutil.copytree(world, data)
                started = _load_average()
                r = _child(
                    "measure", code, args, data=data, database=database, project=setup["project"]
                )
                r["load"] = f"{started} -> {_load_average()}"
                results[label].append(r)
                shutil.rmtree(data, ignore_errors=True)
                steps_text = ", ".join(
                    f"{k} {v:.1f} s ({r['cpu'][k]:.1f} s CPU)" for k, v in r["steps"].items()
                )
                print(
                    f"\n{label}: load average {r['load']}\n  {steps_text}\n"
                    f"  flags phases {r['phases']}\n  flags raised: {r['flag_counts']}\n"
                    f"  exported: {r['counts']}\n  JSONL digests: {r['jsonl_sha256']}\n"
                    f"  peak memory {r['peak_rss_mb']:,.0f} MB",
                    flush=True,
                )
        labels = list(results)
        if args.save_rows:
            Path(args.save_rows).write_text(
                json.dumps({label: results[label][0]["rows"] for label in labels})
            )
        steps = list(results[labels[-1]][0]["steps"])
        header = "| step | " + " | ".join(labels)
        rule = "|---|" + "---|" * len(labels)
        if len(labels) == 2:
            header += " | after / before"
            rule += "---|"
        lines = [header + " |", rule]
        rows = [(step, "steps", "s") for step in steps]
        rows += [(step, "cpu", "s CPU") for step in steps]
        rows.append(("peak memory", "peak_rss_mb", "MB"))
        for step, kind, unit in rows:
            if kind == "peak_rss_mb":
                values = [max(r[kind] for r in results[k]) for k in labels]
                cells = [f"{v:,.0f} MB" for v in values]
            else:
                values = [min(r[kind][step] for r in results[k]) for k in labels]
                cells = [f"{v:.1f} {unit}" for v in values]
            if step == "flags + denoised export":
                cells = [f"**{c}**" for c in cells]
            name = step if kind != "cpu" else f"{step} (CPU)"
            row = f"| {name} | " + " | ".join(cells)
            if len(labels) == 2:
                row += f" | {values[1] / values[0]:.2f}x"
            lines.append(row + " |")
        print("\n" + "\n".join(lines))
        if len(labels) == 2:
            first, second = (results[k] for k in labels)
            same = all(r["jsonl_sha256"] == first[0]["jsonl_sha256"] for r in first + second)
            flags_same = all(r["flag_counts"] == first[0]["flag_counts"] for r in first + second)
            print(f"\nJSONL files identical: {same}; flag counts identical: {flags_same}")
            for export_label in first[0]["rows"]:
                changes = _row_changes(
                    first[0]["rows"][export_label], second[0]["rows"][export_label]
                )
                print(f"{export_label}, {labels[0]} -> {labels[1]}: {changes}")
    finally:
        if postgres:
            from contextlib import suppress

            for name in reversed(scratch):
                with suppress(Exception):
                    _pg_admin(url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for path in worktrees:
            subprocess.run(
                ["git", "-C", str(REPO), "worktree", "remove", "--force", str(path)],
                capture_output=True,
            )
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
