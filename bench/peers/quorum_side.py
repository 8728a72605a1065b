"""Quorum's side of the peer benchmark: the workload of ``label_studio_bench.sh`` over HTTP.

    .venv/bin/python bench/peers/quorum_side.py [--tasks 10000] [--calls 200] [--threads 8]
        [--reps 3] [--out results.json]     (DATABASE_URL=postgres://... for PostgreSQL)

A fresh deployment in a scratch folder, served as in production: gunicorn with
``config/gunicorn.conf.py`` and one Celery worker (imports above ``QUORUM_ASYNC_IMPORT_ROWS``
rows and every dataset export are jobs on it). On PostgreSQL a private database
``quorum_peers_<hex>`` is created and dropped. Measured, as the peer script measures Label
Studio:

a) import of N ranking tasks (prompt + 4 text candidates), one API upload per rep, timed until
   the import job is done; the same file through ``manage.py import_project`` (the process's
   start-up included);
b) next task (the page's fetch of its task fragment), sequential and with T annotators at once,
   each a thread with its own login session; the task stays leased, as on the peer;
c) next -> submit loop, sequential and with T annotators; afterwards the tasks leased to more
   than k = 1 distinct annotators are counted in the database;
d) N tasks with one ranking each imported through the API, then exported through the API:
   raw (no denoising: every judgment's pairs, weighted majority) and denoised, timed from the
   request until the zip is downloaded; the raw judgments as stored through the API
   (``GET /api/projects/{id}/raw-export``, a zip) and ``manage.py export_project`` as extra rows;
e) the annotation page's weight: its HTML plus every script and stylesheet it references
   (module imports followed), raw and gzip -6.

Writes a JSON document of raw samples (seconds) and prints a short summary; never asserts a
timing.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from workload import write_quorum_jsonl  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PASSWORD = "pw-bench-peers-1"
pc = time.perf_counter

SETUP = """
from django.contrib.auth.models import User
from annotate.models import Project
from annotate.services import api_token_create
admin = User.objects.create_superuser("bench-admin", password=PASSWORD)
_, key = api_token_create(user=admin, name="bench")
for i in range(THREADS):
    User.objects.create_user(f"ann{i}", password=PASSWORD)
print("TOKEN", key)
"""

MEMBERS = """
from django.contrib.auth.models import User
from annotate.models import Membership
for i in range(THREADS):
    Membership.objects.get_or_create(project_id=PROJECT, user=User.objects.get(username=f"ann{i}"),
        defaults={"role": "annotator"})
"""

OVER_K = """
from django.db.models import Count
from annotate.models import Assignment, Judgment, Project
p = Project.objects.get(pk=PROJECT)
k = p.annotators_per_task
leased = (Assignment.objects.filter(task__project=p).values("task")
    .annotate(n=Count("annotator", distinct=True)).filter(n__gt=k).count())
judged = (Judgment.objects.filter(project=p, annotator__isnull=False).values("task")
    .annotate(n=Count("annotator", distinct=True)).filter(n__gt=k).count())
dup = Judgment.objects.filter(project=p).values("assignment").annotate(n=Count("id")).filter(
    assignment__isnull=False, n__gt=1).count()
print("OVERK", leased, judged, dup, Judgment.objects.filter(project=p, annotator__isnull=False).count())
"""

IMPORT_LEGS = """
import json
from annotate.models import ImportJob
from workers.models import Job
out = {}
for ij in ImportJob.objects.filter(pk__in=IDS):
    job = Job.objects.filter(name="quorum.import_file", kwargs__import_job_id=ij.pk).first()
    stamp = lambda t: t.timestamp() if t else None
    out[ij.pk] = {"created": stamp(ij.created_at), "finished": stamp(ij.finished_at),
        "published": stamp(job and job.published_at), "started": stamp(job and job.started_at)}
