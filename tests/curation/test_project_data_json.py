"""`selectors.project_data` reads JSON columns as text and decodes them itself: the votes and
gold rankings equal what the ORM's JSON fields hold (SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import FrozenInstanceError

import pytest

from annotate.models import Candidate, Judgment, Prompt, Task
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


def test_pair_display_orders_read_without_the_decoder_equal_the_orms(users):
    """The "[12, 34]" fast path and the json.loads fallback give what the ORM holds, for
    display orders of every shape a pair judgment may carry."""
    pairs = make_project(name="json-pair-orders", mode="pairwise", n_prompts=5)
    people = members(pairs, users)
    tasks = list(Task.objects.filter(project=pairs).order_by("id"))
    shown_ids = {}
    for i in range(9):
        task, person = tasks[i % len(tasks)], people[i // len(tasks)]
        x, y = slots(task)
        shapes = [[y, x], [x, y], [x], [x, y, x], [0, y], [], [x, x], [str(x), y], [-1, 2]]
        judge_pair(task, person, "a", presented=[y, x])
        last = Judgment.objects.filter(project=pairs).latest("id")
        Judgment.objects.filter(pk=last.pk).update(presented_order=shapes[i])
        shown_ids[last.pk] = shapes[i]
    data = selectors.project_data(project=pairs)
    stored = {j.pk: j for j in Judgment.objects.filter(project=pairs)}
    assert len(data.votes) == 9
    for vote in data.votes:
        assert vote.presented_order == tuple(stored[vote.judgment_id].presented_order or ())
        assert vote.presented_order == tuple(shown_ids[vote.judgment_id] or ())


def test_loaded_vote_is_the_dataclass_vote():
    import dataclasses

    from curation import consensus as C

    values = (7, 8, 9, "ext:x", (), (1, 2), "a", (2, 1), 1500, None)
    fast, slow = C.loaded_vote(*values), C.Vote(*values)
    assert fast == slow and hash(fast) == hash(slow)
    assert fast.__dict__ == slow.__dict__ and type(fast) is C.Vote
    assert fast.record() == slow.record()
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.outcome = "b"  # type: ignore[misc]


@pytest.mark.parametrize("with_content", [False, True])
def test_candidates_and_prompts_equal_their_dataclasses_built_from_the_orm(users, with_content):
    project = make_project(name="facts", n_prompts=3, n_candidates=4, k=2)
    data = selectors.project_data(project=project, with_content=with_content)
    expected_candidates = {
        c.pk: selectors.CandidateInfo(
            c.pk,
            c.prompt_id,
            c.model_name,
            c.kind,
            c.external_id,
            c.media.name if hasattr(c.media, "name") else c.media,
            c.text if with_content else "",
        )
        for c in Candidate.objects.filter(project=project)
    }
    expected_prompts = {
        p.pk: selectors.PromptInfo(
            p.pk,
            p.external_id,
            p.text if with_content else "",
            (p.image.name if hasattr(p.image, "name") else p.image) if with_content else "",
            (p.video.name if hasattr(p.video, "name") else p.video) if with_content else "",
        )
        for p in Prompt.objects.filter(project=project)
    }
    assert data.candidates == expected_candidates and len(expected_candidates) == 12
    assert data.prompts == expected_prompts and len(expected_prompts) == 3
    assert {hash(c) for c in data.candidates.values()} == set(
        map(hash, expected_candidates.values())
    )
    with pytest.raises(FrozenInstanceError):
        data.candidates[next(iter(data.candidates))].text = "changed"
    assert selectors.project_data(project=project, with_candidates=False).candidates == {}
