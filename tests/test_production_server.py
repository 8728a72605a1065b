"""The production web server: gunicorn with config/gunicorn.conf.py, DEBUG off, whitenoise.

One real gunicorn process (two workers) per module, against the test database, started the way
docs/deploy.md says: ``collectstatic`` then ``gunicorn -c config/gunicorn.conf.py``.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def _server_env(data_dir: Path) -> dict[str, str]:
    from django.db import connection

    env = dict(os.environ)
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env["DATABASE_URL"] = (
            f"postgres://{db['USER'] or ''}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    else:
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    env["QUORUM_DATA_DIR"] = str(data_dir)
    env["DJANGO_DEBUG"] = "0"
    env["DJANGO_SECRET_KEY"] = "production-server-test-key-" + "x" * 40
    env["QUORUM_WEB_WORKERS"] = "2"
    env.pop("QUORUM_WEB_THREADS", None)
    return env


@pytest.fixture(scope="module")
def server(django_db_setup, tmp_path_factory):
    """Base URL of a gunicorn process serving the test database; stopped after the module."""
    data_dir = tmp_path_factory.mktemp("production-server")
    port = _free_port()
    env = _server_env(data_dir)
    env["QUORUM_BIND"] = f"127.0.0.1:{port}"
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"],
        cwd=REPO,
        env=env,
        check=True,
        timeout=120,
    )
    log = data_dir / "gunicorn.log"
    with open(log, "w") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "config/gunicorn.conf.py"],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{log.read_text()}")
            try:
                _get(f"{base}/accounts/login/")
                break
            except OSError:
                if time.time() > deadline:
                    raise RuntimeError(
                        f"gunicorn not answering after 60 s:\n{log.read_text()}"
                    ) from None
                time.sleep(0.2)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def test_it_serves_the_login_page(server, transactional_db):
    status, _, body = _get(f"{server}/accounts/login/")

    assert status == 200
    assert b'name="password"' in body


def test_it_serves_the_annotation_pages_javascript(server, transactional_db):
    template = (REPO / "templates" / "annotate" / "work.html").read_text()
    assert "{% static 'annotate/app.js' %}" in template

    status, headers, body = _get(f"{server}/static/annotate/app.js")

    assert status == 200
    assert headers["Content-Type"].startswith("text/javascript")
    assert b"TaskSession" in body


def test_it_serves_the_modules_the_annotation_script_imports(server, transactional_db):
    _, _, body = _get(f"{server}/static/annotate/app.js")
    modules = re.findall(rb'from "\./([\w.-]+\.js)"', body)
    assert modules

    for module in modules:
        status, headers, _ = _get(f"{server}/static/annotate/{module.decode()}")
        assert (module, status) == (module, 200)
        assert headers["Content-Type"].startswith("text/javascript")


def test_it_answers_404_without_the_debug_page(server, transactional_db):
    status, _, body = _get(f"{server}/no-such-page/")

    assert status == 404
    assert b"DEBUG = True" not in body
    assert b"URLconf" not in body


def test_it_answers_404_for_a_missing_static_file(server, transactional_db):
    status, _, body = _get(f"{server}/static/annotate/no-such-file.js")

    assert status == 404
    assert b"DEBUG = True" not in body
