"""The web workers ready Celery's publishing as they start, so a process's first publish (in
its publisher thread, beside the requests it serves) imports and builds nothing.

Unprepared, that first publish took 65-310 ms of CPU holding the GIL (kombu's Redis transport,
the producer pool, the result backend, celery.events): a request running meanwhile, at a Redis
freeze the one paying the session cache's 50 ms read timeout, took ~100 ms longer
(tests/e2e/test_broker_outage.py). Each check runs in a fresh interpreter: this one has
imported most of Celery already.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import free_port

REPO = Path(__file__).resolve().parent.parent

CHECK = r"""
import json, os, runpy, sys
import django
django.setup()
import redis  # the session store's: imported by every web process's first request

mode = sys.argv[1]
if mode == "gunicorn":
    runpy.run_path("config/gunicorn.conf.py")["post_worker_init"](None)
elif mode == "prepare":
    from workers.jobs import publisher_prepare
    publisher_prepare()  # raises if it reached for the broker (nothing listens on its port)

# The first publish, all of it but the network: what would it still import?
from kombu import messaging
messaging.Producer._publish = lambda self, *args, **kwargs: None
before = set(sys.modules)
from workers.jobs import _celery_app, _send
backend = type(_celery_app().backend)
calls = []
backend.on_task_call = lambda self, producer, task_id: calls.append(task_id)
_send("quorum.flags_update_dirty", {"task_ids": [1]}, "default")
print(json.dumps({"imported": sorted(set(sys.modules) - before), "backend_calls": len(calls)}))
"""


def _first_publish(mode: str, tmp_path) -> dict:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("DATABASE_URL", "CELERY_", "QUORUM_", "DJANGO_"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        QUORUM_DATA_DIR=str(tmp_path),
        # A port nothing listens on: preparing must not need the broker.
        CELERY_BROKER_URL=f"redis://127.0.0.1:{free_port()}/5",
        PYTHONPATH=str(REPO),
    )
    result = subprocess.run(
        [sys.executable, "-c", CHECK, mode],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


pytest.importorskip("redis")


def test_unprepared_the_first_publish_imports_celerys_machinery(tmp_path):
    # What the preparation is for: without it the first publish loads these in its thread.
    assert "kombu.transport.redis" in _first_publish("cold", tmp_path)["imported"]


def test_prepared_the_first_publish_imports_nothing_and_the_broker_was_not_reached(tmp_path):
    assert _first_publish("prepare", tmp_path)["imported"] == []


def test_the_gunicorn_workers_prepare_as_they_start(tmp_path):
    assert _first_publish("gunicorn", tmp_path)["imported"] == []


def test_a_publish_does_not_register_with_the_result_backend(tmp_path):
    # Nobody reads a job's Celery result; registering (a Redis SUBSCRIBE) made a publish on a
    # refused Redis retry 20 times a second apart (~19 s) before it failed.
    assert _first_publish("prepare", tmp_path)["backend_calls"] == 0
