"""Start-up time of Django processes: an older commit vs the current tree, interleaved.

    python bench/bench_startup.py [--before 03a970e] [--after <commit>] [--runs 5]

Checks the old commit out into a git worktree (``/tmp/quorum-before-<rev>``, made once, no
stash), then times, alternating old and new so that load on the machine hits both alike:

- ``manage.py help``: what every management command pays before doing anything;
- web start: ``django.setup()``, the WSGI application and the URL configuration loaded, as
  a gunicorn worker does before its first response.

Both trees run with this checkout's virtualenv and a scratch ``QUORUM_DATA_DIR``. Prints the
median of each, wall and CPU seconds (user + system; the CPU figure is what a busy
machine disturbs least), the ratio (before / after) and the heavy libraries each one loaded.
03a970e, the default, is the oldest commit the benchmark runs against, a tree as issue 13
describes it (scipy, numpy, networkx and pyarrow loaded at start).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("scipy", "networkx", "pandas", "pyarrow", "datasets", "torch", "numpy", "markdown")

MANAGE_HELP = [sys.executable, "manage.py", "help"]
WEB_START = [
    sys.executable,
    "-c",
    "import django; django.setup(); import config.wsgi; from django.urls import get_resolver; "
    "get_resolver().url_patterns",
]
LOADED = (
    "import json, sys, django; django.setup(); import config.wsgi; "
    "from django.urls import get_resolver; get_resolver().url_patterns; "
    f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
)


def _worktree(rev: str) -> Path:
    path = Path(tempfile.gettempdir()) / f"quorum-before-{rev}"
    if not (path / "manage.py").exists():
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(path), rev],
            cwd=REPO,
            check=True,
            capture_output=True,
        )
    return path


def _time(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``cmd``."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", default="03a970e", help="commit to compare with")
    parser.add_argument(
        "--after", default=None, help="a commit instead of the working tree (others' edits out)"
    )
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    trees = {
        "before": _worktree(args.before),
        "after": _worktree(args.after) if args.after else REPO,
    }
    data_dir = tempfile.mkdtemp(prefix="quorum-bench-startup-")
    env = {
        **os.environ,
        "QUORUM_DATA_DIR": data_dir,
        "DJANGO_SETTINGS_MODULE": "config.settings",
        # The web start refuses the public development key with DEBUG off (config/security.py).
        "DJANGO_SECRET_KEY": "bench-startup-" + "x" * 50,
    }
    env.pop("DATABASE_URL", None)  # start-up only: the embedded default needs no server
    env.pop("CELERY_BROKER_URL", None)

    for tree in trees.values():  # warm the page cache and write .pyc files before timing
        _time(MANAGE_HELP, tree, env)
        _time(WEB_START, tree, env)

    times: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.runs):
        for what, cmd in (("manage.py help", MANAGE_HELP), ("web start", WEB_START)):
            for name, tree in trees.items():
                times.setdefault((what, name), []).append(_time(cmd, tree, env))

    load = " / ".join(f"{x:.1f}" for x in os.getloadavg()[:2])
    print(f"before = {args.before}, after = {args.after or 'working tree'}; median of {args.runs},")
    print(f"interleaved; load average {load} at the end")
    for what in ("manage.py help", "web start"):
        for i, unit in ((0, "wall"), (1, "CPU ")):
            before = statistics.median(t[i] for t in times[(what, "before")])
            after = statistics.median(t[i] for t in times[(what, "after")])
            print(
                f"{what:15} {unit} before {before:6.2f} s   after {after:6.2f} s"
                f"   ratio {before / after:5.2f}x"
            )
    for name, tree in trees.items():
        out = subprocess.run(
            [sys.executable, "-c", LOADED], cwd=tree, env=env, check=True, capture_output=True
        )
        print(f"heavy modules loaded by the web start, {name}: {json.loads(out.stdout)}")


if __name__ == "__main__":
    main()
