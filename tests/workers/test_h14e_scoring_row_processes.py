"""A gpu worker with ``QUORUM_ROW_BUILD_PROCESSES`` builds its scoring rows in that many
processes, and stores the scores the threads would have."""

from __future__ import annotations

import pytest

from annotate.models import ModelScore, Project, RewardModel
from tests.factories import make_project
from workers.models import ScoringRun
from workers.scoring import score_prompts, scorer_for


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from workers.tiny import save_tiny_reward_model

    path = tmp_path_factory.mktemp("rm") / "tiny-rm"
    save_tiny_reward_model(path, seed=4)
    return path


def _scores(project: Project, path, name: str) -> tuple[RewardModel, dict[int, float]]:
    rm = RewardModel.objects.create(name=name, version="1", backend="multi_response", path=path)
    prompt_ids = list(project.prompts.values_list("id", flat=True))
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=len(prompt_ids))
    score_prompts(run_id=run.pk, prompt_ids=prompt_ids)
    rows = ModelScore.objects.filter(reward_model=rm)
    return rm, {row.candidate_id: row.score for row in rows}


@pytest.mark.django_db(transaction=True)
def test_it_builds_rows_in_the_configured_processes(tiny_checkpoint, settings):
    project = make_project(n_prompts=3, n_candidates=3)
    settings.QUORUM_ROW_BUILD_PROCESSES = 0
    _, expected = _scores(project, str(tiny_checkpoint), "threads")
    settings.QUORUM_ROW_BUILD_PROCESSES = 2

    rm, got = _scores(project, str(tiny_checkpoint), "processes")

    scorer = scorer_for(rm)
    try:
        assert scorer.row_pool.processes == 2
        assert len(scorer.row_pool._executor._processes) == 2
        assert len(got) == 9 and None not in got.values()
        assert got == expected
    finally:
        scorer.row_pool.configure(0)
