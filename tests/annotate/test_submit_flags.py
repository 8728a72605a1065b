"""A submitted judgment queues the incremental flag update of its prompt."""

from __future__ import annotations

import pytest
from django.utils import timezone

from annotate import queue
from annotate.models import Assignment
from config.celery import app
from curation.models import Flag
from tests.factories import add_member, make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def eager_tasks():
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = False


def test_it_flags_a_prompt_whose_annotators_disagree(
    users, eager_tasks, django_capture_on_commit_callbacks
):
    project = make_project(n_prompts=1, n_candidates=4, k=2)
    task = project.tasks.get()
    ids = list(task.slots.order_by("position").values_list("candidate_id", flat=True))
    for user, order in ((users["annotator"], ids), (users["annotator2"], ids[::-1])):
        add_member(project, user)
        assignment = Assignment.objects.create(
            task=task,
            annotator=user,
            leased_until=timezone.now() + timezone.timedelta(minutes=5),
            presented_order=ids,
        )
        with django_capture_on_commit_callbacks(execute=True) as callbacks:
            queue.judgment_submit(
                assignment=assignment,
                project=project,
                idempotency_key=f"k-{user.pk}-0000000000000000",
                ranking=[[c] for c in order],
            )
        assert len(callbacks) == 1
    flags = Flag.objects.filter(project=project, status="open")
    assert flags.filter(kind="low_agreement").exists(), list(flags.values_list("kind", flat=True))
