"""PreparedQuery: SQL compiled once, run with new values, answers what the ORM answers."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Project, Prompt
from annotate.prepared_queries import PreparedQuery, instant_value

pytestmark = pytest.mark.django_db


def _recent_prompts(*, project_id: int, since):
    return (
        Prompt.objects.filter(project_id=project_id, created_at__gte=since)
        .order_by("id")
        .values_list("external_id", "created_at")
    )


@pytest.fixture
def projects():
    a = Project.objects.create(name="a", mode="ranking", candidates_per_task=2)
    b = Project.objects.create(name="b", mode="ranking", candidates_per_task=2)
    for project in (a, b):
        for i in range(3):
            Prompt.objects.create(project=project, external_id=f"{project.name}{i}")
    return a, b


def test_it_answers_what_the_orm_answers_for_each_set_of_values(projects):
    query = PreparedQuery(_recent_prompts, project_id="id", since="instant")
    now = timezone.now()

    for project in projects:
        for since in (now - timedelta(hours=1), now + timedelta(hours=1)):
            rows = query.rows(project_id=project.pk, since=since)
            expected = list(_recent_prompts(project_id=project.pk, since=since))
            assert [(ext, instant_value(at)) for ext, at in rows] == expected


def test_it_builds_the_queryset_once_per_key(projects):
    calls = []

    def build(**values):
        calls.append(values)
        return _recent_prompts(**values)

    query = PreparedQuery(build, project_id="id", since="instant")
    for project in projects:
        query.rows(project_id=project.pk, since=timezone.now())
    query.rows(key=("other",), project_id=projects[0].pk, since=timezone.now())

    assert len(calls) == 2


def test_it_refuses_a_queryset_that_lost_a_value():
    query = PreparedQuery(
        lambda project_id, since: Prompt.objects.filter(project_id=1).values_list("pk"),
        project_id="id",
        since="instant",
    )

    with pytest.raises(RuntimeError, match="placeholders not found"):
        query.rows(project_id=1, since=timezone.now())


def test_it_names_the_columns_of_a_select_related_queryset(projects):
    def build(*, project_id):
        return (
            Prompt.objects.filter(project_id=project_id)
            .select_related("project")
            .only("external_id", "created_at", "project__name")
            .order_by("id")
        )

    query = PreparedQuery(build, project_id="id")
    rows = query.named_rows(project_id=projects[1].pk)

    assert [(r["prompt.external_id"], r["project.name"]) for r in rows] == [
        ("b0", "b"),
        ("b1", "b"),
        ("b2", "b"),
    ]
    assert {r["prompt.project_id"] for r in rows} == {r["project.id"] for r in rows}
    # converted as the ORM converts (an aware datetime, not the backend's text)
    assert rows[0]["prompt.created_at"] == Prompt.objects.get(external_id="b0").created_at
