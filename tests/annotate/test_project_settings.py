"""Settings of a started project in Quorum's own pages: everything but mode and N can change, a
new k re-decides which tasks are complete, every change lands in the admin history."""

from __future__ import annotations

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.contenttypes.models import ContentType
from django.urls import reverse

from annotate.models import Membership, Project, Task
from annotate.project_setup import project_settings_update
from tests.factories import make_project

pytestmark = pytest.mark.django_db


@pytest.fixture
def started(users) -> Project:
    project = make_project(name="started", n_prompts=4, k=2)
    Membership.objects.create(project=project, user=users["admin"], role="admin")
    Membership.objects.create(project=project, user=users["annotator"], role="annotator")
    return project


def _form(project: Project, **changes) -> dict:
    data = {
        "name": project.name,
        "annotators_per_task": project.annotators_per_task,
        "gold_percent": 100 * project.gold_rate,
        "lease_minutes": project.lease_minutes,
        "instructions": project.instructions,
        "rubric_dimensions": list(project.rubric_dimensions) + [""],
        "action": "save",
    }
    for flag in ("ties_allowed", "blind", "prioritize_uncertain", "annotators_see_model_ranking"):
        if getattr(project, flag):
            data[flag] = "on"
    data.update(changes)
    return {k: v for k, v in data.items() if v is not None}


