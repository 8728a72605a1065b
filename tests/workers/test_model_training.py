"""Training the next reward model from an export: a job on a real ``gpu`` worker trains a tiny
model, registers the version with its held-out accuracy and its scoring run finishes; every
door (CLI, API, admin action) records the same job; the comparison page shows the versions."""

from __future__ import annotations

import time
from io import StringIO

import pytest
from django.core.management import call_command
from django.urls import reverse

from annotate.models import ModelScore, RewardModel
from annotate.services import api_token_create
from curation import services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
)
from workers.model_training import (
    TrainingError,
    export_examples,
    training_enqueue,
    training_options,
)
from workers.models import Job, ScoringRun

FAST = {"epochs": 1, "grad_accum": 1, "lora_r": 4, "gradient_checkpointing": False}


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=3)
    return path


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def _project_with_export(users, checkpoint, splits=None):
    project, _ = disputed_ranking_project(users, n_prompts=8)
    base = RewardModel.objects.create(
        name="tiny", version="base", backend="multi_response", path=str(checkpoint)
    )
    project.active_reward_model = base
    project.save(update_fields=["active_reward_model"])
    export = services.export_create(
        project=project, options={"splits": splits or {"train": 0.6, "test": 0.4}}, enqueue=False
    )
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return project, base, export


@pytest.mark.django_db
def test_it_reads_the_export_as_a_trainer_does(users, tiny_checkpoint):
    _, _, export = _project_with_export(users, tiny_checkpoint)

    train, held_out, source = export_examples(export.path)

    assert source == "the export's 'test' split"
    assert len(train) + len(held_out) == export.counts["rankings"]
    assert train and held_out
    example = train[0]
    assert all(c.kind == "text" and c.text for c in example.item.candidates)
    assert sorted(example.rankings)[0] == 1


@pytest.mark.django_db
def test_it_holds_prompts_out_when_the_export_has_no_test_split(users, tiny_checkpoint):
    _, _, export = _project_with_export(users, tiny_checkpoint, splits={"train": 1.0})

    train, held_out, source = export_examples(export.path)

    assert held_out and train and "held out of 'train' by prompt hash" in source
    assert not {e.item.prompt_text for e in train} & {e.item.prompt_text for e in held_out}


@pytest.mark.django_db
def test_it_refuses_what_it_cannot_train_from(users, tiny_checkpoint):
    project, base, export = _project_with_export(users, tiny_checkpoint)

    with pytest.raises(TrainingError, match="unknown training option 'epoch'"):
        training_enqueue(export=export, options={"epoch": 2})
    with pytest.raises(TrainingError, match="grad_accum must be at least 1"):
        training_options({"grad_accum": "0"})
    project.active_reward_model = None
    project.save(update_fields=["active_reward_model"])
    with pytest.raises(TrainingError, match="has no active reward model"):
        training_enqueue(export=export)


@pytest.mark.django_db
def test_every_door_records_the_same_training_job(users, tiny_checkpoint, client):
    project, base, export = _project_with_export(users, tiny_checkpoint)
    out = StringIO()

    call_command("train_reward_model", str(export.pk), "--option", "epochs=2", stdout=out)
    job = Job.objects.get(name="quorum.train_reward_model")
    assert f"queued as job {job.pk}" in out.getvalue()
    assert job.queue == "gpu"
    assert job.kwargs == {
        "export_id": export.pk,
        "base_reward_model_id": base.pk,
        "options": {"epochs": 2},
    }

    _, token = api_token_create(user=users["admin"])
    response = client.post(
        f"/api/exports/{export.pk}/train",
        data={"options": {"epochs": 2}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert response.status_code == 202, response.content
    assert response.json()["id"] == job.pk  # the waiting job, not a second one
    status = client.get(f"/api/jobs/{job.pk}", HTTP_AUTHORIZATION=f"Bearer {token}").json()
    assert status["status"] in ("queued", "published") and status["name"] == job.name
    bad = client.post(
        f"/api/exports/{export.pk}/train",
        data={"options": {"lr": -1}},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )
    assert bad.status_code == 422 and "lr must be positive" in bad.json()["detail"]

    client.force_login(users["admin"])
    page = client.get(reverse("curation:reward_models", args=[project.pk])).content.decode()
    assert f"{job.pk} · export {export.pk}" in page  # the waiting training job is listed


@pytest.mark.worker
@pytest.mark.timeout(600)
def test_it_trains_registers_and_scores_with_the_new_version_on_a_worker(
    users, tiny_checkpoint, celery_worker_process, client
):
    project, base, export = _project_with_export(users, tiny_checkpoint)
    job = training_enqueue(export=export, options=FAST)
    worker = celery_worker_process(queues="gpu", pool="solo")

    deadline = time.monotonic() + 500
    new = run = None
    while time.monotonic() < deadline:
        job.refresh_from_db()
        if job.status == "failed":
            break
        new = RewardModel.objects.exclude(pk=base.pk).first()
        run = ScoringRun.objects.filter(reward_model=new).first() if new else None
        if run is not None and run.status == "done":
            break
        time.sleep(1)

    assert job.status == "done", job.error or worker.output()[-3000:]
    assert job.result["reward_model"] == new.pk and job.progress == 100
    held_out = new.metrics["held_out"]["all"]
    assert held_out["prompts"] == len(export_examples(export.path)[1]) > 0
    assert 0.0 <= held_out["top1_accuracy"] <= 1.0 and held_out["chance"] > 0
    assert new.metrics["trained_from"]["export"] == export.pk
    assert new.metrics["training"]["steps"] >= 1
    assert run is not None and run.status == "done", worker.output()[-3000:]
    scored = ModelScore.objects.filter(reward_model=new, candidate__project=project)
    assert scored.filter(score__isnull=False).count() == project.candidates.count()
    assert set(scored.values_list("layout", flat=True)) == {"packed"}
    # The saved version loads and differs from its base: training changed the weights.
    base_scores = dict(
        ModelScore.objects.filter(reward_model=base).values_list("candidate_id", "score")
    )
    assert base_scores == {} or any(
        abs(base_scores[c] - s) > 1e-6
        for c, s in scored.values_list("candidate_id", "score")
        if c in base_scores
    )

    client.force_login(users["admin"])
    page = client.get(reverse("curation:reward_models", args=[project.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert new.version in body and f"export v{export.version}" in body
    assert "agreement" in body.lower()
