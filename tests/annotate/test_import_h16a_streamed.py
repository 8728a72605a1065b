"""An import on PostgreSQL writes its first records' prompts and candidates while the rest of the
file is parsed (``services._import_file_streamed``): the rows are those of an import that
writes after the whole file is read, a problem anywhere still rejects the file whole, and the
parser hands the records out in file order, each once (``parse_import(on_records=...)``). On
SQLite an import writes with a grown page cache, restored after (``page_cache_grown``)."""

from __future__ import annotations

import json

import pytest

from annotate import services
from annotate.importing import ImportRejected, parse_import
from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
from annotate.services import import_file
from tests.conftest import is_postgres

postgres_only = pytest.mark.skipif(not is_postgres(), reason="streamed on PostgreSQL only")


def _row(i: int, n_candidates: int = 2, **extra) -> dict:
    return {
        "id": f"p{i}",
        "prompt": f"prompt *{i}*",
        "candidates": [
            {"id": f"p{i}-c{c}", "model": f"m{c}", "text": f"answer {i}.{c}" if c else ""}
            for c in range(n_candidates)
        ],
        **extra,
    }


def _write(path, rows) -> str:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def _parse(path, **kwargs):
    return parse_import(path, max_media_bytes=10**9, max_file_bytes=10**9, **kwargs)


def test_the_parser_hands_out_every_record_once_in_file_order(tmp_path):
    path = _write(
        tmp_path / "a.jsonl", [{"project": {"blind": True}}] + [_row(i) for i in range(7)]
    )
    handed = []
    parsed = _parse(
        path, on_records=lambda records, s: handed.append((records, s)), records_every=3
    )
    assert [[r.external_id for r in records] for records, _ in handed] == [
        ["p0", "p1", "p2"],
        ["p3", "p4", "p5"],
    ]
    assert all(s == {"blind": True} for _, s in handed)
    # The returned records start with those handed out, the same objects.
    assert [p.external_id for p in parsed.prompts] == [f"p{i}" for i in range(7)]
    assert all(a is b for a, b in zip(handed[0][0] + handed[1][0], parsed.prompts, strict=False))


def test_the_parser_hands_out_nothing_once_a_row_has_a_problem(tmp_path):
    rows = [_row(0), {"id": "p1", "candidates": []}] + [_row(i) for i in range(2, 8)]
    handed = []
    with pytest.raises(ImportRejected):
        _parse(
            _write(tmp_path / "a.jsonl", rows),
            on_records=lambda records, s: handed.append(records),
            records_every=1,
        )
    assert [[r.external_id for r in records] for records in handed] == [["p0"]]


def test_the_parser_hands_out_no_seed_records(tmp_path):
    rows = [{"prompt": "same", "responses": ["a", "b"], "rankings": [1, 2]}] * 3
    handed = []
    _parse(
        _write(tmp_path / "a.jsonl", rows),
        on_records=lambda r, s: handed.append(r),
        records_every=1,
    )
    assert handed == []


def _outcome(path, **kwargs):
    """The parse's records (external ids) or its problems, and the records it handed out."""
    handed = []
    try:
        parsed = _parse(path, on_records=lambda r, s: handed.extend(r), **kwargs)
    except ImportRejected as exc:
        return [str(p) for p in exc.problems], handed
    return [p.external_id for p in parsed.prompts], handed


