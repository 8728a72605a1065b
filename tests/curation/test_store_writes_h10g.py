"""The flags pass's writes (curation/services.py): the prompts' agreements upserted in one
statement, the flags synced; what is stored, read back through the ORM (SQLite and
PostgreSQL)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Prompt
from curation import services
from curation.models import PromptAgreement
from tests.factories import make_project

pytestmark = pytest.mark.django_db


def _stored(prompts) -> dict[int, tuple]:
    return {
        a.prompt_id: (a.agreement, a.comparisons, a.computed_at)
        for a in PromptAgreement.objects.filter(prompt__in=prompts)
    }


def test_agreements_are_inserted_then_updated_in_place():
    project = make_project(n_prompts=4)
    p = list(Prompt.objects.filter(project=project).order_by("pk").values_list("pk", flat=True))
    other = make_project(name="other", n_prompts=1)
    (q,) = Prompt.objects.filter(project=other).values_list("pk", flat=True)
    old = timezone.now() - timedelta(days=2)
    PromptAgreement.objects.create(prompt_id=p[3], agreement=0.25, comparisons=3, computed_at=old)
    PromptAgreement.objects.create(prompt_id=q, agreement=0.5, comparisons=1, computed_at=old)

    before = timezone.now()
    services._store_agreements({p[0]: (2 / 3, 6), p[1]: (None, 0), p[3]: (0.123456789, 10)})
    after = timezone.now()

    stored = _stored(p)
    assert set(stored) == {p[0], p[1], p[3]}  # p[2] not given: no row
    assert stored[p[0]][:2] == (0.6667, 6)
    assert stored[p[1]][:2] == (None, 0)
    assert stored[p[3]][:2] == (0.1235, 10)  # updated in place, rounded to 4 places
    assert all(before <= row[2] <= after for row in stored.values())
    assert _stored([q]) == {q: (0.5, 1, old)}  # a prompt not given is left alone
    assert PromptAgreement.objects.count() == 4

    services._store_agreements({p[0]: (0.0, 2), p[2]: (1.0, 1)})
    stored = _stored(p)
    assert stored[p[0]][:2] == (0.0, 2) and stored[p[2]][:2] == (1.0, 1)
    assert stored[p[3]][:2] == (0.1235, 10)
    services._store_agreements({})
    assert len(_stored(p)) == 4


def test_new_flags_hold_their_specs_and_an_existing_one_is_left_alone():
    from annotate.models import Task
    from curation import consensus as C
    from curation.models import Flag

    project = make_project(n_prompts=2)
    p0, p1 = Prompt.objects.filter(project=project).order_by("pk")
    task = Task.objects.filter(prompt=p0).first()
    specs = [
        C.FlagSpec(
            kind="low_agreement",
            key=f"prompt:{p0.pk}",
            severity=0.4375,
            evidence=7,
            prompt_id=p0.pk,
            task_id=task.pk,
            details={"agreement": 0.1, "names": ["ä", "b"], "nested": {"n": None, "ok": True}},
        ),
        C.FlagSpec(
            kind="unreliable_annotator",
            key="evaluator:ext:src:x",
            severity=1.0,
            evidence=12,
            evaluator="ext:src:x",
        ),
    ]
    before = timezone.now()
    counts = services._sync_flags(project_id=project.pk, specs=specs, kinds=Flag.Kind.values)
    after = timezone.now()
    assert counts["created"] == 2
    stored = {f.key: f for f in Flag.objects.filter(project=project)}
    assert set(stored) == {s.key for s in specs}
    for spec in specs:
        flag = stored[spec.key]
        assert (flag.kind, flag.severity, flag.evidence, flag.evaluator, flag.details) == (
            spec.kind,
            spec.severity,
            spec.evidence,
            spec.evaluator,
            spec.details,
        )
        assert (flag.prompt_id, flag.task_id, flag.judgment_id) == (
            spec.prompt_id,
            spec.task_id,
            spec.judgment_id,
        )
        assert flag.status == "open" and flag.closed_at is None and flag.resolved_by is None
        assert before <= flag.created_at <= after and before <= flag.updated_at <= after

    # A flag another pass opened meanwhile: the insert leaves it as it is.
    taken = C.FlagSpec(kind="cycle", key=f"prompt:{p1.pk}", severity=0.9, evidence=3)
    Flag.objects.create(project=project, kind="cycle", key=taken.key, severity=0.2, evidence=1)
    services._flags_insert(project.pk, [taken])
    (cycle,) = Flag.objects.filter(project=project, kind="cycle")
    assert (cycle.severity, cycle.evidence) == (0.2, 1)


def test_synced_flags_are_updated_cleared_and_reopened():
    from curation import consensus as C
    from curation.models import Flag, ReviewAction
    from tests.factories import make_user

    project = make_project(n_prompts=1)
    old = timezone.now() - timedelta(days=1)
    action = ReviewAction.objects.create(
        project=project, kind="dismiss_flag", actor=make_user("h10g-rev"), before={}, after={}
    )

    def flag(key, status, **extra):
        return Flag.objects.create(
            project=project, kind="cycle", key=key, status=status, severity=0.1, evidence=2, **extra
        )

    changed = flag("changed", "open", details={"old": 1})
    gone = flag("gone", "open")
    back = flag("back", "cleared", closed_at=old)
    grown = flag("grown", "resolved", closed_at=old, resolved_by=action)
    same = flag("same", "resolved", closed_at=old, resolved_by=action)

    def spec(key, evidence, details):
        return C.FlagSpec(kind="cycle", key=key, severity=0.75, evidence=evidence, details=details)

    specs = [
        spec("changed", 5, {"new": [1.5, "ä"]}),
        spec("back", 2, {}),
        spec("grown", 3, {"more": True}),
        spec("same", 2, {}),
    ]
    before = timezone.now()
    counts = services._sync_flags(project_id=project.pk, specs=specs, kinds=["cycle"])
    after = timezone.now()
    assert counts == {"created": 0, "reopened": 2, "cleared": 1, "updated": 4}
    rows = {f.key: f for f in Flag.objects.filter(project=project)}
    for f in (changed, back, grown):
        row = rows[f.key]
        want = next(s for s in specs if s.key == f.key)
        assert (row.status, row.severity, row.evidence, row.details) == (
            "open",
            0.75,
            want.evidence,
            want.details,
        )
        assert row.closed_at is None and row.resolved_by_id is None
        assert before <= row.updated_at <= after
    assert rows["gone"].status == "cleared" and before <= rows["gone"].closed_at <= after
    assert (rows["gone"].severity, rows["gone"].evidence) == (0.1, 2)
    kept = rows["same"]
    assert (kept.status, kept.severity, kept.resolved_by_id) == ("resolved", 0.1, action.pk)
    assert kept.updated_at == same.updated_at and gone.pk == rows["gone"].pk
