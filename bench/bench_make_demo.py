"""Benchmark: how long does ``make_demo --scale mr2bench`` take, and what does the world look like?

Runs the real command twice in subprocesses against a fresh SQLite database in a temporary
``QUORUM_DATA_DIR``: a first run (generate, write the JSONL, import through
``annotate.services.import_file``) and an idempotent rerun (same seed, nothing new). Prints
wall times, the command's own phase split, peak memory, and checks of the generated world
against its ground truth: judgments and annotators per prompt, the annotator mix, and how often
each kind of simulated annotator states a preference the hidden qualities contradict.

Usage::

    python bench/bench_make_demo.py [--scale mr2bench] [--seed 0] [--prompts N] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from annotate.demo_world import load_ground_truth  # noqa: E402 (pure module, no Django)


def run_command(args: list[str], env: dict[str, str]) -> tuple[float, str]:
    """Runs ``manage.py`` with ``args``; returns (wall seconds, stdout). Fails loudly."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return wall, proc.stdout


def phases(output: str) -> dict[str, float]:
    """The command's own ``Time: generate X s, write Y s, import Z s, total T s`` line."""
    return {k: float(v) for k, v in re.findall(r"(generate|write|import|total) ([\d.]+) s", output)}


def _preferences(judgment: dict) -> list[tuple[str, str]]:
    """The (winner, loser) pairs a judgment states; ties and both_bad state none."""
    if "ranking" in judgment:
        groups = judgment["ranking"]
        return [
            (w, lo) for i, g in enumerate(groups) for h in groups[i + 1 :] for w in g for lo in h
        ]
    if judgment["outcome"] not in ("a", "b"):
        return []
    a, b = judgment["pair"]
    return [(a, b)] if judgment["outcome"] == "a" else [(b, a)]


def world_stats(out_dir: Path) -> dict[str, object]:
    """Judgment shape and annotator behaviour, measured against the hidden truth."""
    truth = load_ground_truth(out_dir)
    stats: dict[str, object] = {}
    for name, project in truth.projects.items():
        quality = project.quality()
        per_prompt: list[int] = []
        panels: list[int] = []
        by_kind: Counter[str] = Counter()
        wrong: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0])
        with open(out_dir / project.file) as fh:
            for line in fh:
                row = json.loads(line)
                if "project" in row:
                    continue
                judgments = row.get("judgments", [])
                per_prompt.append(len(judgments))
                panels.append(len({j["annotator"] for j in judgments}))
                for j in judgments:
                    kind = truth.annotators[j["annotator"]].kind
                    by_kind[kind] += 1
                    for winner, loser in _preferences(j):
                        if quality[winner] != quality[loser]:
                            wrong[kind][0] += quality[winner] < quality[loser]
                            wrong[kind][1] += 1
        total = sum(by_kind.values())
        flips = sum(w for w, _ in wrong.values())
        stated = sum(n for _, n in wrong.values())
        stats[name] = {
            "prompts": len(per_prompt),
            "candidates": len(quality),
            "judgments": total,
            "judgments_per_prompt": round(statistics.mean(per_prompt), 2),
            "annotators_per_prompt": round(statistics.mean(panels), 2),
            "share_by_kind": {k: round(v / total, 3) for k, v in sorted(by_kind.items())},
            # Share of stated pairwise preferences (a ranking states all its pairs) that the
            # hidden qualities contradict.
            "flip_rate_by_kind": {k: round(w / n, 3) for k, (w, n) in sorted(wrong.items()) if n},
            "flip_rate_all": round(flips / stated, 3) if stated else None,
        }
    return stats


def media_stats(out_dir: Path) -> dict[str, tuple[int, int, int]]:
    """Per file suffix under ``media/``: (files, bytes in all, largest file's bytes)."""
    out: dict[str, tuple[int, int, int]] = {}
    for path in (out_dir / "media").rglob("*.*"):
        count, total, largest = out.get(path.suffix, (0, 0, 0))
        size = path.stat().st_size
        out[path.suffix] = (count + 1, total + size, max(largest, size))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="mr2bench", choices=("small", "mr2bench"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompts", type=int, help="fewer prompts, for a quick look")
    parser.add_argument("--keep", action="store_true", help="keep the temporary data folder")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="quorum-bench-demo-"))
    env = {**os.environ, "QUORUM_DATA_DIR": str(data_dir)}
    env.pop("QUORUM_MEDIA_ROOT", None)
    env.pop("DATABASE_URL", None)  # always the embedded SQLite default, fresh
    command = ["make_demo", "--scale", args.scale, "--seed", str(args.seed)]
    if args.prompts:
        command += ["--prompts", str(args.prompts)]
    try:
        run_command(["migrate", "--noinput", "-v0"], env)
        first_wall, first_out = run_command(command, env)
        rerun_wall, rerun_out = run_command(command, env)
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if "0 new judgments" not in rerun_out:
            sys.exit(f"the rerun created something:\n{rerun_out}")
        out_dir = data_dir / "demo" / args.scale
        jsonl_mb = sum(p.stat().st_size for p in out_dir.glob("*.jsonl")) / 1e6
        media = media_stats(out_dir)
        db_mb = (data_dir / "quorum.sqlite3").stat().st_size / 1e6
        stats = world_stats(out_dir)
    finally:
        if not args.keep:
            shutil.rmtree(data_dir, ignore_errors=True)

    first, rerun = phases(first_out), phases(rerun_out)
    print(f"python manage.py {' '.join(command)}  ({os.cpu_count()} CPUs, SQLite)")
    print(first_out.rstrip())
    print()
    print(f"first run   wall {first_wall:6.1f} s  (command's split: {first})")
    print(f"rerun       wall {rerun_wall:6.1f} s  (command's split: {rerun})")
    if first.get("total"):
        print(f"import share of the first run: {first.get('import', 0) / first['total']:.2f}")
    print(f"rerun / first run: {rerun_wall / first_wall:.2f}")
    print(
        f"peak RSS of one run: {peak_mb:.0f} MB; JSONL {jsonl_mb:.1f} MB; database {db_mb:.1f} MB"
    )
    for suffix, (count, total, largest) in sorted(media.items()):
        print(
            f"media {suffix}: {count} files, {total / 1e6:.2f} MB, largest {largest / 1e3:.1f} KB"
        )
    for name, s in stats.items():
        print(f"\n{name}:")
        for key, value in s.items():
            print(f"  {key}: {value}")
    if args.keep:
        print(f"\nkept {data_dir}")


if __name__ == "__main__":
    main()
