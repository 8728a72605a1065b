"""The denoised export of 10,000 judged ranking tasks in two trees, alternated, on SQLite or
PostgreSQL: build and download times, and every file and deflated member compared.

Imports the peer workload (``bench/peers/workload.py``: ``write_quorum_jsonl(path, N,
judged=True, k=1)``) once into the database (SQLite under ``--data``, or ``DATABASE_URL``),
then runs ``--rounds`` rounds of a fresh interpreter per tree, in the order A B B A, A B B A,
... Each interpreter builds ``--repeat`` exports (``export_create`` + ``export_build``, as the
worker runs them, after one warm-up build) and downloads each (``iter_download_zip``, as the
web process streams it). Per build: wall, CPU of this process and of its waited-for children
(a forked writer's CPU counts), the main thread's CPU; per download: wall and CPU. The last
build's files are hashed: every file's SHA-256 (``created_at`` and the version masked in the
datasheet, ``datasheet.md`` and the HF cards, whose bytes hold them; the datasheet's file list
without those files' digests), and every member the build deflated for the download
(``.zip-*/``: its stream's SHA-256, CRC-32, sizes, by path). The two trees' hashes must be equal.
Leave the trees alone while it runs: each leg imports the tree's code afresh.

    PYTHONPATH=. python bench/bench_h19a_fork_ab.py --data /tmp/h19a-data/ab \\
        --against var/h19a-base [--rounds 2] [--repeat 3]
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_h19a_ab ... (the same)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _harness import REPO, masked_digests


def _member_hashes(folder: Path) -> dict[str, dict]:
    from curation import download

    found = download.deflated_members(folder)
    assert found is not None, "no deflated members beside the export"
    where, index = found
    out = {}
    for rel, entry in sorted(index.items()):
        if rel in ("datasheet.json", "datasheet.md") or rel.endswith("README.md"):
            continue
        stream = (where / entry["member"]).read_bytes()
        out[rel] = {
            "stream_sha256": hashlib.sha256(stream).hexdigest(),
            "crc32": entry["crc32"],
            "bytes": entry["bytes"],
            "compressed": entry["compressed"],
        }
    return out


def child(args: argparse.Namespace) -> None:
    code = Path(args.code).resolve()
    data = Path(args.data).resolve()
    sys.path.insert(0, str(code))
    sys.path.insert(0, str(REPO / "bench" / "peers"))
    os.chdir(code)
    os.environ["QUORUM_DATA_DIR"] = str(data)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    import datasets  # noqa: F401  (a long-lived worker has it imported already)

    from annotate.models import Project
    from curation import download, services

    project = Project.objects.get(name="bench-export")

    def build():
        export = services.export_create(
            project=project, options={"denoise": True, "include_media": False}, enqueue=False
        )
        kids = resource.getrusage(resource.RUSAGE_CHILDREN)
        wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        export = services.export_build(export_id=export.pk)
        wall = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        main = time.thread_time() - main
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_cpu = after.ru_utime + after.ru_stime - kids.ru_utime - kids.ru_stime
        assert export.status == "done", export.error
        return wall, cpu + child_cpu, main, export

    def fetch(export):
        wall, cpu, size = time.perf_counter(), time.process_time(), 0
        for chunk in download.iter_download_zip(export.path, "x"):
            size += len(chunk)
        return time.perf_counter() - wall, time.process_time() - cpu, size

    build()  # warm-up: imports, the joint fit's cache
    rows = []
    for _ in range(args.repeat):
        wall, cpu, main, export = build()
        fwall, fcpu, size = fetch(export)
        rows.append(
            {
                "build_wall": wall,
                "build_cpu": cpu,
                "main_cpu": main,
                "download_wall": fwall,
                "download_cpu": fcpu,
                "zip_bytes": size,
                "load": os.getloadavg()[0],
            }
        )
    print(
        json.dumps(
            {
                "rows": rows,
                "files": masked_digests(export.path, version=True),
                "members": _member_hashes(export.path),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--against", required=True, help="the baseline tree (a worktree)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.code:
        child(args)
        return
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "QUORUM_DATA_DIR": str(data), "PYTHONPATH": str(REPO)}
    env.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    setup = (
        "import django, sys; sys.path.insert(0, 'bench/peers'); django.setup()\n"
        "from django.core.management import call_command\n"
        "call_command('migrate', verbosity=0)\n"
        "from annotate.models import Project\n"
        "if not Project.objects.filter(name='bench-export').exists():\n"
        "    from pathlib import Path\n"
        "    from workload import write_quorum_jsonl\n"
        "    from annotate.services import import_file\n"
        f"    path = write_quorum_jsonl(Path({str(data)!r}) / 'tasks.jsonl', {args.tasks},"
        " judged=True, k=1)\n"
        "    import_file(path=path, project_name='bench-export')\n"
    )
    subprocess.run([sys.executable, "-c", setup], cwd=REPO, env=env, check=True)
    trees = {"base": Path(args.against).resolve(), "this": REPO}
    order = []
    for r in range(args.rounds):
        order += (
            ["base", "this", "this", "base"] if r % 2 == 0 else ["this", "base", "base", "this"]
        )
    results: dict[str, list[dict]] = {"base": [], "this": []}
    hashes: dict[str, tuple] = {}
    for leg in order:
        out = subprocess.run(
            [sys.executable, __file__, "--data", str(data), "--against", args.against,
             "--repeat", str(args.repeat), "--code", str(trees[leg])],
            cwd=REPO, env=env, check=True, capture_output=True, text=True,
        ).stdout.strip().splitlines()[-1]  # fmt: skip
        got = json.loads(out)
        results[leg] += got["rows"]
        key = (got["files"], got["members"])
        if leg in hashes and hashes[leg] != key:
            changed = [k for k in key[0] if hashes[leg][0].get(k) != key[0][k]]
            print(f"{leg}: two runs of one tree differ: {changed}")
        hashes[leg] = key
        print(
            f"{leg}: build wall "
            + " ".join(f"{r['build_wall']:.2f}" for r in got["rows"])
            + " cpu "
            + " ".join(f"{r['build_cpu']:.2f}" for r in got["rows"])
            + f" load {got['rows'][-1]['load']:.1f}",
            flush=True,
        )
    files_b, members_b = hashes["base"]
    files_t, members_t = hashes["this"]
    differ = sorted(k for k in files_b.keys() | files_t.keys() if files_b.get(k) != files_t.get(k))
    mdiffer = sorted(
        k for k in members_b.keys() | members_t.keys() if members_b.get(k) != members_t.get(k)
    )
    print(f"files compared: {len(files_b)}, differing: {differ or 'none'}")
    print(f"deflated members compared: {len(members_b)}, differing: {mdiffer or 'none'}")
    for key in ("build_wall", "build_cpu", "main_cpu", "download_wall", "download_cpu"):
        b = statistics.median(r[key] for r in results["base"])
        t = statistics.median(r[key] for r in results["this"])
        print(f"{key:14s} median base {b:.3f}  this {t:.3f}  this/base {t / b:.2f}x")
    loads = [r["load"] for leg in results.values() for r in leg]
    print(f"load average {min(loads):.1f}-{max(loads):.1f}, zip {results['this'][-1]['zip_bytes']}")


if __name__ == "__main__":
    main()
