"""The import's fast paths give what the general paths give: rendering, JSON rows, candidates,
column inserts, and skipped foreign-key checks that leave no row without its parent."""

from __future__ import annotations

import json
import string

import pytest
from django.db import IntegrityError, connection, transaction
from hypothesis import given, settings
from hypothesis import strategies as st

from annotate import importing
from annotate.bulk_insert import Same, columns_insert, references_checked, references_trust_new_rows
from annotate.importing import _loads, parse_import
from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
from annotate.rendering import markdown_html, markdown_html_many
from annotate.services import import_file
from tests.conftest import is_postgres

LETTERS = string.ascii_letters + "éñ漢"
PLAIN = LETTERS + string.digits + " ,.;:?!'\"()/%$@=+-[]"
MARKUP = "*_`<>&#\\\n\t|~{}\u00a0"


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(
        st.one_of(
            st.text(alphabet=PLAIN, max_size=30),
            st.text(alphabet=PLAIN + MARKUP, max_size=30),
            st.sampled_from(["[1] a", "a [b](c)", "x]\n(", "x] :", "1. a", "", " "]),
        ),
        max_size=12,
    )
)
def test_it_renders_many_texts_as_it_renders_each(texts):
    assert markdown_html_many(texts) == [markdown_html(t) for t in texts]


def test_it_renders_plain_texts_without_the_parser(monkeypatch):
    def parser(text):
        raise AssertionError(f"parsed {text!r}")

    monkeypatch.setattr("annotate.rendering._parsed_html", parser)

    assert markdown_html_many(["[3] Which is better?", "A plain answer."]) == [
        "<p>[3] Which is better?</p>",
        "<p>A plain answer.</p>",
    ]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES)
def test_it_reads_a_row_as_json_does(value):
    text = json.dumps(value)

    assert _loads(text) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        '{"x": NaN, "y": Infinity}',  # json reads these; orjson does not
        '{"n": 123456789012345678901234567890}',
        '{"s": "\\ud800"}',
        '{"a": 1, "a": 2}',
    ],
)
def test_it_reads_what_orjson_refuses_as_json_does(text):
    assert repr(_loads(text)) == repr(json.loads(text))


@pytest.mark.parametrize("text", ['{"a": }', "[1, 2", '{"a": 1} x'])
def test_it_reports_malformed_rows_with_jsons_message(text):
    with pytest.raises(json.JSONDecodeError) as ours:
        _loads(text)
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)

    assert (ours.value.msg, ours.value.colno) == (theirs.value.msg, theirs.value.colno)


CANDIDATE_VALUES = st.one_of(
    st.none(),
    st.just(""),
    st.just("  "),
    st.just("c1"),
    st.text(alphabet="abc ", max_size=6),
    st.integers(0, 2),
    st.just([]),
    st.just({}),
    st.just({"k": 1}),
)
CANDIDATE = st.dictionaries(
    st.sampled_from(["id", "model", "text", "kind", "metadata", "image", "placeholder", "x"]),
    CANDIDATE_VALUES | st.sampled_from(["text", "image", "a.png"]),
    max_size=6,
)


def _parsed(tmp_path, rows, name):
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    try:
        parsed = parse_import(
            path, format="quorum", max_media_bytes=10**6, max_file_bytes=10**6, max_text_chars=5
        )
    except importing.ImportRejected as exc:
        return [str(p) for p in exc.problems]
    parsed.source.close()
    return [
        (
            p.external_id,
            [(c.external_id, c.model_name, c.kind, c.text, c.metadata) for c in p.candidates],
        )
        for p in parsed.prompts
    ]


@settings(max_examples=300, deadline=None)
@given(candidates=st.lists(st.lists(CANDIDATE, min_size=2, max_size=3), min_size=1, max_size=3))
def test_it_reads_candidates_as_the_full_checks_do(tmp_path_factory, candidates):
    tmp_path = tmp_path_factory.mktemp("rows")
    rows = [{"id": f"p{i}", "prompt": "q", "candidates": c} for i, c in enumerate(candidates)]
    fast = _parsed(tmp_path, rows, "fast")

    original = importing._PLAIN_CANDIDATE_KEYS
    importing._PLAIN_CANDIDATE_KEYS = frozenset()  # every candidate takes the full checks
    try:
        full = _parsed(tmp_path, rows, "full")
    finally:
        importing._PLAIN_CANDIDATE_KEYS = original

    assert fast == full


