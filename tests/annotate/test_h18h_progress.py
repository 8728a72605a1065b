"""The progress line's "done today": this annotator's judgments, today, in this project only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate import queue
from annotate.models import Assignment, Judgment
from tests.annotate.conftest import new_key
from tests.factories import add_member, make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]


def _judge(project, user) -> Judgment:
    assignment = queue.assignment_next(project=project, annotator=user)
    assert assignment is not None
    return queue.judgment_submit(
        assignment=assignment,
        project=project,
        idempotency_key=new_key(),
        ranking=[[c] for c in assignment.presented_order],
    ).judgment


def test_it_counts_only_this_annotators_judgments_of_today_in_this_project(ranking_project, users):
    annotator, other = users["annotator"], users["annotator2"]
    elsewhere = make_project(name="h18h-elsewhere", n_prompts=2, k=2)
    add_member(elsewhere, annotator, "annotator")
    mine = [_judge(ranking_project, annotator) for _ in range(2)]
    _judge(ranking_project, other)
    _judge(ranking_project, other)
    _judge(elsewhere, annotator)
    # One of theirs from yesterday: counted in "remaining" (closed), not in "done today".
    yesterday = timezone.now() - timedelta(days=1)
    Judgment.objects.filter(pk=mine[0].pk).update(created_at=yesterday)

    progress = queue.annotator_progress(project=ranking_project, annotator=annotator)

    assert progress.done_today == 1
    assert progress.remaining == 1
    assert progress.editable_judgment_id == mine[1].pk
    assert queue.annotator_progress(project=ranking_project, annotator=other).done_today == 2


def test_it_counts_none_today_for_an_annotator_without_judgments(ranking_project, users):
    _judge(ranking_project, users["annotator2"])
    progress = queue.annotator_progress(project=ranking_project, annotator=users["annotator"])
    assert (progress.done_today, progress.remaining) == (0, 3)
    assert not Assignment.objects.filter(annotator=users["annotator"]).exists()