print("LEGS", json.dumps(out))
"""

JOBS_IDLE = """
from workers.models import Job
print("UNFINISHED", Job.objects.filter(status__in=Job.UNFINISHED).count())
"""


def _log(*a) -> None:
    print("[quorum]", *a, file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Deployment:
    """A scratch Quorum: data folder, database, gunicorn and one Celery worker."""

    def __init__(self, threads: int):
        self.threads = threads
        self.data_dir = Path(tempfile.mkdtemp(prefix="quorum-peers-"))
        env = {**os.environ, "QUORUM_DATA_DIR": str(self.data_dir), "DJANGO_DEBUG": "0"}
        env["DJANGO_SECRET_KEY"] = secrets.token_urlsafe(50)
        # The embedded broker under the data folder unless told (run.py: Redis beside PostgreSQL).
        env.pop("CELERY_BROKER_URL", None)
        if env.get("QUORUM_PEERS_BROKER"):
            env["CELERY_BROKER_URL"] = env["QUORUM_PEERS_BROKER"]
        self.db_name = None
        if env.get("DATABASE_URL", "").startswith("postgres"):
            # QUORUM_PEERS_DB_PREFIX: the scratch database's name prefix (a shared server).
            prefix = env.get("QUORUM_PEERS_DB_PREFIX", "quorum_peers")
            self.db_name = f"{prefix}_{uuid.uuid4().hex[:8]}"
            subprocess.run(
                ["createdb", "-h", "127.0.0.1", "-U", "postgres", self.db_name], check=True
            )
            env["DATABASE_URL"] = env["DATABASE_URL"].rsplit("/", 1)[0] + "/" + self.db_name
        self.env = env
        self.db = "PostgreSQL" if self.db_name else "SQLite"
        self.procs: list[subprocess.Popen] = []
        self.port = int(env.get("QUORUM_PEERS_PORT") or 0) or _free_port()
        self.base = f"http://127.0.0.1:{self.port}"

    def manage(self, *args: str, capture: bool = True) -> str:
        out = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=REPO,
            env=self.env,
            check=True,
            capture_output=capture,
            text=True,
        )
        return out.stdout if capture else ""

    def shell(self, script: str, **values) -> str:
        for key, value in values.items():
            script = script.replace(key, repr(value) if isinstance(value, str) else str(value))
        return self.manage("shell", "-c", script)

    def _spawn(self, cmd: list[str], env: dict) -> None:
        # QUORUM_PEERS_LOG_DIR: the servers' output goes there (one file each) for debugging.
        log_dir = os.environ.get("QUORUM_PEERS_LOG_DIR")
        out = subprocess.DEVNULL
        if log_dir:
            out = open(Path(log_dir) / f"{Path(cmd[0]).name}-{len(self.procs)}.log", "ab")  # noqa: SIM115
        self.procs.append(
            subprocess.Popen(
                cmd,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT if log_dir else subprocess.DEVNULL,
                start_new_session=True,
            )
        )

    def _check_broker(self) -> None:
        url = self.env.get("CELERY_BROKER_URL", "")
        if url.startswith("redis"):
            import redis

            waiting = redis.Redis.from_url(url).llen("default")
            if waiting:
                raise SystemExit(
                    f"{url}: {waiting} messages already wait in the 'default' queue; "
                    "give the benchmark a Redis database of its own"
                )

    def start(self) -> str:
        self._check_broker()
        self.manage("migrate", "--noinput", "-v0")
        self.manage("collectstatic", "--noinput", "-v0")
        token = (
            self.shell(SETUP, THREADS=self.threads, PASSWORD=PASSWORD).split("TOKEN")[-1].strip()
        )
        web_env = {
            **self.env,
            "QUORUM_BIND": f"127.0.0.1:{self.port}",
            "QUORUM_WEB_LOG_LEVEL": "warning",
        }
        self._spawn([str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py"], web_env)
        self._spawn(
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                "default",
                "--pool=solo",
                "-l",
                "warning",
            ],
            self.env,
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.base + "/accounts/login/", timeout=2).status_code == 200:
                    return token
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        raise SystemExit("gunicorn did not answer")

    def jobs_idle(self, timeout: float = 900) -> None:
        """Waits until the worker has no unfinished job (flag recomputes after an import)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if int(self.shell(JOBS_IDLE).split("UNFINISHED")[-1]) == 0:
                return
            time.sleep(1)
        raise SystemExit("the worker did not finish its jobs")

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
        for proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        if self.db_name:
            subprocess.run(
                ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", self.db_name],
                check=False,
            )
        subprocess.run(["rm", "-rf", str(self.data_dir)], check=False)


def _api(base: str, token: str) -> httpx.Client:
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=1800)


