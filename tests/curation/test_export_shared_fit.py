"""The export and the flags pass share one joint-model fit (issue 10 item 6): an export right
after the flags pass reuses its EM, any judgment change refits, and the rankings equal a
fresh fit's."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from annotate.models import Task
from curation import crowd_bt as CB
from curation import selectors, services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
    judge_ranking,
    slots,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


@pytest.fixture
def ranked(users):
    return disputed_ranking_project(users, n_prompts=5)


def _rankings(project) -> dict[str, list[tuple[str, int]]]:
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    table = pq.read_table(export.path / "parquet" / "rankings.parquet").to_pylist()
    return {
        row["prompt_id"]: sorted(zip(row["candidate_ids"], row["rankings"], strict=True))
        for row in table
    }


def _count_em(monkeypatch) -> list[int]:
    calls: list[int] = []
    em = CB.crowd_bt_em

    def counted(*args, **kwargs):
        calls.append(1)
        return em(*args, **kwargs)

    monkeypatch.setattr(CB, "crowd_bt_em", counted)
    return calls


def test_it_exports_with_the_flags_pass_fit_without_refitting(ranked, monkeypatch):
    project, _ = ranked
    services.flags_recompute(project_id=project.pk)
    assert selectors.joint_fit_cache(project.pk).exists()
    calls = _count_em(monkeypatch)
    shared = _rankings(project)
    # The export's votes (display order included) are the flags pass's: no EM again.
    assert calls == []
    selectors.joint_fit_cache(project.pk).unlink()
    fresh = _rankings(project)
    assert calls == [1]
    assert shared == fresh and len(shared) == 5


def test_it_refits_after_a_new_judgment(ranked, users, monkeypatch):
    project, _ = ranked
    services.flags_recompute(project_id=project.pk)
    task = Task.objects.filter(project=project).order_by("id").first()
    a, b, c, d = slots(task)
    judge_ranking(task, users["reviewer"], [[b], [a], [c], [d]])
    calls = _count_em(monkeypatch)
    after = _rankings(project)
    assert calls == [1]
    selectors.joint_fit_cache(project.pk).unlink()
    assert _rankings(project) == after
    assert calls == [1, 1]


def test_it_refits_after_a_changed_judgment(ranked, monkeypatch):
    project, people = ranked
    services.flags_recompute(project_id=project.pk)
    judgment = project.judgments.filter(annotator=people[3]).order_by("id").first()
    judgment.presented_order = list(reversed(judgment.presented_order))
    judgment.save(update_fields=["presented_order"])
    calls = _count_em(monkeypatch)
    _rankings(project)
    assert calls == [1]
