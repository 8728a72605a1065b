"""Every admin list page costs the same number of queries for few rows as for many."""

from __future__ import annotations

import itertools

import pytest
from django.contrib import admin
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from annotate.models import Judgment, JudgmentRevision, RewardModel
from curation.models import AnnotatorQuality, DatasetExport, Flag, PromptDecision, ReviewAction
from tests.factories import make_project
from workers.models import ScoringRun

pytestmark = pytest.mark.django_db
_n = itertools.count()


def _rows(model, project, user, count: int) -> None:
    prompts = list(project.prompts.all())
    for _ in range(count):
        i = next(_n)
        prompt = prompts[i % len(prompts)]
        if model is Flag:
            Flag.objects.create(
                project=project, kind="low_agreement", key=f"prompt:{i}", prompt=prompt
            )
        elif model is ReviewAction:
            ReviewAction.objects.create(
                project=project, kind="accept_consensus", actor=user, prompt=prompt
            )
        elif model is PromptDecision:
            PromptDecision.objects.create(
                project=project, prompt=project.prompts.create(external_id=f"d{i}")
            )
        elif model is AnnotatorQuality:
            AnnotatorQuality.objects.create(project=project, evaluator=f"user:{i}", annotator=user)
        elif model is DatasetExport:
            DatasetExport.objects.create(project=project, version=i + 1, created_by=user)
        elif model is ScoringRun:
            rm = RewardModel.objects.create(
                name=f"rm{i}", version="1", backend="multi_response", path="/x"
            )
            ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=1)
        elif model is JudgmentRevision:
            task = prompt.tasks.first()
            j = Judgment.objects.create(
                project=project,
                task=task,
                source="external",
                kind="pair",
                outcome="a",
                idempotency_key=f"k{i}",
            )
            JudgmentRevision.objects.create(
                judgment=j, number=1, outcome="b", edit_key=f"e{i}", submitted_at=timezone.now()
            )


@pytest.mark.parametrize(
    "model",
    [
        Flag,
        ReviewAction,
        PromptDecision,
        AnnotatorQuality,
        DatasetExport,
        ScoringRun,
        JudgmentRevision,
    ],
)
def test_it_lists_without_n_plus_one_queries(model, client, users):
    assert model in admin.site._registry
    project = make_project(mode="pairwise", n_prompts=20)
    client.force_login(users["staff"])
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")

    def count() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(url).status_code == 200
        return len(ctx.captured_queries)

    _rows(model, project, users["staff"], 2)
    small = count()
    _rows(model, project, users["staff"], 10)
    assert count() == small
