"""Background jobs: the one way services start work on a Celery worker.

A job is a database row (:class:`workers.models.Job`) written in the same transaction as the
change that asks for it, and published to the broker only after that transaction commits, by
a background thread of the calling process, so a request never waits on the broker. The
message carries the job id; the worker claims the row with a conditional UPDATE before it
runs anything, so a duplicate delivery (a re-publish, a broker redelivery) runs nothing.

When the broker is down or frozen nothing is lost: the row stays ``queued`` and the sweep
(:func:`jobs_sweep`, run by every worker every ``QUORUM_JOB_SWEEP_SECONDS``, or by
``manage.py jobs_sweep --loop``) publishes it again. A running job whose runner stopped
beating (a SIGKILLed or OOM-killed worker) is run again, up to ``max_attempts`` runs, then
failed with the reason; the service that owns the job's domain row is told (``GIVE_UP``).

The per-submit flag update is the one piece of work without a row: a judgment write marks its
task ``flags_dirty_at`` in the same UPDATE it already makes, publishing is a hint, and the
sweep re-publishes updates for tasks left dirty. Hints are coalesced: a process's publisher
holds them for ``QUORUM_FLAGS_UPDATE_DELAY_MS`` and sends the task ids gathered meanwhile as
one message, and a worker gathers the hints it receives for as long again into one pass over
every recently marked task (``workers.curation_tasks``, ``curation.task_flags``).

This module knows the task names and publishes by name; it never imports a task module, and
task modules only call services. Importing it does not import torch or any task module.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone

from workers.models import Job

logger = logging.getLogger("quorum.jobs")

# --- task names (the only place services learn them) -----------------------------------------

IMPORT_FILE = "quorum.import_file"
EXPORT_BUILD = "quorum.export_build"
FLAGS_RECOMPUTE = "quorum.flags_recompute"
FLAGS_UPDATE_FOR_TASK = "quorum.flags_update_for_task"  # one task (older publishers)
FLAGS_UPDATE_DIRTY = "quorum.flags_update_dirty"
FLAGS_UPDATE_RECENT = "quorum.flags_update_recent"
SCORE_PROMPTS = "quorum.score_prompts"
SCORE_ADHOC = "quorum.score_adhoc"
SCORE_MEDIA_PREFILL = "quorum.score_media_prefill"
TRAIN_DEMO_MODEL = "quorum.train_demo_model"
TRAIN_REWARD_MODEL = "quorum.train_reward_model"

QUEUES = {
    SCORE_PROMPTS: "gpu",
    SCORE_ADHOC: "gpu",
    SCORE_MEDIA_PREFILL: "gpu",
    TRAIN_DEMO_MODEL: "gpu",
    TRAIN_REWARD_MODEL: "gpu",
}

# Called as ``fn(job=job, reason=str, cancelled=bool)`` when a job is given up (its runner died
# on the last attempt, it raised, or it was cancelled): the service owning the domain row marks it
# failed (or cancelled).
GIVE_UP = {
    IMPORT_FILE: "annotate.services.import_job_give_up",
    EXPORT_BUILD: "curation.services.export_give_up",
    SCORE_PROMPTS: "workers.scoring.scoring_batch_give_up",
}


def queue_for(name: str) -> str:
    return QUEUES.get(name, "default")


# --- recording ------------------------------------------------------------------------------


def job_enqueue(
    *, name: str, kwargs: dict[str, Any] | None = None, dedupe_key: str = "", max_attempts: int = 3
) -> Job:
    """Records a job in the current transaction; it is published after commit.

    With a ``dedupe_key``, a job with the same key that has not started yet is returned
    instead of a new one (one waiting recompute per project is enough).
    """
    kwargs = kwargs or {}
    fields = {
        "name": name,
        "kwargs": kwargs,
        "queue": queue_for(name),
        "dedupe_key": dedupe_key,
        "max_attempts": max_attempts,
    }
    if dedupe_key:
        with transaction.atomic():
            # INSERT ... ON CONFLICT DO NOTHING: a concurrent enqueue of the same key wins.
            Job.objects.bulk_create([Job(**fields)], ignore_conflicts=True)
            job = (
                Job.objects.filter(
                    dedupe_key=dedupe_key, status__in=[Job.Status.QUEUED, Job.Status.PUBLISHED]
                )
                .order_by("-id")
                .first()
            )
        if job is None:  # the waiting one started between the two statements
            job = Job.objects.create(**fields)
    else:
        job = Job.objects.create(**fields)
    job_id = job.pk
    transaction.on_commit(lambda: publish_soon([job_id]), robust=True)
    return job


def jobs_enqueue_many(*, name: str, kwargs_list: Sequence[dict[str, Any]]) -> list[int]:
    """Records many jobs of one kind at once (scoring batches); published after commit."""
    rows = Job.objects.bulk_create(
        [Job(name=name, kwargs=kw, queue=queue_for(name)) for kw in kwargs_list], batch_size=500
    )
    ids = [r.pk for r in rows if r.pk is not None]
    if len(ids) != len(rows):  # backends that do not return ids from bulk inserts
        ids = list(
            Job.objects.filter(name=name, status=Job.Status.QUEUED)
            .order_by("-id")
            .values_list("pk", flat=True)[: len(rows)]
        )
    transaction.on_commit(lambda: publish_soon(ids), robust=True)
    return ids


def flags_update_publish_soon(task_id: int) -> None:
    """After commit, hints a worker to update the flags of a task marked ``flags_dirty_at``."""
    transaction.on_commit(lambda: _publish_soon("flags", [task_id]), robust=True)


# --- publishing -----------------------------------------------------------------------------


def _celery_app():
    from config.celery import app

    return app


def _send(name: str, kwargs: dict[str, Any], queue_name: str, task_id: str | None = None) -> None:
    app = _celery_app()
    if app.conf.task_always_eager:  # tests and CELERY_TASK_ALWAYS_EAGER: run it here
        app.loader.import_default_modules()
        app.tasks[name].apply(kwargs=kwargs, task_id=task_id)
        return
    # retry=False: a failed publish is the sweep's to repeat; the caller never waits for it.
    # ignore_result: nobody reads a job's Celery result (its row holds the outcome). Without
    # it, send_task first registers the task with the result backend (on Redis: a SUBSCRIBE),
    # which with the broker's Redis down retried 20 times a second apart before the publish
    # failed: the publisher thread stuck ~19 s per attempt instead of failing at once.
    app.send_task(
        name, kwargs=kwargs, queue=queue_name, retry=False, task_id=task_id, ignore_result=True
    )


def flags_update_recent_schedule(delay: float) -> None:
    """Asks a worker for one pass over every task marked recently, ``delay`` seconds from now
    (a worker gathering the hints that arrive meanwhile); raises if the broker refuses."""
    _celery_app().send_task(
        FLAGS_UPDATE_RECENT,
        kwargs={},
        queue="default",
        countdown=delay,
        retry=False,
        ignore_result=True,
    )


def call(*, name: str, kwargs: dict[str, Any], timeout: float) -> Any:
    """Runs a task on a worker and waits for its result (the playground's interactive
    scoring; no job row: nothing is owed if the caller stops waiting)."""
    app = _celery_app()
    if app.conf.task_always_eager:
        app.loader.import_default_modules()
        return app.tasks[name].apply(kwargs=kwargs).get()
    return app.send_task(name, kwargs=kwargs, queue=queue_for(name)).get(timeout=timeout)


def jobs_publish(job_ids: Iterable[int]) -> int:
    """Publishes the given jobs that are still waiting; returns how many were published."""
    published = 0
    for job in Job.objects.filter(
        pk__in=list(job_ids), status__in=[Job.Status.QUEUED, Job.Status.PUBLISHED]
    ).order_by("id"):
        try:
            _send(
                job.name,
                {**job.kwargs, "job_id": job.pk},
                job.queue,
                task_id=f"job-{job.pk}-{job.publish_count + 1}",
            )
        except Exception as exc:  # broker down, frozen, misconfigured: stay queued
            Job.objects.filter(pk=job.pk, status=Job.Status.QUEUED).update(
                publish_error=f"{exc.__class__.__name__}: {exc}"[:500]
            )
            logger.warning("job %s not published (%s); the sweep will retry", job.pk, exc)
            break  # the broker is unreachable: do not pay the timeout once per job
        # A worker may have claimed it already; only a waiting row becomes "published".
        Job.objects.filter(pk=job.pk, status__in=[Job.Status.QUEUED, Job.Status.PUBLISHED]).update(
            status=Job.Status.PUBLISHED,
            published_at=timezone.now(),
            publish_error="",
            publish_count=F("publish_count") + 1,
        )
        published += 1
    return published


# Task ids per flag-update message (the worker takes every dirty task of their projects).
FLAGS_HINT_IDS = 500


def flags_updates_publish(task_ids: Iterable[int], *, at_once: bool = False) -> int:
    """Hints the worker at the flag updates owed for ``task_ids`` (one message per 500);
    returns how many task ids were sent. ``at_once`` (the sweep's): the worker updates them
    when the message arrives instead of gathering them with others for a moment."""
    ids = list(dict.fromkeys(task_ids))
    sent = 0
    for start in range(0, len(ids), FLAGS_HINT_IDS):
        chunk = ids[start : start + FLAGS_HINT_IDS]
        kwargs: dict[str, Any] = {"task_ids": chunk}
        if at_once:
            kwargs["at_once"] = True
        try:
            _send(FLAGS_UPDATE_DIRTY, kwargs, "default")
        except Exception as exc:
            logger.warning("flag updates of tasks %s not published (%s)", chunk[:5], exc)
            break
        sent += len(chunk)
    return sent


class _Publisher:
    """A daemon thread per process that publishes after commit, off the request's path.

    Flag-update hints wait up to ``delay`` seconds for others and leave as one message (a
    submit's hint is not urgent, and the worker updates what one message names in one pass);
    jobs leave at once.

    A job's publish reads and updates its row, on the thread's own database connection. With
    ``keep_connection`` (seconds; web servers: ``publisher_prepare``) the thread keeps that
    connection until it has had nothing to publish for that long, instead of closing it each
    time it runs out of work: publishes a moment apart (a burst of imports or exports) then
    each skip a reconnect (PostgreSQL, same run, 50 ms apart on a loaded host: 30 -> 14 ms
    each from put to done, 5.1 -> 3.8 ms of CPU). Without it (management commands, shells, test
    processes) the connection closes as soon as the work is done, so a test database is never
    held open from here.
    """

    def __init__(self, delay: float = 0.0, keep_connection: float = 0.0) -> None:
        self.delay = delay
        self.keep_connection = keep_connection
        self.items: queue.Queue = queue.Queue()
        self.pending = 0
        self.lock = threading.Lock()
        self.idle = threading.Event()
        self.idle.set()
        self.thread = threading.Thread(target=self._run, name="quorum-job-publisher", daemon=True)
        self.thread.start()

    def put(self, item: tuple[str, list[int]]) -> None:
        with self.lock:
            self.pending += 1
            self.idle.clear()
        self.items.put(item)

    def _run(self) -> None:
        held: list[int] = []  # flag hints waiting for their message
        held_items = 0
        due = 0.0
        close_at: float | None = None  # when the connection kept after the last work closes
        while True:
            if held:
                timeout = max(0.0, due - time.monotonic())
            elif close_at is not None:
                timeout = max(0.0, close_at - time.monotonic())
            else:
                timeout = None
            try:
                ready = [self.items.get(timeout=timeout)]
            except queue.Empty:
                ready = []
            if not ready and not held and close_at is not None:
                if time.monotonic() >= close_at:  # nothing to do for keep_connection seconds
                    connection.close()
                    close_at = None
                continue
            if ready and ready[0][0] == "flags" and self.delay > 0:
                if not held:
                    due = time.monotonic() + self.delay
                held += ready.pop()[1]
                held_items += 1
            if held and time.monotonic() >= due:
                ready.append(("flags", held))
                done = len(ready) - 1 + held_items
                held, held_items = [], 0
            else:
                done = len(ready)
            for kind, ids in ready:
                self._publish(kind, ids)
            if done and self._done(done) and self.keep_connection > 0:
                close_at = time.monotonic() + self.keep_connection

    def _publish(self, kind: str, ids: list[int]) -> None:
        try:
            close_old_connections()
            if kind == "jobs":
                jobs_publish(ids)
            else:
                flags_updates_publish(ids)
        except Exception:
            logger.exception("publishing %s %s failed; the sweep will retry", kind, ids[:20])

    def _done(self, items: int) -> bool:
        """Counts ``items`` published; returns whether nothing is left to publish."""
        with self.lock:
            self.pending -= items
            idle = self.pending == 0
        if idle:
            if self.keep_connection <= 0:
                # Hold no database connection while idle (max_connections; a test
                # database that must be dropped).
                connection.close()
            with self.lock:
                if self.pending == 0:
                    self.idle.set()
        return idle

    def flush(self, timeout: float) -> bool:
        return self.idle.wait(timeout)


_publisher_lock = threading.Lock()
# How long a web server's publisher keeps its database connection after its last publish.
SERVER_KEEP_CONNECTION_SECONDS = 2.0
_publisher_state: dict[str, Any] = {}


def _publisher() -> _Publisher:
    with _publisher_lock:
        pub = _publisher_state.get("publisher")
        if pub is None or _publisher_state.get("pid") != os.getpid():  # new after a fork
            pub = _publisher_state["publisher"] = _Publisher(
                settings.QUORUM_FLAGS_UPDATE_DELAY_MS / 1000,
                keep_connection=_publisher_state.get("keep_connection", 0.0),
            )
            _publisher_state["pid"] = os.getpid()
            # A short-lived process (a management command) publishes before it exits; what
            # does not make it in time stays queued for the sweep.
            atexit.register(pub.flush, 10.0)
        return pub


def publisher_prepare() -> None:
    """Builds now, without reaching the broker, what a process's first publish would build.

    The first ``send_task`` of a process imports kombu's transport for the broker (with Redis:
    ``kombu.transport.redis``), builds Celery's producer pool and result backend and reads
    entry points: 65-310 ms of CPU, measured, nearly all of it holding the GIL. The publisher
    thread paid that about a second after the process's first judgment (its flag hint), while
    the process served other requests: a request running then took the ~100 ms longer (seen in
    tests/e2e/test_broker_outage.py at a Redis freeze, where it met the session cache's read
    timeout). The web server calls this as each worker starts (``config/gunicorn.conf.py``);
    the first publish then only connects (6-11 ms). Nothing here opens a connection: a broker
    that is down does not delay or stop the start.

    A server process's publisher also keeps its database connection between publishes a
    moment apart (``_Publisher``, ``SERVER_KEEP_CONNECTION_SECONDS``)."""
    _publisher_state["keep_connection"] = SERVER_KEEP_CONNECTION_SECONDS
    app = _celery_app()
    if app.conf.task_always_eager:
        return
    # The pool and a producer on its connection (which imports the transport's module).
    with app.producer_pool.acquire(block=True):
        pass
    app.thread_oid  # noqa: B018 (the node id every task message carries)
    app.backend  # noqa: B018 (send_task makes each task's AsyncResult with it)
    app.amqp._event_dispatcher  # noqa: B018 (imports celery.events: each send's sent-event)
    "localhost".encode("idna")  # the codec the first connect to a host name loads


def publish_soon(job_ids: list[int]) -> None:
    _publish_soon("jobs", list(job_ids))


def _publish_soon(kind: str, ids: list[int]) -> None:
    if settings.QUORUM_JOBS_PUBLISH_INLINE or connection.in_atomic_block:
        # Tests capturing on_commit callbacks, or a caller still inside an outer atomic block
        # (the rows are not visible to another connection yet): publish here.
        jobs_publish(ids) if kind == "jobs" else flags_updates_publish(ids)
        return
    _publisher().put((kind, ids))


def publisher_flush(timeout: float = 5.0) -> bool:
    """Waits (bounded) for this process's pending publishes; management commands call it
    before exiting so a short-lived process does not leave work to the sweep."""
    pub = _publisher_state.get("publisher")
    return True if pub is None else pub.flush(timeout)


# --- running (worker side) ------------------------------------------------------------------


def runner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobRun:
    """The claimed job as a task sees it: its id, attempt and a progress reporter."""

    job: Job

    @property
    def token(self) -> str:
        return f"{self.job.pk}.{self.job.attempts}"

    @property
    def is_retry(self) -> bool:
        return self.job.attempts > 1

    def report(self, percent: int, phase: str = "") -> None:
        Job.objects.filter(pk=self.job.pk, status=Job.Status.RUNNING).update(
            progress=max(0, min(99, int(percent))), phase=phase[:200], heartbeat_at=timezone.now()
        )


def job_claim(job_id: int) -> JobRun | None:
    """Takes a waiting job for this process; None when it is running elsewhere, finished or
    cancelled (a duplicate delivery)."""
    now = timezone.now()
    claimed = Job.objects.filter(
        pk=job_id, status__in=[Job.Status.QUEUED, Job.Status.PUBLISHED]
    ).update(
        status=Job.Status.RUNNING,
        attempts=F("attempts") + 1,
        worker=runner_name(),
        heartbeat_at=now,
        started_at=now,
        progress=0,
        phase="",
    )
    if not claimed:
        return None
    _heartbeat().add(job_id)
    return JobRun(job=Job.objects.get(pk=job_id))


def job_finish(run: JobRun, *, result: Any = None, error: str = "") -> None:
    _heartbeat().discard(run.job.pk)
    Job.objects.filter(pk=run.job.pk, status=Job.Status.RUNNING, worker=run.job.worker).update(
        status=Job.Status.FAILED if error else Job.Status.DONE,
        result=result,
        error=error[:5000],
        progress=100 if not error else F("progress"),
        finished_at=timezone.now(),
    )


def run_job(job_id: int | None, fn, **kwargs) -> Any:
    """Runs ``fn(run=JobRun, **kwargs)`` for a claimed job, or ``fn(run=None, **kwargs)`` for a
    message without a job (published by an older version); records the outcome."""
    if job_id is None:
        return fn(run=None, **kwargs)
    run = job_claim(job_id)
    if run is None:
        logger.info("job %s is not waiting (duplicate delivery); skipped", job_id)
        return {"job": job_id, "skipped": True}
    try:
        result = fn(run=run, **kwargs)
    except BaseException as exc:  # SoftTimeLimitExceeded included: record why, then re-raise
        job_finish(run, error=f"{exc.__class__.__name__}: {exc}")
        _give_up(Job.objects.get(pk=job_id), f"{exc.__class__.__name__}: {exc}")
        raise
    job_finish(run, result=result if _jsonable(result) else None)
    return result


def _jsonable(value: Any) -> bool:
    import json

    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


class _Heartbeat:
    """Beats for the jobs this process runs, from a thread (a busy task still beats)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="quorum-job-heartbeat", daemon=True)
        self.thread.start()

    def add(self, job_id: int) -> None:
        with self.lock:
            self.ids.add(job_id)

    def discard(self, job_id: int) -> None:
        with self.lock:
            self.ids.discard(job_id)

    def _run(self) -> None:
        interval = max(0.5, settings.QUORUM_JOB_HEARTBEAT_SECONDS / 4)
        while True:
            time.sleep(interval)
            with self.lock:
                ids = list(self.ids)
            if not ids:
                connection.close()
                continue
            try:
                close_old_connections()
                Job.objects.filter(pk__in=ids, status=Job.Status.RUNNING).update(
                    heartbeat_at=timezone.now()
                )
            except Exception as exc:  # a locked SQLite file, a database restart: beat later
                logger.warning("heartbeat of jobs %s failed: %s", ids, exc)


