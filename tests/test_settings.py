"""Settings: bad environment values stop start-up naming the variable; limits are in effect."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _start(env_overrides: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL")}
    env.update({"QUORUM_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "config.settings"})
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); import config.celery"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_URL", "mysql://root@localhost/quorum"),
        ("DATABASE_URL", "not a url"),
        ("CELERY_BROKER_URL", "ftp://example/"),
        ("DJANGO_DEBUG", "maybe"),
        ("QUORUM_TASK_TIME_LIMIT", "ten"),
        ("QUORUM_TASK_TIME_LIMIT", "0"),
        ("QUORUM_MAX_MEDIA_MB", "-5"),
        ("QUORUM_MEDIA_STORE_MB", "-1"),
        ("QUORUM_MEDIA_STORE_MB", "4 GB"),
        ("QUORUM_DECODE_PROCESSES", "two"),
        ("QUORUM_ROW_BUILD_PROCESSES", "-2"),
        ("QUORUM_LOG_LEVEL", "LOUD"),
    ],
)
def test_it_refuses_to_start_with_a_bad_value(variable, value, tmp_path):
    result = _start({variable: value}, tmp_path)
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert variable in result.stderr.splitlines()[-1]


def test_it_refuses_a_soft_limit_above_the_hard_limit(tmp_path):
    result = _start({"QUORUM_TASK_TIME_LIMIT": "10", "QUORUM_TASK_SOFT_TIME_LIMIT": "20"}, tmp_path)
    assert result.returncode != 0 and "QUORUM_TASK_SOFT_TIME_LIMIT" in result.stderr


def test_it_reads_secrets_from_a_file(tmp_path):
    secret = tmp_path / "key"
    secret.write_text("s3cret-from-file\n")
    env = {"DJANGO_SECRET_KEY_FILE": str(secret)}
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; print(settings.SECRET_KEY)",
        ],
        cwd=REPO,
        env={
            **os.environ,
            **env,
            "QUORUM_DATA_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "config.settings",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.stdout.strip() == "s3cret-from-file"


def test_it_starts_with_good_values(tmp_path):
    result = _start({"QUORUM_TASK_TIME_LIMIT": "60", "DJANGO_DEBUG": "false"}, tmp_path)
    assert result.returncode == 0, result.stderr


def test_it_puts_the_time_limits_into_the_celery_config(settings):
    from config.celery import app

    # A misspelt setting name would be silently ignored by Celery: check the effective config.
    assert app.conf.task_time_limit == settings.CELERY_TASK_TIME_LIMIT
    assert app.conf.task_soft_time_limit == settings.CELERY_TASK_SOFT_TIME_LIMIT
    assert app.conf.task_serializer == "json" and app.conf.accept_content == ["json"]
    assert {q.name for q in app.conf.task_queues} == {"default", "gpu"}
    assert app.conf.worker_prefetch_multiplier == 1
