"""End-to-end harness: Quorum deployed the way README.md and docs/deploy.md start it.

Each test module gets its own deployment: a fresh QUORUM_DATA_DIR, a database (the SQLite file
in that folder, or a fresh PostgreSQL database when DATABASE_URL points at a server), a broker
(the filesystem default, or the Redis URL in CELERY_BROKER_URL, purged first), and separate OS
processes for gunicorn (``config/gunicorn.conf.py``, DEBUG off) and the Celery worker. Tests
talk to it only through HTTP, headless Chromium and ``manage.py`` subprocesses.

This process must never load Django or the Celery app: run the suite in its own pytest
process with ``-p no:django`` (``make test`` does); the session ends by checking that neither
``celery`` nor ``config.celery`` was imported.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse, urlunparse

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
PYTHON = sys.executable
PASSWORD = "pw-e2e-quorum-1"
ADMIN = "admin"
ANNOTATORS = ("ann1", "ann2", "ann3")
REVIEWER = "rev1"
CHROMIUM = os.environ.get("QUORUM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Job-system knobs (issue 8): a fast sweep and heartbeat so faults resolve within seconds.
JOB_ENV = {
    "QUORUM_ASYNC_IMPORT_ROWS": "5",
    "QUORUM_JOB_SWEEP_SECONDS": "1",
    "QUORUM_JOB_HEARTBEAT_SECONDS": "5",
    "QUORUM_JOB_REPUBLISH_SECONDS": "5",
}
# Variables of the test process that must not leak into the deployment.
SCRUBBED = (
    "DJANGO_DEBUG",
    "DJANGO_SETTINGS_MODULE",
    "QUORUM_FAULT_EXPORT_DELAY",
    "QUORUM_MEDIA_ROOT",
    "CELERY_RESULT_BACKEND",
    "CELERY_TASK_ALWAYS_EAGER",
    "DJANGO_ALLOW_ASYNC_UNSAFE",
)
SKIP_WITH_DJANGO = (
    "end-to-end tests run in their own pytest process without pytest-django: "
    "python -m pytest -p no:django tests/e2e (make test does)"
)


# --------------------------------------------------------------------------- session checks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not config.pluginmanager.hasplugin("django"):
        return
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.skip(reason=SKIP_WITH_DJANGO))


@pytest.fixture(scope="session", autouse=True)
def _no_celery_app_in_this_process(request) -> Iterator[None]:
    """The test process is a client: it never imports the Celery app (issue 8)."""
    yield
    if request.config.pluginmanager.hasplugin("django"):
        return
    loaded = sorted(m for m in ("celery", "config.celery") if m in sys.modules)
    assert not loaded, f"the e2e test process imported {loaded}; it must stay a client"


# --------------------------------------------------------------------------- processes


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """A long-running subprocess in its own process group, logging to a file."""

    def __init__(self, name: str, cmd: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.cmd = cmd
        self.log = log
        self._fh = open(log, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.alive():
            os.killpg(self.proc.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole process group (the worker and any child it forked)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._fh.close()

    def stop(self, timeout: float = 20) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=timeout)
        self.kill()


def wait_for(
    what: str,
    check: Callable[[], Any],
    *,
    timeout: float,
    interval: float = 0.5,
    seen: list | None = None,
) -> Any:
    """Polls ``check`` until it returns something truthy; fails naming ``what`` and the last
    value ``check`` returned (or the last item of ``seen``, where ``check`` records state)."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() > deadline:
            shown = seen[-1] if seen else last
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what} (last: {shown!r})")
        time.sleep(interval)


def reload_until(page, what: str, check: Callable[[], Any], *, timeout: float) -> Any:
    """Reloads a browser page until ``check`` (run after each reload) returns something."""

    def probe() -> Any:
        page.reload()
        return check()

    return wait_for(what, probe, timeout=timeout, interval=1.0)


# --------------------------------------------------------------------------- deployment


