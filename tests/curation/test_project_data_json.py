"""`selectors.project_data` reads JSON columns as text and decodes them itself: the votes and
gold rankings equal what the ORM's JSON fields hold (SQLite and PostgreSQL)."""

from __future__ import annotations

import pytest

from annotate.models import Judgment, Task
from curation import selectors
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_pair,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def test_votes_and_gold_equal_the_orms_json(users):
    project = make_project(name="json", n_prompts=3, n_candidates=4, k=2)
    people = members(project, users)
    tasks = list(Task.objects.filter(project=project).order_by("id"))
    a, b, c, d = slots(tasks[0])
    judge_ranking(tasks[0], people[0], [[b], [a, d], [c]], presented=[c, a, d, b])
    judge_ranking(tasks[0], people[1], [[a], [b], [c], [d]], presented=[])
    e, f, g, h = slots(tasks[1])
    Task.objects.filter(pk=tasks[1].pk).update(is_gold=True, gold_ranking=[[f], [e, g], [h]])
    Task.objects.filter(pk=tasks[2].pk).update(is_gold=False, gold_ranking=[[1], [2]])
    pairs = make_project(name="json-pairs", mode="pairwise", n_prompts=2)
    pair_people = members(pairs, users)
    pair_tasks = list(Task.objects.filter(project=pairs).order_by("id"))
    x, y = slots(pair_tasks[0])
    judge_pair(pair_tasks[0], pair_people[0], "b", presented=[y, x])
    judge_pair(pair_tasks[1], pair_people[1], "tie", presented=[])

    for proj in (project, pairs):
        data = selectors.project_data(project=proj)
        stored = {j.pk: j for j in Judgment.objects.filter(project=proj)}
        assert len(data.votes) == len(stored)
        for vote in data.votes:
            j = stored[vote.judgment_id]
            if j.kind == Judgment.Kind.PAIR:
                assert vote.ranking == () and vote.outcome == j.outcome
            else:
                assert vote.ranking == tuple(tuple(group) for group in j.ranking)
            assert vote.presented_order == tuple(j.presented_order or ())
    data = selectors.project_data(project=project)
    assert data.gold == {tasks[1].pk: [[f], [e, g], [h]]}
    assert data.votes[0].ranking == ((b,), (a, d), (c,))
    assert data.votes[0].presented_order == (c, a, d, b)