@pytest.mark.parametrize(
    "lines",
    [
        # A malformed row after handed-out records and after a row with a problem: the
        # malformed one is still reported first, as the parse that reads every row first does.
        [json.dumps(_row(i)) for i in range(4)] + ['{"id": "x", "candidates": 3}', "{oops", "[1"],
        ["{oops"] + [json.dumps(_row(i)) for i in range(3)],  # the first row
        ["", "  ", "\t"],  # no rows
        ["\ufeff" + json.dumps(_row(0)), "", json.dumps(_row(1)), json.dumps(_row(2))],
        ["[" + json.dumps(_row(0)) + ",", json.dumps(_row(1)) + "]"],  # one JSON document
        ["\x0c[" + json.dumps(_row(0)) + "]"],
        [json.dumps({"prompt": "p", "responses": ["a", "b"], "rankings": [1, 2]})] * 3,
        [json.dumps(_row(i)) for i in range(5)] + ['{"id": "big", "n": 12345678901234567890}'],
    ],
)
def test_records_handed_out_early_change_nothing_the_parse_returns(tmp_path, lines):
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(lines) + "\n")
    try:
        expected, ok = [p.external_id for p in _parse(path).prompts], True
    except ImportRejected as exc:
        expected, ok = [str(p) for p in exc.problems], False
    got, handed = _outcome(path, records_every=2)
    assert got == expected
    if ok:  # a prefix of the records, each once
        assert [r.external_id for r in handed] == got[: len(handed)]


def test_the_first_records_go_before_the_rest_of_the_file_is_read(tmp_path, monkeypatch):
    from annotate import importing

    decoded = []
    loads = importing._loads
    monkeypatch.setattr(
        importing, "_loads", lambda text, **kw: decoded.append(1) or loads(text, **kw)
    )
    path = _write(tmp_path / "a.jsonl", [_row(i) for i in range(10)])
    at_first = []
    _parse(path, on_records=lambda r, s: at_first.append(len(decoded)), records_every=2)
    assert at_first[0] <= 3  # the first two rows (and the first once more, for the format)
    assert len(decoded) <= 11


def _stored(project: Project) -> dict:
    """The project's rows by external id, in id order (ids as ranks, not values)."""
    prompts = list(
        Prompt.objects.filter(project=project)
        .order_by("id")
        .values_list("external_id", "text", "text_html", "metadata")
    )
    cands = list(
        Candidate.objects.filter(project=project)
        .order_by("id")
        .values_list(
            "external_id",
            "prompt__external_id",
            "model_name",
            "kind",
            "text",
            "text_html",
            "metadata",
        )
    )
    tasks = list(
        Task.objects.filter(project=project)
        .order_by("id")
        .values_list("prompt__external_id", "status")
    )
    slots = list(
        TaskCandidate.objects.filter(task__project=project)
        .order_by("id")
        .values_list("task__prompt__external_id", "candidate__external_id", "position")
    )
    settings = Project.objects.filter(pk=project.pk).values("mode", "candidates_per_task", "blind")[
        0
    ]
    return {"prompts": prompts, "cands": cands, "tasks": tasks, "slots": slots, "project": settings}


@pytest.fixture
def stream_writes(monkeypatch):
    """Streams every 2 records and counts the streamed writes."""
    monkeypatch.setattr(services, "STREAM_RECORDS", 2)
    calls = []
    write = services._stream_write

    def counted(streamed, records, stored=None):
        calls.append(len(records))
        return write(streamed, records, stored)

    monkeypatch.setattr(services, "_stream_write", counted)
    return calls


def _both_ways(tmp_path, monkeypatch, rows) -> tuple[dict, dict, object]:
    """The file imported streamed, then into another project in one go (no record handed
    out early); both projects' rows."""
    path = _write(tmp_path / "a.jsonl", rows)
    streamed = import_file(path=path, project_name="streamed")
    monkeypatch.setattr(services, "STREAM_RECORDS", 10**9)
    whole = import_file(path=path, project_name="whole")
    assert streamed.counts == whole.counts
    return _stored(streamed.project), _stored(whole.project), streamed


@postgres_only
@pytest.mark.django_db
@pytest.mark.parametrize("n", [8, 9])  # every record streamed; one left for the end
def test_a_streamed_import_stores_what_a_whole_one_does(n, tmp_path, monkeypatch, stream_writes):
    rows = [{"project": {"blind": True}}] + [_row(i) for i in range(n)]
    streamed, whole, result = _both_ways(tmp_path, monkeypatch, rows)
    assert stream_writes[:4] == [2, 2, 2, 2]  # written while the file was read
    assert streamed == whole
    assert result.counts["prompts"] == n and result.counts["empty_answers"] == n


