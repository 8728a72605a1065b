"""A pair judgment whose task lost a candidate slot after it was judged names no pair: the
curated export leaves it out, counted in the datasheet's dropped judgments, and builds the
rest (before, its record raised and the export failed)."""

from __future__ import annotations

import json

import pytest

from annotate.models import Task, TaskCandidate
from curation import exporting as E
from curation.models import DatasetExport
from curation.services import export_build, export_create
from tests.curation.builders import fast_passwords, judge_pair  # noqa: F401
from tests.factories import make_project, make_user

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


@pytest.mark.parametrize("denoise", [True, False])
def test_a_pair_judgment_without_two_slots_is_dropped_and_counted(denoise):
    project = make_project(mode="pairwise", n_prompts=3)
    users = [make_user(f"unpaired-{project.pk}-{i}") for i in range(3)]
    tasks = list(Task.objects.filter(project=project).order_by("id"))
    for task in tasks:
        for user, outcome in zip(users, ("a", "a", "b"), strict=True):
            judge_pair(task, user, outcome)
    TaskCandidate.objects.filter(task=tasks[-1], position=1).delete()

    export = export_create(project=project, options={"denoise": denoise}, enqueue=False)
    export = export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    sheet = json.loads((export.path / "datasheet.json").read_text())
    assert sheet["dropped"]["judgments"] == {E.UNPAIRED: 3}
    assert sheet["dropped"]["prompts"] == {"no judgments": 1}
    assert sheet["counts"]["judgments_in_project"] == 9
    assert sheet["counts"]["judgments_used"] == 6
    assert sheet["counts"]["pairs"] == 2  # one a prompt: the broken task's has none left
    # Agreement over the judgments that name a pair, both scopes the same six here.
    assert sheet["agreement"]["all_judgments"]["judgments"] == 6
    assert sheet["agreement"]["exported"]["judgments"] == 6
    lines = (export.path / "pairs" / "train.jsonl").read_text().splitlines()
    assert {json.loads(line)["prompt_id"] for line in lines} == {"p0", "p1"}
