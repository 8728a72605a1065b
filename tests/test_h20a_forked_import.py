"""SQLite's import of a Quorum file without judgments into a project without prompts
(``services._write_forked``): the rows parsed and planned in a forked child process
(``importing.forked``), each chunk inserted here as it arrives. It stores what today's path
(``parse_import`` then ``_write_records``) stores, ids included, and wherever it cannot (a
problem anywhere in the file, a judgment, the child failing) it writes nothing and today's path
runs, with its problems in its order."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from annotate import importing, services
from annotate.importing import ImportRejected, forked
from annotate.models import Candidate, Project, Prompt, Task, TaskCandidate
from annotate.services import import_file
from tests.conftest import is_postgres

pytestmark = [
    pytest.mark.django_db,
    pytest.mark.skipif(is_postgres(), reason="the forked import is SQLite's"),
]

SETTINGS = {"project": {"mode": "ranking", "candidates_per_task": 3, "ties_allowed": True}}


def _rows(n: int) -> list[dict]:
    """Rows of 2-5 candidates (one task, or several planned), markdown and plain texts,
    metadata on some, an empty answer on others."""
    return [
        {
            "id": f"p{i}",
            "prompt": f"prompt **{i}**" if i % 3 else f"Prompt {i}",
            "metadata": {"i": i, "tags": ["a", None, 1.5]} if i % 2 else {},
            "candidates": [
                {
                    "id": f"p{i}-c{k}",
                    "model": f"m{k}",
                    "text": "" if k == 2 else f"*answer* {k}" if k % 2 else f"Answer {k}",
                    **({"metadata": {"k": k}} if k == 1 else {}),
                }
                for k in range(2 + i % 4)
            ],
        }
        for i in range(n)
    ]


def _write(path, rows, settings=SETTINGS):
    lines = ([settings] if settings else []) + rows
    path.write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return path


def _table(model, project: Project) -> list[tuple]:
    """The project's rows of ``model`` in id order, each id and reference as its distance from
    the lowest id of its table in the project (the two imports compared sit side by side),
    times left out."""
    bases = {
        Prompt: Prompt.objects.filter(project=project),
        Candidate: Candidate.objects.filter(project=project),
        Task: Task.objects.filter(project=project),
        TaskCandidate: TaskCandidate.objects.filter(task__project=project),
    }
    low = {m: min(q.values_list("pk", flat=True)) for m, q in bases.items()}
    refs = {"prompt_id": Prompt, "candidate_id": Candidate, "task_id": Task}
    out = []
    for row in bases[model].order_by("pk").values():
        row.pop("created_at", None)
        row.pop("project_id", None)
        row["id"] -= low[model]
        for column, target in refs.items():
            if column in row:
                row[column] -= low[target]
        if "candidate_key" in row:  # the candidates' ids, joined
            ids = [int(i) - low[Candidate] for i in row["candidate_key"].split("-")]
            row["candidate_key"] = ids
        out.append(tuple(sorted(row.items())))
    return out


@pytest.fixture
def spy(monkeypatch):
    """Counts the forked writes started and those that ended with rows written; 4 rows a
    chunk (a file of 11 rows: 3 chunks, the last short)."""
    seen = {"started": 0, "written": 0}
    real = services._write_forked

    def counting(*args, **kwargs):
        seen["started"] += 1
        counts = real(*args, **kwargs)
        seen["written"] += 1
        return counts

    monkeypatch.setattr(services, "_write_forked", counting)
    monkeypatch.setattr(services, "STREAM_CHUNK_ROWS", 4)
    monkeypatch.setattr(services, "_core_idle", lambda: True)  # a busy test machine forks too
    return seen


def _today(monkeypatch, **kwargs):
    """The import through today's path only."""
    with monkeypatch.context() as m:
        m.setattr(services, "_import_streamed", lambda **_: None)
        return import_file(**kwargs)


