"""Quorum settings: one module, driven by environment variables.

Embedded default (demo, tests): SQLite in WAL mode and a kombu ``filesystem://`` Celery broker
under ``QUORUM_DATA_DIR`` -- no servers. Production: ``DATABASE_URL`` (PostgreSQL) and
``CELERY_BROKER_URL`` (Redis). A bad value stops start-up with a message naming the variable.
"""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from config.env import env_bool, env_choice, env_int, env_list, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("QUORUM_DATA_DIR", str(BASE_DIR / "var"))).resolve()

DEBUG = env_bool("DJANGO_DEBUG", False)
# Public (it is in this file): management commands, workers and tests run on it without
# configuration, but the web server refuses it with DEBUG off (config/security.py) unless
# QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY declares a local use such as `make demo`.
QUORUM_DEVELOPMENT_SECRET_KEY = "quorum-insecure-development-key-change-me"
QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY = env_bool("QUORUM_ALLOW_DEVELOPMENT_SECRET_KEY", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG and env_bool("QUORUM_REQUIRE_SECRET_KEY", False):
        raise ImproperlyConfigured("DJANGO_SECRET_KEY: must be set (or DJANGO_SECRET_KEY_FILE)")
    SECRET_KEY = QUORUM_DEVELOPMENT_SECRET_KEY
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])


def _proxy_ssl_header() -> tuple[str, str] | None:
    """``DJANGO_SECURE_PROXY_SSL_HEADER="X-Forwarded-Proto: https"`` -> Django's tuple form."""
    raw = (env_str("DJANGO_SECURE_PROXY_SSL_HEADER") or "").strip()
    if not raw:
        return None
    name, sep, value = raw.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name or not value or " " in name:
        raise ImproperlyConfigured(
            f"DJANGO_SECURE_PROXY_SSL_HEADER: expected 'Header-Name: value' "
            f"(e.g. 'X-Forwarded-Proto: https'), got {raw!r}"
        )
    return "HTTP_" + name.upper().replace("-", "_"), value


