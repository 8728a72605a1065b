"""The Redis-backed session store (annotate/session_store.py, issue 13).

Runs against a private ``redis-server`` (skipped where none is installed), a closed port and a
socket that accepts connections and never answers (a frozen Redis), whatever the suite's own
database and broker are.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time

import pytest
from django.contrib.sessions.models import Session
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate import session_store
from tests.factories import make_user

TIMEOUT_MS = 50
# The most a request may spend on an unreachable Redis: the timeout, plus scheduling slack on a
# loaded machine (a read without a timeout would hang for ever).
BUDGET_S = TIMEOUT_MS / 1000 + 0.45


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Blackhole:
    """Accepts connections and never answers, as a frozen (SIGSTOPped) Redis does."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", str(tmp_path_factory.mktemp("redis"))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 20
    while True:
        try:
            if redis.Redis.from_url(url, socket_timeout=1).ping():
                break
        except redis.RedisError:
            if time.monotonic() > deadline:
                proc.kill()
                raise
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def store(settings):
    """Selects the store; ``store(url)`` points it at a Redis (or at something that is not)."""
    settings.SESSION_ENGINE = "annotate.session_store"
    settings.QUORUM_SESSION_REDIS_TIMEOUT_MS = TIMEOUT_MS
    session_store.reset_for_tests()

    def point(url: str) -> None:
        settings.QUORUM_SESSION_REDIS_URL = url

    yield point
    session_store.reset_for_tests()


def _raw(redis_url: str, session_key: str) -> bytes | None:
    import redis

    return redis.Redis.from_url(redis_url).get(session_store.PREFIX + session_key)


def _home(client: Client):
    return client.get(reverse("home"))


def _session_queries(ctx) -> list[str]:
    """Session reads but the epoch's (one a second per process)."""
    return [
        q["sql"]
        for q in ctx.captured_queries
        if "django_session" in q["sql"] and session_store.EPOCH_KEY not in q["sql"]
    ]


def test_a_session_written_is_read_back_from_redis(db, store, redis_url):
    store(redis_url)
    user = make_user("s1")
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    assert _raw(redis_url, key).startswith(session_store.current_epoch().encode() + b"|")

    with CaptureQueriesContext(connection) as ctx:
        response = _home(client)
    assert response.status_code == 200
    assert response.wsgi_request.user == user
    # Read from Redis: no session query.
    assert _session_queries(ctx) == []

    # A copy that is gone (evicted) is read from the database and cached again.
    import redis

    redis.Redis.from_url(redis_url).delete(session_store.PREFIX + key)
    assert _home(client).wsgi_request.user == user
    assert _raw(redis_url, key) is not None

    # Data saved later is what the next request reads.
    session = session_store.SessionStore(key)
    session["note"] = "kept"
    session.save()
    assert session_store.SessionStore(key).load()["note"] == "kept"


def test_a_forged_cache_entry_is_no_session(db, store, redis_url):
    """The cached copy is the signed session_data: writing Redis does not forge a login."""
    import redis

    store(redis_url)
    user = make_user("s2")
    key = "f" * 32
    payload = json.dumps({"_auth_user_id": str(user.pk)})
    forged = f"{session_store.current_epoch()}|{time.time() + 3600:.0f}|{payload}"
    redis.Redis.from_url(redis_url).set(session_store.PREFIX + key, forged)
    client = Client()
    client.cookies["sessionid"] = key
    assert not _home(client).wsgi_request.user.is_authenticated


@pytest.mark.parametrize("kind", ["closed port", "frozen"])
def test_an_unreachable_redis_falls_back_to_the_database_within_the_timeout(db, store, kind):
    if kind == "closed port":
        hole, url = None, f"redis://127.0.0.1:{_free_port()}/0"
    else:
        hole = Blackhole()
        url = hole.url
    try:
        store(url)
        user = make_user("s3")
        client = Client()
        client.force_login(user)  # saved to the database; the cache write fails
        key = client.cookies["sessionid"].value
        assert Session.objects.filter(session_key=key).exists()

        session_store.reset_for_tests()  # no back-off yet: the next read tries Redis
        started = time.monotonic()
        loaded = session_store.SessionStore(key).load()
        assert time.monotonic() - started < BUDGET_S
        assert loaded["_auth_user_id"] == str(user.pk)

        # Backing off: the following requests do not wait on Redis at all.
        connects = len(hole.accepted) if hole else 0
        for _ in range(5):
            started = time.monotonic()
            response = _home(client)
            assert response.status_code == 200
            assert response.wsgi_request.user == user
            assert time.monotonic() - started < BUDGET_S
        if hole:
            assert len(hole.accepted) == connects
    finally:
        if hole:
            hole.close()