def _ok(response: httpx.Response, *codes: int) -> httpx.Response:
    if response.status_code not in (codes or (200, 201)):
        raise SystemExit(
            f"{response.request.method} {response.url} -> {response.status_code}: {response.text[:300]}"
        )
    return response


def _wait_import(api: httpx.Client, job: dict) -> dict:
    while job["status"] not in ("done", "failed"):
        # ?wait=: the server answers once the job is done (or after that many seconds); a
        # server without it answers at once and this polls every 0.1 s.
        t = pc()
        job = _ok(api.get(f"/api/imports/{job['id']}", params={"wait": 10})).json()
        if job["status"] not in ("done", "failed") and pc() - t < 0.1:
            time.sleep(0.1)
    if job["status"] != "done":
        raise SystemExit(f"import failed: {job['errors'][:3]}")
    return job


def api_import(
    api: httpx.Client, path: Path, name: str, stamps: list | None = None
) -> tuple[float, dict]:
    """Seconds from the upload until the import job is done, and the job.

    ``stamps`` (when given) gets the client's wall-clock times of the upload, its answer and
    the moment it saw the job done, with the import job's id (``import_legs`` adds the
    server's)."""
    t0, w0 = pc(), time.time()
    with open(path, "rb") as fh:
        response = api.post(
            "/api/imports",
            files={"file": (path.name, fh, "application/jsonl")},
            data={"project_name": name},
        )
    created = _ok(response).json()
    w1 = time.time()
    job = _wait_import(api, created)
    seconds = pc() - t0
    if stamps is not None:
        stamps.append({"id": job["id"], "upload": w0, "answered": w1, "seen": w0 + seconds})
    return seconds, job


def import_legs(dep: Deployment, stamps: list[dict]) -> list[dict]:
    """Seconds of each leg of the API imports in ``stamps`` (client and server share the
    clock): ``request`` the upload until its answer, ``queue`` the job's row until a worker
    started it (publish, broker, pick-up), ``run`` the import on the worker (started ->
    finished), ``notice`` until the client saw it done."""
    if not stamps:
        return []
    server = json.loads(dep.shell(IMPORT_LEGS, IDS=[s["id"] for s in stamps]).split("LEGS")[-1])
    out = []
    for s in stamps:
        row = server.get(str(s["id"])) or {}
        started, finished = row.get("started"), row.get("finished")
        if started is None or finished is None:  # ran inline (a small file)
            started = finished = s["answered"]
        out.append(
            {
                "request": round(s["answered"] - s["upload"], 3),
                "queue": round(max(started - s["answered"], 0.0), 3),
                "run": round(finished - started, 3),
                "notice": round(s["seen"] - finished, 3),
                "total": round(s["seen"] - s["upload"], 3),
            }
        )
    return out


def _stamp(value: str | None) -> float | None:
    """An API timestamp (ISO 8601) as seconds since the epoch."""
    if not value:
        return None
    from datetime import datetime

    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def api_export(
    api: httpx.Client,
    project_id: int,
    *,
    denoise: bool,
    phases: list | None = None,
    jsonl: list | None = None,
) -> tuple[float, int]:
    """Seconds from the export request until its zip is downloaded, and the zip's size.

    ``phases`` (when given) gets one dict per export, seconds of each leg measured against the
    export row's timestamps (client and server share the clock): ``request`` until the create
    call answered, ``queue`` from the row's creation until its build claimed it (broker,
    worker pick-up, imports), ``build`` the build itself (started -> finished), ``notice``
    until the status call (``?wait=``, answered by the server once the export is finished) saw
    it done, ``download`` the zip.

    ``jsonl`` (when given) gets ``(seconds, bytes)`` of the like-for-like comparison with
    Label Studio's one JSON file: the same export from its request until it was done, plus a
    download of its JSONL files only (``?format=jsonl``: the JSONL folders with the
    datasheet), made after the all-formats download and timed on its own."""
    t0, w0 = pc(), time.time()
    export = _ok(
        api.post(
            f"/api/projects/{project_id}/exports", json={"denoise": denoise, "include_media": False}
        )
    ).json()
    w1 = time.time()
    while export["status"] not in ("done", "failed", "cancelled"):
        # ?wait=: the server answers once the export is finished (or after that many seconds);
        # a server without it answers at once and this polls every 0.1 s.
        t = pc()
        export = _ok(api.get(f"/api/exports/{export['id']}", params={"wait": 10})).json()
        if export["status"] not in ("done", "failed", "cancelled") and pc() - t < 0.1:
            time.sleep(0.1)
    if export["status"] != "done":
        raise SystemExit(f"export failed: {export['error']}")
    w2 = time.time()
    size = 0
    with api.stream("GET", f"/api/exports/{export['id']}/download") as response:
        _ok(response)
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
    seconds, w3 = pc() - t0, time.time()
    done = w2 - w0  # request until a poll saw it done
    if jsonl is not None:
        t1, jsonl_size = pc(), 0
        with api.stream("GET", f"/api/exports/{export['id']}/download?format=jsonl") as response:
            _ok(response)
            for chunk in response.iter_bytes(1 << 20):
                jsonl_size += len(chunk)
        jsonl.append((round(done + pc() - t1, 3), jsonl_size))
    if phases is not None:
        created, started, finished = (
            _stamp(export[k]) for k in ("created_at", "started_at", "finished_at")
        )
        phases.append(
            {
                "request": round(w1 - w0, 3),
                "queue": round(started - created, 3),
                "build": round(finished - started, 3),
                "notice": round(w2 - finished, 3),
                "download": round(w3 - w2, 3),
                "total": round(seconds, 3),
            }
        )
    return seconds, size


