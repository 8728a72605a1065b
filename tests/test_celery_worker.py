"""A real Celery worker process: time limits in effect, imports run end-to-end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from celery.exceptions import SoftTimeLimitExceeded

from annotate.models import ImportJob, Judgment
from annotate.services import import_job_create
from tests.conftest import is_postgres
from workers.tasks import ping

pytestmark = pytest.mark.worker


def _wait_for(job: ImportJob, *, seconds: float) -> None:
    """Until the import job is done or failed (its row refreshed), at most ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status in (ImportJob.Status.DONE, ImportJob.Status.FAILED):
            return
        time.sleep(0.3)


@pytest.mark.parametrize("pool", ["solo", "prefork"])
def test_it_stops_a_task_at_the_soft_time_limit(pool, celery_worker_process):
    celery_worker_process(
        pool=pool,
        queues="default",
        extra_env={"QUORUM_TASK_TIME_LIMIT": "20", "QUORUM_TASK_SOFT_TIME_LIMIT": "2"},
    )
    started = time.monotonic()
    # Explicit None: the message carries no limits, so the worker's own settings decide.
    result = ping.apply_async(kwargs={"delay": 15}, time_limit=None, soft_time_limit=None)
    with pytest.raises(SoftTimeLimitExceeded):
        result.get(timeout=60)
    assert time.monotonic() - started < 14


def test_it_ends_a_solo_worker_past_the_hard_time_limit(celery_worker_process):
    worker = celery_worker_process(
        pool="solo",
        queues="default",
        extra_env={"QUORUM_TASK_TIME_LIMIT": "2", "QUORUM_TASK_SOFT_TIME_LIMIT": "0"},
    )
    started = time.monotonic()
    ping.apply_async(kwargs={"delay": 30}, time_limit=None, soft_time_limit=None)
    assert worker.proc.wait(timeout=25) == 75  # the watchdog's exit code
    assert time.monotonic() - started < 20


def test_it_runs_a_ping_on_the_worker(celery_worker_process):
    celery_worker_process(queues="default")
    assert ping.delay().get(timeout=60)["pid"] > 0


def test_it_runs_an_import_job_end_to_end(celery_worker_process, tmp_path):
    celery_worker_process(queues="default")
    rows = [
        {"model_a": f"m{i % 3}", "model_b": "m9", "winner": "model_b", "tstamp": i}
        for i in range(50)
    ]
    path = tmp_path / "votes.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    job = import_job_create(path=path, project_name="from-worker", run_async=True)
    _wait_for(job, seconds=90)
    assert job.status == ImportJob.Status.DONE, job.errors
    assert job.counts["judgments"] == 50
    assert Judgment.objects.filter(project__name="from-worker").count() == 50
    assert job.progress_percent == 100


@pytest.mark.parametrize(("given", "expected"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_torch_threads_do_not_spin_in_quorum_processes(tmp_path, given, expected):
    """Loading the Celery app (every worker and Django process does, before torch) makes
    libgomp's threads sleep between forward passes, unless the environment says otherwise."""
    env = {**os.environ, "QUORUM_DATA_DIR": str(tmp_path)}
    env.pop("OMP_WAIT_POLICY", None)
    if given:
        env["OMP_WAIT_POLICY"] = given
    script = "import os, config, torch; print(os.environ['OMP_WAIT_POLICY'])"
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parent.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[-1] == expected


@pytest.mark.skipif(is_postgres(), reason="the forked import is SQLite's")
def test_an_import_job_parses_in_a_forked_child_of_a_prefork_worker(
    celery_worker_process, tmp_path, settings
):
    """The forked parse (``services._write_forked``) inside a real prefork worker's child, as
    deployed: its threads, signal handlers and database connection beside the fork. It stores
    what the import without a child stores, ids included."""
    from annotate.models import Candidate, Prompt, Task, TaskCandidate
    from annotate.services import import_file
    from tests.test_h20a_forked_import import _rows, _table, _write

    worker = celery_worker_process(
        queues="default", pool="prefork", extra_env={"QUORUM_IMPORT_FORK": "always"}
    )
    path = _write(tmp_path / "rows.jsonl", _rows(2_100))  # 3 chunks of up to 1,000 rows
    job = import_job_create(path=path, project_name="forked", run_async=True)
    _wait_for(job, seconds=120)
    assert job.status == ImportJob.Status.DONE, job.errors
    assert job.counts["prompts"] == 2_100
    assert "rows parsed in a forked child" in worker.log.read_text()

    settings.QUORUM_IMPORT_FORK = "never"
    today = import_file(path=path, project_name="in-process").project
    for model in (Prompt, Candidate, Task, TaskCandidate):
        assert _table(model, job.project) == _table(model, today), model
