"""A pair judgment on a task with fewer than two candidate slots (a slot lost, or a
pairwise judgment stored against a one-candidate task) names no pair: the flags pass and
the export skip it instead of failing on it, and a `consensus.Vote` of it says clearly
what is wrong when asked for its record."""

from __future__ import annotations

import pytest

from annotate.models import Judgment, Task, TaskCandidate
from curation import consensus as C
from curation import selectors
from curation.models import AnnotatorQuality, DatasetExport
from curation.services import export_build, export_create, flags_recompute
from tests.curation.builders import fast_passwords, judge_pair  # noqa: F401
from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db


def _project_with_a_one_slot_pair():
    project = make_project(mode="pairwise", n_prompts=3)
    users = [make_user(f"one-slot-{project.pk}-{i}") for i in range(3)]
    tasks = list(Task.objects.filter(project=project).order_by("id"))
    for task in tasks:
        for user, outcome in zip(users, ("a", "a", "b"), strict=True):
            judge_pair(task, user, outcome)
    # The last task loses its second slot after it was judged: its judgments name one
    # candidate only.
    broken = tasks[-1]
    TaskCandidate.objects.filter(task=broken, position=1).delete()
    return project, tasks, broken


def test_flags_and_export_skip_a_pair_judgment_without_two_slots():
    project, tasks, broken = _project_with_a_one_slot_pair()
    result = flags_recompute(project_id=project.pk)
    assert result["judgments"] == 9
    # The flags pass's annotator checks and prompt flags ran on the other six votes.
    assert AnnotatorQuality.objects.filter(project=project).count() == 3
    data = selectors.project_data(project=project)
    kept = {v.judgment_id for v in selectors.usable_votes(data, data.votes)}
    assert kept == set(
        Judgment.objects.filter(project=project).exclude(task=broken).values_list("pk", flat=True)
    )
    export = export_create(project=project, options={}, enqueue=False)
    export = export_build(export_id=export.pk)
    if export.status == DatasetExport.Status.FAILED:
        # Until the export drops such judgments as it drops others (curation/exporting.py),
        # it stops with a message that names one, not "not enough values to unpack".
        assert "a pair judgment needs a task with two candidate slots" in export.error
        assert f"its task {broken.pk} has 1" in export.error
    else:
        assert export.status == DatasetExport.Status.DONE, export.error
        assert export.counts["pairs"] == 2  # the broken task's prompt has no pair left


def test_gold_flags_skip_a_pair_judgment_without_two_slots():
    good = C.Vote(1, 7, 3, "user:1", pair=(5, 6), outcome="b")
    broken = C.Vote(2, 8, 3, "user:1", pair=(5,), outcome="b")
    flags = C.gold_flags([good, broken], {7: [[5], [6]], 8: [[5], [6]]})
    assert [f.judgment_id for f in flags] == [1]


def test_vote_record_of_a_pair_without_two_candidates_says_why():
    for pair in ((5,), ()):
        vote = C.Vote(41, 7, 3, "user:1", pair=pair, outcome="a")
        message = (
            "judgment 41: a pair judgment needs a task with two candidate slots; "
            f"its task 7 has {len(pair)}"
        )
        with pytest.raises(ValueError) as raised:
            vote.record()
        assert str(raised.value) == message
        with pytest.raises(ValueError) as raised:
            C.vote_records([vote])
        assert str(raised.value) == message
        assert C.without_unpaired([vote]) == []
    votes = [C.Vote(1, 7, 3, "user:1", pair=(5, 6), outcome="a")]
    assert C.without_unpaired(votes) is votes
