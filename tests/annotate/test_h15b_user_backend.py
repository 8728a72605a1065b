"""The session's user read with SQL compiled once per process (``annotate.session_store.UserBackend``).

Nothing is cached: a password change, a deactivation, a deleted user and a flushed session end
the session at the next request, as with Django's ``ModelBackend``.
"""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend
from django.contrib.sessions.backends.base import SessionBase
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from annotate.session_store import UserBackend
from tests.factories import make_user

PASSWORD = "pw-quorum-1"


@pytest.fixture(autouse=True)
def backends(settings):
    settings.AUTHENTICATION_BACKENDS = [
        "config.security.LoginThrottleBackend",
        "annotate.session_store.UserBackend",
    ]


def _logged_in(username: str) -> tuple[Client, object]:
    user = make_user(username, password=PASSWORD)
    client = Client()
    page = client.get(reverse("login"))
    assert page.status_code == 200
    response = client.post(reverse("login"), {"username": username, "password": PASSWORD})
    assert response.status_code == 302
    return client, user


def _home_user(client: Client):
    response = client.get(reverse("home"))
    return response.status_code, response.wsgi_request.user


def _fields(user) -> dict:
    return {f.attname: getattr(user, f.attname) for f in get_user_model()._meta.concrete_fields}


def test_it_reads_the_user_model_backend_reads(db):
    user = make_user("ub1", staff=True)
    ours, django = UserBackend().get_user(user.pk), ModelBackend().get_user(user.pk)
    assert type(ours) is get_user_model()
    assert _fields(ours) == _fields(django)
    assert ours.pk == user.pk and ours._state.adding is False and ours._state.db == "default"
    assert ours.get_session_auth_hash() == django.get_session_auth_hash()


def test_it_reads_no_user_for_an_unknown_id(db):
    assert UserBackend().get_user(987654) is None
    assert UserBackend().get_user("not-an-id") is None
    assert UserBackend().get_user(2**40) is None


def test_it_reads_the_user_in_one_statement_per_request(db):
    client, user = _logged_in("ub2")
    with CaptureQueriesContext(connection) as ctx:
        status, seen = _home_user(client)
    assert status == 200 and seen == user
    assert sum('FROM "auth_user"' in q["sql"] for q in ctx.captured_queries) == 1


def test_it_logs_out_a_session_after_a_password_change(db):
    client, user = _logged_in("ub3")
    assert _home_user(client) == (200, user)
    user.set_password("another-pw-9")
    user.save()
    status, seen = _home_user(client)
    assert status == 302 and not seen.is_authenticated


def test_it_logs_out_a_session_after_a_password_change_elsewhere(db):
    client, user = _logged_in("ub4")
    assert _home_user(client)[0] == 200
    # Changed without the signals a save sends, as a raw UPDATE would.
    other = get_user_model().objects.get(pk=user.pk)
    other.set_password("another-pw-9")
    get_user_model().objects.filter(pk=user.pk).update(password=other.password)
    status, seen = _home_user(client)
    assert status == 302 and not seen.is_authenticated


def test_it_logs_out_a_deactivated_user(db):
    client, user = _logged_in("ub5")
    assert _home_user(client)[0] == 200
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    status, seen = _home_user(client)
    assert status == 302 and not seen.is_authenticated


def test_it_logs_out_a_flushed_session(db):
    from importlib import import_module

    from django.conf import settings

    client, user = _logged_in("ub6")
    assert _home_user(client)[0] == 200
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    store: SessionBase = import_module(settings.SESSION_ENGINE).SessionStore(key)
    store.flush()
    status, seen = _home_user(client)
    assert status == 302 and not seen.is_authenticated


def test_it_refuses_a_wrong_password(db):
    make_user("ub7", password=PASSWORD)
    client = Client()
    response = client.post(reverse("login"), {"username": "ub7", "password": "wrong"})
    assert response.status_code == 200
    assert not response.wsgi_request.user.is_authenticated
