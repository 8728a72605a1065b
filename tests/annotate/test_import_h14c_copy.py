"""The import's bulk inserts store what the ORM stores, field for field, whichever way the rows
travel: PostgreSQL's binary ``COPY`` (every import table), its text ``COPY`` (a table with a
column type the binary path does not list), SQLite's ``executemany``."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from annotate import bulk_insert
from annotate.bulk_insert import columns_insert, objects_insert
from annotate.models import Candidate, Judgment, Project, Prompt, Task, TaskCandidate
from tests.conftest import is_postgres

pytestmark = pytest.mark.django_db

# Text a text COPY escapes (tab, newline, backslash, "\N" which reads as NULL unescaped),
# characters beyond ASCII, and JSON with the same inside.
AWKWARD = "tab\there\nnew line \\ back\\slash \\N é 漢字 🙂"
META = {"note": AWKWARD, "nested": {"x": 1.5, "list": [1, None, True, "\\N"]}, "é": []}


@pytest.fixture(params=["binary", "text"])
def copy_format(request, monkeypatch):
    if request.param == "text":
        # No type listed: every table is copied as text (and SQLite ignores this).
        monkeypatch.setattr(bulk_insert, "_BINARY_COPY_TYPES", {})
    return request.param


@pytest.fixture
def project():
    return Project.objects.create(name="copy", mode="ranking", candidates_per_task=2)


def _fields(obj, skip=("id", "created_at", "updated_at", "text_html")) -> dict:
    """Stored values by column (``text_html``: the caller's, which the ORM renders on save)."""
    return {
        f.attname: getattr(obj, f.attname)
        for f in type(obj)._meta.concrete_fields
        if f.attname not in skip
    }


def _rows(model, ids) -> list[dict]:
    by_pk = model.objects.in_bulk(ids)
    return [_fields(by_pk[pk]) for pk in ids]


def test_the_import_tables_store_what_the_orm_stores(project, copy_format):
    when = timezone.now() - dt.timedelta(days=3, microseconds=7)
    prompt_values = [
        {"external_id": f"p{i}", "text": AWKWARD + str(i), "text_html": f"<p>{i}</p>"}
        for i in range(3)
    ]
    with transaction.atomic():
        prompt_ids = columns_insert(
            Prompt,
            {
                "project_id": bulk_insert.Same(project.pk),
                "external_id": [v["external_id"] for v in prompt_values],
                "text": [v["text"] for v in prompt_values],
                "text_html": [v["text_html"] for v in prompt_values],
                "image": ["p/ab/x.png", "", ""],
                "metadata": [META, {}, {"k": "v"}],
            },
            checks_hold=True,
        )
        cand_ids = columns_insert(
            Candidate,
            {
                "project_id": bulk_insert.Same(project.pk),
                "prompt_id": [prompt_ids[0]] * 3,
                "external_id": ["c0", "c1", "c2"],
                "model_name": ["m\tA", "m-B", "m-C"],
                "kind": ["text", "image", "text"],
                "text": [AWKWARD, "", "plain"],
                "text_html": ["", "", ""],
                "media": ["", "p/cd/y.png", ""],
                "metadata": [{}, META, {"empty_answer": True}],
                "created_at": bulk_insert.Same(when),
            },
            checks_hold=True,
        )
        task_ids = columns_insert(
            Task,
            {
                "project_id": bulk_insert.Same(project.pk),
                "prompt_id": [prompt_ids[0], prompt_ids[1]],
                "candidate_key": ["1-2", "2-3"],
                "priority": [-2.25, 1e300],
                "is_gold": [True, False],
                "gold_ranking": [[[1], [2, 3]], None],
                "required_judgments": [3, None],
                "judgment_count": [7, 0],
                "flags_dirty_at": [when, None],
            },
            checks_hold=True,
        )
        slot_ids = columns_insert(
            TaskCandidate,
            {
                "task_id": [task_ids[0]] * 3,
                "candidate_id": cand_ids,
                "position": [0, 1, 32767],
            },
            checks_hold=True,
        )
        judgment = Judgment(
            project=project,
            task_id=task_ids[0],
            source=Judgment.Source.EXTERNAL,
            source_name="src\\N",
            external_annotator=AWKWARD[:50],
            kind="ranking",
            ranking=[[cand_ids[0]], [cand_ids[1], cand_ids[2]]],
            rationale=AWKWARD,
            duration_ms=2_000_000_000,
            presented_order=list(cand_ids),
            ratings={"helpful": {str(cand_ids[0]): 5}},
            idempotency_key="import:k1",
        )
        objects_insert([judgment])

    # The same values through the ORM, into another project, read back the same way.
    other = Project.objects.create(name="orm", mode="ranking", candidates_per_task=2)
    orm_prompts = Prompt.objects.bulk_create(
        [
            Prompt(project=other, image=image, metadata=meta, **v)
            for v, image, meta in zip(
                prompt_values, ["p/ab/x.png", "", ""], [META, {}, {"k": "v"}], strict=True
            )
        ]
    )
    Candidate.objects.bulk_create(
        [
            Candidate(
                project=other,
                prompt=orm_prompts[0],
                external_id=ext,
                model_name=model,
                kind=kind,
                text=text,
                media=media,
                metadata=meta,
            )
            for ext, model, kind, text, media, meta in [
                ("c0", "m\tA", "text", AWKWARD, "", {}),
                ("c1", "m-B", "image", "", "p/cd/y.png", META),
                ("c2", "m-C", "text", "plain", "", {"empty_answer": True}),
            ]
        ]
    )
    orm_tasks = Task.objects.bulk_create(
        [
            Task(
                project=other,
                prompt=orm_prompts[0],
                candidate_key="1-2",
                priority=-2.25,
                is_gold=True,
                gold_ranking=[[1], [2, 3]],
                required_judgments=3,
                judgment_count=7,
                flags_dirty_at=when,
            ),
            Task(project=other, prompt=orm_prompts[1], candidate_key="2-3", priority=1e300),
        ]
    )

    def relative(rows, project_pk, **ids):
        """Rows with the project and the ids of other rows put as their index in ``ids``."""
        out = []
        for row in rows:
            row = dict(row, project_id=project_pk and "project")
            for column, pks in ids.items():
                if row.get(column) is not None:
                    row[column] = pks.index(row[column])
            out.append(row)
        return out

    assert relative(_rows(Prompt, prompt_ids), project.pk) == relative(
        [_fields(p) for p in Prompt.objects.filter(project=other).order_by("pk")], other.pk
    )
    assert relative(_rows(Candidate, cand_ids), project.pk, prompt_id=prompt_ids) == relative(
        [_fields(c) for c in Candidate.objects.filter(project=other).order_by("pk")],
        other.pk,
        prompt_id=[p.pk for p in orm_prompts],
    )
    assert Candidate.objects.get(pk=cand_ids[0]).created_at == when
    assert relative(_rows(Task, task_ids), project.pk, prompt_id=prompt_ids) == relative(
        [_fields(t) for t in Task.objects.filter(project=other).order_by("pk")],
        other.pk,
        prompt_id=[p.pk for p in orm_prompts],
    )
    assert [
        (s["task_id"], s["candidate_id"], s["position"]) for s in _rows(TaskCandidate, slot_ids)
    ] == [
        (task_ids[0], cand_ids[0], 0),
        (task_ids[0], cand_ids[1], 1),
        (task_ids[0], cand_ids[2], 32767),
    ]
    orm_judgment = Judgment.objects.create(
        **{
            **_fields(judgment),
            "project_id": other.pk,
            "task_id": orm_tasks[0].pk,
            "idempotency_key": "import:k2",
        }
    )
    ignore = {"project_id": 0, "task_id": 0, "idempotency_key": ""}
    assert {**_fields(Judgment.objects.get(pk=judgment.pk)), **ignore} == {
        **_fields(Judgment.objects.get(pk=orm_judgment.pk)),
        **ignore,
    }
    assert Judgment.objects.get(pk=judgment.pk).created_at is not None


def test_json_that_jsonb_refuses_is_refused_with_nothing_written(project, copy_format):
    with pytest.raises(IntegrityError), transaction.atomic():
        columns_insert(
            Prompt,
            {
                "project_id": bulk_insert.Same(project.pk),
                "external_id": ["ok", "nan"],
                "text": ["a", "b"],
                "metadata": [{}, {"x": float("nan")}],
            },
            checks_hold=True,
        )

    assert not Prompt.objects.exists()


@pytest.mark.postgres
def test_postgresql_copies_every_import_table_in_binary():
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    connection.ensure_connection()
    quote = connection.ops.quote_name
    for model in (Prompt, Candidate, Task, TaskCandidate, Judgment):
        names = ", ".join(quote(f.column) for f in model._meta.concrete_fields)
        types = bulk_insert._binary_copy_types(quote(model._meta.db_table), names)
        assert types is not None, model.__name__
        jsonb = [
            f.column for f in model._meta.concrete_fields if f.get_internal_type() == "JSONField"
        ]
        assert types.count(bulk_insert.BYTEA) == len(jsonb), model.__name__
