"""The dashboard's per-annotator reliability column: the joint annotator model's eta and
slot pick (`curation.crowd_bt`), stored by the flag recompute."""

from __future__ import annotations

import itertools
import re

import pytest
from django.urls import reverse

from annotate.models import Task
from curation.models import AnnotatorQuality
from curation.services import flags_recompute
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def disputed(users):
    """Eight prompts: three annotators (nearly) agree, the fourth reverses them; the display
    order changes from judgment to judgment, so no slot preference explains anybody."""
    project = make_project(name="disputed", n_prompts=8, n_candidates=4, k=4)
    people = members(project, users, extra_annotators=2)
    orders = list(itertools.permutations(range(4)))
    for t, task in enumerate(Task.objects.filter(project=project).order_by("id")):
        a, b, c, d = cands = slots(task)
        for k, ranking in enumerate(([a, b, c, d], [a, b, c, d], [a, b, d, c], [d, c, b, a])):
            shown = [cands[i] for i in orders[(7 * t + 5 * k) % len(orders)]]
            judge_ranking(task, people[k], [[x] for x in ranking], presented=shown)
    flags_recompute(project_id=project.pk)
    return project, people


def test_it_stores_the_joint_models_reliability_per_annotator(disputed):
    project, people = disputed
    eta = {q.annotator_id: q.eta for q in AnnotatorQuality.objects.filter(project=project)}
    assert set(eta) == {p.pk for p in people}
    assert all(0 <= e <= 1 for e in eta.values())
    # people[3] reverses everybody else on every prompt: the least reliable.
    assert eta[people[3].pk] < min(eta[p.pk] for p in people[:3])
    assert min(eta[p.pk] for p in people[:2]) > 0.9 > 0.1 > eta[people[3].pk]
    assert all(q.shown_first is not None for q in AnnotatorQuality.objects.filter(project=project))


def test_it_shows_a_reliability_column_on_the_dashboard(client, users, disputed):
    project, people = disputed
    client.force_login(users["admin"])
    html = client.get(reverse("curation:dashboard", args=[project.pk])).content.decode()
    assert "Reliability (η)" in html
    cells = sorted(
        (float(m.group(1)), m.group(2))
        for m in re.finditer(r'data-reliability="([0-9.e-]+)">([^<]*)</td>', html)
    )
    stored = AnnotatorQuality.objects.filter(project=project)
    assert cells == sorted((q.eta, f"{q.eta:.2f}") for q in stored)
    assert len(cells) == 4


def test_it_shows_no_reliability_to_reviewers(client, users, disputed):
    project, _ = disputed
    client.force_login(users["reviewer"])
    assert client.get(reverse("curation:dashboard", args=[project.pk])).status_code == 403


def test_it_stores_and_shows_each_annotators_separable_votes(client, users, disputed):
    """What eta rests on (`crowd_bt.separable_votes`): stored per annotator by the flag
    recompute, as the joint model counts them, and shown in its own column."""
    from curation import consensus as C
    from curation import selectors

    project, people = disputed
    data = selectors.project_data(project=project)
    expected = {e: q.n_separable for e, q in C.evaluator_quality(data.votes).items()}
    stored = {q.evaluator: q.n_separable for q in AnnotatorQuality.objects.filter(project=project)}
    assert stored == expected
    # The display order changes from judgment to judgment: most votes separate.
    assert all(n > 0 for n in stored.values()) and len(stored) == 4
    client.force_login(users["admin"])
    html = client.get(reverse("curation:dashboard", args=[project.pk])).content.decode()
    assert "Separable votes" in html
    cells = re.findall(r'data-separable="([0-9]+)">([^<]*)</td>', html)
    assert sorted(cells) == sorted((str(n), str(n)) for n in stored.values())