_heartbeat_state: dict[str, Any] = {}


def _heartbeat() -> _Heartbeat:
    with _publisher_lock:
        hb = _heartbeat_state.get("hb")
        if hb is None or _heartbeat_state.get("pid") != os.getpid():
            hb = _heartbeat_state["hb"] = _Heartbeat()
            _heartbeat_state["pid"] = os.getpid()
        return hb


def jobs_status_for_staff() -> dict[str, Any]:
    """The demo model's training job and how many jobs wait for the broker (home page)."""
    return {
        "demo_training": Job.objects.filter(name=TRAIN_DEMO_MODEL).order_by("-id").first(),
        "unpublished": Job.objects.filter(status=Job.Status.QUEUED)
        .exclude(publish_error="")
        .count(),
    }


# --- cancelling and giving up ---------------------------------------------------------------


def jobs_cancel(*, ids: Sequence[int], reason: str = "cancelled") -> int:
    """Cancels the given jobs that have not started; the owning service is told (an export
    becomes cancelled). A message already on the broker then runs nothing."""
    cancelled = 0
    waiting = [Job.Status.QUEUED, Job.Status.PUBLISHED]
    for job in Job.objects.filter(pk__in=list(ids), status__in=waiting):
        if Job.objects.filter(pk=job.pk, status__in=waiting).update(
            status=Job.Status.CANCELLED, error=reason, finished_at=timezone.now()
        ):
            cancelled += 1
            _give_up(job, reason, cancelled=True)
    return cancelled


