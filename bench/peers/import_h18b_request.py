"""The request leg of the API import in-process, an older tree against a newer one, alternating
run by run: the peer file (10,000 tasks, ~17 MB) posted as multipart to ``/api/imports`` through
Django's WSGI handler (no socket, no broker: the job's publish is dropped), timed from the request
to its 201, wall and CPU (user + system) of the process, and the saved upload compared with the
file sent (byte for byte).

    .venv/bin/python bench/peers/import_h18b_request.py --before var/h18b-base [--after DIR]
        [--runs 4] [--requests 8] [--tasks 10000]

Each run is a fresh process on a fresh SQLite data folder; its first request (the process's
imports, caches) is reported apart and the rest give the run's median. Nothing here asserts a
timing.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from import_before_after import (  # noqa: E402
    CHILD_SETUP,
    SELF_CPU,
    alternating,
    before_after_parser,
    before_after_trees,
    run_child,
)

CHILD = (
    CHILD_SETUP
    + SELF_CPU
    + r"""
import io, statistics
import httpx
from workload import write_quorum_jsonl
from django.contrib.auth import get_user_model
from django.core.handlers.wsgi import WSGIHandler
from annotate.models import ImportJob
from annotate.services import api_token_create
import workers.jobs
workers.jobs._publish_soon = lambda kind, ids: None  # no broker here; the job row is written
from django.conf import settings
settings.QUORUM_ASYNC_IMPORT_ROWS = 0  # every size queued, as the peer file is: nothing runs inline
user = get_user_model().objects.create_user("bench", password="x", is_staff=True)
_, key = api_token_create(user=user)
path = write_quorum_jsonl(Path(tempfile.mkdtemp()) / "tasks.jsonl", int(os.environ["IMPORT_TASKS"]), judged=False)
sent = path.read_bytes()
request = httpx.Request("POST", "http://testserver/api/imports",
    files={"file": (path.name, sent, "application/jsonl")}, data={"project_name": "bench"})
body = request.read()
handler = WSGIHandler()
walls, cpus = [], []
for i in range(int(os.environ["REQUESTS"])):
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/api/imports", "SERVER_NAME": "testserver",
        "SERVER_PORT": "80", "HTTP_HOST": "testserver", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
        "CONTENT_TYPE": request.headers["content-type"], "HTTP_AUTHORIZATION": f"Bearer {key}"}
    status = []
    t0, c0 = time.perf_counter(), cpu()
    response = handler(environ, lambda s, h: status.append(s))
    b"".join(response)
    response.close()
    walls.append(time.perf_counter() - t0)
    cpus.append(cpu() - c0)
    assert status[0].startswith("201"), status
    job = ImportJob.objects.latest("pk")
    assert Path(job.source_file).read_bytes() == sent, "the saved upload differs from the file sent"
print("FIRST", walls[0], cpus[0], "WALL", statistics.median(walls[1:]), "CPU", statistics.median(cpus[1:]))
import shutil
shutil.rmtree(path.parent, ignore_errors=True)
"""
)


def main() -> None:
    parser = before_after_parser(__doc__, runs=4)
    parser.add_argument("--requests", type=int, default=8)
    args = parser.parse_args()
    os.environ["REQUESTS"] = str(args.requests)
    trees = before_after_trees(args)
    got: dict[str, dict[str, list[float]]] = {
        n: {"first": [], "wall": [], "cpu": []} for n in trees
    }
    for name in alternating(trees, args.runs):
        out = run_child(trees[name], args.tasks, CHILD, "CPU", tag="req").split()
        i = out.index("FIRST")
        first, wall, cpu = float(out[i + 1]), float(out[i + 4]), float(out[i + 6])
        for k, v in (("first", first), ("wall", wall), ("cpu", cpu)):
            got[name][k].append(v)
        print(
            f"{name}: first {first * 1000:.0f} ms, then median wall {wall * 1000:.1f} ms, "
            f"CPU {cpu * 1000:.1f} ms (load {os.getloadavg()[0]:.1f})",
            file=sys.stderr,
        )
    med = {n: {k: statistics.median(v) for k, v in got[n].items()} for n in trees}
    b, a = med["before"], med["after"]
    print(
        f"{args.tasks:,} tasks, medians of {args.runs} runs: request wall {b['wall'] * 1000:.1f} -> "
        f"{a['wall'] * 1000:.1f} ms ({b['wall'] / a['wall']:.2f}x), CPU {b['cpu'] * 1000:.1f} -> "
        f"{a['cpu'] * 1000:.1f} ms ({b['cpu'] / a['cpu']:.2f}x); first request "
        f"{b['first'] * 1000:.0f} -> {a['first'] * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
