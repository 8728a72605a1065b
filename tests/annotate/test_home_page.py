"""The home page: the demo model's training follows itself without reloading the page, and
reviewers reach a project's data from it."""

from __future__ import annotations

import pytest
from django.urls import reverse

from tests.factories import add_member, make_project
from workers.jobs import TRAIN_DEMO_MODEL
from workers.models import Job

pytestmark = pytest.mark.django_db


def test_it_follows_the_demo_training_live_while_it_runs(client, users):
    job = Job.objects.create(name=TRAIN_DEMO_MODEL, status="running", progress=30, phase="epoch 2")
    client.force_login(users["staff"])
    body = client.get(reverse("home")).content.decode()
    assert 'data-live-region="demo-training"><span data-live hidden>' in body
    assert "curation/live.js" in body and 'http-equiv="refresh"' not in body
    Job.objects.filter(pk=job.pk).update(status="done")
    body = client.get(reverse("home")).content.decode()
    assert 'data-live-region="demo-training"><span data-live' not in body


@pytest.mark.parametrize("role, shown", [("reviewer", True), ("admin", True), ("annotator", False)])
def test_it_offers_the_data_browser_to_reviewers(client, users, role, shown):
    project = make_project(n_prompts=1)
    add_member(project, users["annotator"], role)
    client.force_login(users["annotator"])
    body = client.get(reverse("home")).content.decode()
    assert (reverse("curation:browse", args=[project.pk]) in body) is shown