def jobs_waiting(*, name: str, match: dict[str, Any]) -> list[int]:
    """Ids of the unstarted jobs of one kind whose kwargs contain ``match``."""
    return [
        j.pk
        for j in Job.objects.filter(name=name, status__in=[Job.Status.QUEUED, Job.Status.PUBLISHED])
        if all(j.kwargs.get(k) == v for k, v in match.items())
    ]


def _give_up(job: Job, reason: str, *, cancelled: bool = False) -> None:
    path = GIVE_UP.get(job.name)
    if not path:
        return
    module, func = path.rsplit(".", 1)
    try:
        getattr(importlib.import_module(module), func)(job=job, reason=reason, cancelled=cancelled)
    except Exception:
        logger.exception("could not record that job %s was given up", job.pk)


# --- the sweep ------------------------------------------------------------------------------


def _runner_alive(worker: str) -> bool | None:
    """True/False for a runner on this host (its pid exists or not); None elsewhere."""
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return None
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class SweepReport:
    published: int = 0
    retried: int = 0
    failed: int = 0
    flag_updates: int = 0


def jobs_sweep(*, now=None) -> SweepReport:
    """One pass: publish what failed to publish, retry or fail jobs of dead runners, and
    re-publish the flag updates of tasks left dirty. Safe to run from many processes."""
    from annotate.models import Task

    now = now or timezone.now()
    report = SweepReport()
    republish_after = timedelta(seconds=settings.QUORUM_JOB_REPUBLISH_SECONDS)
    heartbeat_timeout = timedelta(seconds=settings.QUORUM_JOB_HEARTBEAT_SECONDS)

    # 1. Jobs whose publish failed, or whose publisher died before confirming, and published
    # jobs nobody started for a long time (a broker that lost its messages: a Redis restart
    # without persistence, a filesystem queue cleared). A duplicate message runs nothing.
    # Re-publishing backs off (x2 each time, up to x32) so a long queue is not flooded.
    waiting = Job.objects.filter(
        Q(status=Job.Status.QUEUED, created_at__lte=now - timedelta(seconds=2))
        | Q(status=Job.Status.QUEUED) & ~Q(publish_error="")
        | Q(status=Job.Status.PUBLISHED, published_at__lte=now - republish_after)
    ).order_by("id")
    ids = [
        pk
        for pk, status, published_at, count in waiting.values_list(
            "pk", "status", "published_at", "publish_count"
        )[:1000]
        if status == Job.Status.QUEUED
        or published_at <= now - republish_after * min(2 ** max(count - 1, 0), 32)
    ]
    if ids:
        report.published = jobs_publish(ids)

    # 2. Running jobs whose runner is dead (same host: its pid is gone; elsewhere: no beat).
    for job in Job.objects.filter(status=Job.Status.RUNNING).order_by("id")[:1000]:
        alive = _runner_alive(job.worker)
        stale = job.heartbeat_at is None or job.heartbeat_at <= now - heartbeat_timeout
        if alive is True or (alive is None and not stale):
            continue
        reason = (
            f"worker {job.worker} was lost (no heartbeat since "
            f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC) on attempt {job.attempts}"
        )
        if job.attempts < job.max_attempts:
            moved = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=job.worker)
            if moved.update(status=Job.Status.QUEUED, error=reason, publish_error=""):
                report.retried += 1
                jobs_publish([job.pk])
        else:
            moved = Job.objects.filter(pk=job.pk, status=Job.Status.RUNNING, worker=job.worker)
            if moved.update(status=Job.Status.FAILED, error=reason, finished_at=now):
                report.failed += 1
                job.refresh_from_db()
                _give_up(job, reason)

    # 3. Tasks whose flag update was never run (its message lost with the broker or a worker).
    # Backs off per task (x2 each time) so a long queue of updates is not flooded.
    dirty = list(
        Task.objects.filter(flags_dirty_at__lte=now - republish_after)
        .order_by("flags_dirty_at")
        .values_list("pk", flat=True)[:2000]
    )
    seen = _flag_republished
    for stale in set(seen) - set(dirty):
        del seen[stale]
    due = [
        pk
        for pk in dirty
        if pk not in seen or now - seen[pk][1] >= republish_after * min(2 ** seen[pk][0], 32)
    ][:500]
    if due:
        report.flag_updates = flags_updates_publish(due, at_once=True)
        for pk in due[: report.flag_updates]:
            seen[pk] = (seen.get(pk, (0, now))[0] + 1, now)
    return report


