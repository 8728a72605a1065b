"""Sessions opened before ``UserBackend`` replaced Django's ``ModelBackend`` for logins.

A session names the backend that logged it in, and Django reads its user only through a backend
listed in ``AUTHENTICATION_BACKENDS``: an upgrade must not log out an annotator mid-task.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY
from django.test import Client
from django.urls import reverse

from tests.factories import make_user

MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
USER_BACKEND = "annotate.session_store.UserBackend"
PASSWORD = "pw-quorum-1"


def test_a_session_logged_in_through_model_backend_keeps_its_user(db):
    user = make_user("legacy1")
    client = Client()
    client.force_login(user, backend=MODEL_BACKEND)
    assert client.session[BACKEND_SESSION_KEY] == MODEL_BACKEND
    response = client.get(reverse("home"))
    assert response.status_code == 200
    assert response.wsgi_request.user.pk == user.pk


def test_a_legacy_session_ends_when_the_password_changes(db):
    user = make_user("legacy2")
    client = Client()
    client.force_login(user, backend=MODEL_BACKEND)
    user.set_password("another-pw-2")
    user.save()
    response = client.get(reverse("home"))
    assert response.wsgi_request.user.is_anonymous


def test_a_new_login_goes_through_user_backend(db):
    assert settings.AUTHENTICATION_BACKENDS[1] == USER_BACKEND
    make_user("fresh1", password=PASSWORD)
    client = Client()
    client.get(reverse("login"))
    response = client.post(reverse("login"), {"username": "fresh1", "password": PASSWORD})
    assert response.status_code == 302
    assert client.session[BACKEND_SESSION_KEY] == USER_BACKEND
