"""Gunicorn settings for Quorum's web process: ``gunicorn -c config/gunicorn.conf.py``.

Every value can be overridden from the environment (below) or on the command line. The WSGI
application is ``config.wsgi:application``; Django settings still come from ``config/settings.py``
(``DJANGO_*``, ``DATABASE_URL``, ``CELERY_BROKER_URL``...), see ``docs/deploy.md``.

Kept free of module-level Django imports: gunicorn reads this file in the master process, before
any worker exists, and nothing opened here may be shared with the forked workers (the hooks at
the end run in the workers).
"""

from __future__ import annotations

import os


def _env_int(name: str, default: int, *, minimum: int = 1) -> int:
    # config.env is not imported: it imports Django, and the master should stay Django-free.
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}: expected an integer, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name}: must be at least {minimum}, got {value}")
    return value


def _database_is_a_server() -> bool:
    """Whether Django will talk to a database server (PostgreSQL), read as settings.py reads
    ``DATABASE_URL`` (or the file ``DATABASE_URL_FILE`` names); SQLite otherwise."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url and os.environ.get("DATABASE_URL_FILE"):
        try:
            with open(os.environ["DATABASE_URL_FILE"]) as fh:
                url = fh.read().strip()
        except OSError:
            return False
    return url.startswith(("postgres://", "postgresql://"))


def _default_workers() -> int:
    # gunicorn's rule of thumb (2 x cores + 1), capped: every worker is a full Django process
    # (~100 MB) holding one PostgreSQL connection, and the next-task path is database-bound, so
    # past ~9 workers the database, not the web tier, is what needs more room. On PostgreSQL a
    # sync worker also waits for the server on every statement and on each commit's WAL flush
    # (3-9 ms measured on a shared 2-core host): 4 x cores + 1 keeps the cores busy meanwhile.
    # bench/peers quorum_side.py, PostgreSQL, 8 annotators, 2 cores at a load of 4-12, runs
    # alternated: submit p95 414 and 385 ms with 9 workers, 516, 510 and 799 ms with 5. SQLite
    # works in the worker's own process (its writers queue on one lock): 2 x cores + 1 there.
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    per_core = 4 if _database_is_a_server() else 2
    return min(per_core * (cores or 1) + 1, 9)


wsgi_app = "config.wsgi:application"

# Where to listen: "host:port", "unix:/run/quorum.sock", or several separated by commas.
# Behind a reverse proxy keep the default loopback address; "0.0.0.0:8000" listens everywhere.
bind = [
    item.strip()
    for item in os.environ.get("QUORUM_BIND", "127.0.0.1:8000").split(",")
    if item.strip()
]

# Worker processes. Sync workers handle one request at a time, so each holds at most one
# database connection (see CONN_MAX_AGE in config/settings.py): connections = workers x threads.
workers = _env_int("QUORUM_WEB_WORKERS", _default_workers())

# Threads per worker. 1 keeps the plain sync worker; more switches gunicorn to its threaded
# worker ("gthread"), a fixed pool whose threads each keep their own database connection.
threads = _env_int("QUORUM_WEB_THREADS", 1)

# A worker silent for this long (one request running that long) is killed and replaced. Imports
# larger than QUORUM_ASYNC_IMPORT_ROWS and every export run as background jobs, so no request
# should come near it; raise it only for very large synchronous admin uploads.
timeout = _env_int("QUORUM_WEB_TIMEOUT", 60)

# On SIGTERM / SIGHUP, workers get this long to finish the requests they are serving.
graceful_timeout = 30

# Seconds an idle keep-alive connection is kept open (used by the threaded worker; the sync
# worker closes after each response). Keep it below the reverse proxy's upstream idle timeout.
keepalive = 5

# Replace each worker after about this many requests, spread so workers do not all restart at
# once: bounds slow memory growth in long-running processes. 0 disables.
max_requests = _env_int("QUORUM_WEB_MAX_REQUESTS", 2000, minimum=0)
max_requests_jitter = max_requests // 10

# Load the app in each worker after fork, never in the master: a Django database connection or
# a Celery/kombu broker connection opened before fork would be shared by every worker.
preload_app = False

# Access log and error log to stdout/stderr, for the process supervisor / container runtime.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("QUORUM_WEB_LOG_LEVEL", "info")
# Combined format plus the request time in milliseconds.
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'

# Heartbeat files in memory rather than on a possibly slow or full disk.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

# Trust X-Forwarded-* headers only from a proxy on this host unless told otherwise.
forwarded_allow_ips = os.environ.get("QUORUM_FORWARDED_ALLOW_IPS", "127.0.0.1,::1")


def post_worker_init(worker) -> None:
    """Loads the URL configuration (the REST API's schemas among it, ~1 s) and readies the
    Celery publisher (workers.jobs.publisher_prepare: its imports, 65-310 ms of CPU) while the
    worker boots, so that neither the first request a new or recycled worker serves nor the
    requests running beside its first publish (a thread of the same process) pay for them."""
    import logging

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 (the access loads the URLconf)

    from workers.jobs import publisher_prepare

    try:
        publisher_prepare()
    except Exception:  # a misconfigured broker: the first publish reports it, as before
        logging.getLogger("quorum.jobs").exception("could not ready the job publisher")