# HTTPS behind a proxy (docs/deploy.md, "HTTPS"). All off by default: the demo is plain HTTP.
SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", False)
SECURE_PROXY_SSL_HEADER = _proxy_ssl_header()
SECURE_HSTS_SECONDS = env_int("DJANGO_SECURE_HSTS_SECONDS", 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("DJANGO_SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = env_bool("DJANGO_SECURE_COOKIES", False)
# Scripts, styles, images and media from this site only; nothing inline, no plugins, no framing.
QUORUM_CONTENT_SECURITY_POLICY = env_str(
    "QUORUM_CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "media-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'",
).strip()

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    # Installed for its templates and static files: /api/docs loads Swagger UI from this
    # server, not from a CDN (django-ninja falls back to a CDN when it is not installed).
    "ninja",
    "axes",
    "annotate",
    "curation",
    "workers",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves /static/ from STATIC_ROOT (filled by `manage.py collectstatic`) in every process,
    # DEBUG or not, so the production server needs no separate static file server.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    # Before CSRF, whose check may read a POST body.
    "config.security.RequestSizeLimitMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.security.ContentSecurityPolicyMiddleware",
    # Last, as django-axes asks: turns a locked-out login into its 429 response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]


def _conn_max_age() -> int:
    """Seconds a database connection is reused across requests (``QUORUM_DB_CONN_MAX_AGE``).

    Django keeps one connection per thread. Gunicorn's sync workers serve one request at a time
    in one thread, and its threaded workers use a fixed pool, so persistent connections stay
    bounded at workers x threads per web host (Celery: one per worker process) and save a
    connection set-up per request. ``runserver`` starts a new thread per client connection and
    keeps it for the whole HTTP keep-alive, so there every browser tab would pin a server
    connection (76 of 100 in issue 8): under runserver connections close after each request.
    """
    if len(sys.argv) > 1 and sys.argv[1] == "runserver":
        return 0
    return env_int("QUORUM_DB_CONN_MAX_AGE", 60, minimum=0)


def _sqlite() -> dict:
    return {
        # Django's backend, but a writer waiting for the lock retries every few ms instead of
        # sleeping in SQLite's busy handler (up to 100 ms at a time): config/sqlite_backend.
        "ENGINE": "config.sqlite_backend",
        "OPTIONS": {
            # WAL lets the web process read while a worker writes; IMMEDIATE takes the
            # write lock at BEGIN so concurrent writers queue instead of failing mid-way.
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            "transaction_mode": "IMMEDIATE",
            "timeout": 30,
        },
        # One connection per process kept, as for PostgreSQL: a new one re-reads the schema and
        # starts with an empty page cache on every request.
        "CONN_MAX_AGE": _conn_max_age(),
    }


_SQLITE = _sqlite()


def _database_from_env() -> dict:
    url = env_str("DATABASE_URL")
    if not url:
        return {
            "NAME": DATA_DIR / "quorum.sqlite3",
            **_SQLITE,
            # A file, not :memory:, so a Celery worker process started by a test sees it.
            "TEST": {"NAME": str(DATA_DIR / "test-quorum.sqlite3")},
        }
    try:
        config = dj_database_url.parse(url, conn_max_age=_conn_max_age(), conn_health_checks=True)
    except Exception as exc:  # dj-database-url raises several types for bad URLs
        raise ImproperlyConfigured(f"DATABASE_URL: cannot parse {url!r}: {exc}") from exc
    if config.get("ENGINE") not in (
        "django.db.backends.postgresql",
        "django.db.backends.sqlite3",
    ):
        raise ImproperlyConfigured(
            f"DATABASE_URL: unsupported database {config.get('ENGINE')!r}; use postgres:// or sqlite://"
        )
    if config["ENGINE"] == "django.db.backends.sqlite3":
        config.update(_SQLITE)
    else:
        # Django's backend, its health check of a reused connection without a round trip
        # unless the server has said something (config/postgresql_backend).
        config["ENGINE"] = "config.postgresql_backend"
    return config


DATABASES = {"default": _database_from_env()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Login throttling (config/security.py): the first backend refuses locked-out accounts/clients.
# The second is Django's ModelBackend with the per-request user read compiled once per process
# (annotate/session_store.py): every login goes through it. Sessions name the backend that
# logged them in, and Django reads a session's user only through a backend listed here: Django's
# own ModelBackend stays last so sessions opened before UserBackend keep working (an annotator
# mid-task is not logged out by an upgrade). A refused password is checked by both (one more
# hash), after the throttle's count.
AUTHENTICATION_BACKENDS = [
    "config.security.LoginThrottleBackend",
    "annotate.session_store.UserBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("QUORUM_LOGIN_FAILURE_LIMIT", 5, minimum=1)
# 0: a lockout lasts until an admin lifts it.
_lockout_minutes = env_int("QUORUM_LOGIN_LOCKOUT_MINUTES", 15, minimum=0)
AXES_COOLOFF_TIME = timedelta(minutes=_lockout_minutes) if _lockout_minutes else None
AXES_LOCKOUT_PARAMETERS = "config.security.lockout_parameters"
AXES_CLIENT_IP_CALLABLE = "config.security.client_ip"
QUORUM_CLIENT_IP_HEADER = (env_str("QUORUM_CLIENT_IP_HEADER") or "").strip()
# Only failures are recorded: a row per successful login would be a write per login for nothing.
AXES_DISABLE_ACCESS_LOG = True
# A successful login must not reset the client's count: an attacker with one account of their
# own would otherwise clear their guesses at other accounts between tries.
AXES_RESET_ON_SUCCESS = False

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    # collectstatic writes gzip copies that whitenoise serves to clients that accept them.
    # Not the *Manifest* variant (hashed names, immutable caching): with DEBUG off it makes every
    # {% static %} tag fail until collectstatic has run, which the test suite and a fresh
    # checkout's management commands never do. Unhashed files get a short max-age (60 s).
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("QUORUM_MEDIA_ROOT", str(DATA_DIR / "media"))).resolve()

# Import limits. Files over the limit are rejected naming the file and the variable.
QUORUM_MAX_MEDIA_BYTES = env_int("QUORUM_MAX_MEDIA_MB", 200, minimum=1) * 1024 * 1024
QUORUM_MAX_IMPORT_BYTES = env_int("QUORUM_MAX_IMPORT_MB", 2048, minimum=1) * 1024 * 1024
# The data file (JSONL/JSON), unpacked: it is parsed in memory (about 3.5 bytes per byte).
QUORUM_MAX_DATA_BYTES = env_int("QUORUM_MAX_DATA_MB", 256, minimum=1) * 1024 * 1024
# Each prompt, candidate text and rationale: a page shows them whole.
QUORUM_MAX_TEXT_CHARS = env_int("QUORUM_MAX_TEXT_CHARS", 200_000, minimum=1)
# Width x height of an image or video frame, checked from the header before decoding.
QUORUM_MAX_IMAGE_PIXELS = env_int("QUORUM_MAX_IMAGE_MEGAPIXELS", 40, minimum=1) * 1_000_000
# Every request body but an import upload's (config/security.py).
QUORUM_MAX_REQUEST_BYTES = env_int("QUORUM_MAX_REQUEST_MB", 10, minimum=1) * 1024 * 1024
# Imports with more rows than this run as a Celery task when started from the admin or API.
QUORUM_ASYNC_IMPORT_ROWS = env_int("QUORUM_ASYNC_IMPORT_ROWS", 2000, minimum=0)
# SQLite: a Quorum file without judgments parsed in a forked child beside the inserts
# (annotate.services._write_forked): "auto" where a core is free, "always", or "never".
QUORUM_IMPORT_FORK = env_choice("QUORUM_IMPORT_FORK", "auto", ("auto", "always", "never"))
QUORUM_LEASE_MINUTES = env_int("QUORUM_LEASE_MINUTES", 10, minimum=1)
# Bootstrap rounds of the leaderboard's confidence intervals: the CLI, the API and the dashboard
# all use this, so one project shows the same intervals everywhere (for the same seed).
QUORUM_LEADERBOARD_BOOTSTRAP = env_int("QUORUM_LEADERBOARD_BOOTSTRAP", 200, minimum=1)
DATA_UPLOAD_MAX_MEMORY_SIZE = QUORUM_MAX_REQUEST_BYTES
FILE_UPLOAD_MAX_MEMORY_SIZE = 10 * 1024 * 1024
# Uploads over that are spooled here, on DATA_DIR's file system, not the system's temporary
# folder: an import upload is then renamed into DATA_DIR/uploads (annotate.services.upload_save),
# not copied, where DATA_DIR is on another file system than /tmp.
FILE_UPLOAD_TEMP_DIR = str(DATA_DIR / "tmp" / "uploads")
Path(FILE_UPLOAD_TEMP_DIR).mkdir(parents=True, exist_ok=True)

# --- Celery -------------------------------------------------------------------------------
_BROKER_SCHEMES = ("filesystem", "redis", "rediss", "amqp", "pyamqp", "memory")


def _broker_from_env() -> tuple[str, dict]:
    url = env_str("CELERY_BROKER_URL") or "filesystem://"
    scheme = urlparse(url).scheme
    if scheme not in _BROKER_SCHEMES:
        raise ImproperlyConfigured(
            f"CELERY_BROKER_URL: unsupported scheme {scheme!r} in {url!r}; "
            f"use one of {', '.join(_BROKER_SCHEMES)}"
        )
    if scheme != "filesystem":
        # Socket timeouts: a frozen Redis fails a publish in seconds instead of hanging it
        # (publishing happens off the request path; the job sweep retries).
        return url, {
            "visibility_timeout": 3600,
            "socket_timeout": 10,
            "socket_connect_timeout": 5,
        }
    broker_dir = DATA_DIR / "broker"
    for sub in ("queue", "processed", "control"):
        (broker_dir / sub).mkdir(parents=True, exist_ok=True)
    return url, {
        "data_folder_in": str(broker_dir / "queue"),
        "data_folder_out": str(broker_dir / "queue"),
        "processed_folder": str(broker_dir / "processed"),
        "control_folder": str(broker_dir / "control"),
        "store_processed": False,
        # A worker lists the folder this often when idle (kombu's default: every second, which
        # an import or export waited out before it started). Every 50 ms: a job waits 25 ms on
        # average for its pick-up; an idle worker spends about 0.5 % of a core polling
        # (measured: 0.11 s of CPU in 20 s).
        "polling_interval": 0.05,
    }


CELERY_BROKER_URL, CELERY_BROKER_TRANSPORT_OPTIONS = _broker_from_env()
# The embedded broker writes each message atomically (workers/broker.py): kombu's own
# filesystem transport lets a polling worker read a half-written file and die.
CELERY_BROKER_TRANSPORT = (
    "workers.broker:Transport" if CELERY_BROKER_URL.startswith("filesystem") else None
)
_default_backend = (
    f"file://{DATA_DIR / 'results'}"
    if CELERY_BROKER_URL.startswith("filesystem")
    else CELERY_BROKER_URL
)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or _default_backend
if CELERY_RESULT_BACKEND.startswith("file://"):
    Path(CELERY_RESULT_BACKEND.removeprefix("file://")).mkdir(parents=True, exist_ok=True)
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
# Hard and soft limits in seconds for every task; per-task limits may be lower.
CELERY_TASK_TIME_LIMIT = env_int("QUORUM_TASK_TIME_LIMIT", 3600, minimum=1)
# 0 disables the soft limit (the hard limit alone then applies).
CELERY_TASK_SOFT_TIME_LIMIT = (
    env_int("QUORUM_TASK_SOFT_TIME_LIMIT", max(1, CELERY_TASK_TIME_LIMIT - 30), minimum=0) or None
)
if CELERY_TASK_SOFT_TIME_LIMIT and CELERY_TASK_SOFT_TIME_LIMIT > CELERY_TASK_TIME_LIMIT:
    raise ImproperlyConfigured(
        "QUORUM_TASK_SOFT_TIME_LIMIT: must not exceed QUORUM_TASK_TIME_LIMIT "
        f"({CELERY_TASK_SOFT_TIME_LIMIT} > {CELERY_TASK_TIME_LIMIT})"
    )

# The gpu workers' decoded-media store (cache/media/ in the data dir): its bound in MB (0 turns
# it off), the processes that decode media beside the model (0: the prefetch threads do) and
# those that build whole scoring rows instead of the threads (0: off);
# workers/scoring.py. Read here so that a bad value stops start-up, not the first scoring.
QUORUM_MEDIA_STORE_MB = env_int("QUORUM_MEDIA_STORE_MB", 4096, minimum=0)
QUORUM_DECODE_PROCESSES = env_int("QUORUM_DECODE_PROCESSES", 0, minimum=0)
QUORUM_ROW_BUILD_PROCESSES = env_int("QUORUM_ROW_BUILD_PROCESSES", 0, minimum=0)

# Background jobs (workers/jobs.py): how often each worker sweeps (0: never; then run
# `manage.py jobs_sweep --loop`), when a running job's silent runner counts as dead, and when an
# unstarted job or an unrun flag update is published again.
QUORUM_JOB_SWEEP_SECONDS = env_int("QUORUM_JOB_SWEEP_SECONDS", 10, minimum=0)
QUORUM_JOB_HEARTBEAT_SECONDS = env_int("QUORUM_JOB_HEARTBEAT_SECONDS", 60, minimum=2)
QUORUM_JOB_REPUBLISH_SECONDS = env_int("QUORUM_JOB_REPUBLISH_SECONDS", 120, minimum=1)
# Publish in the caller's thread instead of the background publisher (tests).
QUORUM_JOBS_PUBLISH_INLINE = env_bool("QUORUM_JOBS_PUBLISH_INLINE", False)
# How long a process holds a judgment's flag-update hint for others before sending them as one
# message (the worker updates them in one pass); 0 sends each at once. 1 s, not 0.2: the
# worker's CPU grows with hint messages and passes per second, not with judgments (bench/peers
# cpu_per_loop.py, 8 annotators, PostgreSQL: worker 6.7-10.7 -> 1.8 ms a loop); a flag shows up
# about 2 s after its judgment.
QUORUM_FLAGS_UPDATE_DELAY_MS = env_int("QUORUM_FLAGS_UPDATE_DELAY_MS", 1000, minimum=0)


# --- Sessions -----------------------------------------------------------------------------
# With a Redis (the broker's, or QUORUM_SESSION_REDIS_URL; "off" keeps database sessions) each
# request reads its session from Redis; the database stays the source of truth, and a frozen or
# stopped Redis costs at most QUORUM_SESSION_REDIS_TIMEOUT_MS before the database answers
# (annotate/session_store.py). The embedded default keeps Django's database sessions.
def _session_redis_url() -> str:
    raw = (env_str("QUORUM_SESSION_REDIS_URL") or "").strip()
    if raw.lower() == "off":
        return ""
    url = raw or CELERY_BROKER_URL
    if urlparse(url).scheme in ("redis", "rediss"):
        return url
    if raw:
        raise ImproperlyConfigured(
            f"QUORUM_SESSION_REDIS_URL: expected a redis:// or rediss:// URL or off, got {raw!r}"
        )
    return ""


QUORUM_SESSION_REDIS_URL = _session_redis_url()
QUORUM_SESSION_REDIS_TIMEOUT_MS = env_int("QUORUM_SESSION_REDIS_TIMEOUT_MS", 50, minimum=1)
SESSION_ENGINE = (
    "annotate.session_store" if QUORUM_SESSION_REDIS_URL else "django.contrib.sessions.backends.db"
)

# Reward-model checkpoint of the demo (written by make_demo).
QUORUM_DEMO_DIR = DATA_DIR / "demo"

LOG_LEVEL = env_choice("QUORUM_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"))
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "WARNING"},
    "loggers": {"quorum": {"handlers": ["console"], "level": LOG_LEVEL, "propagate": False}},
}
