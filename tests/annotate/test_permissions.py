"""Who may open what: every annotator view for anonymous users, an annotator of another
project, staff who are not members, and each member role of the project.

Members (annotator, reviewer, admin) may annotate in their project; nobody may see or act on
another annotator's assignment or judgment -- not even the project's admin."""

from __future__ import annotations

import pytest
from django.urls import reverse

from annotate import queue
from annotate.models import Assignment, Judgment
from tests.annotate.conftest import new_key, post_json
from tests.factories import make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

ROLES = ["anonymous", "outsider", "staff", "annotator", "reviewer", "admin"]
MEMBERS = {"annotator", "reviewer", "admin"}


@pytest.fixture
def theirs(ranking_project, users):
    """annotator2's judgment (submitted) and live assignment in the ranking project."""
    owner = users["annotator2"]
    done = queue.assignment_next(project=ranking_project, annotator=owner)
    judgment = queue.judgment_submit(
        assignment=done,
        project=ranking_project,
        idempotency_key=new_key(),
        ranking=[[c] for c in done.presented_order],
    ).judgment
    live = queue.assignment_next(project=ranking_project, annotator=owner)
    return {"judgment": judgment, "assignment": live}


def _client(client, users, role):
    if role != "anonymous":
        client.force_login(users[role])
    return client


PROJECT_PAGES = ["annotate_work", "annotate_instructions"]


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("name", PROJECT_PAGES)
def test_it_opens_project_pages_to_members_only(client, users, ranking_project, role, name):
    response = _client(client, users, role).get(reverse(name, args=[ranking_project.pk]))
    if role == "anonymous":
        assert response.status_code == 302
        assert response["Location"].startswith(reverse("login"))
    elif role in MEMBERS:
        assert response.status_code == 200
    else:
        assert response.status_code == 404


@pytest.mark.parametrize("role", ROLES)
def test_it_hides_another_annotators_assignment(client, users, ranking_project, theirs, role):
    c = _client(client, users, role)
    a = theirs["assignment"]
    for name, body in (
        ("annotate_submit", {"idempotency_key": new_key(), "ranking": [a.presented_order]}),
        ("annotate_skip", {"reason": "not mine"}),
    ):
        response = post_json(c, reverse(name, args=[ranking_project.pk, a.pk]), body)
        assert response.status_code == (401 if role == "anonymous" else 404), name
    a.refresh_from_db()
    assert a.status == Assignment.Status.LEASED
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize("role", ROLES)
def test_it_hides_another_annotators_judgment(client, users, ranking_project, theirs, role):
    c = _client(client, users, role)
    j = theirs["judgment"]
    edit = c.get(reverse("annotate_edit", args=[ranking_project.pk, j.pk]))
    assert edit.status_code == (302 if role == "anonymous" else 404)
    revise = post_json(
        c,
        reverse("annotate_revise", args=[ranking_project.pk, j.pk]),
        {"edit_key": new_key(), "ranking": [[cid] for g in j.ranking for cid in g]},
    )
    assert revise.status_code == (401 if role == "anonymous" else 404)
    j.refresh_from_db()
    assert not j.revisions.exists()


def test_it_lets_the_owner_act_on_their_own_assignment_and_judgment(
    client, users, ranking_project, theirs
):
    client.force_login(users["annotator2"])
    j, a = theirs["judgment"], theirs["assignment"]
    assert client.get(reverse("annotate_edit", args=[ranking_project.pk, j.pk])).status_code == 200
    skip = post_json(
        client, reverse("annotate_skip", args=[ranking_project.pk, a.pk]), {"reason": "unclear"}
    )
    assert skip.status_code == 200


def test_it_hides_an_assignment_behind_another_projects_url(client, users, ranking_project, theirs):
    other = make_project(name="other")
    client.force_login(users["annotator2"])
    a = theirs["assignment"]
    response = post_json(
        client,
        reverse("annotate_submit", args=[other.pk, a.pk]),
        {"idempotency_key": new_key(), "ranking": [a.presented_order]},
    )
    assert response.status_code == 404


def test_it_stops_a_removed_member_from_submitting(client, users, ranking_project, theirs):
    ranking_project.memberships.filter(user=users["annotator2"]).delete()
    client.force_login(users["annotator2"])
    a = theirs["assignment"]
    response = post_json(
        client,
        reverse("annotate_submit", args=[ranking_project.pk, a.pk]),
        {"idempotency_key": new_key(), "ranking": [[c] for c in a.presented_order]},
    )
    assert response.status_code == 404
    assert Judgment.objects.count() == 1


@pytest.mark.parametrize("role", ROLES)
def test_it_lists_only_the_users_projects_at_home(client, users, ranking_project, role):
    response = _client(client, users, role).get(reverse("home"))
    if role == "anonymous":
        assert response.status_code == 302
        return
    html = response.content.decode()
    assert (ranking_project.name in html) == (role in MEMBERS or role == "staff")
    annotate_url = reverse("annotate_work", args=[ranking_project.pk])
    assert (annotate_url in html) == (role in MEMBERS)


def test_it_refuses_a_post_without_the_csrf_token(users, ranking_project):
    from django.test import Client

    client = Client(enforce_csrf_checks=True)
    client.force_login(users["annotator"])
    a = queue.assignment_next(project=ranking_project, annotator=users["annotator"])
    response = post_json(
        client,
        reverse("annotate_submit", args=[ranking_project.pk, a.pk]),
        {"idempotency_key": new_key(), "ranking": [[c] for c in a.presented_order]},
    )
    assert response.status_code == 403
    assert not Judgment.objects.exists()


def test_it_serves_media_only_of_tasks_assigned_to_the_annotator(client, users, ranking_project):
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from annotate.models import Candidate, Task

    first, second = Task.objects.filter(project=ranking_project).order_by("id")[:2]
    names = {}
    for task, color in ((first, b"first"), (second, b"second")):
        name = default_storage.save(
            f"p{ranking_project.pk}/aa/{color.decode()}.png", ContentFile(color)
        )
        Candidate.objects.filter(pk=task.slots.first().candidate_id).update(
            media=name, kind="image"
        )
        names[task.pk] = name
    client.force_login(users["annotator"])
    queue.assignment_next(project=ranking_project, annotator=users["annotator"])  # gets `first`
    assert client.get(f"/media/{names[first.pk]}").status_code == 200
    assert client.get(f"/media/{names[second.pk]}").status_code == 404
