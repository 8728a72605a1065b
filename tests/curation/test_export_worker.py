"""A real Celery worker process builds an export end to end (default queue)."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
import pytest

from curation import services
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
)

pytestmark = pytest.mark.worker


def test_it_builds_an_export_on_a_real_worker(users, celery_worker_process):
    project, _ = disputed_ranking_project(users, n_prompts=4)
    celery_worker_process(queues="default")
    export = services.export_create(project=project, options={"splits": "train=0.5,test=0.5"})
    # export_create enqueues on commit; this test runs outside a transaction (transactional_db).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        export.refresh_from_db()
        if export.status in ("done", "failed"):
            break
        time.sleep(0.3)
    assert export.status == "done", export.error
    assert export.progress == 100
    assert pq.read_table(export.path / "parquet" / "rankings.parquet").num_rows == 4