class Deployment:
    """One Quorum installation: data folder, database, broker, web and worker processes."""

    def __init__(self, root: Path, env: dict[str, str]):
        self.root = root
        self.logs = root / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.web: Service | None = None
        self.workers: list[Service] = []
        self.commands: list[str] = []

    # -- manage.py ---------------------------------------------------------------------------

    def manage(
        self,
        *args: str,
        env: dict[str, str | None] | None = None,
        check: bool = True,
        timeout: float = 180,
    ) -> subprocess.CompletedProcess:
        """Runs ``python manage.py ARGS`` with the deployment's env (``None`` unsets)."""
        run_env = dict(self.env)
        for key, value in (env or {}).items():
            if value is None:
                run_env.pop(key, None)
            else:
                run_env[key] = value
        result = subprocess.run(
            [PYTHON, "manage.py", *args],
            cwd=REPO,
            env=run_env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        self.commands.append(
            f"$ manage.py {' '.join(args)[:200]}\n-> exit {result.returncode}\n"
            f"{result.stdout[-2000:]}{result.stderr[-4000:]}"
        )
        if check and result.returncode != 0:
            pytest.fail(
                f"manage.py {args[0]} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
            )
        return result

    def shell(self, code: str) -> Any:
        """Runs ``code`` in ``manage.py shell``; it must print one JSON value last."""
        result = self.manage("shell", "--no-imports", "-c", code)
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        if not lines:
            pytest.fail(f"manage.py shell printed nothing:\n{result.stderr}")
        return json.loads(lines[-1])

    # -- processes ---------------------------------------------------------------------------

    def start_web(self) -> Service:
        env = {**self.env, "QUORUM_BIND": f"127.0.0.1:{self.port}", "QUORUM_WEB_WORKERS": "2"}
        self.web = Service(
            "web",
            [str(BIN / "gunicorn"), "-c", "config/gunicorn.conf.py", "config.wsgi"],
            env,
            self.logs / "web.log",
        )

        def answers() -> bool:
            if not self.web.alive():
                pytest.fail(f"gunicorn exited early:\n{self.web.output()[-5000:]}")
            try:
                return httpx.get(f"{self.base_url}/accounts/login/", timeout=5).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for("the web server to answer", answers, timeout=90)
        return self.web

    def start_worker(self, extra_env: dict[str, str] | None = None) -> Service:
        n = len(self.workers) + 1
        worker = Service(
            f"worker{n}",
            [
                str(BIN / "celery"),
                "-A",
                "config",
                "worker",
                "-Q",
                "default,gpu",
                "--pool=solo",
                "--loglevel=INFO",
                "-n",
                f"e2e{n}-{secrets.token_hex(3)}@%h",
            ],
            {**self.env, **(extra_env or {})},
            self.logs / f"worker{n}.log",
        )
        self.workers.append(worker)

        def ready() -> bool:
            if not worker.alive():
                pytest.fail(f"worker exited early:\n{worker.output()[-5000:]}")
            return " ready." in worker.output()

        wait_for("the Celery worker to be ready", ready, timeout=120)
        return worker

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.web is not None:
            self.web.stop()

    def report(self, lines: int = 120) -> str:
        """The tails of every log and the manage.py commands run, for a failure report."""
        parts = [f"deployment folder: {self.root}"]
        for log in sorted(self.logs.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            tail = [line for line in text if not _QUIET_ACCESS.search(line)][-lines:]
            parts.append(f"----- {log.name} (last {len(tail)} lines)\n" + "\n".join(tail))
        parts.append("----- manage.py commands\n" + "\n".join(self.commands[-15:]))
        return "\n".join(parts)

    # -- HTTP --------------------------------------------------------------------------------

    def client(self, username: str, password: str = PASSWORD) -> httpx.Client:
        """An HTTP session logged in through the login form (CSRF like a browser)."""
        client = httpx.Client(base_url=self.base_url, timeout=30)
        page = client.get("/accounts/login/")
        token = csrf_from_html(page.text)
        response = client.post(
            "/accounts/login/",
            data={"username": username, "password": password, "csrfmiddlewaretoken": token},
        )
        assert response.status_code == 302, f"login of {username} failed: {response.status_code}"
        return client


# gunicorn access-log lines of successful requests: noise in a failure report.
_QUIET_ACCESS = re.compile(r'" [23]\d\d \d+ "')


def csrf_from_html(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert match, "no CSRF token in the page"
    return match.group(1)


def _postgres_database(url: str, name: str) -> tuple[str, Callable[[], None]]:
    """Creates database ``name`` on the server of ``url`` (same user); returns its URL and a
    function that drops it."""
    import psycopg

    parsed = urlparse(url)
    admin_url = urlunparse(parsed._replace(path="/postgres"))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunparse(parsed._replace(path=f"/{name}")), drop


def _purge_redis(url: str) -> None:
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5)
    try:
        client.flushdb()
    finally:
        client.close()


@pytest.fixture(scope="session")
def e2e_base(tmp_path_factory) -> Path:
    """Where deployments live: under QUORUM_DATA_DIR when set (make test sets it)."""
    base = os.environ.get("QUORUM_DATA_DIR")
    if base:
        path = Path(base) / "e2e"
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("e2e")


@pytest.fixture(scope="session")
def collected_static(e2e_base) -> Path:
    """``collectstatic`` once per session; each deployment gets a copy of the folder."""
    root = e2e_base / f"static-{os.getpid()}"
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
    env.update(QUORUM_DATA_DIR=str(root))
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    result = subprocess.run(
        [PYTHON, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    yield root / "static"
    shutil.rmtree(root, ignore_errors=True)


def _users_code() -> str:
    return (
        "import json\n"
        "from django.contrib.auth import get_user_model\n"
        "User = get_user_model()\n"
        f"User.objects.create_superuser({ADMIN!r}, 'admin@example.org', {PASSWORD!r})\n"
        f"for name in {[*ANNOTATORS, REVIEWER]!r}:\n"
        f"    User.objects.create_user(name, password={PASSWORD!r})\n"
        "print(json.dumps(sorted(User.objects.values_list('username', flat=True))))\n"
    )


DeployFactory = Callable[..., Deployment]
LIVE: list[Deployment] = []  # running deployments, whose logs a failure report shows


@pytest.fixture(scope="module")
def deploy(request, e2e_base, collected_static) -> Iterator[DeployFactory]:
    """Factory: ``deploy(broker_url=..., worker=True, worker_env=..., env=...)`` -> a running
    Deployment (``env``: for every process; ``worker_env``: for the first worker only).

    ``broker_url``: ``None`` follows CELERY_BROKER_URL (unset: the filesystem default);
    ``"filesystem://"`` sets it explicitly; any other URL is used as given.
    """
    made: list[tuple[Deployment, list[Callable[[], None]]]] = []
    module = request.module.__name__.rsplit(".", 1)[-1]
    failed_before = request.session.testsfailed

    def make(
        *,
        broker_url: str | None = None,
        worker: bool = True,
        worker_env: dict[str, str] | None = None,
        env: dict[str, str] | None = None,
    ) -> Deployment:
        cleanups: list[Callable[[], None]] = []
        root = e2e_base / f"{module}-{secrets.token_hex(4)}"
        root.mkdir()
        extra = env or {}
        env = {k: v for k, v in os.environ.items() if k not in SCRUBBED}
        env.update(JOB_ENV)
        env.update(extra)
        env.update(
            QUORUM_DATA_DIR=str(root),
            # Shared by the deployment's processes, like a production key (the web server
            # refuses the public development key).
            DJANGO_SECRET_KEY=secrets.token_urlsafe(50),
            QUORUM_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        database_url = os.environ.get("DATABASE_URL", "")
        if database_url.startswith(("postgres://", "postgresql://")):
            url, drop = _postgres_database(database_url, f"quorum_e2e_{secrets.token_hex(6)}")
            env["DATABASE_URL"] = url
            cleanups.append(drop)
        else:
            env.pop("DATABASE_URL", None)
        broker = broker_url if broker_url is not None else os.environ.get("CELERY_BROKER_URL")
        if broker:
            env["CELERY_BROKER_URL"] = broker
            if broker.startswith("redis"):
                _purge_redis(broker)
        else:
            env.pop("CELERY_BROKER_URL", None)
        deployment = Deployment(root, env)
        made.append((deployment, cleanups))
        LIVE.append(deployment)
        shutil.copytree(collected_static, root / "static")
        deployment.manage("migrate", "--noinput", "-v0")
        deployment.shell(_users_code())
        deployment.start_web()
        if worker:
            deployment.start_worker(worker_env)
        return deployment

    yield make
    failed = request.session.testsfailed > failed_before  # keep the folders of a failed module
    for deployment, cleanups in made:
        LIVE.remove(deployment)
        deployment.stop()
        for cleanup in cleanups:
            cleanup()
        if not failed:
            shutil.rmtree(deployment.root, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """A failing e2e test's report carries the logs of the deployments still running."""
    report = yield
    if report.failed and call.when in ("setup", "call"):
        for deployment in LIVE:
            report.sections.append(("quorum deployment", deployment.report()))
    return report


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="session")
def browser() -> Iterator:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"e2e tests need Chromium at {CHROMIUM} (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


def open_page(browser, deployment: Deployment, username: str):
    """A fresh browser context logged in as ``username``; JavaScript errors are collected in
    ``page.errors``."""
    context = browser.new_context(
        viewport={"width": 1280, "height": 900}, base_url=deployment.base_url
    )
    context.set_default_timeout(20_000)
    page = context.new_page()
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(f"page error: {exc}"))
    page.on(
        "console",
        lambda msg: (
            page.errors.append(f"console error: {msg.text}")
            if msg.type == "error" and "Failed to load resource" not in msg.text
            else None
        ),
    )
    page.on(
        "response",
        lambda r: (
            page.errors.append(f"HTTP {r.status} for {r.request.method} {r.url}")
            if r.status >= 500
            else None
        ),
    )
    page.goto("/accounts/login/?next=/")
    page.fill("#id_username", username)
    page.fill("#id_password", PASSWORD)
    page.press("#id_password", "Enter")
    page.wait_for_url("**/")
    return page


# --------------------------------------------------------------------------- project set-up

MEMBERS_CODE = """
import json
from django.contrib.auth import get_user_model
from annotate.models import Membership, Project
project = Project.objects.get(name=%r)
for name, role in %r:
    Membership.objects.get_or_create(
        project=project, user=get_user_model().objects.get(username=name), defaults={"role": role}
    )
print(json.dumps(project.pk))
"""


def add_members(deployment: Deployment, project_name: str) -> int:
    """Makes the annotators and the reviewer members of a project; returns its id."""
    roles = [(name, "annotator") for name in ANNOTATORS] + [(REVIEWER, "reviewer")]
    return deployment.shell(MEMBERS_CODE % (project_name, roles))


def import_file(deployment: Deployment, path: Path, project_name: str) -> int:
    """``manage.py import_project``, then members; returns the project id."""
    deployment.manage("import_project", str(path), "--project", project_name)
    return add_members(deployment, project_name)


def export_row(html: str, version: int) -> tuple[str, str]:
    """(status, error) of an export version on the project's Exports page."""
    match = re.search(rf"<td>v{version}</td>\s*<td>(\w+)(.*?)</td>", html, re.S)
    if not match:
        return "", ""
    error = re.search(r'<span class="error">(.*?)</span>', match.group(2), re.S)
    return match.group(1), error.group(1).strip() if error else ""


def start_export(client: httpx.Client, project_id: int) -> httpx.Response:
    """Posts the project's Exports form as a browser would; returns the page it leads to."""
    url = f"/curation/projects/{project_id}/exports/"
    token = csrf_from_html(client.get(url).text)
    return client.post(
        url,
        data={
            "csrfmiddlewaretoken": token,
            "denoise": "on",
            "use_decisions": "on",
            "include_media": "on",
            "splits": "train=1.0",
            "seed": "0",
        },
        follow_redirects=True,
    )
