"""Next-task and submit latency over real HTTP, 8 concurrent annotators, production server vs
Django's development server (the baseline: what `make demo` served with before), interleaved.

    .venv/bin/python bench/bench_http_queue.py [--tasks 3000] [--annotators 8] [--rounds 2]
        [--seconds 20]

A fresh deployment in a scratch folder (SQLite + filesystem broker, or the PostgreSQL server in
DATABASE_URL, where a fresh database is created): `manage.py migrate`, a ranking project with
N = 4 text candidates and k = 1, one Celery worker (it consumes the per-submit flag updates, as
in production). Each annotator is a thread with its own session that loops: GET the next task
(the page's fetch of its task fragment), POST the ranking as JSON. Prints p50/p95 per server
and the ratio runserver / gunicorn; never asserts anything.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PASSWORD = "pw-bench-quorum-1"

SETUP = """
from django.contrib.auth.models import User
from annotate.models import Candidate, Membership, Project, Prompt, Task, TaskCandidate
project = Project.objects.create(name="bench", mode="ranking", candidates_per_task=4,
    annotators_per_task=1, blind=True, ties_allowed=True)
prompts = Prompt.objects.bulk_create(Prompt(project=project, external_id=f"p{i}",
    text=f"Question {i}?") for i in range(TASKS))
cands = Candidate.objects.bulk_create(Candidate(project=project, prompt=p,
    external_id=f"{p.external_id}-{j}", model_name=f"m{j}", text=f"Answer {j}")
    for p in prompts for j in range(4))
by_prompt = {}
for c in cands:
    by_prompt.setdefault(c.prompt_id, []).append(c)
tasks = Task.objects.bulk_create(Task(project=project, prompt=p,
    candidate_key="-".join(str(c.pk) for c in sorted(by_prompt[p.pk], key=lambda c: c.pk)))
    for p in prompts)
TaskCandidate.objects.bulk_create(TaskCandidate(task=t, candidate=c, position=i)
    for t in tasks for i, c in enumerate(by_prompt[t.prompt_id]))
for i in range(ANNOTATORS):
    u = User.objects.create_user(f"ann{i}", password=PASSWORD)
    Membership.objects.create(project=project, user=u, role="annotator")
from annotate.table_stats import tables_analyze
tables_analyze()
print("project", project.pk)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{url} did not answer")


def _deploy(args) -> tuple[dict, int]:
    data_dir = Path(tempfile.mkdtemp(prefix="quorum-httpq-"))
    env = {**os.environ, "QUORUM_DATA_DIR": str(data_dir), "DJANGO_DEBUG": "0"}
    env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
    env.pop("CELERY_BROKER_URL", None)
    if env.get("DATABASE_URL", "").startswith("postgres"):
        name = f"quorum_bench_{uuid.uuid4().hex[:8]}"
        subprocess.run(["createdb", "-h", "127.0.0.1", "-U", "postgres", name], check=True)
        env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + name
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    subprocess.run([*manage, "collectstatic", "--noinput", "-v0"], cwd=REPO, env=env, check=True)
    script = (
        SETUP.replace("TASKS", str(args.tasks))
        .replace("ANNOTATORS", str(args.annotators))
        .replace("PASSWORD", repr(PASSWORD))
    )
    out = subprocess.run(
        [*manage, "shell", "-c", script], cwd=REPO, env=env, check=True, capture_output=True
    )
    project_id = int(out.stdout.decode().split("project")[-1].strip())
    return env, project_id


