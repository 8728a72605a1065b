"""A worker that loses Redis while it holds an unacknowledged message reconnects afterwards.

kombu 5.7's Redis transport, when the broker dies with a BRPOP in flight and a message not
yet acknowledged, leaves the consumer's default channel open after ``Connection.collect``
(the first step of the worker's reconnect) while detaching the transport; the following
``Connection.close`` then raised AttributeError, which the worker treats as unrecoverable:
it stopped for good (tests/e2e/test_broker_outage.py failed that way about one run in three).
These tests replay that sequence against a real ``redis-server`` with kombu's own objects,
the way celery's consumer calls them (config/celery.py installs the guard in every worker).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time

import kombu
import pytest
from kombu.common import ignore_errors

from config.celery import guard_detached_redis_transport
from tests.e2e.conftest import free_port

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="needs redis-server to kill mid-poll"
)


@pytest.fixture
def redis_server():
    port = free_port()
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                server.kill()
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
    yield server, f"redis://127.0.0.1:{port}/0"
    server.kill()
    server.wait()


def _consumer_holding_a_message(url: str) -> tuple[kombu.Connection, list]:
    """A connection as a worker's consumer has it: a task message delivered and not yet
    acknowledged, a BRPOP in flight for the next one, and a second channel consuming a
    broadcast queue (celery's control and gossip consumers)."""
    connection = kombu.Connection(url)
    tasks = kombu.Queue("default", routing_key="default")
    with connection.Producer() as producer:
        producer.publish({"task": "t"}, routing_key="default", declare=[tasks])
    received: list = []
    connection.Consumer([tasks], callbacks=[lambda body, m: received.append(m)]).consume()
    broadcast = kombu.Queue("ctl", kombu.Exchange("ctl", type="fanout"), auto_delete=True)
    kombu.Consumer(connection.channel(), [broadcast], callbacks=[lambda b, m: None]).consume()
    deadline = time.monotonic() + 10
    while not received and time.monotonic() < deadline:
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=1)
    assert len(received) == 1, "the task message was not delivered"
    with contextlib.suppress(TimeoutError):  # issues the next BRPOP, which stays in flight
        connection.drain_events(timeout=0.3)
    return connection, received


def _lose_the_broker(server, connection: kombu.Connection):
    """What celery's consumer does on a connection error: collect, then close."""
    server.kill()
    server.wait()
    channel = connection.default_channel
    with contextlib.suppress(Exception):  # celery ignores every error here too
        connection.collect(socket_timeout=1)
    return channel


def test_the_reconnect_path_leaves_the_channel_open_and_the_transport_detached(redis_server):
    """The state the guard is for (if kombu stops producing it, the guard can go)."""
    server, url = redis_server
    connection, received = _consumer_holding_a_message(url)
    assert connection.default_channel._in_poll
    assert len(connection.default_channel.qos._delivered) == 1
    channel = _lose_the_broker(server, connection)
    assert channel.closed is False
    assert channel.connection.client is None
    with contextlib.suppress(AttributeError):  # without the guard: what the worker stopped on
        ignore_errors(connection, connection.close)


def test_closing_after_the_loss_is_a_connection_error_not_an_unrecoverable_one(redis_server):
    guard_detached_redis_transport()
    server, url = redis_server
    connection, _ = _consumer_holding_a_message(url)
    channel = _lose_the_broker(server, connection)
    # As celery's consumer closes the broken connection before reconnecting: only connection
    # and channel errors may escape, and ignore_errors swallows those.
    ignore_errors(connection, connection.close)
    assert channel.closed is True


def test_every_worker_installs_the_guard():
    """The guard goes in with the worker_init signal every worker sends at start."""
    from celery import signals

    import config.celery

    receivers = [ref() for _, ref in signals.worker_init.receivers]
    assert config.celery._guard_on_worker_start in receivers
