"""A timeline of one denoised export build of 10,000 judged ranking tasks, in-process.

Imports the peer workload into a SQLite database under ``--data`` once (as
``bench/bench_export_legs.py`` does; a later run reuses it), then builds ``--repeat`` exports
(``export_create`` + ``export_build``, as the worker runs them) with the build's steps wrapped
to record when each started and ended (wall seconds from the build's start) and in which
thread: the load, `build_snapshot`, the progress reports, the JSONL chunks, the Parquet and
Hugging Face writes, the digests, the members' deflate wait and the file list. Nothing is
changed in what the build does; the wrappers cost microseconds per call.

    PYTHONPATH=. python bench/bench_h18a_timeline.py --data var/h18a-legs [--repeat 2]
        [--code <worktree>]
"""

from __future__ import annotations

import argparse
import functools
import os
import threading
import time
from pathlib import Path

from _harness import REPO, bench_export_project, django_in


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--code", default=str(REPO))
    args = parser.parse_args()
    code = Path(args.code).resolve()
    data = Path(args.data).resolve()
    data.mkdir(parents=True, exist_ok=True)
    django_in(code, data, sqlite=True, peers=True)
    from curation import services

    project = bench_export_project(data, args.tasks)
    import datasets  # noqa: F401  (a long-lived worker has it imported already)
    import pyarrow.parquet as pq

    from curation import download
    from curation import exporting as E

    events: list[tuple[str, str, float, float]] = []
    origin = [0.0]

    def wrap(owner, name: str, label: str | None = None) -> None:
        original = getattr(owner, name)

        @functools.wraps(original)
        def timed(*a, **k):
            start = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                events.append(
                    (
                        label or name,
                        threading.current_thread().name,
                        start - origin[0],
                        time.perf_counter() - origin[0],
                    )
                )

        setattr(owner, name, timed)

    wrap(services, "_snapshot_input", "load")
    wrap(E, "build_snapshot")
    wrap(E, "write_snapshot")
    wrap(E, "jsonl_tables")
    wrap(E, "_file_list")
    wrap(E, "write_hf_folder")
    wrap(E, "hf_image_columns")
    wrap(E, "_digest", "digest+deflate arrow")
    wrap(pq, "write_table", "parquet")
    wrap(download.DeflatedMembers, "finish", "members.finish")
    wrap(download.DeflatedMember, "finish", "member.finish")
    wrap(E, "datasheet_markdown")
    wrap(E, "_json_line", "overruled lines (JSONL loop done)")
    wrap(E, "_split_rows")
    original_progress = services._progress

    def progress(export_id, builder):
        report = original_progress(export_id, builder)

        def stamped(percent, phase):
            now = time.perf_counter() - origin[0]
            events.append(
                (f"progress {percent} {phase}", threading.current_thread().name, now, now)
            )
            report(percent, phase)

        return stamped

    services._progress = progress

    for _ in range(args.repeat):
        export = services.export_create(
            project=project, options={"denoise": True, "include_media": False}, enqueue=False
        )
        events.clear()
        origin[0] = time.perf_counter()
        cpu, main = time.process_time(), time.thread_time()
        export = services.export_build(export_id=export.pk)
        wall = time.perf_counter() - origin[0]
        assert export.status == "done", export.error
        print(
            f"\nbuild wall {wall:.3f} s, CPU {time.process_time() - cpu:.3f} s, main thread "
            f"{time.thread_time() - main:.3f} s, load {os.getloadavg()[0]:.1f}"
        )
        merged: dict[tuple[str, str], list[float]] = {}
        for label, thread, start, end in events:
            key = (label, thread)
            if key in merged and not label.startswith("progress"):
                merged[key] = [
                    min(merged[key][0], start),
                    max(merged[key][1], end),
                    merged[key][2] + end - start,
                ]
            else:
                merged[key] = [start, end, end - start]
        for (label, thread), (start, end, busy) in sorted(merged.items(), key=lambda kv: kv[1][0]):
            print(f"  {start:6.3f} -> {end:6.3f}  ({busy:5.3f} in calls)  {thread:24s} {label}")


if __name__ == "__main__":
    main()