def api_raw_export(api: httpx.Client, project_id: int) -> tuple[float, int]:
    """Seconds until the raw export (every judgment as stored, a zip) is downloaded; its size."""
    t0, size = pc(), 0
    with api.stream("GET", f"/api/projects/{project_id}/raw-export") as response:
        _ok(response)
        for chunk in response.iter_bytes(1 << 20):
            size += len(chunk)
    return pc() - t0, size


SUBMIT = re.compile(r'data-submit-url="([^"]+)"')
CAND = re.compile(r'data-candidate data-candidate-id="(\d+)"')


class Annotator:
    def __init__(self, base: str, user: str, project_id: int):
        self.client = httpx.Client(base_url=base, timeout=120)
        page = self.client.get("/accounts/login/")
        csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
        _ok(
            self.client.post(
                "/accounts/login/",
                data={"username": user, "password": PASSWORD, "csrfmiddlewaretoken": csrf},
            ),
            200,
            302,
        )
        self.csrf = self.client.cookies.get("csrftoken")
        self.url = f"/projects/{project_id}/annotate/"

    def next(self) -> str | None:
        response = self.client.get(self.url, headers={"X-Requested-With": "fetch"})
        return response.text if response.status_code == 200 else None

    def submit(self, fragment: str) -> bool:
        url, cands = SUBMIT.search(fragment), CAND.findall(fragment)
        if not url or not cands:
            return False
        order = [[int(c)] for c in cands]
        order.reverse()
        response = self.client.post(
            url.group(1),
            json={"idempotency_key": uuid.uuid4().hex, "ranking": order, "duration_ms": 4200},
            headers={"X-CSRFToken": self.csrf, "X-Requested-With": "fetch"},
        )
        return response.status_code in (200, 201)


