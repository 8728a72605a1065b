"""The REST API's list pages (count, next, external ids) and one leaderboard bootstrap setting."""

from __future__ import annotations

import io
import json

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.urls import reverse

from annotate.models import Prompt
from annotate.services import api_token_create
from curation import api as curation_api
from curation import graph as G
from curation.models import Flag
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
)
from tests.factories import add_member, make_project

pytestmark = pytest.mark.django_db


def _auth(user) -> dict:
    _token, key = api_token_create(user=user, name="test")
    return {"HTTP_AUTHORIZATION": f"Bearer {key}"}


@pytest.fixture
def flagged(users):
    """A project with 120 open flags, one per prompt (external ids ``q0``..``q119``)."""
    project = make_project(n_prompts=0)
    add_member(project, users["reviewer"], "reviewer")
    for i in range(120):
        prompt = Prompt.objects.create(project=project, external_id=f"q{i}", text=f"Q{i}?")
        Flag.objects.create(
            project=project,
            kind=Flag.Kind.LOW_AGREEMENT,
            key=f"prompt:{prompt.pk}",
            prompt=prompt,
            severity=(i % 7) / 7,
        )
    Flag.objects.create(
        project=project,
        kind=Flag.Kind.UNRELIABLE_ANNOTATOR,
        key="evaluator:ext:arena:voter-9",
        evaluator="ext:arena:voter-9",
        status=Flag.Status.RESOLVED,
    )
    return project


def test_it_counts_every_flag_and_links_the_next_page(client, users, flagged):
    body = client.get(f"/api/projects/{flagged.pk}/flags", **_auth(users["reviewer"])).json()
    assert body["count"] == 120
    assert len(body["results"]) == 100
    assert body["previous"] is None
    assert body["next"] is not None and "offset=100" in body["next"]


def test_it_covers_every_flag_exactly_once_over_two_pages(client, users, flagged):
    headers = _auth(users["reviewer"])
    first = client.get(f"/api/projects/{flagged.pk}/flags?limit=60", **headers).json()
    second = client.get(first["next"], **headers).json()
    ids = [f["id"] for f in first["results"] + second["results"]]
    assert len(ids) == 120
    assert set(ids) == set(
        Flag.objects.filter(project=flagged, status="open").values_list("id", flat=True)
    )
    assert second["next"] is None
    assert second["previous"] is not None and "offset=0" in second["previous"]


def test_it_keeps_the_filters_in_the_page_links(client, users, flagged):
    url = f"/api/projects/{flagged.pk}/flags?kind=low_agreement&limit=50"
    body = client.get(url, **_auth(users["reviewer"])).json()
    assert "kind=low_agreement" in body["next"] and "limit=50" in body["next"]


def test_it_caps_the_page_size(client, users, flagged, monkeypatch):
    monkeypatch.setattr(curation_api, "FLAGS_MAX_LIMIT", 50)
    url = f"/api/projects/{flagged.pk}/flags?limit=100000"
    body = client.get(url, **_auth(users["reviewer"])).json()
    assert len(body["results"]) == 50 and "limit=50" in body["next"]


def test_it_names_the_prompt_by_its_external_id(client, users, flagged):
    body = client.get(f"/api/projects/{flagged.pk}/flags", **_auth(users["reviewer"])).json()
    by_prompt = {Prompt.objects.get(pk=f["prompt_id"]).external_id: f for f in body["results"]}
    assert all(f["prompt_external_id"] == ext for ext, f in by_prompt.items())
    assert all(f["prompt_external_id"].startswith("q") for f in body["results"])


def test_it_names_the_annotator_by_their_external_id(client, users, flagged):
    url = f"/api/projects/{flagged.pk}/flags?status=resolved"
    (flag,) = client.get(url, **_auth(users["reviewer"])).json()["results"]
    assert flag["annotator"] == "voter-9" and flag["prompt_external_id"] is None


def test_it_still_refuses_annotators(client, users, flagged):
    add_member(flagged, users["annotator"], "annotator")
    url = f"/api/projects/{flagged.pk}/flags"
    assert client.get(url, **_auth(users["annotator"])).status_code == 403