@postgres_only
@pytest.mark.django_db
def test_a_streamed_projects_settings_are_those_of_the_whole_file(
    tmp_path, monkeypatch, stream_writes
):
    # The first records have 2 candidates (a pairwise project, were they the file), later
    # ones 3: the project is a ranking one of 3 per task, and their tasks hold all 3.
    rows = [_row(i) for i in range(4)] + [_row(i, 3) for i in range(4, 7)]
    streamed, whole, _ = _both_ways(tmp_path, monkeypatch, rows)
    assert stream_writes[:2] == [2, 2]
    assert streamed["project"]["mode"] == "ranking"
    assert streamed["project"]["candidates_per_task"] == 3
    assert streamed == whole


@postgres_only
@pytest.mark.django_db
def test_records_after_one_with_judgments_go_with_the_rest(tmp_path, monkeypatch, stream_writes):
    judged = _row(3, judgments=[{"annotator": "x", "ranking": [["p3-c1"], ["p3-c0"]]}])
    rows = [_row(i) for i in range(3)] + [judged] + [_row(i) for i in range(4, 9)]
    streamed, whole, result = _both_ways(tmp_path, monkeypatch, rows)
    assert stream_writes[0] == 2 and sum(stream_writes) == 9
    assert streamed == whole
    assert result.counts["judgments"] == 1


@postgres_only
@pytest.mark.django_db
def test_a_bad_row_after_streamed_ones_leaves_nothing_written(tmp_path, stream_writes):
    rows = [_row(i) for i in range(6)] + [_row(6) | {"candidates": "none"}] + [_row(7)]
    with pytest.raises(ImportRejected) as caught:
        import_file(path=_write(tmp_path / "a.jsonl", rows), project_name="bad")
    assert [str(p) for p in caught.value.problems] == [
        "line 7, field 'candidates': must be a list of at least 2 candidates"
    ]
    assert stream_writes[:3] == [2, 2, 2]
    assert not Project.objects.filter(name="bad").exists()
    assert not Prompt.objects.exists() and not Candidate.objects.exists()


@postgres_only
@pytest.mark.django_db
def test_a_row_the_database_refuses_is_reported_after_the_files_problems(tmp_path, stream_writes):
    # An id past the column's 255 characters fails its streamed write; a whole import would
    # report the malformed row further on (the file's problems come first) and so does this.
    rows = [_row(0), _row(1) | {"id": "x" * 300}] + [_row(i) for i in range(2, 5)]
    rows.append(_row(5) | {"candidates": "none"})
    with pytest.raises(ImportRejected) as caught:
        import_file(path=_write(tmp_path / "a.jsonl", rows), project_name="refused")
    assert [p.line for p in caught.value.problems] == [6]
    assert stream_writes[0] == 2  # tried while the file was read
    assert not Prompt.objects.exists()


@pytest.mark.skipif(is_postgres(), reason="SQLite's page cache")
@pytest.mark.django_db
def test_an_import_writes_with_a_grown_page_cache_and_restores_it(tmp_path, monkeypatch):
    from django.db import connection

    from annotate import bulk_insert

    def cache_size() -> int:
        with connection.cursor() as cursor:
            cursor.execute("PRAGMA cache_size")
            return cursor.fetchone()[0]

    seen = []
    insert = services.columns_insert

    def spied(*args, **kwargs):
        seen.append(cache_size())
        return insert(*args, **kwargs)

    monkeypatch.setattr(services, "columns_insert", spied)
    before = cache_size()
    assert before > -bulk_insert.IMPORT_PAGE_CACHE_KIB  # the default is smaller
    import_file(path=_write(tmp_path / "a.jsonl", [_row(i) for i in range(3)]), project_name="c")
    assert seen and set(seen) == {-bulk_insert.IMPORT_PAGE_CACHE_KIB}
    assert cache_size() == before
