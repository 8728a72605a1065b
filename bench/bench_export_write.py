"""Export build time of 10,000 judged ranking tasks, before and after, and proof of equal output.

Each run imports the same workload (``bench/peers/workload.py``: ``write_quorum_jsonl(path,
N, judged=True, k=1)``, four text candidates, one judgment each) into a fresh SQLite database,
then times ``export_create`` + ``export_build`` in-process (wall and CPU) and copies the export
folder. ``--before <commit>`` runs the same with that commit's code (a temporary git worktree)
first, and every file of the two folders is compared byte for byte, except those that embed the
build time (``datasheet.json``, ``datasheet.md``, ``hf/*/README.md``): those are compared with
the ``created_at`` value masked (and, in ``datasheet.json``, without the digests of those
files). ``--reference DIR`` compares with a folder kept earlier (``--keep DIR`` keeps the
first run's folder).

    python bench/bench_export_write.py [--tasks 10000] [--before HEAD] [--keep var/expE-ref]
                                       [--reference var/expE-ref] [--repeat 1] [--denoise]
                                       [--rounds 1]

``--denoise`` builds the denoised export (the joint model's ranking) instead of denoising off;
``--rounds N`` runs before and after N times each, alternating (before, after, after, before,
...), every run a fresh process and database, and pools the builds of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _harness import REPO, commit_worktree

# Files whose bytes hold the build time; compared with it masked.
TIMED = ("datasheet.json", "datasheet.md")


def child(args: argparse.Namespace) -> None:
    code = Path(args.code)
    sys.path.insert(0, str(code))
    sys.path.insert(0, str(REPO / "bench" / "peers"))
    os.chdir(code)
    os.environ["QUORUM_DATA_DIR"] = args.data
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    from workload import write_quorum_jsonl

    from annotate.models import Project
    from annotate.services import import_file
    from curation import services

    path = write_quorum_jsonl(Path(args.data) / "tasks.jsonl", args.tasks, judged=True, k=1)
    import_file(path=path, project_name="bench-export")
    project = Project.objects.get()
    import datasets  # noqa: F401  (a long-lived worker has it imported already)

    times = []
    for i in range(args.repeat):
        export = services.export_create(
            project=project,
            options={"denoise": args.denoise, "include_media": False},
            enqueue=False,
        )
        wall, cpu = time.perf_counter(), time.process_time()
        services.export_build(export_id=export.pk)
        times.append((time.perf_counter() - wall, time.process_time() - cpu))
        export.refresh_from_db()
        if i == 0:
            shutil.copytree(export.path, args.copy_to)
    Path(args.out).write_text(json.dumps({"times": times}))


def _masked(path: Path, created: str) -> bytes:
    data = path.read_bytes()
    if path.name == "datasheet.json":
        sheet = json.loads(data)
        sheet.pop("created_at")
        sheet["files"] = [
            f
            for f in sheet["files"]
            if f["path"] not in TIMED and not f["path"].endswith("README.md")
        ]
        return json.dumps(sheet, sort_keys=True).encode()
    return data.replace(created.encode(), b"<created_at>")


def compare(a: Path, b: Path) -> list[str]:
    """Paths whose content differs between export folders ``a`` and ``b`` (build time masked)."""
    files_a = {p.relative_to(a).as_posix() for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b).as_posix() for p in b.rglob("*") if p.is_file()}
    diffs = sorted(files_a ^ files_b)
    created_a = json.loads((a / "datasheet.json").read_text())["created_at"]
    created_b = json.loads((b / "datasheet.json").read_text())["created_at"]
    for rel in sorted(files_a & files_b):
        pa, pb = a / rel, b / rel
        if pa.read_bytes() == pb.read_bytes():
            continue
        timed = rel in TIMED or rel.endswith("README.md")
        if timed and _masked(pa, created_a) == _masked(pb, created_b):
            continue
        diffs.append(rel)
    return diffs


def _run(code: Path, args: argparse.Namespace, tmp: Path, label: str) -> tuple[list, Path]:
    data, folder, out = tmp / f"data-{label}", tmp / f"export-{label}", tmp / f"{label}.json"
    data.mkdir()
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        f"--code={code}",
        f"--data={data}",
        f"--copy-to={folder}",
        f"--out={out}",
        f"--tasks={args.tasks}",
        f"--repeat={args.repeat}",
        *(["--denoise"] if args.denoise else []),
    ]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run(command, check=True, env={**env, "PYTHONHASHSEED": "0"})
    return json.loads(out.read_text())["times"], folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=1, help="builds per run (median shown)")
    parser.add_argument("--before", help="also measure this commit's code (git worktree)")
    parser.add_argument("--keep", help="copy the first run's export folder here")
    parser.add_argument("--reference", help="compare the working tree's export with this folder")
    parser.add_argument("--denoise", action="store_true", help="the denoised export")
    parser.add_argument("--rounds", type=int, default=1, help="alternating runs per side")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--copy-to", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    with tempfile.TemporaryDirectory(prefix="bench-export-") as name:
        tmp = Path(name)
        runs = []
        worktree = None
        try:
            if args.before:
                commit, worktree = commit_worktree(args.before, tmp)
                runs.append((f"before ({commit[:7]})", worktree))
            runs.append(("after (working tree)", REPO))
            pooled: dict[str, list] = {label: [] for label, _ in runs}
            folders: dict[str, Path] = {}
            loads: dict[str, list[str]] = {label: [] for label, _ in runs}
            for r in range(args.rounds):
                for i, (label, code) in enumerate(runs if r % 2 == 0 else runs[::-1]):
                    loads[label].append(f"{os.getloadavg()[0]:.1f}")
                    times, folder = _run(code, args, tmp, f"{r}-{i}")
                    pooled[label] += times
                    folders.setdefault(label, folder)
            results = [
                (label, pooled[label], folders[label], " ".join(loads[label])) for label, _ in runs
            ]
            if args.keep:
                shutil.rmtree(args.keep, ignore_errors=True)
                shutil.copytree(results[0][2], args.keep)
        finally:
            if worktree is not None:
                subprocess.run(
                    ["git", "-C", str(REPO), "worktree", "remove", "--force", str(worktree)],
                    check=False,
                    capture_output=True,
                )

        what = "denoised" if args.denoise else "denoise off"
        print(f"export_build, {args.tasks} judged ranking tasks, {what}, no media")
        print(f"{args.repeat} builds per run, {args.rounds} runs per side: median (min)")
        print("| run | wall s | CPU s | load (1 min) at each run's start |")
        print("|---|---|---|---|")
        for label, times, _folder, load in results:
            wall = sorted(t[0] for t in times)
            cpu = sorted(t[1] for t in times)
            mid = len(times) // 2
            print(
                f"| {label} | {wall[mid]:.2f} ({wall[0]:.2f}) | {cpu[mid]:.2f} ({cpu[0]:.2f}) "
                f"| {load} |"
            )
        after = results[-1][2]
        others = [(results[0][0], results[0][2])] if len(results) > 1 else []
        if args.reference:
            others.append((args.reference, Path(args.reference)))
        failed = False
        for label, folder in others:
            diffs = compare(folder, after)
            n = sum(1 for p in after.rglob("*") if p.is_file())
            if diffs:
                failed = True
                print(f"DIFFERENT from {label}: {', '.join(diffs)}")
            else:
                print(f"identical to {label}: all {n} files (build time masked)")
        if failed:
            sys.exit(1)


if __name__ == "__main__":
    main()
