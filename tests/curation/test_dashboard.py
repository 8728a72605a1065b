"""The admin dashboard: who may see it and what it shows."""

from __future__ import annotations

import pytest
from django.urls import reverse

from curation.services import flags_recompute
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
)

pytestmark = pytest.mark.django_db


@pytest.fixture
def project(users):
    project, _ = disputed_ranking_project(users, n_prompts=4)
    flags_recompute(project_id=project.pk)
    return project


def _url(project) -> str:
    return reverse("curation:dashboard", args=[project.pk])


def test_it_sends_anonymous_visitors_to_the_login(client, project):
    assert client.get(_url(project)).status_code == 302


@pytest.mark.parametrize(
    "user_key, status", [("annotator", 403), ("reviewer", 403), ("outsider", 404)]
)
def test_it_is_for_admins_only(client, users, project, user_key, status):
    client.force_login(users[user_key])
    assert client.get(_url(project)).status_code == status


@pytest.mark.parametrize("user_key", ["admin", "staff"])
def test_it_shows_agreement_annotators_leaderboard_and_flags(client, users, project, user_key):
    client.force_login(users[user_key])
    response = client.get(_url(project))
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<svg") == 2  # agreement over time, leaderboard
    chart = response.context["chart"]
    assert [r["row"].model for r in chart.rows][0] == "model-a"
    assert all(
        r["x_low"] <= r["x"] <= r["x_high"] for r in chart.rows
    )  # CI whiskers around the dot
    assert len(response.context["annotators"]) == 4
    assert response.context["periods"][0].n_judgments == 16
    low = next(c for c in response.context["counts"] if c["kind"] == "low_agreement")
    assert low["open"] == 4
    assert "Unreliable annotator" in html


def test_it_queues_a_recompute_for_admins_only(
    client, users, project, django_capture_on_commit_callbacks
):
    url = reverse("curation:recompute", args=[project.pk])
    client.force_login(users["reviewer"])
    assert client.post(url).status_code == 403
    client.force_login(users["admin"])
    with django_capture_on_commit_callbacks() as callbacks:
        assert client.post(url).status_code == 302
    assert len(callbacks) == 1


def test_it_lists_flags_through_the_api_for_reviewers(client, users, project):
    from annotate.services import api_token_create

    _token, key = api_token_create(user=users["reviewer"])
    response = client.get(
        f"/api/projects/{project.pk}/flags?kind=low_agreement", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200
    flags = response.json()["results"]
    assert len(flags) == 4 and all(f["kind"] == "low_agreement" for f in flags)
    _token, key = api_token_create(user=users["annotator"])
    denied = client.get(f"/api/projects/{project.pk}/flags", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert denied.status_code == 403


def test_it_serves_the_leaderboard_through_the_api_for_admins(client, users, project):
    from annotate.services import api_token_create

    _token, key = api_token_create(user=users["admin"])
    response = client.get(
        f"/api/projects/{project.pk}/leaderboard?bootstrap=20", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200
    assert response.json()["rows"][0]["model"] == "model-a"
