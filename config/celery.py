"""The Celery app. Queues: ``default`` (CPU work: imports, flags, exports) and ``gpu``
(reward-model scoring). Settings come from Django settings under the ``CELERY_`` namespace."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

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
