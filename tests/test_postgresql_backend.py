"""config/postgresql_backend: a reused connection is health-checked without a round trip while
nothing has happened to it, and still replaced when the server has ended it."""

from __future__ import annotations

import time

import psycopg
import pytest
from django.db import connection, connections

pytestmark = [pytest.mark.postgres, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def _postgres_only():
    if connection.vendor != "postgresql":
        pytest.skip("the PostgreSQL backend; run with DATABASE_URL=postgres://...")


def _new_request() -> None:
    """What Django does at the start of each request with a persistent connection."""
    connection.health_check_enabled = True
    connection.health_check_done = False


def test_the_settings_use_this_backend():
    assert type(connections["default"]).__module__ == "config.postgresql_backend.base"
    assert connection.settings_dict["CONN_HEALTH_CHECKS"] is True


def test_it_reuses_an_idle_connection_without_a_statement(monkeypatch):
    connection.ensure_connection()
    raw = connection.connection

    def no_round_trip(*args, **kwargs):
        raise AssertionError("the health check went to the server")

    monkeypatch.setattr(raw, "cursor", no_round_trip)
    monkeypatch.setattr(raw, "execute", no_round_trip)
    _new_request()
    connection.close_if_health_check_failed()
    monkeypatch.undo()
    assert connection.connection is raw
    assert connection.health_check_done


def test_it_replaces_a_connection_the_server_ended():
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    raw = connection.connection
    params = connection.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    with psycopg.connect(**params, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
    time.sleep(0.2)  # the notice and the close reach this socket

    _new_request()
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:  # a request's first statement: works on a new one
        cursor.execute("SELECT pg_backend_pid()")
        (new_pid,) = cursor.fetchone()
    assert new_pid != pid
    assert connection.connection is not raw