def test_forked_rows_are_todays_rows_ids_included(tmp_path, monkeypatch, spy):
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    forked_import = import_file(path=path, project_name="forked")
    today = _today(monkeypatch, path=path, project_name="today")

    assert spy == {"started": 1, "written": 1}
    assert forked_import.counts == today.counts
    assert forked_import.counts["prompts"] == 11 and forked_import.counts["empty_answers"] == 8
    for model in (Prompt, Candidate, Task, TaskCandidate):
        assert _table(model, forked_import.project) == _table(model, today.project), model
    # Several tasks planned for the rows of more candidates than a task holds.
    assert today.counts["tasks"] > 11


def test_the_rows_are_parsed_in_another_process(tmp_path, monkeypatch, spy):
    pids = tmp_path / "pids"
    real = importing.QuorumStream.records

    def recording(self, start, stop):
        with open(pids, "a") as out:
            out.write(f"{os.getpid()}\n")
        return real(self, start, stop)

    monkeypatch.setattr(importing.QuorumStream, "records", recording)
    import_file(path=_write(tmp_path / "rows.jsonl", _rows(11)), project_name="where")

    assert spy["written"] == 1
    assert pids.read_text().split() == [pids.read_text().split()[0]] * 3  # 3 chunks, one child
    assert int(pids.read_text().split()[0]) != os.getpid()


def _bad_row(tmp_path, index, problem):
    rows = _rows(11)
    if problem == "unknown field":
        rows[index]["colour"] = "red"
    else:  # "id used before"
        rows[index]["id"] = "p3" if index > 3 else "p9"
    return _write(tmp_path / "bad.jsonl", rows)


@pytest.mark.parametrize("index", [0, 5, 10])
@pytest.mark.parametrize("problem", ["unknown field", "id used before"])
def test_a_problem_in_any_chunk_writes_nothing(tmp_path, monkeypatch, spy, index, problem):
    path = _bad_row(tmp_path, index, problem)
    with pytest.raises(ImportRejected) as got:
        import_file(path=path, project_name="bad")
    with pytest.raises(ImportRejected) as today:
        _today(monkeypatch, path=path, project_name="bad")

    assert spy == {"started": 1, "written": 0}
    assert [str(p) for p in got.value.problems] == [str(p) for p in today.value.problems]
    assert not Project.objects.exists() and not Candidate.objects.exists()
    assert not Prompt.objects.exists() and not Task.objects.exists()


@pytest.mark.parametrize("how", ["exception", "exit"])
def test_a_child_that_fails_leaves_the_import_to_todays_path(tmp_path, monkeypatch, spy, how):
    real = services._forked_columns

    def failing(*args):
        items = real(*args)
        yield next(items)  # one chunk sent and inserted, then the child fails
        if how == "exit":
            os._exit(3)
        raise RuntimeError("the child broke")

    monkeypatch.setattr(services, "_forked_columns", failing)
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    result = import_file(path=path, project_name="failed")
    today = _today(monkeypatch, path=path, project_name="today")

    assert spy == {"started": 1, "written": 0}
    assert result.counts == today.counts
    for model in (Prompt, Candidate, Task, TaskCandidate):
        assert _table(model, result.project) == _table(model, today.project), model


def test_a_judged_file_takes_todays_path(tmp_path, monkeypatch, spy):
    rows = _rows(11)
    rows[7]["judgments"] = [{"annotator": "a1", "ranking": [["p7-c1"], ["p7-c0"]]}]
    result = import_file(path=_write(tmp_path / "judged.jsonl", rows), project_name="judged")

    assert spy == {"started": 0, "written": 0}
    assert result.counts["judgments"] == 1 and result.counts["prompts"] == 11


def test_a_judgment_the_text_search_misses_is_still_refused_by_the_child(
    tmp_path, monkeypatch, spy
):
    rows = _rows(11)
    rows[9]["judgments"] = [{"annotator": "a1", "ranking": [["p9-c1"], ["p9-c0"]]}]
    path = _write(tmp_path / "judged.jsonl", rows)
    # The key escaped: the same JSON object, not the text ``quorum_stream`` searches for.
    path.write_text(path.read_text().replace('"judgments"', '"judgm\\u0065nts"'))
    result = import_file(path=path, project_name="escaped")

    assert spy == {"started": 1, "written": 0}
    assert result.counts["judgments"] == 1 and result.counts["prompts"] == 11


