"""The flags pass and an export after it load a project's judgments once (issue 10 item 6):
`selectors.project_data(shared=True)` reuses the previous shared load while the judgments are
unchanged, and loads again after any judgment is added, edited or deleted (SQLite and
PostgreSQL)."""

from __future__ import annotations

import pytest

from annotate.models import Judgment, Task
from curation import selectors, services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_pair,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    selectors._shared_votes.clear()
    yield
    selectors._shared_votes.clear()


@pytest.fixture
def judged(users):
    project = make_project(name="shared", mode="pairwise", n_prompts=4)
    people = members(project, users, extra_annotators=1)
    for i, task in enumerate(Task.objects.filter(project=project).order_by("id")):
        x, y = slots(task)
        judge_pair(task, people[0], "a", presented=[y, x])
        judge_pair(task, people[1], "b" if i % 2 else "a", presented=[x, y])
    return project, people


def _loads(monkeypatch) -> list[int]:
    calls: list[int] = []
    load = selectors._load_votes

    def counted(*args, **kwargs):
        calls.append(1)
        return load(*args, **kwargs)

    monkeypatch.setattr(selectors, "_load_votes", counted)
    return calls


def _fresh_votes(project):
    return selectors.project_data(project=project, with_times=False).votes


def test_it_reuses_the_votes_of_the_flags_pass(judged, monkeypatch):
    project, _ = judged
    calls = _loads(monkeypatch)
    services.flags_recompute(project_id=project.pk)
    assert calls == [1]
    data = selectors.project_data(project=project, with_content=True, with_times=False, shared=True)
    assert calls == [1]
    assert data.votes == _fresh_votes(project) and len(data.votes) == 8


@pytest.mark.parametrize("change", ["added", "edited", "edited partly", "deleted"])
def test_it_loads_again_after_a_judgment_changes(judged, monkeypatch, change):
    project, people = judged
    selectors.project_data(project=project, with_times=False, shared=True)
    task = Task.objects.filter(project=project).order_by("id").first()
    if change == "added":
        judge_pair(task, people[2], "tie")
    elif change == "edited":
        # The earliest judgment: neither the count nor the largest id moves.
        judgment = Judgment.objects.filter(project=project).order_by("id").first()
        judgment.outcome = "b"
        judgment.save()
    elif change == "edited partly":
        # ``save(update_fields=...)`` writes ``updated_at`` too (`Judgment.save`).
        judgment = Judgment.objects.filter(project=project).order_by("id").first()
        judgment.presented_order = list(reversed(judgment.presented_order))
        judgment.save(update_fields=["presented_order"])
    else:
        Judgment.objects.filter(project=project).order_by("id").first().delete()
    calls = _loads(monkeypatch)
    data = selectors.project_data(project=project, with_times=False, shared=True)
    assert calls == [1]
    assert data.votes == _fresh_votes(project)


def test_it_keeps_one_project_and_apart_by_columns(judged, users, monkeypatch):
    project, _ = judged
    other = make_project(name="other", mode="pairwise", n_prompts=1)
    judge_pair(Task.objects.get(project=other), members(other, users)[0], "a")
    calls = _loads(monkeypatch)
    selectors.project_data(project=project, with_times=False, shared=True)
    # Other columns: loaded, not taken from the load without them.
    selectors.project_data(project=project, with_times=True, shared=True)
    selectors.project_data(project=other, with_times=True, shared=True)
    selectors.project_data(project=project, with_times=True, shared=True)
    assert calls == [1, 1, 1, 1]
    assert len(selectors._shared_votes) == 1
    # Unshared loads neither read nor replace the kept votes.
    selectors.project_data(project=project, with_times=True)
    selectors.project_data(project=project, with_times=True, shared=True)
    assert calls == [1, 1, 1, 1, 1]


def test_a_caller_changing_its_list_leaves_the_kept_votes_alone(judged):
    project, _ = judged
    for _ in range(2):  # the load that keeps the votes, then one that reuses them
        selectors.project_data(project=project, shared=True).votes.clear()
    assert len(selectors.project_data(project=project, shared=True).votes) == 8


def test_an_export_after_the_flags_pass_equals_one_loaded_afresh(judged):
    project, _ = judged
    services.flags_recompute(project_id=project.pk)

    def rows() -> bytes:
        export = services.export_create(project=project, options={}, enqueue=False)
        export = services.export_build(export_id=export.pk)
        assert export.status == DatasetExport.Status.DONE, export.error
        return b"".join(p.read_bytes() for p in sorted(export.path.rglob("*.jsonl")))

    shared = rows()
    selectors._shared_votes.clear()
    assert rows() == shared and shared
