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

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


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


def test_it_computes_each_alpha_at_its_level_over_its_scope(half_discarded):
    """Nominal and ordinal are two figures (a candidate one place off counts as a near miss
    ordinally), each Krippendorff's alpha of that scope's rankings at that level."""
    from annotate.models import Judgment
    from curation import agreement as A

    sheet = _build(half_discarded).datasheet["agreement"]
    from curation.models import PromptDecision

    judgments = Judgment.objects.filter(project=half_discarded).order_by("id")
    discarded = set(
        PromptDecision.objects.filter(project=half_discarded, discarded=True).values_list(
            "prompt_id", flat=True
        )
    )
    records = {
        scope: [
            A.RankingRecord(
                task=j.task_id, annotator=j.annotator_id, ranking=tuple(map(tuple, j.ranking))
            )
            for j in judgments
            if scope == "all_judgments" or j.task.prompt_id not in discarded
        ]
        for scope in ("all_judgments", "exported")
    }
    assert [len(r) for r in records.values()] == [18, 12]
    for scope, scope_records in records.items():
        alpha = sheet[scope]["krippendorff_alpha"]["rankings"]
        for level in ("nominal", "ordinal"):
            expected = A.krippendorff_alpha(scope_records, level=level)
            assert alpha[level] == pytest.approx(expected, abs=1e-4), (scope, level)


def test_it_counts_a_near_miss_as_closer_in_the_ordinal_alpha(users):
    """Two annotators one place apart on every prompt: ordinally close, nominally not."""
    from curation import agreement as A

    project = make_project(n_prompts=3, n_candidates=4, k=2)
    first, second = members(project, users)[:2]
    records = []
    for task in Task.objects.filter(project=project).order_by("id"):
        a, b, c, d = slots(task)
        for person, ranking in ((first, [[a], [b], [c], [d]]), (second, [[b], [a], [d], [c]])):
            judge_ranking(task, person, ranking)
            records.append(
                A.RankingRecord(
                    task=task.pk, annotator=person.pk, ranking=tuple(map(tuple, ranking))
                )
            )
    alpha = _build(project).datasheet["agreement"]["all_judgments"]["krippendorff_alpha"]
    nominal, ordinal = alpha["rankings"]["nominal"], alpha["rankings"]["ordinal"]
    assert nominal == pytest.approx(A.krippendorff_alpha(records, level="nominal"), abs=1e-4)
    assert ordinal == pytest.approx(A.krippendorff_alpha(records, level="ordinal"), abs=1e-4)
    assert ordinal > nominal + 0.3


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
