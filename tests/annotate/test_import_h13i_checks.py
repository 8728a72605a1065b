"""The import writes its four tables without SQLite evaluating their CHECK constraints
(``columns_insert(checks_hold=True)``): the constraints it relies on are the ones listed here,
invalid JSON is still refused, and the checks apply again to every later write."""

from __future__ import annotations

import json

import pytest
from django.db import IntegrityError, connection, models, transaction

from annotate.importing import ImportRejected
from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
from annotate.services import import_file

pytestmark = pytest.mark.django_db(transaction=True)

# Each CHECK of the tables the import writes with ``checks_hold``, and why the import's values
# pass it (annotate/services.py, _write_records). A new constraint fails this test: decide
# whether the import's values satisfy it by construction before adding it here.
RELIED_ON = {
    # metadata: dicts the parser checked, dumped by the import without NaN / Infinity
    (Prompt, "metadata"),
    (Candidate, "metadata"),
    # kind: one of the parser's KINDS
    (Candidate, "candidate_kind_valid"),
    # the import never names these: their defaults (None, None, 0, "open")
    (Task, "gold_ranking"),
    (Task, "required_judgments"),
    (Task, "judgment_count"),
    (Task, "task_status_valid"),
    # position: range(len(group))
    (TaskCandidate, "position"),
}


def _checks(model: type[models.Model]) -> set[tuple[type[models.Model], str]]:
    named = {
        (model, c.name) for c in model._meta.constraints if isinstance(c, models.CheckConstraint)
    }
    columns = {(model, f.name) for f in model._meta.concrete_fields if f.db_check(connection)}
    return named | columns


def test_the_checks_the_import_skips_are_the_known_ones():
    found = set().union(*(_checks(m) for m in (Prompt, Candidate, Task, TaskCandidate)))

    # PostgreSQL's jsonb type checks JSON itself (no CHECK): its set is a subset.
    assert found <= RELIED_ON
    if connection.vendor == "sqlite":
        assert found == RELIED_ON


def _write(tmp_path, rows) -> str:
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
    return str(path)


def _row(pid: str, **extra) -> dict:
    return {
        "id": pid,
        "prompt": "Which is better?",
        "candidates": [
            {"id": f"{pid}-a", "model": "m1", "text": "first"},
            {"id": f"{pid}-b", "model": "m2", "text": "second"},
        ],
        **extra,
    }


@pytest.mark.parametrize(
    "bad",
    [
        {"metadata": {"score": float("nan")}},
        {"metadata": {"score": float("inf")}},
    ],
)
def test_metadata_that_is_not_json_is_refused_and_nothing_is_written(tmp_path, bad):
    path = _write(tmp_path, [_row("p1"), _row("p2", **bad)])

    with pytest.raises((IntegrityError, ImportRejected)):
        import_file(path=path, project_name="bad-json")

    assert not Prompt.objects.exists() and not Candidate.objects.exists()
    assert not Project.objects.filter(name="bad-json").exists()


def test_a_candidate_metadata_that_is_not_json_is_refused(tmp_path):
    row = _row("p1")
    row["candidates"][1]["metadata"] = {"score": float("-inf")}
    path = _write(tmp_path, [row])

    with pytest.raises((IntegrityError, ImportRejected)):
        import_file(path=path, project_name="bad-json")

    assert not Candidate.objects.exists() and not Task.objects.exists()


def test_the_checks_apply_again_after_an_import(tmp_path):
    result = import_file(path=_write(tmp_path, [_row("p1")]), project_name="checked")
    prompt = Prompt.objects.get(external_id="p1")
    task = Task.objects.get(prompt=prompt)

    with pytest.raises(IntegrityError), transaction.atomic():
        Candidate.objects.create(
            project=result.project, prompt=prompt, external_id="x", model_name="m", kind="audio"
        )
    with pytest.raises(IntegrityError), transaction.atomic():
        Task.objects.filter(pk=task.pk).update(status="lost")
    assert Candidate.objects.count() == 2
    assert Task.objects.get(pk=task.pk).status == Task.Status.OPEN