def _start(kind: str, env: dict, port: int) -> subprocess.Popen:
    if kind == "gunicorn":
        cmd = [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py"]
        env = {**env, "QUORUM_BIND": f"127.0.0.1:{port}", "QUORUM_WEB_LOG_LEVEL": "warning"}
    else:
        cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        env = {**env, "DJANGO_DEBUG": "1"}  # runserver serves static files only in DEBUG
    return subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


SUBMIT = re.compile(r'data-submit-url="([^"]+)"')
CAND = re.compile(r'data-candidate data-candidate-id="(\d+)"')


def _annotator(base: str, user: str, project_id: int, stop_at: float, out: dict) -> None:
    with httpx.Client(base_url=base, timeout=30) as client:
        page = client.get("/accounts/login/")
        token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        client.post(
            "/accounts/login/",
            data={"username": user, "password": PASSWORD, "csrfmiddlewaretoken": token},
        )
        csrf = client.cookies.get("csrftoken")
        while time.monotonic() < stop_at:
            t0 = time.perf_counter()
            frag = client.get(
                f"/projects/{project_id}/annotate/", headers={"X-Requested-With": "fetch"}
            )
            out["next"].append(time.perf_counter() - t0)
            url = SUBMIT.search(frag.text)
            cands = CAND.findall(frag.text)
            if not url or not cands:
                break  # the queue is empty
            t0 = time.perf_counter()
            response = client.post(
                url.group(1),
                json={"idempotency_key": uuid.uuid4().hex, "ranking": [[int(c)] for c in cands]},
                headers={"X-CSRFToken": csrf, "X-Requested-With": "fetch"},
            )
            out["submit"].append(time.perf_counter() - t0)
            if response.status_code not in (200, 201):
                out["errors"] += 1


def _measure(kind: str, env: dict, project_id: int, args) -> dict:
    port = _free_port()
    proc = _start(kind, env, port)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/accounts/login/")
        out = {"next": [], "submit": [], "errors": 0}
        stop_at = time.monotonic() + args.seconds
        threads = [
            threading.Thread(target=_annotator, args=(base, f"ann{i}", project_id, stop_at, out))
            for i in range(args.annotators)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out
    finally:
        _stop(proc)


def _pct(values: list[float], q: float) -> float:
    if len(values) < 2:
        return float("nan")
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=3000)
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    env, project_id = _deploy(args)
    worker = subprocess.Popen(
        [str(BIN / "celery"), "-A", "config", "worker", "-Q", "default", "--pool=solo"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    results: dict[str, dict] = {"gunicorn": {"next": [], "submit": [], "errors": 0}}
    results["runserver"] = {"next": [], "submit": [], "errors": 0}
    try:
        for _ in range(args.rounds):
            for kind in ("runserver", "gunicorn"):  # interleaved: the machine's load drifts
                got = _measure(kind, env, project_id, args)
                for key in ("next", "submit"):
                    results[kind][key] += got[key]
                results[kind]["errors"] += got["errors"]
    finally:
        _stop(worker)
        if env.get("DATABASE_URL", "").startswith("postgres"):
            name = env["DATABASE_URL"].rsplit("/", 1)[1]
            subprocess.run(["dropdb", "-h", "127.0.0.1", "-U", "postgres", name], check=False)
    db = "PostgreSQL" if env.get("DATABASE_URL", "").startswith("postgres") else "SQLite"
    print(
        f"{args.annotators} concurrent annotators over HTTP, {db}, {args.rounds} x {args.seconds:.0f} s per server"
    )
    print("| server | requests | next p50 | next p95 | submit p50 | submit p95 | errors |")
    print("|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        print(
            f"| {kind} | {len(r['next']) + len(r['submit'])} | {_pct(r['next'], 50):.0f} ms | "
            f"{_pct(r['next'], 95):.0f} ms | {_pct(r['submit'], 50):.0f} ms | "
            f"{_pct(r['submit'], 95):.0f} ms | {r['errors']} |"
        )
    g, b = results["gunicorn"], results["runserver"]
    print(
        "runserver / gunicorn p95: next "
        f"{_pct(b['next'], 95) / _pct(g['next'], 95):.2f}x, submit "
        f"{_pct(b['submit'], 95) / _pct(g['submit'], 95):.2f}x"
    )


if __name__ == "__main__":
    main()
