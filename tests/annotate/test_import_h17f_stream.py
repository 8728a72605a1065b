"""PostgreSQL's streamed import (``services._import_streamed``): a Quorum JSONL file parsed a
chunk of rows at a time, each chunk's candidates written into one ``COPY`` left open. It stores
what today's path (``parse_import`` then ``_write_records``) stores, and where it cannot take
an import (a problem in the file, media, a project with prompts, a new project whose settings
leave its mode to the rows) it writes nothing and today's path runs, with its problems in its
order. On SQLite the same streamed write takes a file without judgments (its rows parsed in a
forked child where a core is free, `services._forked_columns`); a judged file takes today's path."""

from __future__ import annotations

import json

import pytest

from annotate import services
from annotate.importing import ImportRejected
from annotate.models import Candidate, Judgment, Project, Prompt, Task, TaskCandidate
from annotate.services import import_file
from tests.conftest import is_postgres

pytestmark = pytest.mark.django_db

SETTINGS = {"project": {"mode": "ranking", "candidates_per_task": 3, "ties_allowed": True}}


def _rows(n: int, *, judged: bool = False, first: int = 0) -> list[dict]:
    rows = []
    for i in range(first, first + n):
        row = {
            "id": f"p{i}",
            "prompt": f"prompt **{i}**" if i % 3 else f"Prompt {i}",
            "metadata": {"i": i} if i % 2 else {},
            "candidates": [
                {"id": f"p{i}-c{k}", "model": f"m{k}", "text": "" if k == 2 else f"*answer* {k}"}
                for k in range(3 + i % 2)
            ],
        }
        if judged and i % 2:
            row["judgments"] = [
                {"annotator": "a1", "ranking": [[f"p{i}-c1"], [f"p{i}-c0", f"p{i}-c2"]]}
            ]
        rows.append(row)
    return rows


def _write(path, rows, settings=SETTINGS):
    lines = ([settings] if settings else []) + rows
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return path


def _stored(project: Project) -> dict:
    """The project's rows minus ids and times, candidates and prompts by external id."""
    prompts = {p.pk: p.external_id for p in Prompt.objects.filter(project=project)}
    cands = {c.pk: c.external_id for c in Candidate.objects.filter(project=project)}
    slots: dict[int, list] = {}
    for s in TaskCandidate.objects.filter(task__project=project).order_by("task_id", "position"):
        slots.setdefault(s.task_id, []).append(cands[s.candidate_id])
    return {
        "prompts": sorted(
            (
                p.external_id,
                p.text,
                p.text_html,
                p.image.name.split("/", 1)[-1],
                p.video.name,
                p.metadata,
            )
            for p in Prompt.objects.filter(project=project)
        ),  # fmt: skip
        "candidates": sorted(
            (
                prompts[c.prompt_id],
                c.external_id,
                c.model_name,
                c.kind,
                c.text,
                c.text_html,
                c.media.name,
                json.dumps(c.metadata, sort_keys=True),
            )
            for c in Candidate.objects.filter(project=project)
        ),  # fmt: skip
        "tasks": sorted(
            (prompts[t.prompt_id], tuple(slots[t.pk]), t.status, t.judgment_count)
            for t in Task.objects.filter(project=project)
        ),
        "judgments": sorted(
            (
                j.kind,
                json.dumps([[cands[c] for c in g] for g in j.ranking or []]),
                j.outcome,
                j.idempotency_key.split(":", 2)[2],
                j.source_name,
                j.external_annotator,
            )
            for j in Judgment.objects.filter(project=project)
        ),  # fmt: skip
    }


@pytest.fixture
def spy(monkeypatch):
    """Counts the streamed writes started and those that ended with rows written."""
    seen = {"started": 0, "written": 0}
    real = services._write_streamed

    def counting(*args, **kwargs):
        seen["started"] += 1
        counts = real(*args, **kwargs)
        seen["written"] += 1
        return counts

    monkeypatch.setattr(services, "_write_streamed", counting)
    monkeypatch.setattr(services, "STREAM_CHUNK_ROWS", 4)  # 11 rows: 3 chunks, the last short
    return seen


def _today(monkeypatch, **kwargs):
    """The import through today's path only."""
    with monkeypatch.context() as m:
        m.setattr(services, "_import_streamed", lambda **_: None)
        return import_file(**kwargs)


@pytest.mark.parametrize("judged", [False, True])
def test_streamed_rows_are_todays_rows(tmp_path, monkeypatch, spy, judged):
    path = _write(tmp_path / "rows.jsonl", _rows(11, judged=judged))
    streamed = import_file(path=path, project_name="streamed")
    today = _today(monkeypatch, path=path, project_name="today")

    assert spy == (
        {"started": 1, "written": 1}
        if is_postgres() or not judged
        else {"started": 0, "written": 0}
    )
    assert streamed.counts == today.counts
    assert streamed.counts["prompts"] == 11 and streamed.counts["candidates"] == 38
    assert _stored(streamed.project) == _stored(today.project)
    assert Candidate.objects.filter(project=streamed.project).count() == 38


