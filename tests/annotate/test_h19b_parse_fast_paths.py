"""h19b: the JSONL rows read by ``orjson`` directly where no line can nest past the limit, and a
JSON column of empty dicts converted once: the same records, problems and stored rows as the
per-row paths."""

from __future__ import annotations

import dataclasses
import json

import pytest
from django.db import connection, transaction

from annotate import importing
from annotate.bulk_insert import Same, columns_insert
from annotate.importing import MAX_JSON_DEPTH, ImportRejected, parse_import, quorum_stream
from annotate.models import Project, Prompt

LIMITS = {"max_media_bytes": 10**8, "max_file_bytes": 10**8, "max_text_chars": 10_000}


def _row(i: int, **extra) -> dict:
    return {
        "id": f"p{i}",
        "prompt": f"Question {i}",
        "candidates": [
            {"id": f"p{i}-a", "model": "m1", "text": "one"},
            {"id": f"p{i}-b", "model": "m2", "text": "two"},
        ],
        **extra,
    }


def _parsed(path) -> tuple:
    """What ``parse_import`` and the streamed reader (``quorum_stream``) make of ``path``."""
    try:
        parsed = parse_import(path, **LIMITS)
        whole = ("ok", [dataclasses.asdict(p) for p in parsed.prompts])
        parsed.source.close()
    except ImportRejected as exc:
        whole = ("rejected", [str(p) for p in exc.problems])
    stream = quorum_stream(path, **LIMITS)
    streamed = None
    if stream is not None:
        chunk = stream.records(0, len(stream.rows))
        streamed = None if chunk is None else [dataclasses.asdict(p) for p in chunk]
        stream.source.close()
    return whole, streamed


def _per_row(path, monkeypatch) -> tuple:
    """``_parsed`` with the fast path off: every row through ``_loads``, as before."""
    with monkeypatch.context() as m:
        m.setattr(importing, "_lines_shallow", lambda data: False)
        return _parsed(path)


@pytest.mark.parametrize(
    "line",
    [
        # Wide, not deep: 80 brackets on one line, nested 3 levels.
        json.dumps(_row(9, metadata={"n": [[] for _ in range(80)]})),
        # Nested past the limit (orjson reads it; the walk refuses it).
        json.dumps(_row(9)).replace(
            '"prompt"', '"metadata": {"k": ' + "[" * 70 + "]" * 70 + '}, "prompt"'
        ),
        # Just under and at the limit.
        json.dumps(_row(9, metadata={"k": json.loads("[" * 60 + "]" * 60)})),
        json.dumps(_row(9, metadata={"k": json.loads("[" * 63 + "]" * 63)})),
        # What orjson refuses and json reads, or reads differently.
        json.dumps(_row(9)).replace('"prompt"', '"metadata": {"x": NaN}, "prompt"'),
        json.dumps(_row(9, metadata={"n": 123456789012345678901234567890})),
        json.dumps(_row(9)).replace('"Question 9"', '"\\ud800 lone"'),
        "{not json",
    ],
)
def test_rows_parse_as_they_do_row_by_row(line, tmp_path, monkeypatch):
    rows = [json.dumps(_row(i)) for i in range(5)]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join([*rows[:3], line, *rows[3:]]) + "\n", encoding="utf-8")

    assert _parsed(path) == _per_row(path, monkeypatch)


def test_a_deep_row_is_refused_naming_its_line_where_other_lines_are_shallow(tmp_path):
    # The bound is per line: the other rows' few brackets do not hide the deep one.
    deep = json.dumps(_row(9, metadata={"k": 1})).replace("1}", "[" * 80 + "]" * 80 + "}")
    path = tmp_path / "deep.jsonl"
    path.write_text("\n".join([json.dumps(_row(i)) for i in range(3)] + [deep]) + "\n")

    whole, streamed = _parsed(path)

    assert whole[0] == "rejected" and streamed is None
    assert whole[1][0].startswith("line 4") and "nested deeper than" in whole[1][0]


@pytest.mark.parametrize("sep", ["\r\n", "\r", "\u2028", "\u0085"])
def test_the_bound_holds_for_lines_that_str_splits_apart(sep, tmp_path, monkeypatch):
    # ``str.splitlines`` splits at these inside a row too: each part is a line of its own (a
    # malformed one), inside one of the byte lines the bound counts.
    rows = [json.dumps(_row(i)) for i in range(3)]
    odd = json.dumps(_row(7), ensure_ascii=False).replace("Question 7", f"Ques{sep}[[{{tion")
    path = tmp_path / "lines.jsonl"
    path.write_bytes(("\ufeff" + sep.join([rows[0], odd, *rows[1:]]) + "\n").encode())

    assert _parsed(path) == _per_row(path, monkeypatch)


def test_the_bound_counts_every_opening_bracket_of_a_line():
    assert importing._lines_shallow(b'{"a": [1]}\n[[]]\n')
    line = b"[" * (MAX_JSON_DEPTH - 1) + b"]" * (MAX_JSON_DEPTH - 1)
    assert importing._lines_shallow(line + b"\n" + line)
    assert not importing._lines_shallow(b"{}\n" + b"[" * 32 + b"{" * 32)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "metadata",
    [
        [{}, {}, {}],
        [{}, {"split": "dev"}, {}],
        [{"a": 1}, {}, {}],
        [{}, [], {}],
    ],
)
def test_a_json_column_stores_each_rows_value(metadata):
    project = Project.objects.create(name="h19b", mode="ranking", candidates_per_task=2)
    with transaction.atomic():
        pks = columns_insert(
            Prompt,
            {
                "project_id": Same(project.pk),
                "external_id": [f"p{i}" for i in range(3)],
                "text": Same("t"),
                "metadata": metadata,
            },
            checks_hold=True,
        )

    stored = dict(Prompt.objects.filter(pk__in=pks).values_list("external_id", "metadata"))
    assert stored == {f"p{i}": m for i, m in enumerate(metadata)}
    with connection.cursor() as cursor:
        cursor.execute("SELECT metadata FROM annotate_prompt ORDER BY id")
        raw = [r[0] for r in cursor.fetchall()]
    assert [json.loads(r) if isinstance(r, str) else r for r in raw] == metadata


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="COPY: PostgreSQL only")
@pytest.mark.parametrize("metadata", [[{}, {}, {}], [{}, {"a": [1]}, {}]])
def test_an_open_copy_stores_each_rows_json_value(metadata):
    from annotate.bulk_insert import columns_copy

    project = Project.objects.create(name="h19b", mode="ranking", candidates_per_task=2)
    with (
        transaction.atomic(),
        columns_copy(
            Prompt, ["project_id", "external_id", "text", "metadata"], checks_hold=True
        ) as write,
    ):
        write(
            {
                "project_id": Same(project.pk),
                "external_id": [f"p{i}" for i in range(3)],
                "text": Same("t"),
                "metadata": metadata,
            }
        )

    stored = dict(Prompt.objects.values_list("external_id", "metadata"))
    assert stored == {f"p{i}": m for i, m in enumerate(metadata)}
