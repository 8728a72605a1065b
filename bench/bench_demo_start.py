"""Time from `make demo` (after the install step) to the first page, to the demo reward model
trained, and to every demo prompt pre-ranked, on a fresh data folder.

    .venv/bin/python bench/bench_demo_start.py [--port 8123] [--timeout 900]
    # the same for another checkout (e.g. a `git worktree` of an older commit, its .venv a
    # symlink to this one), first page only:
    .venv/bin/python bench/bench_demo_start.py --repo /tmp/quorum-before --first-page-only

Runs the real `make demo` (gunicorn + a Celery worker) in its own process group with a scratch
QUORUM_DATA_DIR, polls the login page over HTTP, and reads progress through `manage.py shell`.
Prints seconds since start for each milestone; stops everything at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROGRESS = """
import json
from annotate.models import Prompt, ModelScore
from workers.models import Job, ScoringRun
t = Job.objects.filter(name="quorum.train_demo_model").order_by("-id").first()
runs = list(ScoringRun.objects.values_list("status", flat=True))
print(json.dumps({"training": t.status if t else None, "progress": t.progress if t else 0,
  "runs": runs}))
"""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


def _progress(env: dict) -> dict:
    out = subprocess.run(
        [sys.executable, "manage.py", "shell", "-c", PROGRESS],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        return {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--repo", type=Path, default=REPO, help="checkout whose make demo runs")
    parser.add_argument("--first-page-only", action="store_true")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="quorum-demo-bench-"))
    env = {**os.environ, "QUORUM_DATA_DIR": str(data_dir)}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        env.pop(name, None)
    log = open(data_dir / "make-demo.log", "w")  # noqa: SIM115
    started = time.monotonic()
    proc = subprocess.Popen(
        ["make", "demo", f"PORT={args.port}"],
        cwd=args.repo,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    marks: dict[str, float] = {}
    url = f"http://127.0.0.1:{args.port}/accounts/login/"
    try:
        while time.monotonic() - started < args.timeout:
            if proc.poll() is not None:
                raise SystemExit(f"make demo exited {proc.returncode}; see {log.name}")
            if "first page" not in marks and _answers(url):
                marks["first page"] = time.monotonic() - started
                print(f"first page after {marks['first page']:.1f} s", flush=True)
                if args.first_page_only:
                    break
            if "first page" in marks:
                state = _progress(env)
                if state.get("training") == "done" and "model trained" not in marks:
                    marks["model trained"] = time.monotonic() - started
                    print(f"demo model trained after {marks['model trained']:.1f} s", flush=True)
                runs = state.get("runs") or []
                if "model trained" in marks and runs and all(r == "done" for r in runs):
                    marks["pre-ranked"] = time.monotonic() - started
                    print(f"every demo prompt pre-ranked after {marks['pre-ranked']:.1f} s")
                    break
                if state.get("training") == "failed":
                    raise SystemExit("demo training failed; see the admin's Jobs page")
            time.sleep(2)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    print(json.dumps({k: round(v, 1) for k, v in marks.items()}))


if __name__ == "__main__":
    main()
