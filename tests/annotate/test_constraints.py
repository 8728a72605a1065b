"""The database itself rejects duplicates and malformed rows that bypass the services."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from annotate.models import Assignment, Candidate, Judgment, Project, Prompt, Task
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return make_project(n_prompts=1, n_candidates=2)


def _rejected(create) -> None:
    with pytest.raises(IntegrityError), transaction.atomic():
        create()


def test_it_rejects_a_duplicate_prompt_external_id(project):
    _rejected(lambda: Prompt.objects.create(project=project, external_id="p0"))


def test_it_allows_the_same_external_id_in_another_project(project):
    other = Project.objects.create(name="other")
    Prompt.objects.create(project=other, external_id="p0")


def test_it_rejects_a_duplicate_candidate_external_id(project):
    prompt = project.prompts.get()
    _rejected(
        lambda: Candidate.objects.create(
            project=project, prompt=prompt, external_id="p0-c0", model_name="m", text="t"
        )
    )


def test_it_rejects_a_second_task_with_the_same_candidates(project):
    task = project.tasks.get()
    _rejected(
        lambda: Task.objects.create(
            project=project, prompt=task.prompt, candidate_key=task.candidate_key
        )
    )


def _judgment(project, task, **kwargs) -> Judgment:
    values = {
        "project": project,
        "task": task,
        "kind": "pair",
        "outcome": "a",
        "source": "external",
    }
    values.update(kwargs)
    return Judgment.objects.create(**values)


def test_it_rejects_a_reused_idempotency_key(project):
    task = project.tasks.get()
    _judgment(project, task, idempotency_key="same")
    _rejected(lambda: _judgment(project, task, idempotency_key="same"))


def test_it_rejects_two_judgments_for_one_assignment(project, users):
    task = project.tasks.get()
    assignment = Assignment.objects.create(
        task=task, annotator=users["annotator"], leased_until=timezone.now()
    )
    _judgment(
        project,
        task,
        assignment=assignment,
        annotator=users["annotator"],
        source="human",
        idempotency_key="k1",
    )
    _rejected(lambda: _judgment(project, task, assignment=assignment, idempotency_key="k2"))


def test_it_rejects_two_judgments_by_one_annotator_on_a_task(project, users):
    task = project.tasks.get()
    _judgment(project, task, annotator=users["annotator"], source="human", idempotency_key="k1")
    _rejected(
        lambda: _judgment(
            project, task, annotator=users["annotator"], source="human", idempotency_key="k2"
        )
    )


def test_it_rejects_a_second_assignment_of_a_task_to_one_annotator(project, users):
    task = project.tasks.get()
    Assignment.objects.create(task=task, annotator=users["annotator"], leased_until=timezone.now())
    _rejected(
        lambda: Assignment.objects.create(
            task=task, annotator=users["annotator"], leased_until=timezone.now()
        )
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"kind": "pair", "outcome": "draw"},
        {"kind": "pair", "outcome": ""},
        {"kind": "ranking", "outcome": "", "ranking": None},
        {"kind": "ranking", "outcome": "a", "ranking": [[1], [2]]},
        {"kind": "pair", "outcome": "a", "source": "human"},  # a person's judgment needs its person
    ],
)
def test_it_rejects_malformed_judgment_rows(project, fields):
    task = project.tasks.get()
    _rejected(lambda: _judgment(project, task, idempotency_key="k", **fields))


def test_it_rejects_a_pairwise_project_with_four_candidates_per_task():
    _rejected(lambda: Project.objects.create(name="bad", mode="pairwise", candidates_per_task=4))
