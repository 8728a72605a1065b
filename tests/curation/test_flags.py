"""Flags: incremental updates after a judgment, the full recompute, their life cycle."""

from __future__ import annotations

import pytest

from annotate.models import Candidate, Judgment, Project, Prompt, Task, TaskCandidate
from annotate.services import candidate_key
from curation import selectors
from curation.models import AnnotatorQuality, Flag
from curation.services import flags_recompute, flags_update_for_task, review_dismiss_flag
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
    judge_pair,
    judge_ranking,
    members,
    score,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def _flags(project: Project, kind: str, status: str = "open") -> list[Flag]:
    return list(Flag.objects.filter(project=project, kind=kind, status=status))


def _one_task(users, *, candidates: int = 4, k: int = 2, extra: int = 0):
    """A project of one prompt and its standard members (``extra`` more annotators): the
    project, its task, the task's candidates in slot order and the annotators."""
    project = make_project(n_prompts=1, n_candidates=candidates, k=k)
    people = members(project, users, extra_annotators=extra)
    task = Task.objects.get(project=project)
    return project, task, slots(task), people


def _triangle(project: Project, external_id: str = "tri") -> tuple[Prompt, list[Task], list[int]]:
    """A prompt with three candidates and the three pair tasks between them."""
    prompt = Prompt.objects.create(project=project, external_id=external_id, text="Which is best?")
    cands = [
        Candidate.objects.create(
            project=project, prompt=prompt, external_id=f"{external_id}-{i}", model_name=f"m{i}"
        ).pk
        for i in range(3)
    ]
    tasks = []
    for x, y in ((cands[0], cands[1]), (cands[1], cands[2]), (cands[2], cands[0])):
        task = Task.objects.create(
            project=project, prompt=prompt, candidate_key=candidate_key((x, y))
        )
        TaskCandidate.objects.create(task=task, candidate_id=x, position=0)
        TaskCandidate.objects.create(task=task, candidate_id=y, position=1)
        tasks.append(task)
    return prompt, tasks, cands


def test_it_flags_low_agreement_after_a_judgment(users):
    project, task, (a, b, c, d), people = _one_task(users, k=3, extra=1)
    judge_ranking(task, people[0], [[a], [b], [c], [d]])
    flags_update_for_task(task_id=task.pk)
    assert not _flags(project, "low_agreement")  # one judgment: nothing to disagree with

    judge_ranking(task, people[1], [[d], [c], [b], [a]])
    flags_update_for_task(task_id=task.pk)
    (flag,) = _flags(project, "low_agreement")
    assert flag.prompt_id == task.prompt_id
    assert flag.details["agreement"] == 0.0
    assert flag.key == f"prompt:{task.prompt_id}"


def test_it_flags_an_intransitive_cycle_across_pair_tasks(users):
    project = make_project(mode="pairwise", n_prompts=0, k=1)
    members(project, users)
    prompt, tasks, (x, y, z) = _triangle(project)
    for task in tasks:  # x > y, y > z, z > x: each pair task's slot 0 wins
        judge_pair(task, users["annotator"], "a")
    flags_update_for_task(task_id=tasks[0].pk)
    (flag,) = _flags(project, "cycle")
    assert flag.prompt_id == prompt.pk
    assert sorted(flag.details["cycles"][0]) == sorted([x, y, z])
    assert len(flag.details["removed_arcs"]) == 1


def test_it_flags_a_condorcet_cycle_in_rankings(users):
    project, task, (a, b, c), people = _one_task(users, candidates=3, k=3, extra=1)
    judge_ranking(task, people[0], [[a], [b], [c]])
    judge_ranking(task, people[1], [[b], [c], [a]])
    judge_ranking(task, people[2], [[c], [a], [b]])
    flags_update_for_task(task_id=task.pk)
    assert len(_flags(project, "cycle")) == 1


def test_it_flags_a_confident_reward_model_against_the_humans(users):
    project, task, (a, b, c, d), _ = _one_task(users)
    score(project, {a: -3.0, b: 0.0, c: 1.0, d: 4.0})  # the model ranks d > c > b > a
    judge_ranking(task, users["annotator"], [[a], [b], [c], [d]])
    judge_ranking(task, users["annotator2"], [[a], [b], [c], [d]])
    flags_update_for_task(task_id=task.pk)
    (flag,) = _flags(project, "rm_disagreement")
    worst = flag.details["conflicts"][0]
    assert (worst["model_prefers"], worst["over"]) == (d, a)
    assert flag.details["reward_model"] == f"rm-{project.pk}@1"


def test_it_raises_no_model_flag_without_scores_and_still_flags_the_rest(users):
    project, task, (a, b, c, d), _ = _one_task(users)
    judge_ranking(task, users["annotator"], [[a], [b], [c], [d]])
    judge_ranking(task, users["annotator2"], [[d], [c], [b], [a]])
    flags_update_for_task(task_id=task.pk)
    assert not _flags(project, "rm_disagreement")
    assert len(_flags(project, "low_agreement")) == 1


def test_it_ignores_an_unconfident_reward_model(users):
    project, task, (a, b, c, d), _ = _one_task(users)
    score(project, {a: 0.0, b: 0.1, c: 0.2, d: 0.3})  # sigmoid(0.3) < 0.75
    for user in (users["annotator"], users["annotator2"]):
        judge_ranking(task, user, [[a], [b], [c], [d]])
    flags_update_for_task(task_id=task.pk)
    assert not _flags(project, "rm_disagreement")


