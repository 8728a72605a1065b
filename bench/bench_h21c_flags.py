"""The flags pass's judgment load (`selectors._load_votes`) on a kept world, old and new
alternated in one process: the code of ``--before`` (a commit; its function text run in the
module's namespace) against the working tree's. CPU and wall of each call (the queries
included; with ``--cached-rows`` only the Python that builds the votes), fastest and median
of the rounds; the votes compared (equal, the same ``__dict__``, one object per evaluator).

    python bench/bench_h21c_flags.py --world var/h21c-world94k --before HEAD [--rounds 6]

``--world``: a folder `bench/bench_curation_scale.py --repeat 0 --world ...` wrote (SQLite); it
is copied, never changed.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _old_function(commit: str, module, name: str, namespace: dict):
    source = subprocess.run(
        ["git", "-C", str(REPO), "show", f"{commit}:curation/selectors.py"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    start = source.index(f"\ndef {name}(")
    end = source.index("\ndef ", start + 1)
    exec(compile(source[start:end], f"<{commit}:{name}>", "exec"), namespace)
    return namespace[name]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", required=True)
    parser.add_argument("--before", default="HEAD")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--cached-rows",
        action="store_true",
        help="fetch each query's rows once and give both codes the same rows: only the "
        "Python that builds the votes is timed",
    )
    args = parser.parse_args()
    data = Path(tempfile.mkdtemp(prefix="h21c-load-"))
    try:
        shutil.copytree(Path(args.world), data, dirs_exist_ok=True)
        project_id = json.loads((data / "setup.json").read_text())["project"]
        os.environ["QUORUM_DATA_DIR"] = str(data)
        os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
        os.chdir(REPO)
        import django

        django.setup()
        run(project_id, args)
    finally:
        shutil.rmtree(data, ignore_errors=True)


def _report(spent: dict[str, list[tuple[float, float]]]) -> None:
    print(f"load average {os.getloadavg()[0]:.1f}")
    for label, runs in spent.items():
        cpu = [c for c, _ in runs]
        wall = [w for _, w in runs]
        print(
            f"{label}: CPU fastest {min(cpu):.3f} s, median {statistics.median(cpu):.3f} s; "
            f"wall fastest {min(wall):.3f} s, median {statistics.median(wall):.3f} s"
        )


def run(project_id: int, args: argparse.Namespace) -> None:
    from annotate.models import Judgment, Task, TaskCandidate
    from curation import selectors

    old_namespace = dict(vars(selectors))
    old = _old_function(args.before, selectors, "_load_votes", old_namespace)
    new = selectors._load_votes
    if args.cached_rows:
        fetched: dict[str, list] = {}
        fetch = selectors.fetched_rows

        def cached(queryset):
            key = str(queryset.query)
            if key not in fetched:
                fetched[key] = [tuple(row) for row in fetch(queryset)]
            return fetched[key]

        selectors.fetched_rows = old_namespace["fetched_rows"] = cached
    task_prompt = dict(Task.objects.filter(project_id=project_id).values_list("id", "prompt_id"))
    judgments = Judgment.objects.filter(project_id=project_id)
    slots = TaskCandidate.objects.filter(task__project_id=project_id)
    spent: dict[str, list[tuple[float, float]]] = {"before": [], "after": []}
    kept = {}
    gc.disable()  # as in the flags pass (`services._cycle_collection_paused`)
    for r in range(args.rounds):
        order = [("before", old), ("after", new)]
        for label, load in order if r % 2 == 0 else order[::-1]:
            kept.pop(label, None)
            t0, c0 = time.perf_counter(), time.process_time()
            votes = load(judgments, slots, task_prompt, with_presented=True, with_times=False)
            spent[label].append((time.process_time() - c0, time.perf_counter() - t0))
            kept[label] = votes
    gc.enable()
    before, after = kept["before"], kept["after"]
    same = before == after and all(
        a.__dict__ == b.__dict__ for a, b in zip(before, after, strict=True)
    )
    shared = len({id(v.evaluator) for v in after}) == len({v.evaluator for v in after})
    print(f"{len(after):,} votes; equal: {same}; one object per evaluator id: {shared}")
    _report(spent)


if __name__ == "__main__":
    main()
