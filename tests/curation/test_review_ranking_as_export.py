"""The review page ranks a prompt as the denoised export does (issue 10): the joint annotator
model's strengths with the project's kept fit, not a per-prompt consensus of its own."""

from __future__ import annotations

import random

import numpy as np
import pyarrow.parquet as pq
import pytest

from annotate.models import Candidate, Prompt, Task
from curation import consensus as C
from curation import crowd_bt as CB
from curation import selectors, services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


def _noisy_project(users):
    """Rankings of 5 candidates from 4 annotators of different care (seeded): prompts where
    a weighted Bradley-Terry fit and a feedback-arc-set consensus disagree."""
    project = make_project(name="noisy", n_prompts=12, n_candidates=5, k=4)
    people = members(project, users, extra_annotators=2)
    rng = random.Random(7)
    for task in Task.objects.filter(project=project).order_by("id"):
        truth = slots(task)
        for person, swaps in zip(people, (0, 1, 3, 8), strict=True):
            order = list(truth)
            for _ in range(swaps):
                i = rng.randrange(len(order) - 1)
                order[i], order[i + 1] = order[i + 1], order[i]
            shown = list(truth)
            rng.shuffle(shown)
            judge_ranking(task, person, [[c] for c in order], presented=shown)
    return project


def _exported(project) -> dict[str, list[int]]:
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    table = pq.read_table(export.path / "parquet" / "rankings.parquet").to_pylist()
    return {
        row["prompt_id"]: [
            c for _, c in sorted(zip(row["rankings"], row["candidate_ids"], strict=True))
        ]
        for row in table
    }


def _by_rank(item):
    return sorted(item.candidates, key=lambda c: c.rank)


def _external_ranking(project):

    external = dict(Candidate.objects.filter(project=project).values_list("pk", "external_id"))
    shown = {}
    for prompt in Prompt.objects.filter(project=project):
        item = selectors.review_item(project=project, prompt=prompt)
        shown[prompt.external_id] = [external[c.id] for c in _by_rank(item)]
    return shown


def test_the_review_page_shows_the_exports_ranking(users):
    project = _noisy_project(users)
    services.flags_recompute(project_id=project.pk)
    exported = _exported(project)
    assert len(exported) == 12
    assert _external_ranking(project) == exported


def test_without_the_kept_fit_the_rankings_would_differ(users, monkeypatch):
    """The world above is one where the difference shows: the per-prompt consensus (what
    the page showed before) ranks some prompt otherwise than the export."""
    project = _noisy_project(users)
    services.flags_recompute(project_id=project.pk)
    exported = _exported(project)
    monkeypatch.setattr(C, "cached_prompt_scores", lambda votes, cache: None)
    assert _external_ranking(project) != exported


def test_a_changed_prompt_is_refitted_with_the_kept_reliabilities(users):
    """After a new judgment the page fits the prompt's votes again with the kept ``eta``
    (a newcomer: the prior's 1/2) and the kept prior strength."""
    project = _noisy_project(users)
    services.flags_recompute(project_id=project.pk)
    kept = CB.cached_reliability(selectors.joint_fit_cache(project.pk))
    assert kept is not None and len(kept.eta) == 4
    task = Task.objects.filter(project=project).order_by("id").first()
    a, b, c, d, e = slots(task)
    judge_ranking(task, users["reviewer"], [[e], [d], [c], [b], [a]])
    item = selectors.review_item(project=project, prompt=task.prompt)
    data = selectors.project_data(project=project, prompt_ids=[task.prompt_id])
    indexed = CB.index_comparisons(C._strict_preferences(data.votes))
    eta = np.array([kept.eta.get(str(k), 0.5) for k in indexed.annotators])
    assert list(eta).count(0.5) == 1  # the reviewer, new to the fit
    theta = CB.batched_bradley_terry(
        CB.win_cells(indexed.comparisons, eta[indexed.comparisons.annotator]), kept.alpha
    )
    expected = C.groups_from_scores(
        {cand: float(theta[0, i]) for i, cand in enumerate(indexed.candidates[0])}, tol=1e-6
    )
    assert item.consensus.ranking == [list(g) for g in expected]