def _split(n_total: int, threads: int) -> list[int]:
    return [n_total // threads + (1 if k < n_total % threads else 0) for k in range(threads)]


def run_threads(annotators: list[Annotator], n_total: int, step) -> tuple[dict, float]:
    """``step(annotator, samples)`` n_total times over the annotators at once; samples by name."""
    samples: dict[str, list[float]] = {"next": [], "submit": [], "errors": []}
    lock = threading.Lock()
    barrier = threading.Barrier(len(annotators) + 1)

    def work(ann: Annotator, count: int) -> None:
        mine: dict[str, list[float]] = {"next": [], "submit": [], "errors": []}
        barrier.wait()
        for _ in range(count):
            step(ann, mine)
        with lock:
            for key, values in mine.items():
                samples[key] += values

    threads = [
        threading.Thread(target=work, args=(a, c))
        for a, c in zip(annotators, _split(n_total, len(annotators)), strict=True)
    ]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = pc()
    for t in threads:
        t.join()
    return samples, pc() - t0


def step_next(ann: Annotator, out: dict) -> None:
    t0 = pc()
    ok = ann.next() is not None
    (out["next"] if ok else out["errors"]).append(pc() - t0)


def step_loop(ann: Annotator, out: dict) -> None:
    t0 = pc()
    fragment = ann.next()
    t1 = pc()
    if fragment is None:
        out["errors"].append(t1 - t0)
        return
    ok = ann.submit(fragment)
    t2 = pc()
    if not ok:
        out["errors"].append(t2 - t1)
        return
    out["next"].append(t1 - t0)
    out["submit"].append(t2 - t1)


_SCRIPT = re.compile(r"<script\b[^>]*\bsrc=[\"']([^\"']+)", re.S)
_LINK = re.compile(r"<link\b([^>]*)>", re.S)
_IMPORT = re.compile(r"""(?:\bfrom\s*|\bimport\s*\(?\s*)["'](\.{1,2}/[^"']+|/[^"']+)["']""")


def page_weight(ann: Annotator) -> dict:
    """The full annotation page and every script and stylesheet it loads, raw and gzip -6."""
    page = ann.client.get(ann.url)
    _ok(page)
    assets: list[str] = [m.group(1) for m in _SCRIPT.finditer(page.text)]
    for m in _LINK.finditer(page.text):
        attrs = m.group(1)
        href = re.search(r"href=[\"']([^\"']+)", attrs)
        if href and ("stylesheet" in attrs or "modulepreload" in attrs):
            assets.append(href.group(1))
    seen: dict[str, bytes] = {}
    while assets:
        url = assets.pop()
        if url in seen or url.startswith("http"):
            continue
        response = ann.client.get(url)
        seen[url] = response.content if response.status_code == 200 else b""
        if url.endswith(".js"):
            for ref in _IMPORT.findall(response.text):
                assets.append(
                    str(httpx.URL(str(httpx.URL(ann.client.base_url).join(url))).join(ref).path)
                )
    raw = len(page.content) + sum(len(b) for b in seen.values())
    gz = len(gzip.compress(page.content, 6)) + sum(len(gzip.compress(b, 6)) for b in seen.values())
    return {"bytes": raw, "gzip": gz, "html": len(page.content), "assets": sorted(seen)}


def _timed_cli(dep: Deployment, *args: str) -> float:
    t0 = pc()
    dep.manage(*args)
    return pc() - t0


def _measure(
    dep: Deployment, args, parts: set[str], R: dict, plain: Path, judged: Path, files: Path
) -> None:
    token = dep.start()
    api = _api(dep.base, token)
    _log(dep.db, "up at", dep.base)

    # a) import: API (timed until the job is done), then the CLI
    R["import_api"], projects, stamps = [], [], []
    for rep in range(args.reps if "import" in parts else 1):
        seconds, job = api_import(api, plain, f"import-{rep}", stamps)
        assert job["counts"]["tasks"] == args.tasks, job["counts"]
        R["import_api"].append(seconds)
        projects.append(job["project_id"])
        _log(f"import API rep {rep}: {seconds:.2f} s")
    R["import_api_phases"] = import_legs(dep, stamps)
    _log(f"import API legs: {R['import_api_phases']}")
    R["import_cli"] = []
    for rep in range(args.reps if "import" in parts else 0):
        R["import_cli"].append(
            _timed_cli(dep, "import_project", str(plain), "--project", f"cli-{rep}")
        )
        _log(f"import CLI rep {rep}: {R['import_cli'][-1]:.2f} s")
    main_project = projects[0]
    dep.shell(MEMBERS, THREADS=args.threads, PROJECT=main_project)
    dep.jobs_idle()

    if "queue" in parts:
        _measure_queue(dep, args, R, main_project)
    if "export" in parts:
        _measure_export(dep, args, R, api, judged, files)


def _measure_queue(dep: Deployment, args, R: dict, main_project: int) -> None:
    # b) next, c) next -> submit, sequential and concurrent
    anns = [Annotator(dep.base, f"ann{i}", main_project) for i in range(args.threads)]
    for ann in anns:  # warm-up, not counted (leases each annotator's first task)
        for _ in range(3):
            ann.next()
    got, wall = run_threads(anns[:1], args.calls, step_next)
    R["next_seq"], R["next_seq_errors"] = got["next"], len(got["errors"])
    got, wall = run_threads(anns, args.calls, step_next)
    R["next_conc"], R["next_conc_errors"] = got["next"], len(got["errors"])
    got, wall = run_threads(anns[:1], args.calls, step_loop)
    R["loop_seq_next"], R["loop_seq_submit"] = got["next"], got["submit"]
    R["loop_seq_errors"] = len(got["errors"])
    got, wall = run_threads(anns, args.calls, step_loop)
    R["loop_conc_next"], R["loop_conc_submit"] = got["next"], got["submit"]
    R["loop_conc_errors"], R["loop_conc_rps"] = (
        len(got["errors"]),
        2 * len(got["submit"]) / wall,
    )
    _log("next/submit done")
    over = dep.shell(OVER_K, PROJECT=main_project).split("OVERK")[-1].split()
    R["over_k_leased"], R["over_k_judged"], R["dup_judgments"], R["judgments"] = map(int, over)

    # e) page weight (an annotator's full page)
    R["page"] = page_weight(anns[0])
    for ann in anns:
        ann.client.close()


def _measure_export(dep: Deployment, args, R: dict, api: httpx.Client, judged: Path, files: Path):
    # d) N judged tasks: import, then exports raw and denoised
    seconds, job = api_import(api, judged, "export")
    assert job["counts"]["judgments"] == args.tasks, job["counts"]
    R["bulk_judged_import"], export_project = [seconds], job["project_id"]
    dep.jobs_idle()  # the flags recompute the import enqueued
    R["export_raw"], R["export_denoised"], R["export_cli_raw"] = [], [], []
    R["export_stored_api"], R["export_raw_phases"], R["export_denoised_phases"] = [], [], []
    for rep in range(args.reps):
        seconds, size = api_export(
            api, export_project, denoise=False, phases=R["export_raw_phases"]
        )
        R["export_raw"].append(seconds)
        R["export_raw_mb"] = round(size / 1e6, 2)
        jsonl: list = []
        seconds, size = api_export(
            api, export_project, denoise=True, phases=R["export_denoised_phases"], jsonl=jsonl
        )
        R["export_denoised"].append(seconds)
        R["export_denoised_mb"] = round(size / 1e6, 2)
        R.setdefault("export_denoised_jsonl", []).append(jsonl[0][0])
        R["export_denoised_jsonl_mb"] = round(jsonl[0][1] / 1e6, 2)
        seconds, size = api_raw_export(api, export_project)
        R["export_stored_api"].append(seconds)
        R["export_stored_api_mb"] = round(size / 1e6, 2)
        out_dir = files / f"raw-{rep}"
        R["export_cli_raw"].append(_timed_cli(dep, "export_project", "export", str(out_dir)))
        _log(
            f"export rep {rep}: raw {R['export_raw'][-1]:.2f} s, denoised "
            f"{R['export_denoised'][-1]:.2f} s, raw judgments as stored "
            f"{R['export_stored_api'][-1]:.2f} s; phases raw {R['export_raw_phases'][-1]}, "
            f"denoised {R['export_denoised_phases'][-1]}"
        )
    R["cli_help"] = [_timed_cli(dep, "help") for _ in range(3)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--parts", default="import,queue,export", help="for development: a subset of these"
    )
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    # A SIGTERM (run.py's timeout, a supervisor) ends through the finally below, so gunicorn and
    # the worker, each in a session of its own, are stopped and the scratch database dropped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    dep = Deployment(args.threads)
    files = Path(tempfile.mkdtemp(prefix="quorum-peers-files-"))
    plain = write_quorum_jsonl(files / "tasks.jsonl", args.tasks, judged=False)
    judged = write_quorum_jsonl(files / "judged.jsonl", args.tasks, judged=True)
    R: dict = {"db": dep.db, "tasks": args.tasks, "calls": args.calls, "threads": args.threads}
    R["parts"] = args.parts
    R["payload_mb"] = round(plain.stat().st_size / 1e6, 2)
    try:
        _measure(dep, args, parts, R, plain, judged, files)
    finally:
        dep.stop()
        subprocess.run(["rm", "-rf", str(files)], check=False)
    text = json.dumps(R, indent=1)
    if args.out:
        args.out.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
