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