# task id -> (times re-published, last time) for this process's sweeps.
_flag_republished: dict[int, tuple[int, Any]] = {}


# The sweep also deletes stale uploads (`annotate.project_setup.uploads_prune`: set-ups left
# half way, files spooled by a request whose client or process went away), at most this often;
# an upload prunes them too.
UPLOADS_PRUNE_SECONDS = 3600.0


class _Sweeper:
    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="quorum-job-sweep", daemon=True)
        self.pruned_at: float | None = None

    def _run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                close_old_connections()
                report = jobs_sweep()
                if report.published or report.retried or report.failed or report.flag_updates:
                    logger.info("job sweep: %s", report)
                self.uploads_prune()
            except Exception:
                logger.exception("job sweep failed; next one in %.0f s", self.interval)
            finally:
                connection.close()

    def uploads_prune(self) -> None:
        """Stale uploads deleted, the first sweep and then every ``UPLOADS_PRUNE_SECONDS``
        (only files past the age threshold: an upload being written stays)."""
        now = time.monotonic()
        if self.pruned_at is not None and now - self.pruned_at < UPLOADS_PRUNE_SECONDS:
            return
        self.pruned_at = now
        from annotate.project_setup import uploads_prune

        deleted = uploads_prune()
        if deleted:
            logger.info("job sweep: pruned %d stale upload(s)", deleted)


_sweeper_state: dict[str, _Sweeper] = {}


def sweeper_start() -> None:
    """Starts this process's sweep thread (each worker runs one; extra sweeps are harmless)."""
    interval = float(settings.QUORUM_JOB_SWEEP_SECONDS)
    if interval <= 0 or "sweeper" in _sweeper_state:
        return
    sweeper = _sweeper_state["sweeper"] = _Sweeper(interval)
    sweeper.thread.start()
