"""Each login attempt runs the password hasher exactly once, whatever its outcome.

``AUTHENTICATION_BACKENDS`` lists ``annotate.session_store.UserBackend`` and, after it,
Django's ``ModelBackend`` (the same user table, the same check): a refused password used to
be checked by both, so a wrong password or an unknown user cost two hashes (with the
deployment's PBKDF2, ~0.3 s of CPU each). ``UserBackend`` now ends a refused attempt itself.
"""

from __future__ import annotations

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import authenticate
from django.contrib.auth.hashers import MD5PasswordHasher

from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-quorum-1"


class CountingHasher(MD5PasswordHasher):
    """MD5 (fast), counting every hash it computes: a new one (``encode``) or a check."""

    calls: list[str] = []

    def encode(self, password, salt):
        CountingHasher.calls.append("encode")
        return super().encode(password, salt)

    def verify(self, password, encoded):
        # MD5's verify calls encode: count the check as one hash.
        before = len(CountingHasher.calls)
        ok = super().verify(password, encoded)
        del CountingHasher.calls[before:]
        CountingHasher.calls.append("verify")
        return ok


@pytest.fixture
def hashes(settings):
    settings.PASSWORD_HASHERS = ["tests.test_h17e_login_hashes.CountingHasher"]
    make_user("alice", password=PASSWORD)
    CountingHasher.calls.clear()
    return CountingHasher.calls


def _login(client, username: str, password: str):
    return client.post(
        "/accounts/login/", {"username": username, "password": password}, REMOTE_ADDR="10.9.0.1"
    )


def test_a_wrong_password_is_hashed_once_and_counted_once(client, hashes):
    response = _login(client, "alice", "wrong")
    assert response.status_code == 200  # the form again, with its error
    assert "_auth_user_id" not in client.session
    assert hashes == ["verify"]
    attempt = AccessAttempt.objects.get(username="alice")
    assert attempt.failures_since_start == 1


def test_an_unknown_user_is_hashed_once_too(client, hashes):
    response = _login(client, "nobody", "wrong")
    assert response.status_code == 200
    assert "_auth_user_id" not in client.session
    assert hashes == ["encode"]  # ModelBackend's dummy hash: the time of a wrong password
    assert AccessAttempt.objects.get(username="nobody").failures_since_start == 1


def test_a_right_password_is_hashed_once_and_logs_in_through_the_user_backend(client, hashes):
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 302
    assert client.session["_auth_user_backend"] == "annotate.session_store.UserBackend"
    assert hashes == ["verify"]


def test_an_inactive_account_is_refused_with_one_hash(client, hashes):
    from django.contrib.auth import get_user_model

    get_user_model().objects.filter(username="alice").update(is_active=False)
    assert _login(client, "alice", PASSWORD).status_code == 200
    assert "_auth_user_id" not in client.session
    assert hashes == ["verify"]


def test_authenticate_without_a_request_hashes_once(hashes):
    # The playground's and a shell's path (the throttle backend passes it on).
    assert authenticate(None, username="alice", password="wrong") is None
    assert authenticate(None, username="nobody", password="wrong") is None
    assert authenticate(None, username="alice", password=PASSWORD).username == "alice"
    assert hashes == ["verify", "encode", "verify"]


def test_missing_credentials_hash_nothing(hashes):
    assert authenticate(None, username="alice") is None
    assert authenticate(None, password="wrong") is None
    assert hashes == []
