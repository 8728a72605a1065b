"""The datasheet's agreement figures say what they cover: all judgments, or the exported ones."""

from __future__ import annotations

import json

import pytest

from annotate.models import Task
from curation import services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"


@pytest.fixture
def half_discarded(users):
    """Six prompts, three annotators: on four they agree, on two they do not, and a reviewer
    discards those two."""
    project = make_project(name="half-discarded", n_prompts=6, n_candidates=4, k=3)
    people = members(project, users, extra_annotators=1)[:3]
    tasks = list(Task.objects.filter(project=project).order_by("id"))
    for task in tasks[:4]:
        a, b, c, d = slots(task)
        for person in people:
            judge_ranking(task, person, [[a], [b], [c], [d]])
    for task in tasks[4:]:
        a, b, c, d = slots(task)
        judge_ranking(task, people[0], [[a], [b], [c], [d]])
        judge_ranking(task, people[1], [[d], [c], [b], [a]])
        judge_ranking(task, people[2], [[b], [d], [a], [c]])
        services.review_discard_prompt(actor=users["reviewer"], prompt=task.prompt)
    return project


def _build(project) -> DatasetExport:
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export


def test_it_reports_agreement_over_all_judgments_and_over_the_exported_ones(half_discarded):
    sheet = _build(half_discarded).datasheet["agreement"]
    assert set(sheet) == {"all_judgments", "exported"}
    assert sheet["all_judgments"]["judgments"] == 18 and sheet["all_judgments"]["prompts"] == 6
    assert sheet["exported"]["judgments"] == 12 and sheet["exported"]["prompts"] == 4
    assert "every judgment" in sheet["all_judgments"]["scope"]
    assert "export" in sheet["exported"]["scope"]


def test_it_gives_nominal_and_ordinal_alpha_in_both_scopes(half_discarded):
    sheet = _build(half_discarded).datasheet["agreement"]
    for scope in ("all_judgments", "exported"):
        alpha = sheet[scope]["krippendorff_alpha"]["rankings"]
        assert set(alpha) == {"nominal", "ordinal"}
        assert all(value is not None for value in alpha.values())


def test_it_shows_that_the_scopes_differ_when_prompts_are_discarded(half_discarded):
    sheet = _build(half_discarded).datasheet["agreement"]
    everything, exported = sheet["all_judgments"], sheet["exported"]
    assert exported["mean_prompt_agreement"] == pytest.approx(1.0)
    assert everything["mean_prompt_agreement"] < 0.9
    for level in ("nominal", "ordinal"):
        assert exported["krippendorff_alpha"]["rankings"][level] == pytest.approx(1.0)
        assert everything["krippendorff_alpha"]["rankings"][level] < 0.9


def test_it_labels_both_scopes_in_the_datasheet_text(half_discarded):
    export = _build(half_discarded)
    md = (export.path / "datasheet.md").read_text()
    section = md.split("## Agreement", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| all judgments")]
    assert len(rows) == 1 and "| 18 | 6 |" in rows[0]
    rows = [line for line in section.splitlines() if line.startswith("| exported")]
    assert len(rows) == 1 and "| 12 | 4 |" in rows[0] and "1.0000" in rows[0]
    assert "Krippendorff's alpha, nominal" in section and "Krippendorff's alpha, ordinal" in section


def test_it_writes_the_same_figures_to_datasheet_json(half_discarded):
    export = _build(half_discarded)
    on_disk = json.loads((export.path / "datasheet.json").read_text())
    assert on_disk["agreement"] == export.datasheet["agreement"]