def test_forked_yields_in_order_then_none_when_the_child_fails():
    def items(fail):
        yield from ([i, f"x{i}", {"k": [i]}] for i in range(3))
        if fail:
            raise ValueError("broke")

    assert list(forked(items(False))) == [[i, f"x{i}", {"k": [i]}] for i in range(3)]
    assert list(forked(items(True))) == [*([i, f"x{i}", {"k": [i]}] for i in range(3)), None]
    assert list(forked(iter([object()]))) == [None]  # not marshal's: the child fails


def test_closing_forked_early_kills_the_child():
    def endless():
        yield 1
        time.sleep(60)
        yield 2

    start = time.monotonic()
    chunks = forked(endless())
    assert next(chunks) == 1
    chunks.close()  # kills and reaps the child

    assert time.monotonic() - start < 30
    with pytest.raises(ChildProcessError):
        os.waitpid(-1, os.WNOHANG)  # no child left unreaped


def test_a_silent_child_is_killed_and_its_items_cut_off(monkeypatch):
    monkeypatch.setattr(importing, "FORKED_SILENCE_S", 0.5)

    def stuck():
        yield 1
        time.sleep(60)  # as on a lock another thread of the parent held at the fork
        yield 2

    start = time.monotonic()
    assert list(forked(stuck())) == [1, None]
    assert time.monotonic() - start < 30


def test_an_import_whose_child_is_stuck_takes_todays_path(tmp_path, monkeypatch, spy):
    monkeypatch.setattr(importing, "FORKED_SILENCE_S", 0.5)
    real = services._forked_columns

    def stuck(*args):
        items = real(*args)
        yield next(items)
        time.sleep(60)

    monkeypatch.setattr(services, "_forked_columns", stuck)
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    result = import_file(path=path, project_name="stuck")
    today = _today(monkeypatch, path=path, project_name="today")

    assert spy == {"started": 1, "written": 0}
    for model in (Prompt, Candidate, Task, TaskCandidate):
        assert _table(model, result.project) == _table(model, today.project), model


def test_the_child_does_not_run_the_parents_signal_handlers(tmp_path):
    ran = tmp_path / "handler-ran"

    def handler(number, frame):
        ran.write_text(str(os.getpid()))

    def signalled():
        yield 1
        os.kill(os.getpid(), signal.SIGTERM)  # as a worker's shutdown reaches its group
        yield 2

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        got = list(forked(signalled()))
    finally:
        signal.signal(signal.SIGTERM, previous)

    assert got == [1, None]  # the child ended by the signal, not by the handler
    assert not ran.exists()


@pytest.mark.parametrize("why", ["one chunk", "no idle core"])
def test_a_file_is_written_without_a_child_where_it_gains_nothing(tmp_path, monkeypatch, spy, why):
    if why == "one chunk":
        monkeypatch.setattr(services, "STREAM_CHUNK_ROWS", 11)
    else:
        monkeypatch.setattr(services, "_core_idle", lambda: False)
    pids = []
    real = importing.QuorumStream.records
    monkeypatch.setattr(
        importing.QuorumStream,
        "records",
        lambda self, start, stop: pids.append(os.getpid()) or real(self, start, stop),
    )
    path = _write(tmp_path / "rows.jsonl", _rows(11))
    result = import_file(path=path, project_name="one")
    today = _today(monkeypatch, path=path, project_name="today")

    assert spy == {"started": 1, "written": 1}
    assert pids[0] == os.getpid()  # parsed here (a list a child's appends would not reach)
    for model in (Prompt, Candidate, Task, TaskCandidate):
        assert _table(model, result.project) == _table(model, today.project), model


@pytest.mark.parametrize(("load", "idle"), [(0.2, True), (1.4, True), (1.5, False), (6.0, False)])
def test_a_core_is_idle_below_the_cores_less_half_a_core(monkeypatch, load, idle):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.setattr(os, "getloadavg", lambda: (load, 9.0, 9.0))

    assert services._core_idle() is idle