@pytest.mark.skipif(not is_postgres(), reason="the streamed import is PostgreSQL's")
def test_candidate_ids_follow_the_rows(tmp_path, spy):
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    project = import_file(path=path, project_name="ids").project

    # Each candidate hangs off its own row's prompt, every chunk's included.
    for c in Candidate.objects.filter(project=project).select_related("prompt"):
        assert c.external_id.startswith(c.prompt.external_id + "-")
    ids = list(Candidate.objects.filter(project=project).order_by("pk"))
    assert [c.external_id for c in ids] == [c["id"] for r in _rows(11) for c in r["candidates"]]


def _bad_last_row(tmp_path, problem):
    rows = _rows(11)
    if problem == "unknown field":  # the row still parses to a prompt
        rows[-1]["colour"] = "red"
    elif problem == "id used before":  # the row parses to nothing
        rows[-1]["id"] = "p3"
    else:
        rows[-1]["colour"] = "red"
        rows[-1]["id"] = "p3"
    return _write(tmp_path / "bad.jsonl", rows)


@pytest.mark.parametrize("problem", ["unknown field", "id used before", "both"])
def test_a_problem_on_the_last_row_writes_nothing(tmp_path, monkeypatch, spy, problem):
    path = _bad_last_row(tmp_path, problem)
    with pytest.raises(ImportRejected) as streamed:
        import_file(path=path, project_name="bad")
    with pytest.raises(ImportRejected) as today:
        _today(monkeypatch, path=path, project_name="bad")

    assert spy["started"] == 1 and spy["written"] == 0
    assert [str(p) for p in streamed.value.problems] == [str(p) for p in today.value.problems]
    assert streamed.value.problems[0].line == 12
    assert not Project.objects.filter(name="bad").exists()
    assert not Candidate.objects.exists() and not Prompt.objects.exists()


def test_a_judgment_the_project_refuses_writes_nothing(tmp_path, monkeypatch, spy):
    settings = {"project": {"mode": "ranking", "candidates_per_task": 3, "ties_allowed": False}}
    path = _write(tmp_path / "ties.jsonl", _rows(11, judged=True), settings)
    with pytest.raises(ImportRejected) as streamed:
        import_file(path=path, project_name="ties")
    with pytest.raises(ImportRejected) as today:
        _today(monkeypatch, path=path, project_name="ties")

    assert spy["written"] == 0
    assert [str(p) for p in streamed.value.problems] == [str(p) for p in today.value.problems]
    assert "does not allow ties" in str(streamed.value.problems[0])
    assert not Project.objects.exists() and not Candidate.objects.exists()


@pytest.mark.parametrize(
    "case", ["no settings", "mode only", "appending", "media", "arena", "array"]
)
def test_todays_path_takes_what_the_stream_cannot(tmp_path, monkeypatch, spy, case):
    rows, settings, name = _rows(11), SETTINGS, "fallback"
    if case == "no settings":
        settings = None
    elif case == "mode only":
        settings = {"project": {"mode": "ranking"}}
    elif case == "appending":
        _today(
            monkeypatch, path=_write(tmp_path / "old.jsonl", _rows(2, first=50)), project_name=name
        )
    elif case == "media":
        (tmp_path / "pic.png").write_bytes(_png())
        rows[-1]["image"] = "pic.png"
    path = tmp_path / "in.jsonl"
    if case == "arena":
        votes = [{"model_a": f"m{i}", "model_b": "base", "winner": "model_a"} for i in range(9)]
        path.write_text("\n".join(json.dumps(v) for v in votes))
    elif case == "array":
        path.write_text(json.dumps(rows))
    else:
        _write(path, rows, settings)
    result = import_file(path=path, project_name=name)

    assert spy["written"] == 0
    assert result.counts["prompts"] == (9 if case == "arena" else 11)
    expected = _today(monkeypatch, path=path, project_name="today-" + case)
    if case != "appending":
        assert _stored(result.project) == _stored(expected.project)


@pytest.mark.skipif(not is_postgres(), reason="the streamed import is PostgreSQL's")
def test_rows_another_import_stored_meanwhile_send_it_to_todays_path(tmp_path, monkeypatch, spy):
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    project = Project.objects.create(name="shared", mode="ranking", candidates_per_task=3)
    real, calls = services._mode_problems, []

    def meanwhile(project, records):  # first called once the candidates' COPY is closed
        if not calls:
            other = Prompt.objects.create(project=project, external_id="other", text="x")
            Candidate.objects.create(project=project, prompt=other, external_id="o", model_name="m")
        calls.append(1)
        return real(project, records)

    monkeypatch.setattr(services, "_mode_problems", meanwhile)
    result = import_file(path=path, project=project)

    assert spy == {"started": 1, "written": 0}
    assert result.counts["prompts"] == 11 and result.counts["candidates"] == 38
    # The streamed attempt rolled back whole (the other rows with it): today's path wrote.
    assert Candidate.objects.filter(project=project).count() == 38 and len(calls) == 2


def _png() -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (2, 2), "red").save(out, "PNG")
    return out.getvalue()


@pytest.mark.skipif(not is_postgres(), reason="the streamed import is PostgreSQL's")
def test_it_reports_the_rows_once_parsed(tmp_path, spy):
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    seen = []
    import_file(path=path, project_name="progress", on_progress=lambda *a: seen.append(a))

    assert spy["written"] == 1
    assert seen[0] == ("rows", 12, 12)  # the settings' line counted, as parse_import counts
    assert seen[-1] == ("write", 11, 11)