def test_a_logout_while_redis_is_unreachable_rejects_the_old_cookie_once_redis_is_back(
    db, store, redis_url
):
    store(redis_url)
    user = make_user("s4")
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    assert _home(client).wsgi_request.user == user
    assert _raw(redis_url, key) is not None

    hole = Blackhole()
    try:
        store(hole.url)  # Redis frozen: the logout cannot touch the cached copy
        response = client.post(reverse("logout"))
        assert response.status_code == 302
    finally:
        hole.close()
    assert not Session.objects.filter(session_key=key).exists()

    # Redis is back with the old copy still in it; a process that is not backing off reads it.
    store(redis_url)
    session_store._state.down_until = 0.0
    assert _raw(redis_url, key) is not None
    thief = Client()
    thief.cookies["sessionid"] = key
    assert not _home(thief).wsgi_request.user.is_authenticated

    # And with Redis reachable, a logout ends the cached copy itself.
    client.force_login(user)
    key2 = client.cookies["sessionid"].value
    assert _home(client).wsgi_request.user == user
    client.post(reverse("logout"))
    assert _raw(redis_url, key2) == session_store.TOMBSTONE
    thief.cookies["sessionid"] = key2
    assert not _home(thief).wsgi_request.user.is_authenticated


def test_a_copy_read_before_a_logout_is_not_cached_after_it(db, store, redis_url):
    """A reader that fetched the row just before the logout cannot write its copy back."""
    import redis

    store(redis_url)
    user = make_user("s5")
    client = Client()
    client.force_login(user)
    key = client.cookies["sessionid"].value
    row = Session.objects.get(session_key=key)
    client.post(reverse("logout"))
    epoch = session_store.current_epoch()
    session_store._state.populate(
        keys=[session_store.PREFIX + key],
        args=[session_store._entry(epoch, row.expire_date, row.session_data), f"{epoch}|", 60000],
        client=redis.Redis.from_url(redis_url),
    )
    assert _raw(redis_url, key) == session_store.TOMBSTONE
    thief = Client()
    thief.cookies["sessionid"] = key
    assert not _home(thief).wsgi_request.user.is_authenticated


def test_deactivating_a_user_or_changing_the_password_takes_effect_at_once(db, store, redis_url):
    from django.contrib.auth import get_user_model

    store(redis_url)
    User = get_user_model()
    for how in ("save", "update", "password"):
        user = make_user(f"s6{how}")
        client = Client()
        client.force_login(user)
        assert _home(client).wsgi_request.user == user  # the session is cached now
        if how == "save":
            user.is_active = False
            user.save()
        elif how == "update":
            User.objects.filter(pk=user.pk).update(is_active=False)
        else:
            user.set_password("another-password-1")
            user.save()
        assert not _home(client).wsgi_request.user.is_authenticated, how


def test_a_cookie_naming_the_epoch_row_is_no_session(db, store, redis_url):
    store(redis_url)
    epoch = session_store.current_epoch()
    session = session_store.SessionStore(session_store.EPOCH_KEY)
    assert session.load() == {}
    assert session.session_key is None
    assert Session.objects.get(session_key=session_store.EPOCH_KEY).session_data == epoch


@pytest.mark.parametrize(
    ("env", "engine"),
    [
        ({}, "django.contrib.sessions.backends.db"),  # embedded default: filesystem broker
        ({"CELERY_BROKER_URL": "redis://127.0.0.1:6379/7"}, "annotate.session_store"),
        (
            {"CELERY_BROKER_URL": "redis://127.0.0.1:6379/7", "QUORUM_SESSION_REDIS_URL": "off"},
            "django.contrib.sessions.backends.db",
        ),
        ({"QUORUM_SESSION_REDIS_URL": "redis://127.0.0.1:6379/8"}, "annotate.session_store"),
        ({"QUORUM_SESSION_REDIS_URL": "memcached://x"}, "QUORUM_SESSION_REDIS_URL"),
    ],
)
def test_the_store_is_selected_where_the_deployment_has_a_redis(env, engine, tmp_path):
    import os
    import sys
    from pathlib import Path

    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "QUORUM_SESSION_REDIS_URL")
    }
    clean.update({"QUORUM_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"})
    clean.update(env)
    done = subprocess.run(
        [sys.executable, "-c", "from django.conf import settings; print(settings.SESSION_ENGINE)"],
        cwd=Path(__file__).resolve().parents[2],
        env=clean,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert engine in done.stdout + done.stderr
