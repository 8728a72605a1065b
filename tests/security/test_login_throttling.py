"""Login throttling: failed logins and bad API tokens lock out the account and the client."""

from __future__ import annotations

import pytest

from annotate.services import api_token_create
from tests.factories import make_user

pytestmark = pytest.mark.django_db

PASSWORD = "pw-quorum-1"
LIMIT = 5


@pytest.fixture(autouse=True)
def _limits(settings):
    settings.AXES_FAILURE_LIMIT = LIMIT


def _login(client, username: str, password: str, *, ip: str = "10.0.0.1", url="/accounts/login/"):
    return client.post(url, {"username": username, "password": password}, REMOTE_ADDR=ip)


def _logged_in(client) -> bool:
    return "_auth_user_id" in client.session


def test_it_locks_an_account_after_the_failure_limit_of_wrong_passwords(client):
    make_user("alice")
    for _ in range(LIMIT - 1):
        assert _login(client, "alice", "wrong").status_code == 200  # the form again, with an error
    assert _login(client, "alice", "wrong").status_code == 429  # the failure that locks
    response = _login(client, "alice", PASSWORD)
    assert response.status_code == 429
    assert b"too many" in response.content.lower()
    assert not _logged_in(client)


def test_it_locks_the_account_for_every_client(client):
    make_user("alice")
    for i in range(LIMIT):
        _login(client, "alice", "wrong", ip=f"10.0.1.{i}")
    assert _login(client, "alice", PASSWORD, ip="10.0.2.1").status_code == 429
    assert not _logged_in(client)


def test_it_locks_a_client_that_guesses_across_accounts(client):
    for i in range(LIMIT):
        make_user(f"victim{i}")
        _login(client, f"victim{i}", "wrong", ip="10.0.3.1")
    make_user("bystander")
    assert _login(client, "bystander", PASSWORD, ip="10.0.3.1").status_code == 429
    assert not _logged_in(client)
    # Another client is not affected by that client's guesses.
    assert _login(client, "bystander", PASSWORD, ip="10.0.3.2").status_code == 302
    assert _logged_in(client)


def test_it_locks_the_admin_login_too(client):
    make_user("boss", staff=True)
    for _ in range(LIMIT):
        _login(client, "boss", "wrong", url="/admin/login/")
    assert _login(client, "boss", PASSWORD, url="/admin/login/").status_code == 429
    assert not _logged_in(client)


def test_it_locks_a_client_out_of_the_api_after_bad_tokens(client):
    _, key = api_token_create(user=make_user("robot"))
    for i in range(LIMIT):
        response = client.get(
            "/api/projects", HTTP_AUTHORIZATION=f"Bearer qrm_guess{i}", REMOTE_ADDR="10.0.4.1"
        )
        assert response.status_code in (401, 429)
    good = {"HTTP_AUTHORIZATION": f"Bearer {key}"}
    assert client.get("/api/projects", REMOTE_ADDR="10.0.4.1", **good).status_code == 429
    assert client.get("/api/projects", REMOTE_ADDR="10.0.4.2", **good).status_code == 200


def test_it_counts_bad_tokens_and_wrong_passwords_against_the_same_client(client):
    make_user("alice")
    for i in range(LIMIT - 1):
        client.get("/api/projects", HTTP_AUTHORIZATION=f"Bearer qrm_x{i}", REMOTE_ADDR="10.0.5.1")
    _login(client, "nobody", "wrong", ip="10.0.5.1")
    assert _login(client, "alice", PASSWORD, ip="10.0.5.1").status_code == 429


def test_it_lets_an_admin_lift_a_lockout(client):
    from axes.models import AccessAttempt

    make_user("alice")
    for _ in range(LIMIT):
        _login(client, "alice", "wrong")
    assert _login(client, "alice", PASSWORD).status_code == 429
    admin = make_user("boss", staff=True)
    client.force_login(admin)
    ids = [str(pk) for pk in AccessAttempt.objects.values_list("pk", flat=True)]
    response = client.post(
        "/admin/axes/accessattempt/",
        {"action": "delete_selected", "_selected_action": ids, "post": "yes"},
    )
    assert response.status_code == 302
    assert not AccessAttempt.objects.exists()
    client.logout()
    assert _login(client, "alice", PASSWORD).status_code == 302
    assert _logged_in(client)


def test_it_takes_the_client_address_from_the_configured_proxy_header(client, settings):
    settings.QUORUM_CLIENT_IP_HEADER = "X-Forwarded-For"
    make_user("alice")
    for i in range(LIMIT):
        make_user(f"victim{i}")
        client.post(
            "/accounts/login/",
            {"username": f"victim{i}", "password": "wrong"},
            REMOTE_ADDR="127.0.0.1",  # the proxy
            HTTP_X_FORWARDED_FOR=f"198.51.100.{i}, 203.0.113.7",  # spoofed, then the proxy's
        )
    ok = client.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD},
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR="203.0.113.8",
    )
    assert ok.status_code == 302  # another client behind the same proxy
    client.logout()
    locked = client.post(
        "/accounts/login/",
        {"username": "alice", "password": PASSWORD},
        REMOTE_ADDR="127.0.0.1",
        HTTP_X_FORWARDED_FOR="192.0.2.1, 203.0.113.7",
    )
    assert locked.status_code == 429


def test_it_throttles_the_playground_login_per_account(client):
    from axes.utils import reset

    from workers.management.commands.playground import staff_login

    make_user("carol", staff=True)
    make_user("dave", staff=True)
    for _ in range(LIMIT):
        assert not staff_login("carol", "wrong")

    assert not staff_login("carol", PASSWORD)  # locked: the right password does not help
    assert staff_login("dave", PASSWORD)  # per account: others still get in
    assert _login(client, "dave", PASSWORD).status_code == 302  # and the site is not locked
    reset(username="carol")  # what the admin's "lift lockout" does
    assert staff_login("carol", PASSWORD)
