"""Next-task and submit latency over real HTTP, 8 concurrent annotators, production server vs
Django's development server (the baseline: what `make demo` served with before), interleaved.

    .venv/bin/python bench/bench_http_queue.py [--tasks 3000] [--annotators 8] [--rounds 2]
        [--seconds 20] [--warmup 0] [--ports 8867,8868] [--db-prefix quorum_bench] [--against TREE]

A fresh deployment in a scratch folder (SQLite + filesystem broker, or the PostgreSQL server in
DATABASE_URL, where a fresh database is created): `manage.py migrate`, a ranking project with
N = 4 text candidates and k = 1, one Celery worker (it consumes the per-submit flag updates, as
in production). Each annotator is a thread with its own session that loops: GET the next task
(the page's fetch of its task fragment), POST the ranking as JSON. Prints p50/p95 per server
and the ratio runserver / gunicorn; never asserts anything.

``--against TREE`` (a worktree of another commit, same schema) compares this tree's gunicorn with
that tree's instead of runserver: each leg starts the tree's gunicorn and its own Celery worker
(PYTHONPATH and working directory the tree), legs alternated ABBA on the one database, the load
average printed per leg. ``--ports`` names the two ports to serve on (else free ones);
``--db-prefix`` the PostgreSQL database's name prefix.
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
        name = f"{args.db_prefix}_{uuid.uuid4().hex[:8]}"
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


def _start(kind: str, env: dict, port: int, tree: Path = REPO) -> subprocess.Popen:
    env = {**env, "PYTHONPATH": str(tree)}
    if kind == "runserver":
        cmd = [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"]
        env = {**env, "DJANGO_DEBUG": "1"}  # runserver serves static files only in DEBUG
    else:
        cmd = [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py"]
        env = {**env, "QUORUM_BIND": f"127.0.0.1:{port}", "QUORUM_WEB_LOG_LEVEL": "warning"}
    return subprocess.Popen(
        cmd,
        cwd=tree,
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


def _annotator(
    base: str, user: str, project_id: int, stop_at: float, out: dict, count_from: float = 0.0
) -> None:
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
            if t0 >= count_from:
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
            if t0 >= count_from:
                out["submit"].append(time.perf_counter() - t0)
            if response.status_code not in (200, 201):
                out["errors"] += 1


def _worker(env: dict, tree: Path = REPO) -> subprocess.Popen:
    return subprocess.Popen(
        [str(BIN / "celery"), "-A", "config", "worker", "-Q", "default", "--pool=solo"],
        cwd=tree,
        env={**env, "PYTHONPATH": str(tree)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _measure(kind: str, env: dict, project_id: int, args, port: int, tree: Path = REPO) -> dict:
    proc = _start(kind, env, port, tree)
    worker = _worker(env, tree) if args.against else None
    base = f"http://127.0.0.1:{port}"
    try:
        _wait(base + "/accounts/login/")
        out = {"next": [], "submit": [], "errors": 0}
        # Requests in the first --warmup seconds run but are not counted (workers booting).
        count_from = time.perf_counter() + args.warmup
        stop_at = time.monotonic() + args.warmup + args.seconds
        threads = [
            threading.Thread(
                target=_annotator, args=(base, f"ann{i}", project_id, stop_at, out, count_from)
            )
            for i in range(args.annotators)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        out["load"] = os.getloadavg()[0]
        out["connections"] = _connections(env)
        return out
    finally:
        _stop(proc)
        if worker is not None:
            _stop(worker)


def _connections(env: dict) -> str:
    """The database's open connections by state (PostgreSQL): what the servers hold idle."""
    url = env.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return "-"
    name = url.rsplit("/", 1)[1]
    sql = (
        "SELECT coalesce(state, '?') || ' ' || count(*) FROM pg_stat_activity "
        f"WHERE datname = '{name}' AND pid <> pg_backend_pid() GROUP BY state ORDER BY state"
    )
    out = subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", name, "-Atc", sql],
        capture_output=True,
        text=True,
        check=False,
    )
    return ", ".join(out.stdout.split("\n")).strip(", ")


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
    parser.add_argument("--warmup", type=float, default=0, help="seconds not counted per leg")
    parser.add_argument("--ports", default="", help="two ports, comma-separated")
    parser.add_argument("--db-prefix", default="quorum_bench")
    parser.add_argument("--against", type=Path, default=None, help="another commit's worktree")
    args = parser.parse_args()
    ports = [int(p) for p in args.ports.split(",")] if args.ports else [_free_port(), _free_port()]
    env, project_id = _deploy(args)
    # Without --against one worker serves both servers; with it each leg starts its tree's.
    worker = None if args.against else _worker(env)
    if args.against:
        legs = {"this": (REPO, ports[0]), "base": (args.against.resolve(), ports[1])}
    else:
        legs = {"runserver": (REPO, ports[0]), "gunicorn": (REPO, ports[1])}
    results = {kind: {"next": [], "submit": [], "errors": 0, "rounds": []} for kind in legs}
    try:
        for round_ in range(args.rounds):
            order = list(legs) if round_ % 2 == 0 else list(legs)[::-1]  # ABBA: load drifts
            for kind in order:
                tree, port = legs[kind]
                got = _measure(kind, env, project_id, args, port, tree)
                for key in ("next", "submit"):
                    results[kind][key] += got[key]
                results[kind]["errors"] += got["errors"]
                results[kind]["rounds"].append(got)
                print(
                    f"round {round_ + 1} {kind}: next p50 {_pct(got['next'], 50):.1f} / p95 "
                    f"{_pct(got['next'], 95):.1f} ms, submit p50 {_pct(got['submit'], 50):.1f} / "
                    f"p95 {_pct(got['submit'], 95):.1f} ms, {len(got['next'])} next, "
                    f"load {got['load']:.1f}, connections: {got['connections']}",
                    flush=True,
                )
    finally:
        if worker is not None:
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
    if args.against:
        a, b = results["this"], results["base"]
        for i, (ra, rb) in enumerate(zip(a["rounds"], b["rounds"], strict=True)):
            print(
                f"round {i + 1} this / base: next p50 "
                f"{_pct(ra['next'], 50) / _pct(rb['next'], 50):.2f}x, p95 "
                f"{_pct(ra['next'], 95) / _pct(rb['next'], 95):.2f}x; submit p50 "
                f"{_pct(ra['submit'], 50) / _pct(rb['submit'], 50):.2f}x, p95 "
                f"{_pct(ra['submit'], 95) / _pct(rb['submit'], 95):.2f}x"
            )
        return
    g, b = results["gunicorn"], results["runserver"]
    print(
        "runserver / gunicorn p95: next "
        f"{_pct(b['next'], 95) / _pct(g['next'], 95):.2f}x, submit "
        f"{_pct(b['submit'], 95) / _pct(g['submit'], 95):.2f}x"
    )


if __name__ == "__main__":
    main()
