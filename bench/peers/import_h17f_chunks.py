"""PostgreSQL: the streamed import (``services._import_streamed``: the file parsed a chunk of
rows at a time, each chunk's candidates written into one ``COPY`` left open) against today's
path (``parse_import`` then ``_write_records``) and against the streamed code with one chunk
(everything parsed before the ``COPY``: what the interleaving alone saves), in one process,
alternating run by run, each import into a new project of the same database.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/quorum_x .venv/bin/python \\
        bench/peers/import_h17f_chunks.py [--runs 5] [--tasks 10000] [--chunk 1000]

Prints wall seconds and CPU seconds (this process plus its server backend, from ``/proc``) per
import, medians per way. The database must exist; the projects are deleted after. Nothing here
asserts a timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402
from django.db import connection  # noqa: E402
from workload import write_quorum_jsonl  # noqa: E402

from annotate import services  # noqa: E402
from annotate.models import Project  # noqa: E402


def _backend_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=1000, help="rows parsed per chunk")
    args = parser.parse_args()
    if connection.vendor != "postgresql":
        sys.exit("set DATABASE_URL to a PostgreSQL database")
    call_command("migrate", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        pid = cursor.fetchone()[0]
    streamed = services._import_streamed
    ways = {
        "today": (lambda **_: None, args.chunk),
        "one chunk": (streamed, 10**9),
        "streamed": (streamed, args.chunk),
    }
    got: dict[str, list[tuple[float, float]]] = {w: [] for w in ways}
    names = list(ways)
    path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", args.tasks, judged=False)
    try:
        for run in range(args.runs):
            for way in names[run % 3 :] + names[: run % 3]:
                services._import_streamed, services.STREAM_CHUNK_ROWS = ways[way]
                s0, c0, w0 = _backend_cpu(pid), time.process_time(), time.perf_counter()
                result = services.import_file(path=path, project_name=f"h17f-{way}-{run}")
                wall = time.perf_counter() - w0
                cpu = time.process_time() - c0 + _backend_cpu(pid) - s0
                assert result.counts["candidates"] == 4 * args.tasks, result.counts
                got[way].append((wall, cpu))
                print(f"{way}: {wall:.3f} s, CPU {cpu:.2f} s (load {os.getloadavg()[0]:.1f})",
                      file=sys.stderr)  # fmt: skip
    finally:
        services._import_streamed = streamed
        Project.objects.filter(name__startswith="h17f-").delete()
        shutil.rmtree(path.parent, ignore_errors=True)
    for way, values in got.items():
        wall = statistics.median(w for w, _ in values)
        cpu = statistics.median(c for _, c in values)
        print(f"{way}: {wall:.3f} s wall, {cpu:.2f} s CPU (medians of {args.runs})")


if __name__ == "__main__":
    main()