@pytest.mark.django_db
def test_it_inserts_columns_with_values_shared_by_every_row():
    project = Project.objects.create(name="cols", mode="ranking", candidates_per_task=2)

    with transaction.atomic():
        ids = columns_insert(
            Prompt,
            {
                "project_id": Same(project.pk),
                "external_id": ["a", "b"],
                "text": ["x", "y"],
                "metadata": [{}, {"k": [1]}],
            },
        )

    stored = list(
        Prompt.objects.order_by("pk").values_list("pk", "project", "external_id", "metadata")
    )
    assert stored == [(ids[0], project.pk, "a", {}), (ids[1], project.pk, "b", {"k": [1]})]


@pytest.mark.django_db
def test_it_refuses_columns_of_different_lengths():
    with pytest.raises(ValueError, match="different lengths"), transaction.atomic():
        columns_insert(Prompt, {"external_id": ["a", "b"], "text": ["x"]})

    assert not Prompt.objects.exists()


def _orphans() -> int:
    links = [
        (Prompt, "project_id", Project),
        (Candidate, "prompt_id", Prompt),
        (Candidate, "project_id", Project),
        (Task, "prompt_id", Prompt),
        (Task, "project_id", Project),
        (TaskCandidate, "task_id", Task),
        (TaskCandidate, "candidate_id", Candidate),
    ]
    total = 0
    with connection.cursor() as cursor:
        for child, column, parent in links:
            cursor.execute(
                f"SELECT COUNT(*) FROM {child._meta.db_table} c LEFT JOIN "
                f"{parent._meta.db_table} p ON p.id = c.{column} WHERE p.id IS NULL"
            )
            total += cursor.fetchone()[0]
    return total


@pytest.mark.django_db(transaction=True)
def test_a_first_import_leaves_every_row_with_its_parent(tmp_path):
    rows = [{"project": {"mode": "ranking", "candidates_per_task": 3}}] + [
        {
            "id": f"p{i}",
            "prompt": f"question {i}",
            "candidates": [{"id": f"p{i}-{c}", "model": c, "text": f"answer {c}"} for c in "abc"],
        }
        for i in range(30)
    ]
    path = tmp_path / "first.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = import_file(path=path, project_name="first")

    assert result.counts["tasks"] == 30
    assert TaskCandidate.objects.count() == 90
    assert _orphans() == 0


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_checks_references_again_once_told():
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    project = Project.objects.create(name="refs", mode="ranking", candidates_per_task=2)

    with pytest.raises(IntegrityError), transaction.atomic():
        assert references_trust_new_rows(model=Project, pk=project.pk)
        references_checked()
        columns_insert(Prompt, {"project_id": [project.pk + 1000], "external_id": ["x"]})

    assert not Prompt.objects.exists()


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_ends_the_trust_with_the_transaction():
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    project = Project.objects.create(name="refs", mode="ranking", candidates_per_task=2)
    with transaction.atomic():
        assert references_trust_new_rows(model=Project, pk=project.pk)

    with connection.cursor() as cursor:
        cursor.execute("SHOW session_replication_role")
        assert cursor.fetchone()[0] == "origin"


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_it_does_not_trust_references_to_a_missing_row():
    if not is_postgres():
        pytest.skip("PostgreSQL only")
    with transaction.atomic():
        assert not references_trust_new_rows(model=Project, pk=12345)


@pytest.mark.django_db
def test_it_checks_every_reference_on_sqlite():
    if is_postgres():
        pytest.skip("SQLite only")
    project = Project.objects.create(name="refs", mode="ranking", candidates_per_task=2)

    assert not references_trust_new_rows(model=Project, pk=project.pk)


def test_it_keeps_integers_past_64_bits_of_a_file_exact(tmp_path):
    rows = [
        {
            "id": "p",
            "prompt": "q",
            "metadata": {"n": 123456789012345678901234567890, "m": -9223372036854775809},
            "candidates": [{"id": f"c{i}", "model": "m", "text": "a"} for i in range(2)],
        }
    ]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    parsed = parse_import(path, max_media_bytes=10**6, max_file_bytes=10**6)
    parsed.source.close()

    assert parsed.prompts[0].metadata == rows[0]["metadata"]
    assert all(type(v) is int for v in parsed.prompts[0].metadata.values())
