"""The Celery app. Queues: ``default`` (CPU work: imports, flags, exports) and ``gpu``
(reward-model scoring). Settings come from Django settings under the ``CELERY_`` namespace."""

from __future__ import annotations

import os
import signal
import threading

from celery import Celery, signals
from celery.exceptions import SoftTimeLimitExceeded
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# torch's OpenMP threads spin for a while after each parallel region by default. In a worker
# that decodes media in threads between forward passes (and on machines shared with the web
# server and other workers) the spinning threads take the cores the decoders need: measured on
# 2 cores, the scoring path ran at 0.33-0.59x the bare forward with spinning and 0.7-1.3x
# without (bench/bench_worker_scoring.py). libgomp reads this when torch loads it, which in
# every Quorum process happens after this module (torch is imported where it is used).
# An explicit setting in the environment wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

app = Celery("quorum")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    task_default_queue="default",
    task_queues=(Queue("default"), Queue("gpu")),
    task_routes={"quorum.score_*": {"queue": "gpu"}},
    worker_prefetch_multiplier=1,
    task_track_started=True,
    broker_connection_retry_on_startup=True,
    result_extended=True,
)
app.autodiscover_tasks(["workers"])


# --- a Redis broker lost with a message in hand ------------------------------------------------
# When Redis goes away while the consumer holds an unacknowledged message and a BRPOP is in
# flight, the worker's reconnect path (celery 5.7 / kombu 5.7) first "collects" the connection:
# the default channel's close fails on the BRPOP read, a second channel's close fails on the
# broker, and the transport is detached (``transport.client = None``) with the default channel
# still open. Closing the connection then closes that channel, whose requeue of the unacked
# message builds a new Redis pool from ``transport.client`` and raises AttributeError. That is
# not a connection error, so the consumer logs "Unrecoverable error" and the worker stops for
# good instead of reconnecting once Redis is back. Seen in tests/e2e/test_broker_outage.py;
# reproduced step by step in tests/test_broker_reconnect.py. The guard turns the detached
# transport into the connection error it is: the close is abandoned like the others, the
# consumer reconnects, and the message (lost with the broker, or still in Redis's unacked
# index) comes back through the job sweep or the visibility timeout. Only consumers hold
# unacknowledged messages, so the guard is installed when a worker starts (the web process
# does not import the Redis transport for it: start-up time).
def guard_detached_redis_transport() -> None:
    try:
        from kombu.transport import redis as kombu_redis
    except ImportError:  # redis-py not installed: no Redis transport to guard
        return
    original = kombu_redis.Channel._connparams
    if getattr(original, "quorum_guard", False):
        return

    def _connparams(self, asynchronous=False):
        if self.connection.client is None:
            raise kombu_redis.redis.exceptions.ConnectionError(
                "the broker connection was closed (transport detached)"
            )
        return original(self, asynchronous=asynchronous)

    _connparams.quorum_guard = True
    kombu_redis.Channel._connparams = _connparams


@signals.worker_init.connect
def _guard_on_worker_start(**kwargs) -> None:
    guard_detached_redis_transport()


# --- time limits under --pool=solo ----------------------------------------------------------
# The prefork pool enforces task_time_limit / task_soft_time_limit itself; the solo pool (one
# GPU worker process that keeps its model loaded) ignores both. So for solo workers: the soft
# limit raises SoftTimeLimitExceeded in the task through SIGALRM, and past the hard limit a
# watchdog ends the process (exit code 75) for its supervisor to restart; with acks_late the
# message is redelivered and idempotent tasks finish it.
_solo_pool = {"active": False}
_armed: dict = {}


@signals.worker_init.connect
def _note_pool(sender=None, **kwargs) -> None:
    pool_cls = getattr(sender, "pool_cls", None)
    _solo_pool["active"] = "solo" in getattr(pool_cls, "__module__", str(pool_cls))


def _limits(task) -> tuple[float | None, float | None]:
    hard, soft = (task.request.timelimit or (None, None)) if task.request else (None, None)
    hard = hard or task.time_limit or app.conf.task_time_limit
    soft = soft or task.soft_time_limit or app.conf.task_soft_time_limit
    return hard, soft


def _raise_soft_limit(signum, frame):
    raise SoftTimeLimitExceeded("soft time limit exceeded")


@signals.task_prerun.connect
def _arm_time_limits(task=None, **kwargs) -> None:
    if not _solo_pool["active"] or threading.current_thread() is not threading.main_thread():
        return
    hard, soft = _limits(task)
    if soft:
        signal.signal(signal.SIGALRM, _raise_soft_limit)
        signal.setitimer(signal.ITIMER_REAL, float(soft))
    if hard:
        timer = threading.Timer(float(hard), os._exit, args=(75,))
        timer.daemon = True
        timer.start()
        _armed["timer"] = timer


@signals.task_postrun.connect
def _disarm_time_limits(**kwargs) -> None:
    if not _solo_pool["active"]:
        return
    if threading.current_thread() is threading.main_thread():
        signal.setitimer(signal.ITIMER_REAL, 0)
    timer = _armed.pop("timer", None)
    if timer is not None:
        timer.cancel()