def test_it_shows_the_settings_with_mode_and_n_fixed(client, users, started):
    client.force_login(users["admin"])
    response = client.get(reverse("setup_project_settings", args=[started.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'value="started"' in html
    assert "<dt>N: candidates per task</dt><dd>4</dd>" in html
    assert "Rank N candidates" in html
    assert 'name="mode"' not in html and 'name="candidates_per_task"' not in html


def test_it_saves_settings_renders_instructions_and_records_history(client, users, started):
    client.force_login(users["admin"])
    url = reverse("setup_project_settings", args=[started.pk])
    response = client.post(
        url,
        _form(
            started,
            name="renamed",
            gold_percent="5",
            lease_minutes="20",
            blind=None,  # unchecked
            instructions="Prefer **grounded** answers.",
            rubric_dimensions=["accuracy", " style ", ""],
        ),
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    started.refresh_from_db()
    assert started.name == "renamed"
    assert started.gold_rate == pytest.approx(0.05)
    assert started.lease_minutes == 20
    assert started.blind is False
    assert started.rubric_dimensions == ["accuracy", "style"]
    assert started.instructions_html == "<p>Prefer <strong>grounded</strong> answers.</p>"
    assert (started.mode, started.candidates_per_task) == ("ranking", 4)
    entry = LogEntry.objects.get(
        content_type=ContentType.objects.get_for_model(Project), object_id=str(started.pk)
    )
    assert entry.action_flag == CHANGE and entry.user == users["admin"]
    message = entry.get_change_message()
    assert message.startswith("Changed ") and "annotators per task" not in message
    for label in ("name", "blind", "instructions", "gold rate", "lease minutes", "rubric"):
        assert label in message, message
    page = client.get(url).content.decode()
    saved = page.split("Saved: ", 1)[1].split(".", 1)[0].split(", ")
    assert sorted(saved) == sorted(
        ["name", "blind", "lease minutes", "instructions", "gold rate", "rubric dimensions"]
    )


def test_it_ignores_mode_and_n_sent_in_the_form(client, users, started):
    client.force_login(users["admin"])
    client.post(
        reverse("setup_project_settings", args=[started.pk]),
        _form(started, mode="pairwise", candidates_per_task="2", name="still ranking"),
    )
    started.refresh_from_db()
    assert (started.name, started.mode, started.candidates_per_task) == (
        "still ranking",
        "ranking",
        4,
    )


def test_a_new_k_completes_and_reopens_tasks_that_follow_it(client, users, started):
    tasks = list(Task.objects.filter(project=started).order_by("pk"))
    # judgments 1 (open), 2 (complete), 1 with its own target of 3 (open), 3 (complete).
    for task, count, status, required in zip(
        tasks,
        (1, 2, 1, 3),
        ("open", "complete", "open", "complete"),
        (None, None, 3, None),
        strict=True,
    ):
        Task.objects.filter(pk=task.pk).update(
            judgment_count=count, status=status, required_judgments=required
        )
    client.force_login(users["admin"])
    url = reverse("setup_project_settings", args=[started.pk])
    client.post(url, _form(started, annotators_per_task="1"))
    statuses = list(
        Task.objects.filter(project=started).order_by("pk").values_list("status", flat=True)
    )
    assert statuses == ["complete", "complete", "open", "complete"]
    started.refresh_from_db()
    client.post(url, _form(started, annotators_per_task="3"))
    statuses = list(
        Task.objects.filter(project=started).order_by("pk").values_list("status", flat=True)
    )
    assert statuses == ["open", "open", "open", "complete"]


def test_a_reopened_task_is_served_again(client, users, started):
    Task.objects.filter(project=started).update(judgment_count=2, status="complete")
    client.force_login(users["annotator"])
    work = reverse("annotate_work", args=[started.pk])
    assert "data-submit-url" not in client.get(work, HTTP_X_REQUESTED_WITH="fetch").content.decode()
    project_settings_update(project=started, values={"annotators_per_task": 3}, user=users["admin"])
    assert "data-submit-url" in client.get(work, HTTP_X_REQUESTED_WITH="fetch").content.decode()


def test_it_names_the_field_of_a_bad_value_and_writes_nothing(client, users, started):
    make_project(name="taken")
    client.force_login(users["admin"])
    url = reverse("setup_project_settings", args=[started.pk])
    response = client.post(url, _form(started, name="taken", annotators_per_task="0"))
    assert response.status_code == 400
    html = response.content.decode()
    assert "a project named &#x27;taken&#x27; exists already" in html
    assert "Ensure this value is greater than or equal to 1." in html
    response = client.post(url, _form(started, rubric_dimensions=["a", "A"]))
    assert response.status_code == 400
    assert "Rubric row 2: &#x27;A&#x27; is already row 1" in response.content.decode()
    started.refresh_from_db()
    assert (started.name, started.annotators_per_task, started.rubric_dimensions) == (
        "started",
        2,
        [],
    )
    assert not LogEntry.objects.exists()


def test_saving_nothing_new_writes_nothing(client, users, started):
    client.force_login(users["admin"])
    response = client.post(reverse("setup_project_settings", args=[started.pk]), _form(started))
    assert response.status_code == 302
    assert not LogEntry.objects.exists()


def test_it_refuses_fields_fixed_after_start():
    with pytest.raises(ValueError, match="candidates_per_task"):
        project_settings_update(project=Project(pk=1), values={"candidates_per_task": 2}, user=None)


def test_it_adds_rubric_rows_without_javascript(client, users, started):
    client.force_login(users["admin"])
    url = reverse("setup_project_settings", args=[started.pk])
    response = client.post(
        url, _form(started, action="add_row", rubric_dimensions=["accuracy", "style"])
    )
    assert response.status_code == 200
    assert response.content.decode().count('name="rubric_dimensions"') == 3
    started.refresh_from_db()
    assert started.rubric_dimensions == []


def test_it_refuses_settings_to_annotators_reviewers_and_outsiders(client, users, started):
    Membership.objects.create(project=started, user=users["reviewer"], role="reviewer")
    url = reverse("setup_project_settings", args=[started.pk])
    for name in ("annotator", "reviewer", "outsider"):
        client.force_login(users[name])
        assert client.get(url).status_code == 404
        assert client.post(url, _form(started, name="mine")).status_code == 404
    started.refresh_from_db()
    assert started.name == "started"


def test_staff_may_change_any_project(client, users, started):
    client.force_login(users["staff"])
    response = client.post(
        reverse("setup_project_settings", args=[started.pk]), _form(started, name="by staff")
    )
    assert response.status_code == 302
    started.refresh_from_db()
    assert started.name == "by staff"


def test_home_links_settings_for_project_admins_only(client, users, started):
    url = reverse("setup_project_settings", args=[started.pk])
    client.force_login(users["admin"])
    assert url in client.get("/").content.decode()
    client.force_login(users["annotator"])
    assert url not in client.get("/").content.decode()


def test_a_blind_project_may_show_annotators_the_reward_models_order(client, users, started):
    # The order is shown as letters, never as model names: blindness is not at stake.
    client.force_login(users["admin"])
    url = reverse("setup_project_settings", args=[started.pk])
    assert client.post(url, _form(started, annotators_see_model_ranking="on")).status_code == 302
    started.refresh_from_db()
    assert started.blind and started.annotators_see_model_ranking
