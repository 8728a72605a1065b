"""Bulk inserts of the import (COPY / executemany on reserved ids) store what bulk_create stores."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction

from annotate.bulk_insert import objects_insert, rows_insert
from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return Project.objects.create(name="bulk", mode="ranking", candidates_per_task=2)


def test_it_sets_the_primary_keys_of_the_stored_rows(project):
    prompts = [Prompt(project=project, external_id=f"p{i}", text=f"Q {i}") for i in range(5)]

    with transaction.atomic():
        objects_insert(prompts)

    stored = dict(Prompt.objects.values_list("external_id", "pk"))
    assert {p.external_id: p.pk for p in prompts} == stored
    assert all(not p._state.adding for p in prompts)


def test_it_stores_values_as_bulk_create_does(project):
    meta = {"split": "dev", "tags": ["a", 1, None], "nested": {"x": 1.5}}
    ours = Prompt(project=project, external_id="ours", text="t", image="p1/ab/x.png", metadata=meta)
    theirs = Prompt(
        project=project, external_id="theirs", text="t", image="p1/ab/x.png", metadata=meta
    )

    with transaction.atomic():
        objects_insert([ours])
    Prompt.objects.bulk_create([theirs])

    a = Prompt.objects.get(external_id="ours")
    b = Prompt.objects.get(external_id="theirs")
    assert (a.metadata, a.image.name, a.video.name, a.text) == (
        b.metadata,
        b.image.name,
        b.video.name,
        b.text,
    )
    assert a.created_at is not None and abs((a.created_at - b.created_at).total_seconds()) < 60


def test_it_fills_defaults_and_creation_times(project):
    prompt = Prompt.objects.create(project=project, external_id="p", text="q")
    task = Task(project=project, prompt=prompt, candidate_key="1-2")

    with transaction.atomic():
        objects_insert([task])

    stored = Task.objects.get(pk=task.pk)
    assert (stored.status, stored.judgment_count, stored.priority, stored.is_gold) == (
        Task.Status.OPEN,
        0,
        0.0,
        False,
    )
    assert stored.created_at is not None


def test_it_never_reuses_the_id_of_a_deleted_row(project):
    prompts = [Prompt(project=project, external_id=f"p{i}") for i in range(3)]
    with transaction.atomic():
        objects_insert(prompts)
    top = prompts[-1].pk
    Prompt.objects.filter(pk=top).delete()

    again = [Prompt(project=project, external_id="again")]
    with transaction.atomic():
        objects_insert(again)

    assert again[0].pk > top
    # and the database's own id generation carries on after the reserved ones
    assert Prompt.objects.create(project=project, external_id="next").pk > again[0].pk


def test_it_returns_row_ids_in_order(project):
    prompt = Prompt.objects.create(project=project, external_id="p", text="q")
    rows = [
        (project.pk, prompt.pk, f"c{i}", "m", "text", f"answer {i}", "", "", {}, prompt.created_at)
        for i in range(4)
    ]
    fields = (
        "project_id",
        "prompt_id",
        "external_id",
        "model_name",
        "kind",
        "text",
        "text_html",
        "media",
        "metadata",
        "created_at",
    )

    with transaction.atomic():
        ids = rows_insert(Candidate, fields, rows)

    assert list(Candidate.objects.order_by("pk").values_list("pk", "external_id")) == [
        (pk, f"c{i}") for i, pk in enumerate(ids)
    ]


def test_it_raises_on_a_constraint_and_leaves_nothing(project):
    prompt = Prompt.objects.create(project=project, external_id="p", text="q")
    task = Task.objects.create(project=project, prompt=prompt, candidate_key="k")
    cand = Candidate.objects.create(project=project, prompt=prompt, external_id="c", model_name="m")

    with pytest.raises(IntegrityError), transaction.atomic():
        rows_insert(
            TaskCandidate,
            ("task_id", "candidate_id", "position"),
            [(task.pk, cand.pk, 0), (task.pk, cand.pk, 1)],  # the same candidate twice
        )

    assert not TaskCandidate.objects.exists()


def test_it_fills_the_fields_a_row_does_not_name(project):
    prompt = Prompt.objects.create(project=project, external_id="p", text="q")

    with transaction.atomic():
        (pk,) = rows_insert(
            Task, ("project_id", "prompt_id", "candidate_key"), [(project.pk, prompt.pk, "1-2")]
        )

    stored = Task.objects.get(pk=pk)
    assert (stored.status, stored.judgment_count, stored.priority, stored.is_gold) == (
        Task.Status.OPEN,
        0,
        0.0,
        False,
    )
    assert (stored.gold_ranking, stored.required_judgments, stored.flags_dirty_at) == (
        None,
        None,
        None,
    )
    assert abs((stored.created_at - prompt.created_at).total_seconds()) < 60


def test_it_stores_json_and_file_columns_converted(project):
    with transaction.atomic():
        (pk,) = rows_insert(
            Prompt,
            ("project_id", "external_id", "text", "image", "metadata"),
            [(project.pk, "p", "q", "p1/ab/x.png", {"split": "dev", "n": [1, None]})],
        )

    stored = Prompt.objects.get(pk=pk)
    assert (stored.image.name, stored.video.name, stored.metadata) == (
        "p1/ab/x.png",
        "",
        {"split": "dev", "n": [1, None]},
    )
    # The column as stored: its default (the model renders a plain paragraph on read).
    assert Prompt.objects.values_list("text_html", flat=True).get(pk=pk) == ""
