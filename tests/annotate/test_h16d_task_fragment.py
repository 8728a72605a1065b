"""The task fragment's faster render: the task and progress reach the template as dicts (every
field and property), and its numbers are not localized, so the bytes are those the objects
render and ids never take a thousands separator."""

from __future__ import annotations

import dataclasses
import inspect
import re

import pytest
from django.template.loader import render_to_string
from django.test import RequestFactory, override_settings
from django.urls import reverse

from annotate import queue, selectors, views
from annotate.models import Assignment

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


@pytest.fixture
def ann(client, users):
    client.force_login(users["annotator"])
    return client


def _names(cls) -> set[str]:
    fields = {f.name for f in dataclasses.fields(cls)}
    return fields | {n for n, _ in inspect.getmembers(cls, lambda m: isinstance(m, property))}


def test_the_dicts_hold_every_field_and_property(ann, ranking_project, users):
    request = RequestFactory().get("/", **FETCH)
    request.user = users["annotator"]
    context = views._task_context(request, ranking_project)
    looked_up = views._looked_up(context)
    display, progress = looked_up["display"], looked_up["progress"]
    assert set(display) == _names(selectors.TaskDisplay)
    for row, candidate in zip(display["candidates"], context["display"].candidates, strict=True):
        assert set(row) == _names(selectors.CandidateDisplay)
        assert row == {n: getattr(candidate, n) for n in row}
    assert display["has_video"] == context["display"].has_video
    assert set(progress) == _names(queue.Progress)
    assert progress["remaining_label"] == context["progress"].remaining_label


@pytest.mark.parametrize("fetch", [True, False])
def test_the_bytes_are_those_the_objects_render(ann, ranking_project, users, fetch):
    request = RequestFactory().get("/", **(FETCH if fetch else {}))
    request.user = users["annotator"]
    context = views._task_context(request, ranking_project)
    fragment = views._render_task(request, ranking_project, dict(context)).content.decode()
    direct = render_to_string("annotate/_task.html", context, request=request)
    if fetch:
        assert fragment == direct
    else:
        assert direct in fragment  # the page holds the fragment as the objects render it
    assert "data-candidate-id" in direct


@override_settings(USE_THOUSAND_SEPARATOR=True)
def test_ids_take_no_thousands_separator(ann, ranking_project):
    html = ann.get(reverse("annotate_work", args=[ranking_project.pk]), **FETCH).content.decode()
    assignment = Assignment.objects.get()
    tokens = selectors.candidate_tokens(
        assignment_id=assignment.pk, candidate_ids=assignment.presented_order
    )
    shown = re.findall(r'data-candidate-id="([^"]+)" data-letter', html)
    assert shown == [str(tokens[c]) for c in assignment.presented_order]
    assert all(t > 1000 for t in tokens.values())  # a separator would show
