"""`selectors.project_data` reads judgments as plain columns (one ``fetchall`` per query, the
evaluator id built in SQL, pair display orders without the JSON decoder, one object per
repeated value): on random projects its votes, task statuses and gold rankings equal what
the ORM's model instances say (SQLite and PostgreSQL)."""

from __future__ import annotations

import random

import pytest
from django.db.models import Count

from annotate.models import Candidate, Judgment, Project, Prompt, Task, TaskCandidate
from curation import consensus as C
from curation import selectors
from tests.curation.builders import fast_passwords  # noqa: F401  (autouse fixture)
from tests.factories import make_user

pytestmark = pytest.mark.django_db

OUTCOMES = ["a", "b", "tie", "both_bad"]


def _random_project(seed: int) -> Project:
    """Prompts of 3-6 candidates; pair tasks (two slots, or more of which the first two by
    position count; positions not from 0; a task of one slot), ranking tasks; judgments of
    both kinds by users and external annotators (names with colons, empty, non-ASCII), ties,
    both-bad and tied outcomes, display orders of every shape, tasks without judgments,
    discarded and gold tasks (gold rankings with bare ids; a non-gold task holding one)."""
    rng = random.Random(seed)
    project = Project.objects.create(name=f"load-{seed}", mode="ranking", candidates_per_task=3)
    users = [make_user(f"load{seed}-{i}") for i in range(3)]
    externals = [("src", "ann:1"), ("", ""), ("crowd", "añ ü"), ("src", "ann")]
    key = 0
    for p in range(rng.randint(3, 6)):
        prompt = Prompt.objects.create(project=project, external_id=f"p{p}", text="q")
        cands = [
            Candidate.objects.create(
                project=project, prompt=prompt, external_id=f"{p}-{i}", model_name=f"m{i}"
            )
            for i in range(rng.randint(3, 6))
        ]
        for t in range(rng.randint(1, 5)):
            pair_task = rng.random() < 0.6
            size = rng.choice([1, 2, 2, 2, 3]) if pair_task else rng.randint(2, len(cands))
            chosen = rng.sample(cands, size)
            status = rng.choice(["open", "complete", "complete", "discarded"])
            is_gold = rng.random() < 0.2
            gold = None
            if rng.random() < 0.3:
                ids = [c.pk for c in chosen]
                gold = [ids[0], ids[1:]] if len(ids) > 1 else [ids]
            task = Task.objects.create(
                project=project,
                prompt=prompt,
                candidate_key=f"{p}-{t}",
                status=status,
                is_gold=is_gold,
                gold_ranking=gold,
            )
            start = rng.choice([0, 0, 1, 5])
            positions = sorted(rng.sample(range(start, start + 9), size))
            order = list(zip(chosen, positions, strict=True))
            rng.shuffle(order)  # slots written out of position order
            for cand, pos in order:
                TaskCandidate.objects.create(task=task, candidate=cand, position=pos)
            who = [(u, None) for u in rng.sample(users, rng.randint(0, 3))]
            who += [(None, rng.choice(externals)) for _ in range(rng.randint(0, 3))]
            for user, external in who:
                key += 1
                ids = [c.pk for c in chosen]
                shapes = [ids, ids[::-1], [], ids[:1], [ids[0], ids[0]], [-1, 2], [0, 10**12]]
                presented = rng.choice(shapes)
                fields = {
                    "project": project,
                    "task": task,
                    "annotator": user,
                    "source": "external" if user is None else "human",
                    "source_name": external[0] if external else "",
                    "external_annotator": external[1] if external else "",
                    "presented_order": presented,
                    "duration_ms": rng.choice([None, 0, rng.randint(1, 90_000)]),
                    "idempotency_key": f"load-{seed}-{key}",
                }
                if pair_task or rng.random() < 0.2:
                    fields.update(kind="pair", outcome=rng.choice(OUTCOMES))
                else:
                    shuffled = rng.sample(ids, len(ids))
                    groups, i = [], 0
                    while i < len(shuffled):
                        width = rng.choice([1, 1, 2])
                        groups.append(shuffled[i : i + width])
                        i += width
                    fields.update(kind="ranking", ranking=groups)
                Judgment.objects.create(**fields)
    return project