def _every_page(client, url: str, headers: dict) -> tuple[list[dict], list[int]]:
    """Follows ``next`` from ``url``; returns every row and each page's count."""
    rows, counts = [], []
    while url:
        body = client.get(url, **headers).json()
        rows += body["results"]
        counts.append(body["count"])
        url = body["next"]
    return rows, counts


def test_it_pages_a_projects_exports_newest_first(client, users):
    from curation import services

    project = make_project(n_prompts=1)
    add_member(project, users["admin"], "admin")
    for _ in range(5):
        services.export_create(project=project, options={}, enqueue=False)
    headers = _auth(users["admin"])
    url = f"/api/projects/{project.pk}/exports?limit=2"
    first = client.get(url, **headers).json()
    assert first["count"] == 5 and first["previous"] is None
    assert [e["version"] for e in first["results"]] == [5, 4]
    assert first["results"][0]["project_id"] == project.pk
    rows, counts = _every_page(client, url, headers)
    assert [e["version"] for e in rows] == [5, 4, 3, 2, 1] and counts == [5, 5, 5]
    assert client.get(f"/api/projects/{project.pk}/exports", **headers).json()["next"] is None


def test_it_pages_the_projects_a_user_sees(client, users):
    projects = [make_project(name=f"mine-{n}", n_prompts=1) for n in range(3)]
    for project in projects:
        add_member(project, users["annotator"])
    make_project(name="theirs", n_prompts=1)
    headers = _auth(users["annotator"])
    rows, counts = _every_page(client, "/api/projects?limit=2", headers)
    assert [p["name"] for p in rows] == ["mine-0", "mine-1", "mine-2"] and counts == [3, 3]


# ------------------------------------------------------------------- leaderboard bootstrap


@pytest.fixture
def rounds_used(monkeypatch):
    """Records the ``bootstrap`` argument of every leaderboard computed."""
    seen: list[int] = []
    real = G.bradley_terry_leaderboard

    def recording(*args, **kwargs):
        seen.append(kwargs["bootstrap"])
        return real(*args, **kwargs)

    monkeypatch.setattr(G, "bradley_terry_leaderboard", recording)
    return seen


def test_it_uses_the_bootstrap_setting_in_the_cli_api_and_dashboard(
    client, users, settings, rounds_used
):
    settings.QUORUM_LEADERBOARD_BOOTSTRAP = 37
    project, _people = disputed_ranking_project(users, n_prompts=4)
    call_command("leaderboard", str(project.pk), "--json", stdout=io.StringIO())
    response = client.get(f"/api/projects/{project.pk}/leaderboard", **_auth(users["admin"]))
    assert response.status_code == 200
    cache.clear()
    client.force_login(users["admin"])
    assert client.get(reverse("curation:dashboard", args=[project.pk])).status_code == 200
    assert rounds_used == [37, 37, 37]


def test_it_uses_the_bootstrap_setting_in_the_export_datasheet(
    users, settings, rounds_used, tmp_path
):
    from curation import services
    from curation.models import DatasetExport

    settings.QUORUM_LEADERBOARD_BOOTSTRAP = 37
    settings.DATA_DIR = tmp_path / "data"
    project, _people = disputed_ranking_project(users, n_prompts=4)
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    assert rounds_used == [37]
    assert export.datasheet["leaderboard"][0]["ci_low"] is not None


def test_it_shows_the_same_intervals_in_the_cli_and_the_api(client, users):
    project, _people = disputed_ranking_project(users, n_prompts=4)
    out = io.StringIO()
    call_command("leaderboard", str(project.pk), "--json", stdout=out)
    cli = {r["model"]: (r["ci_low"], r["ci_high"]) for r in json.loads(out.getvalue())["rows"]}
    body = client.get(f"/api/projects/{project.pk}/leaderboard", **_auth(users["admin"])).json()
    api = {r["model"]: (r["ci_low"], r["ci_high"]) for r in body["rows"]}
    assert cli.keys() == api.keys()
    for model, (low, high) in api.items():
        assert low == pytest.approx(cli[model][0], abs=0.006)
        assert high == pytest.approx(cli[model][1], abs=0.006)
