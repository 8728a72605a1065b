"""Where a denoised export of 10,000 judged ranking tasks spends its time, in-process.

Imports the peer workload (``bench/peers/workload.py``: ``write_quorum_jsonl(path, N,
judged=True, k=1)``) once into a SQLite database under ``--data`` (kept: a later run with the
same ``--data`` reuses it), then builds ``--repeat`` exports (``export_create`` +
``export_build``, as the worker runs them) and times each in wall and CPU seconds (all threads,
and the main thread's alone), then the download (``curation.download.iter_download_zip``, as
the web process streams it): its CPU, wall and size. ``--profile FILE`` writes a cProfile of one build (``pstats``). ``--query``
downloads with that query string's options, as the API reads them (``format=parquet``,
``base_folder=/data/x``; ``format`` needs a tree whose download takes it).

    PYTHONPATH=. python bench/bench_export_legs.py --data var/he-legs [--repeat 3] [--raw]
        [--profile var/he-legs/build.prof] [--code <worktree>]

``--code`` runs another tree's code (a git worktree) against the same workload; ``--json``
prints one JSON line of the figures. ``--legs`` times the build's three legs apart instead
(CPU seconds, median of ``--repeat``): the load (``services._snapshot_input``),
``exporting.build_snapshot`` and ``exporting.write_snapshot``, with the cycle collector
paused as the worker pauses it; no download.

Each build's export folder (~280 MB at 10,000 tasks) is deleted once measured, so long runs do
not fill the disk; ``--keep-last`` keeps the last measured build's (printed as ``folder``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import statistics
import time
from pathlib import Path

from _harness import REPO, bench_export_project, django_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data dir (the database is kept there)")
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--raw", action="store_true", help="denoise off")
    parser.add_argument("--profile", help="cProfile one more build into this file")
    parser.add_argument("--code", default=str(REPO), help="the tree whose code runs")
    parser.add_argument("--query", default="", help="download options, e.g. format=jsonl")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--legs", action="store_true", help="time load, build, write apart")
    parser.add_argument(
        "--keep-last", action="store_true", help="keep the last build's export folder"
    )
    args = parser.parse_args()

    code = Path(args.code).resolve()
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    django_in(code, data, sqlite=True, peers=True)
    from curation import services
    from curation.models import DatasetExport

    project = bench_export_project(data, args.tasks)
    import datasets  # noqa: F401  (a long-lived worker has it imported already)

    from curation import download

    def build() -> tuple[float, float, float, DatasetExport]:
        export = services.export_create(
            project=project,
            options={"denoise": not args.raw, "include_media": False},
            enqueue=False,
        )
        wall, cpu, main = time.perf_counter(), time.process_time(), time.thread_time()
        export = services.export_build(export_id=export.pk)
        return (
            time.perf_counter() - wall,
            time.process_time() - cpu,
            time.thread_time() - main,
            export,
        )

    def fetch(export: DatasetExport) -> tuple[float, float, int]:
        kwargs = {}
        if args.query:
            from urllib.parse import parse_qsl

            # As the API reads it: ``format=jsonl,parquet`` -> formats {...}, ``all`` -> None.
            query = dict(parse_qsl(args.query))
            if query.get("format", "all") != "all":
                kwargs["formats"] = set(query["format"].split(","))
            if query.get("base_folder"):
                kwargs["base_folder"] = query["base_folder"]
        wall, cpu, size = time.perf_counter(), time.process_time(), 0
        for chunk in download.iter_download_zip(export.path, "x", **kwargs):
            size += len(chunk)
        return time.perf_counter() - wall, time.process_time() - cpu, size

    if args.legs:
        print(json.dumps({"code": str(code), **_legs(project, args)}))
        return

    builds, fetches = [], []
    for i in range(args.repeat):
        wall, cpu, main, export = build()
        try:
            assert export.status == "done", export.error
            builds.append((wall, cpu, main))
            fetches.append(fetch(export))
        finally:
            if not (args.keep_last and i == args.repeat - 1):
                _drop(export.path)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
        try:
            profiled = build()[3]
        finally:
            profiler.disable()
        _drop(profiled.path)
        profiler.dump_stats(args.profile)

    def med(values):
        return round(statistics.median(values), 3)

    result = {
        "code": str(code),
        "build_wall": med([b[0] for b in builds]),
        "build_cpu": med([b[1] for b in builds]),
        # The main thread's share: on a machine with a free core, the build's critical path.
        "build_main_thread_cpu": med([b[2] for b in builds]),
        "download_wall": med([f[0] for f in fetches]),
        "download_cpu": med([f[1] for f in fetches]),
        "zip_bytes": fetches[-1][2],
        # Which library deflated the zip's members (`curation.download`; zlib before it said).
        "deflate": getattr(download, "DEFLATE_LIBRARY", "zlib"),
        # Deleted after its measurement unless --keep-last.
        "folder": str(export.path) if args.keep_last else None,
    }
    if args.json:
        print(json.dumps(result))
    else:
        for key, value in result.items():
            print(f"{key}: {value}")


def _drop(folder: Path) -> None:
    """Deletes an export folder and the deflated members its build left beside it
    (``.zip-<SHA-256 of datasheet.json>``, `curation.download.members_folder`)."""
    try:
        sheet = hashlib.sha256((folder / "datasheet.json").read_bytes()).hexdigest()
        shutil.rmtree(folder.parent / f".zip-{sheet}", ignore_errors=True)
    except OSError:  # no datasheet: a failed build
        pass
    shutil.rmtree(folder, ignore_errors=True)


def _legs(project, args) -> dict:
    """CPU seconds of the load, `build_snapshot` and `write_snapshot`, median of ``--repeat``
    builds (each written to a fresh folder, removed after)."""
    import gc
    import shutil
    import tempfile

    from curation import exporting as E
    from curation import services

    legs: dict[str, list[float]] = {"load": [], "build": [], "write": []}
    for _ in range(args.repeat):
        export = services.export_create(
            project=project,
            options={"denoise": not args.raw, "include_media": False},
            enqueue=False,
        )
        options = E.ExportOptions.from_dict(export.options)
        work = Path(tempfile.mkdtemp(prefix="legs-", dir=args.data))
        gc.disable()
        try:
            cpu = time.process_time()
            source = services._snapshot_input(export)
            legs["load"].append(time.process_time() - cpu)
            cpu = time.process_time()
            snapshot = E.build_snapshot(source, options)
            legs["build"].append(time.process_time() - cpu)
            cpu = time.process_time()
            E.write_snapshot(snapshot, work, source, options, lambda _p, _s: None)
            legs["write"].append(time.process_time() - cpu)
        finally:
            gc.enable()
            shutil.rmtree(work, ignore_errors=True)
        export.delete()
    out = {name: round(statistics.median(values), 3) for name, values in legs.items()}
    out["total"] = round(sum(out.values()), 3)
    out["builds"] = {name: [round(v, 3) for v in values] for name, values in legs.items()}
    return out


if __name__ == "__main__":
    main()