def test_it_flags_a_failed_gold_judgment(users):
    project, task, (a, b, c, d), _ = _one_task(users)
    Task.objects.filter(pk=task.pk).update(is_gold=True, gold_ranking=[[a], [b], [c], [d]])
    right = judge_ranking(task, users["annotator"], [[a], [b], [d], [c]])
    wrong = judge_ranking(task, users["annotator2"], [[c], [d], [b], [a]])
    flags_update_for_task(task_id=task.pk)
    (flag,) = _flags(project, "failed_gold")
    assert flag.judgment_id == wrong.pk != right.pk
    assert flag.evaluator == f"user:{users['annotator2'].pk}"


def test_it_clears_a_flag_once_it_no_longer_holds(users):
    project, task, (a, b, c, d), people = _one_task(users, k=3, extra=2)
    judge_ranking(task, people[0], [[a], [b], [c], [d]])
    judge_ranking(task, people[1], [[d], [c], [a], [b]])
    flags_update_for_task(task_id=task.pk)
    assert len(_flags(project, "low_agreement")) == 1
    for person in people[2:]:
        judge_ranking(task, person, [[a], [b], [c], [d]])
    AnnotatorQuality.objects.create(
        project=project, evaluator=f"user:{people[1].pk}", marked_unreliable=True
    )
    flags_update_for_task(task_id=task.pk)
    assert not _flags(project, "low_agreement")
    (cleared,) = _flags(project, "low_agreement", "cleared")
    assert cleared.closed_at is not None


def test_it_reopens_a_resolved_flag_when_new_judgments_arrive(users):
    project, task, (a, b, c, d), people = _one_task(users, k=3, extra=1)
    judge_ranking(task, people[0], [[a], [b], [c], [d]])
    judge_ranking(task, people[1], [[d], [c], [b], [a]])
    flags_update_for_task(task_id=task.pk)
    (flag,) = _flags(project, "low_agreement")
    review_dismiss_flag(actor=users["reviewer"], flag=flag)
    flags_update_for_task(task_id=task.pk)  # same evidence: stays resolved
    flag.refresh_from_db()
    assert flag.status == Flag.Status.RESOLVED

    judge_ranking(task, people[2], [[c], [a], [d], [b]])
    flags_update_for_task(task_id=task.pk)
    flag.refresh_from_db()
    assert flag.status == Flag.Status.OPEN
    assert flag.evidence == 3


def test_it_computes_annotator_flags_in_the_full_pass(users):
    project, people = disputed_ranking_project(users, n_prompts=6)
    # The dissenter is also fast: well under a quarter of the usual 6 s.
    Judgment.objects.filter(annotator=people[3]).update(duration_ms=300)
    result = flags_recompute(project_id=project.pk)
    dissenter = f"user:{people[3].pk}"
    (unreliable,) = _flags(project, "unreliable_annotator")
    assert unreliable.evaluator == dissenter
    (fast,) = _flags(project, "too_fast")
    assert fast.evaluator == dissenter and fast.details["n_fast"] == 6
    quality = AnnotatorQuality.objects.get(project=project, evaluator=dissenter)
    assert quality.weight < 0.3 and quality.n_judgments == 6
    assert quality.label == people[3].username
    assert result["flags"]["low_agreement"] == 6


def test_it_flags_an_annotator_who_always_picks_the_left_slot(users):
    project = make_project(mode="pairwise", n_prompts=30, k=2)
    members(project, users)
    for i, task in enumerate(Task.objects.filter(project=project).order_by("id")):
        left, right = slots(task)
        judge_pair(task, users["annotator"], "a", presented=[left, right])
        # The other annotator shows no preference for a side.
        judge_pair(task, users["annotator2"], "a" if i % 2 else "b", presented=[left, right])
    flags_recompute(project_id=project.pk)
    (flag,) = _flags(project, "position_bias")
    assert flag.evaluator == f"user:{users['annotator'].pk}"
    assert flag.details["favoured_slot"] == 0
    assert flag.details["counts"] == [30, 0]


def test_it_keeps_a_reviewer_mark_through_a_recompute(users):
    project, people = disputed_ranking_project(users)
    evaluator = f"user:{people[3].pk}"
    AnnotatorQuality.objects.create(project=project, evaluator=evaluator, marked_unreliable=True)
    flags_recompute(project_id=project.pk)
    assert AnnotatorQuality.objects.get(project=project, evaluator=evaluator).marked_unreliable
    # Without the dissenter the prompts agree: no low-agreement flag is left open.
    assert not _flags(project, "low_agreement")


def test_it_recomputes_idempotently(users):
    project, _ = disputed_ranking_project(users)
    flags_recompute(project_id=project.pk)
    before = list(
        Flag.objects.filter(project=project).values_list("kind", "key", "status", "severity")
    )
    second = flags_recompute(project_id=project.pk)
    after = list(
        Flag.objects.filter(project=project).values_list("kind", "key", "status", "severity")
    )
    assert before == after
    assert second["created"] == 0 and second["cleared"] == 0


def test_it_loads_the_same_evaluator_id_as_the_model(users):
    project, _ = disputed_ranking_project(users, n_prompts=1)
    data = selectors.project_data(project=project)
    stored = {j.pk: j.evaluator for j in Judgment.objects.filter(project=project)}
    assert {v.judgment_id: v.evaluator for v in data.votes} == stored


def test_it_registers_the_curation_tasks_by_name():
    import workers.tasks  # noqa: F401  (what the worker's autodiscovery imports)
    from config.celery import app

    names = {"quorum.flags_recompute", "quorum.flags_update_for_task", "quorum.export_build"}
    assert names <= set(app.tasks)
    assert all(app.amqp.router.route({}, name)["queue"].name == "default" for name in names)
