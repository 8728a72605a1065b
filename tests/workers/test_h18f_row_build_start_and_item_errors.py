"""A scoring run (``score_prompts``) whose rows cannot be built: row-building processes that
cannot start fail every prompt at once with what their start-up said (the pool is not started
again per prompt), and a prompt whose rows raise an unexpected error (a bug in a template) fails
alone with that error's type and message, in processes and in threads.

The faults are installed by the functions the row-building processes run (their start-up, the
function that builds an item), as test_h18c_row_build_failure does, so this module imports no
Django at its top (the spawned processes import it).
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
from concurrent.futures import ProcessPoolExecutor

import pytest

from workers.reward_model import row_building

MISSING_MODULE = "quorum_h18f_missing_module"
TEMPLATE_BUG = "TEMPLATE-BUG"


class _NeedsAMissingModule:
    """A builder whose unpickling imports a module that is not installed (an import error at a
    process's start-up)."""

    def __reduce__(self):
        return (importlib.import_module, (MISSING_MODULE,))


def _start_without_a_module(spec, reports):
    """`row_building._start_process` with a builder that cannot be imported."""
    row_building._start_process(pickle.dumps(_NeedsAMissingModule()), reports)


def _start_and_die(spec, reports):
    """A process that ends during its start-up without a word (as one killed out of memory)."""
    os._exit(71)


def _render_with_a_bug(render):
    def render_with_a_bug(self, item, bodies):
        if TEMPLATE_BUG in item.prompt_text:
            raise KeyError("role")
        return render(self, item, bodies)

    render_with_a_bug.buggy = True
    return render_with_a_bug


def _build_rows_with_a_template_bug(item, index, mode, media):
    """`row_building._build_rows` in a process whose chat template raises on one prompt."""
    from workers.reward_model.inputs import RewardInputBuilder

    if not getattr(RewardInputBuilder.render, "buggy", False):
        RewardInputBuilder.render = _render_with_a_bug(RewardInputBuilder.render)
    return row_building._build_rows(item, index, mode, media)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=18)
    return path


@pytest.fixture
def pool_starts(monkeypatch):
    """How many times a row-building pool (an executor of processes) is started."""
    starts: list[int] = []

    class CountedExecutor(ProcessPoolExecutor):
        def __init__(self, *args, **kwargs):
            starts.append(1)
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(row_building, "ProcessPoolExecutor", CountedExecutor)
    return starts


def _score(project, path, name: str):
    from annotate.models import ModelScore, RewardModel
    from workers.models import ScoringRun
    from workers.scoring import score_prompts, scorer_for

    rm = RewardModel.objects.create(name=name, version="1", backend="multi_response", path=path)
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    run = ScoringRun.objects.create(
        project=project, reward_model=rm, total_prompts=len(prompt_ids), prompt_ids=prompt_ids
    )
    try:
        score_prompts(run_id=run.pk, prompt_ids=prompt_ids)
    finally:
        scorer_for(rm).close()
    run.refresh_from_db()
    return run, {row.candidate_id: row for row in ModelScore.objects.filter(reward_model=rm)}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("start", "reason"),
    [
        (
            _start_without_a_module,
            f"ModuleNotFoundError: No module named '{MISSING_MODULE}'",
        ),
        # The exit code is shown where still known when the broken pool is asked (the pool may
        # have let its processes go by then: CI once saw "no exit code" on SQLite).
        (_start_and_die, "a process ended during its start-up ({})"),
    ],
    ids=["import-error", "dies"],
)
def test_it_fails_every_prompt_at_once_when_the_processes_cannot_start(
    tiny_checkpoint, settings, monkeypatch, pool_starts, start, reason
):
    from tests.factories import make_project
    from workers.models import ScoringRun

    project = make_project(n_prompts=4, n_candidates=2)
    monkeypatch.setattr(row_building, "_start_process", start)
    settings.QUORUM_ROW_BUILD_PROCESSES = 2

    run, rows = _score(project, str(tiny_checkpoint), f"cannot-start-{start.__name__}")

    assert run.status == ScoringRun.Status.DONE and run.done_prompts == 4
    assert run.scored_candidates == 0 and run.failed_candidates == 8
    # Not once more per prompt (each start imports torch: seconds); a second start is the most
    # a call may take when a start failure is first taken for a death on an item.
    assert len(pool_starts) <= 2
    assert len(rows) == 8
    for row in rows.values():
        assert row.score is None
        assert row.error in {
            f"rows not built: the row-building processes could not start: {reason.format(code)}"
            for code in ("exit code 71", "no exit code")
        }


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("processes", [2, 0])
def test_it_fails_a_prompt_whose_rows_raise_alone(
    tiny_checkpoint, settings, monkeypatch, caplog, processes
):
    from tests.factories import make_project
    from workers.models import ScoringRun
    from workers.reward_model.inputs import RewardInputBuilder

    project = make_project(n_prompts=4, n_candidates=2)
    buggy = project.prompts.order_by("id")[1]
    buggy.text = f"{buggy.text} {TEMPLATE_BUG}"
    buggy.save()
    # The bug in this process (the threads' path) and in the building processes.
    monkeypatch.setattr(RewardInputBuilder, "render", _render_with_a_bug(RewardInputBuilder.render))
    monkeypatch.setattr(row_building, "_build_rows", _build_rows_with_a_template_bug)
    settings.QUORUM_ROW_BUILD_PROCESSES = processes

    with caplog.at_level(logging.ERROR, logger="workers.reward_model.scorers"):
        run, rows = _score(project, str(tiny_checkpoint), f"template-bug-{processes}")

    assert run.status == ScoringRun.Status.DONE and run.done_prompts == 4
    assert run.scored_candidates == 6 and run.failed_candidates == 2
    failed = {cid for cid, row in rows.items() if row.score is None}
    assert failed == set(buggy.candidates.values_list("id", flat=True))
    for cid in failed:
        assert rows[cid].error == "rows not built: KeyError: 'role'"
    # Logged with the traceback of where it was raised (a process's, for rows built there).
    [record] = [r for r in caplog.records if r.exc_info]
    assert "building the rows of item 1 raised" in record.getMessage()
    assert "render_with_a_bug" in caplog.text
