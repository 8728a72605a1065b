"""A checkpoint trained by the paper's recipe scores on a real ``gpu`` worker exactly as the
recipe's own forward pass scores it (tests/workers/paper_recipe.py)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from PIL import Image

from annotate.models import Candidate, ModelScore, Prompt, RewardModel
from tests.factories import make_project
from tests.workers import paper_recipe as recipe
from workers.models import ScoringRun
from workers.scoring import scoring_run_start

pytestmark = pytest.mark.worker


def _picture(height: int = 56, width: int = 84, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))


PROMPTS = [
    ("Name a colour.", ["I am not sure.", recipe.GOOD, "Maybe."]),
    ("Say goodbye.", [recipe.GOOD, "No idea at all.", recipe.BAD, "Maybe."]),
    ("Which animal purrs?", ["Maybe.", recipe.BAD]),
]


@pytest.mark.timeout(600)
def test_it_scores_like_the_recipes_forward_pass_on_a_worker(celery_worker_process, tmp_path):
    from workers.tiny import build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer()
    path, model, head, image_processor = recipe.train_tiny_checkpoint(
        tmp_path / "paper-rm", tokenizer, _picture
    )
    project = make_project(n_prompts=0)
    expected: dict[int, float] = {}
    for number, (text, responses) in enumerate(PROMPTS):
        prompt = Prompt.objects.create(project=project, external_id=f"p{number}", text=text)
        ids = [
            Candidate.objects.create(
                project=project, prompt=prompt, external_id=f"p{number}-{k}", model_name="m", text=r
            ).pk
            for k, r in enumerate(responses)
        ]
        # The worker packs a prompt's candidates in id order; the recipe gets the same order.
        batch = recipe.collate(
            tokenizer, image_processor, recipe.Sample(text, responses, None, None)
        )
        with torch.no_grad():
            expected.update(zip(ids, recipe.scores(model, head, batch).tolist(), strict=True))
    rm = RewardModel.objects.create(
        name="paper", version="recipe", backend="multi_response", path=str(path)
    )
    worker = celery_worker_process(queues="gpu", pool="solo")

    run = scoring_run_start(project=project, reward_model=rm, reason="test")
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if run.status == ScoringRun.Status.DONE:
            break
        time.sleep(0.5)

    assert run.status == ScoringRun.Status.DONE, worker.output()[-3000:]
    rows = {row.candidate_id: row for row in ModelScore.objects.filter(reward_model=rm)}
    assert set(rows) == set(expected)
    for candidate_id, score in expected.items():
        assert rows[candidate_id].layout == "packed"
        assert rows[candidate_id].score == pytest.approx(score, abs=1e-5)