def _orm_votes(project: Project, *, with_presented=True, with_times=True, prompt_ids=None):
    """The votes as model instances give them: the reference."""
    judgments = Judgment.objects.filter(project=project).select_related("task").order_by("id")
    if prompt_ids is not None:
        judgments = judgments.filter(task__prompt_id__in=prompt_ids)
    votes = []
    for j in judgments:
        slots = list(
            TaskCandidate.objects.filter(task_id=j.task_id)
            .order_by("position")
            .values_list("candidate_id", flat=True)
        )
        is_pair = j.kind == "pair"
        votes.append(
            C.Vote(
                judgment_id=j.pk,
                task_id=j.task_id,
                prompt_id=j.task.prompt_id,
                evaluator=j.evaluator,
                ranking=() if is_pair else tuple(tuple(g) for g in j.ranking),
                pair=tuple(slots[:2]) if is_pair else None,
                outcome=j.outcome,
                presented_order=tuple(j.presented_order or ()) if with_presented else (),
                duration_ms=j.duration_ms,
                created_at=j.created_at if with_times else None,
            )
        )
    return votes


def _orm_gold(project: Project) -> dict[int, list[list[int]]]:
    return {
        t.pk: [g if isinstance(g, list) else [g] for g in t.gold_ranking]
        for t in Task.objects.filter(project=project, is_gold=True)
        if t.gold_ranking
    }


def _same(loaded: list[C.Vote], expected: list[C.Vote]) -> None:
    assert len(loaded) == len(expected)
    for got, want in zip(loaded, expected, strict=True):
        assert got == want and got.__dict__ == want.__dict__
        assert type(got.ranking) is tuple and all(type(g) is tuple for g in got.ranking)
        assert type(got.presented_order) is tuple and type(got.evaluator) is str
        assert got.pair is None or type(got.pair) is tuple


@pytest.mark.parametrize("seed", range(6))
def test_votes_equal_the_orms_on_random_projects(seed):
    project = _random_project(seed)
    for with_presented in (True, False):
        for with_times in (True, False):
            data = selectors.project_data(
                project=project, with_presented=with_presented, with_times=with_times
            )
            _same(
                data.votes,
                _orm_votes(project, with_presented=with_presented, with_times=with_times),
            )
    data = selectors.project_data(project=project, with_times=False, shared=True)
    _same(data.votes, _orm_votes(project, with_times=False))
    assert data.task_status == dict(
        Task.objects.filter(project=project).values_list("pk", "status")
    )
    assert data.gold == _orm_gold(project)
    some = list(Prompt.objects.filter(project=project).order_by("?").values_list("pk", flat=True))
    some = some[: len(some) // 2 + 1]
    part = selectors.project_data(project=project, prompt_ids=some)
    _same(part.votes, _orm_votes(project, prompt_ids=some))
    assert selectors.project_data(project=project, prompt_ids=[]).votes == []


def test_the_random_projects_hold_every_case():
    """The cases the loader handles apart are all in the random projects."""
    projects = [_random_project(seed) for seed in range(6)]
    judgments = Judgment.objects.filter(project__in=projects)
    pairs = judgments.filter(kind="pair").annotate(n=Count("task__slots"))
    assert pairs.filter(n=1).exists() and pairs.filter(n=2).exists() and pairs.filter(n=3).exists()
    assert judgments.filter(presented_order=[]).exists()
    assert judgments.filter(kind="ranking").exists()
    assert judgments.filter(annotator__isnull=False).exists()
    assert {j.outcome for j in pairs} == set(OUTCOMES)
    assert (
        TaskCandidate.objects.filter(task__project__in=projects, position__gt=0)
        .exclude(task__slots__position=0)
        .exists()
    )
    tasks = Task.objects.filter(project__in=projects)
    assert tasks.filter(is_gold=False, gold_ranking__isnull=False).exists()
    assert tasks.filter(is_gold=True, gold_ranking__isnull=False).exists()
    assert tasks.filter(status="discarded").exists() and tasks.filter(judgments=None).exists()
    assert judgments.filter(external_annotator__contains=":").exists()
    assert judgments.filter(annotator__isnull=True, source_name="").exists()


def test_fetched_rows_equal_values_list():
    """One ``fetchall`` gives the rows iterating the queryset gives: annotations among the
    columns, converted columns (dates, booleans), an empty result set."""
    project = _random_project(7)
    judgments = Judgment.objects.filter(project=project).annotate(
        evaluator_text=selectors.EVALUATOR_SQL
    )
    columns = ["id", "evaluator_text", "created_at", "kind", "duration_ms", "task__is_gold"]
    queries = [
        judgments.order_by("id").values_list(*columns),
        Task.objects.filter(project=project).order_by("-id").values_list("is_gold", "id"),
        Task.objects.filter(pk__in=[]).values_list("id"),
    ]
    for query in queries:
        assert [tuple(row) for row in selectors.fetched_rows(query)] == list(query)
    assert [row[1] for row in selectors.fetched_rows(queries[0])] == [
        j.evaluator for j in Judgment.objects.filter(project=project).order_by("id")
    ]
