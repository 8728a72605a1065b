"""Shared fixtures: users in every role, a real Celery worker process, temp media."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _media_root(request, tmp_path):
    """Each test gets its own MEDIA_ROOT (skipped for pure tests run with -p no:django)."""
    if not request.config.pluginmanager.hasplugin("django"):
        return None
    settings = request.getfixturevalue("settings")
    # PBKDF2 costs ~0.3 s per user here; tests do not need slow hashes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    # Database sessions in this process even where the broker is Redis: the Redis session store
    # (annotate/session_store.py) re-reads its cache epoch once a second per process, so the
    # statement-count tests would count one query more or less by the clock. Its own tests
    # select it (tests/annotate/test_session_store.py); the deployed processes of tests/e2e run
    # with it whenever their broker is Redis.
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.db"
    settings.MEDIA_ROOT = str(tmp_path / "media")
    Path(settings.MEDIA_ROOT).mkdir()
    return settings.MEDIA_ROOT


@pytest.fixture
def users(db):
    """annotator, reviewer, admin (project admin), staff, outsider (annotator elsewhere)."""
    from tests.factories import make_user

    return {
        "annotator": make_user("ann"),
        "annotator2": make_user("ann2"),
        "reviewer": make_user("rev"),
        "admin": make_user("padmin"),
        "staff": make_user("staff", staff=True),
        "outsider": make_user("outsider"),
    }


def is_postgres() -> bool:
    from django.db import connection

    return connection.vendor == "postgresql"


class WorkerProcess:
    """A real ``celery worker`` subprocess against the test database and broker."""

    def __init__(
        self,
        *,
        queues: str = "default,gpu",
        pool: str = "solo",
        extra_env: dict | None = None,
        data_dir: Path,
    ):
        from django.db import connection

        self.queues = queues
        self.pool = pool
        self.env = dict(os.environ)
        db = connection.settings_dict
        if connection.vendor == "postgresql":
            self.env["DATABASE_URL"] = (
                f"postgres://{db['USER'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
            )
        else:
            self.env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
        self.env["QUORUM_DATA_DIR"] = str(data_dir)
        from django.conf import settings

        self.env["QUORUM_MEDIA_ROOT"] = str(settings.MEDIA_ROOT)
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.log = data_dir / f"worker-{time.time_ns()}.log"

    def start(self) -> WorkerProcess:
        cmd = [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            self.queues,
            f"--pool={self.pool}",
            "--concurrency=1",
            "--loglevel=INFO",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
        ]
        self._fh = open(self.log, "w")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self.env,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.time() + 60
        while time.time() < deadline:
            if "ready" in self.log.read_text():
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited early:\n{self.log.read_text()}")
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready after 60 s:\n{self.log.read_text()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if getattr(self, "_fh", None):
            self._fh.close()

    def output(self) -> str:
        return self.log.read_text()


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path, settings):
    """Factory for worker subprocesses; the test's app shares the broker configured by env.

    With the filesystem broker each test gets its own broker folders (a fresh QUORUM_DATA_DIR
    would give the worker different folders than this process, so both use ``settings``').
    """
    from config.celery import app

    data_dir = Path(settings.DATA_DIR)
    workers: list[WorkerProcess] = []

    def start(**kwargs) -> WorkerProcess:
        worker = WorkerProcess(data_dir=data_dir, **kwargs).start()
        workers.append(worker)
        return worker

    if app.conf.broker_url.startswith("filesystem"):
        _purge_filesystem_broker(data_dir)
    else:
        app.control.purge()
    yield start
    for w in workers:
        w.stop()


def _purge_filesystem_broker(data_dir: Path) -> None:
    for sub in ("queue", "processed"):
        folder = data_dir / "broker" / sub
        if folder.is_dir():
            for f in folder.iterdir():
                f.unlink(missing_ok=True)
