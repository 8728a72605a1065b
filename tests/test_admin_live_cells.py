"""Admin lists mark the progress of unfinished background work for live.js, and only that."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotate.models import RewardModel
from curation import services
from tests.factories import make_project
from workers.models import Job, ScoringRun

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client, users):
    client.force_login(users["staff"])
    return client


def test_it_marks_a_running_scoring_run_live_until_it_is_done(staff):
    project = make_project(n_prompts=1)
    rm = RewardModel.objects.create(name="rm", version="1", backend="multi_response", path="/x")
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=3)
    for url in (
        reverse("admin:workers_scoringrun_changelist"),
        reverse("admin:workers_scoringrun_change", args=[run.pk]),
    ):
        body = staff.get(url).content.decode()
        assert f'data-live-region="scoring-run-{run.pk}"><span data-live hidden>' in body
        assert "curation/live.js" in body
    ScoringRun.objects.filter(pk=run.pk).update(status="done", done_prompts=3)
    body = staff.get(reverse("admin:workers_scoringrun_changelist")).content.decode()
    assert f'data-live-region="scoring-run-{run.pk}"><progress' in body
    assert "data-live hidden" not in body


def test_it_marks_unfinished_jobs_live(staff):
    queued = Job.objects.create(name="quorum.export_build", kwargs={})
    done = Job.objects.create(name="quorum.export_build", kwargs={}, status="done", progress=100)
    body = staff.get(reverse("admin:workers_job_changelist")).content.decode()
    assert f'data-live-region="job-{queued.pk}"><span data-live hidden>' in body
    assert f'data-live-region="job-{done.pk}">100%' in body


def test_it_links_a_built_export_to_its_datasheet_page(staff, settings, tmp_path, users):
    settings.DATA_DIR = tmp_path / "data"
    project = make_project(n_prompts=1)
    pending = services.export_create(project=project, options={}, enqueue=False)
    body = staff.get(reverse("admin:curation_datasetexport_changelist")).content.decode()
    assert f'data-live-region="export-{pending.pk}"><span data-live hidden>' in body
    services.export_build(export_id=pending.pk)
    body = staff.get(reverse("admin:curation_datasetexport_changelist")).content.decode()
    assert reverse("curation:export_datasheet", args=[pending.pk]) in body
    assert "data-live hidden" not in body
