"""`train_demo_model --background` on a real worker: the job trains, registers and activates
the demo model, and the scoring run it starts finishes on the same worker."""

from __future__ import annotations

import time
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command

from annotate.demo_world import generate_world, write_world
from annotate.models import ModelScore, RewardModel
from tests.factories import make_project
from workers.models import Job, ScoringRun

pytestmark = pytest.mark.worker


@pytest.mark.timeout(600)
def test_it_trains_the_demo_model_as_a_job_on_a_worker(celery_worker_process):
    write_world(
        generate_world(seed=0, scale="small", prompts=4), Path(settings.QUORUM_DEMO_DIR) / "small"
    )
    project = make_project(name="Demo: VQA ranking", n_prompts=3, n_candidates=4)
    out = StringIO()
    call_command(
        "train_demo_model",
        "--background",
        "--epochs",
        "1",
        "--prompts-per-project",
        "4",
        stdout=out,
    )
    job = Job.objects.get(name="quorum.train_demo_model")
    assert f"queued as job {job.pk}" in out.getvalue()
    assert RewardModel.objects.count() == 0  # nothing trained in this process
    worker = celery_worker_process(queues="default,gpu", pool="solo")

    deadline = time.monotonic() + 500
    while time.monotonic() < deadline:
        job.refresh_from_db()
        project.refresh_from_db()
        run = ScoringRun.objects.filter(project=project).first()
        if job.status == "failed" or (run is not None and run.status == "done"):
            break
        time.sleep(1)
    assert job.status == "done", job.error or worker.output()[-3000:]
    model = RewardModel.objects.get()
    assert model.version == "seed0-e1-p4" and job.result["reward_model"] == model.pk
    assert job.progress == 100 and "held_out" in model.metrics
    assert project.active_reward_model_id == model.pk
    assert run is not None and run.status == "done", worker.output()[-3000:]
    scores = ModelScore.objects.filter(reward_model=model, candidate__project=project)
    assert scores.filter(score__isnull=False).count() == 12
