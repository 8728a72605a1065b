"""Thread CPU of the curated export build's steps, in-process, two trees alternated.

Uses ``bench/bench_export_legs.py``'s data dir (``--data``: its SQLite database with the 10k
peer project, made there first). For each code (``--code``, repeatable: git worktrees; each runs
in its own fresh interpreter, ``--rounds`` times, alternating ABAB), builds ``--repeat`` exports
(``services.export_build``, as the worker runs it) and sums the CPU each step's thread spent
in it (``time.thread_time`` around the step's function): the load, ``build_snapshot`` and its
parts, ``write_snapshot``, the leaderboard on its own thread. Prints each step's median per
code, and the build's process CPU and main-thread CPU.

    PYTHONPATH=. python bench/bench_h20c_steps.py --data /tmp/h20c-data/legs \\
        --code var/h20c-base --code var/h20c-after --rounds 2 --repeat 3 [--raw]
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
# module: functions timed (their own thread's CPU, calls nested in another timed one too).
STEPS = {
    "curation.services": ("_snapshot_input",),
    "curation.exporting": (
        "build_snapshot",
        "_batch_rows",
        "_export_tables",
        "_leaderboard",
        "write_snapshot",
        "jsonl_tables",
        "_agreement_figures",
    ),
    "curation.batch_consensus": ("batch_consensus", "batch_majority"),
    "curation.agreement": ("annotator_reliability",),
    "curation.consensus": ("joint_estimates",),
    "curation.selectors": ("content_rows",),
}


def _measure(args) -> dict:
    import gc
    import importlib

    (code,) = args.code
    sys.path.insert(0, str(Path(code).resolve()))
    os.chdir(code)
    os.environ["QUORUM_DATA_DIR"] = str(Path(args.data).resolve())
    os.environ.pop("DATABASE_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from annotate.models import Project
    from curation import services

    spent: dict[str, list[float]] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            start = time.thread_time()
            try:
                return fn(*a, **k)
            finally:
                spent.setdefault(name, []).append(time.thread_time() - start)

        return wrapper

    for module_name, names in STEPS.items():
        module = importlib.import_module(module_name)
        for name in names:
            if hasattr(module, name):
                setattr(module, name, timed(name, getattr(module, name)))
    project = Project.objects.get(name="bench-export")
    rows = []
    for _ in range(args.repeat + 1):  # the first build warms the imports and caches
        spent.clear()
        export = services.export_create(
            project=project,
            options={"denoise": not args.raw, "include_media": False},
            enqueue=False,
        )
        gc.collect()
        cpu, main = time.process_time(), time.thread_time()
        export = services.export_build(export_id=export.pk)
        row = {"process": time.process_time() - cpu, "main_thread": time.thread_time() - main}
        assert export.status == "done", export.error
        row.update({name: sum(values) for name, values in spent.items()})
        rows.append(row)
        export.delete()
    return {k: statistics.median(r[k] for r in rows[1:]) for k in rows[-1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--code", action="append", default=[])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="denoise off")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args)))
        return
    codes = args.code or [str(REPO)]
    results: dict[str, list[dict]] = {c: [] for c in codes}
    for r in range(args.rounds):
        for code in codes if r % 2 == 0 else codes[::-1]:
            cmd = [sys.executable, __file__, "--measure", "--data", args.data, "--code", code]
            cmd += ["--repeat", str(args.repeat)] + (["--raw"] if args.raw else [])
            load = os.getloadavg()[0]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            results[code].append(json.loads(out.strip().splitlines()[-1]))
            print(f"round {r} {code} load {load:.1f}", file=sys.stderr)
    keys = list(results[codes[0]][0])
    print("step".ljust(24) + "".join(Path(c).name[-14:].rjust(16) for c in codes))
    for key in keys:
        cells = [statistics.median(x.get(key, 0.0) for x in results[c]) for c in codes]
        print(key.ljust(24) + "".join(f"{v:16.3f}" for v in cells))


if __name__ == "__main__":
    main()
