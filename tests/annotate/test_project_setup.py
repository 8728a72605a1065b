"""Project set-up in Quorum's own pages: upload -> problems or preview -> settings -> members ->
start. Nothing is written before "start"; the importer becomes the project's admin."""

from __future__ import annotations

import io
import json
import os
import re
import time
import zipfile
from pathlib import Path

import pytest
from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from annotate.models import ImportJob, Membership, Project, Task
from annotate.project_setup import STALE_UPLOAD_SECONDS, rubric_check, uploads_prune
from tests.factories import make_project, make_user

pytestmark = pytest.mark.django_db

PNG = (
    b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x02\x00\x00\x00"
    b"\x90wS\xde\x00\x00\x00\x0cIDATx\x9cc\xf8\xcf\xc0\x00\x00\x03\x01\x01\x00\xc9\xfe\x92\xef"
    b"\x00\x00\x00\x00IEND\xaeB`\x82"
)


def _rows(n: int = 3, *, judged: bool = False) -> list[dict]:
    rows = [{"project": {"annotators_per_task": 2, "instructions": "Rank by **truth**."}}]
    for i in range(n):
        row = {
            "id": f"q{i}",
            "prompt": f"Question {i}?",
            "candidates": [
                {"id": f"q{i}-{c}", "model": f"model-{c}", "text": f"Answer {c} to q{i}"}
                for c in "abcd"
            ],
        }
        if judged:
            row["judgments"] = [{"annotator": "x", "ranking": [[f"q{i}-{c}"] for c in "abcd"]}]
        rows.append(row)
    return rows


def _zip(rows: list[dict], *, image: bool = True) -> SimpleUploadedFile:
    if image:
        rows = [*rows]
        rows[1] = {**rows[1], "image": "media/q.png"}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
        if image:
            zf.writestr("media/q.png", PNG)
    return SimpleUploadedFile("batch-1.zip", buf.getvalue())


def _uploads() -> list[Path]:
    folder = Path(settings.DATA_DIR) / "uploads"
    return sorted(folder.iterdir()) if folder.exists() else []


def _draft_id(response) -> str:
    return re.search(r"/projects/new/([\w-]+)/", response["Location"]).group(1)


def _upload(client, upload=None) -> str:
    response = client.post(reverse("setup_upload"), {"file": upload or _zip(_rows())})
    assert response.status_code == 302, response.content.decode()[:2000]
    return _draft_id(response)


SETTINGS = {
    "name": "From the pages",
    "mode": "ranking",
    "candidates_per_task": "3",
    "annotators_per_task": "2",
    "ties_allowed": "on",
    "gold_percent": "5",
    "instructions": "Pick the *true* one.",
    "rubric_dimensions": ["accuracy", "", "style"],
    "action": "continue",
}


def _settings(client, draft: str, **changes) -> object:
    return client.post(reverse("setup_settings", args=[draft]), {**SETTINGS, **changes})


@pytest.fixture(autouse=True)
def _data_dir(settings, tmp_path):
    """Uploads go under DATA_DIR: each test gets its own, to count what is left there."""
    settings.DATA_DIR = tmp_path / "data"


@pytest.fixture
def staff_client(client, users):
    client.force_login(users["staff"])
    return client


# --- permissions --------------------------------------------------------------------------------


def test_it_refuses_the_upload_page_to_non_staff(client, users):
    client.force_login(users["admin"])
    assert client.get(reverse("setup_upload")).status_code == 403
    response = client.post(reverse("setup_upload"), {"file": _zip(_rows())})
    assert response.status_code == 403
    assert not Project.objects.exists() and not _uploads()


def test_it_sends_anonymous_people_to_log_in(client):
    response = client.get(reverse("setup_upload"))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def test_it_hides_a_draft_from_another_staff_user(staff_client, client, users):
    draft = _upload(staff_client)
    other = make_user("staff2", staff=True)
    client.force_login(other)
    for name in ("setup_preview", "setup_settings", "setup_members", "setup_start"):
        assert client.get(reverse(name, args=[draft])).status_code == 404, name
    assert client.post(reverse("setup_cancel", args=[draft])).status_code == 404


def test_it_refuses_the_ready_page_to_non_admins(client, users):
    project = make_project(name="elsewhere")
    client.force_login(users["annotator"])
    assert client.get(reverse("setup_ready", args=[project.pk])).status_code == 404


def test_it_links_new_project_from_home_for_staff_only(client, users):
    client.force_login(users["staff"])
    assert reverse("setup_upload") in client.get(reverse("home")).content.decode()
    client.force_login(users["annotator"])
    assert reverse("setup_upload") not in client.get(reverse("home")).content.decode()


# --- upload -> problems or preview --------------------------------------------------------------


def test_it_lists_an_uploads_problems_by_line_and_keeps_nothing(staff_client):
    rows = _rows()
    rows[2] = {"id": "q1", "prompt": 7, "candidates": []}
    response = staff_client.post(reverse("setup_upload"), {"file": _zip(rows, image=False)})
    assert response.status_code == 400
    body = response.content.decode()
    assert "batch-1.zip cannot be imported" in body
    assert "line 3, field &#x27;prompt&#x27;" in body
    assert "Nothing was written" in body
    assert not _uploads() and not Project.objects.exists()
    assert not staff_client.session.get("quorum_project_drafts")


def test_it_asks_for_a_file_when_none_was_sent(staff_client):
    response = staff_client.post(reverse("setup_upload"), {})
    assert response.status_code == 400
    assert "choose a file to upload" in response.content.decode()


def test_it_keeps_five_drafts_and_deletes_the_oldest_upload(staff_client):
    drafts = [_upload(staff_client) for _ in range(6)]
    kept = staff_client.session["quorum_project_drafts"]
    assert list(kept) == drafts[1:]
    assert sorted(_uploads()) == sorted(Path(d["path"]).parent for d in kept.values())


def test_it_previews_an_upload_without_writing(staff_client):
    draft = _upload(staff_client)
    body = staff_client.get(reverse("setup_preview", args=[draft])).content.decode()
    assert "no problems found" in body
    assert re.search(r"<dt>Prompts</dt><dd>3</dd>", body)
    assert re.search(r"<dt>Candidates</dt><dd>12 \(4 per prompt; 12 text\)</dd>", body)
    assert "model-a, model-b, model-c, model-d" in body
    assert "Answer c to q2" in body and "with image" in body
    assert not Project.objects.exists() and not ImportJob.objects.exists()
    assert len(_uploads()) == 1


def test_it_fills_the_settings_from_the_file(staff_client):
    draft = _upload(staff_client)
    body = staff_client.get(reverse("setup_settings", args=[draft])).content.decode()
    assert 'name="name" value="batch-1"' in body
    assert re.search(r'name="annotators_per_task" value="2"', body)
    assert re.search(r'name="candidates_per_task" value="4"', body)
    assert "Rank by <strong>truth</strong>." in body  # the rendered preview


# --- settings -----------------------------------------------------------------------------------


def test_it_keeps_the_settings_in_the_draft_not_the_database(staff_client):
    draft = _upload(staff_client)
    response = _settings(staff_client, draft)
    assert response.status_code == 302 and response["Location"].endswith("/members/")
    saved = staff_client.session["quorum_project_drafts"][draft]["settings"]
    assert saved["rubric_dimensions"] == ["accuracy", "style"]
    assert saved["gold_rate"] == pytest.approx(0.05)
    assert saved["blind"] is False and saved["ties_allowed"] is True
    assert not Project.objects.exists()


def test_it_refuses_a_pairwise_project_of_four(staff_client):
    draft = _upload(staff_client)
    response = _settings(staff_client, draft, mode="pairwise", candidates_per_task="4")
    assert response.status_code == 400
    assert "a pairwise project shows 2 candidates" in response.content.decode()


def test_it_refuses_pairwise_for_a_file_with_rankings(staff_client):
    draft = _upload(staff_client, _zip(_rows(judged=True), image=False))
    response = _settings(staff_client, draft, mode="pairwise", candidates_per_task="2")
    assert response.status_code == 400
    assert "the file holds 3 ranking judgment(s)" in response.content.decode()


def test_it_names_the_duplicate_rubric_row(staff_client):
    draft = _upload(staff_client)
    response = _settings(staff_client, draft, rubric_dimensions=["accuracy", "style", "Accuracy"])
    assert response.status_code == 400
    assert "Rubric row 3: &#x27;Accuracy&#x27; is already row 1" in response.content.decode()


def test_it_refuses_a_name_that_is_taken(staff_client):
    make_project(name="Taken")
    draft = _upload(staff_client)
    response = _settings(staff_client, draft, name="Taken")
    assert response.status_code == 400
    assert "a project named &#x27;Taken&#x27; exists already" in response.content.decode()


def test_it_adds_and_removes_rubric_rows_without_javascript(staff_client):
    draft = _upload(staff_client)
    url = reverse("setup_settings", args=[draft])
    body = staff_client.post(
        url, {**SETTINGS, "rubric_dimensions": ["a", "b"], "action": "add_row"}
    ).content.decode()
    assert body.count('name="rubric_dimensions"') == 3
    body = staff_client.post(
        url, {**SETTINGS, "rubric_dimensions": ["a", "b", "c"], "remove_row": "1"}
    ).content.decode()
    values = re.findall(r'name="rubric_dimensions" value="(\w*)"', body)
    assert values == ["a", "c", ""]


def test_it_renders_the_instructions_preview_sanitised(staff_client):
    draft = _upload(staff_client)
    body = staff_client.post(
        reverse("setup_settings", args=[draft]),
        {**SETTINGS, "instructions": "**Bold** <script>alert(1)</script>", "action": "preview"},
    ).content.decode()
    assert "<strong>Bold</strong>" in body and "<script>alert(1)" not in body


# --- members ------------------------------------------------------------------------------------


def _to_members(client) -> str:
    draft = _upload(client)
    assert _settings(client, draft).status_code == 302
    return draft


def test_it_adds_members_by_username_and_email(staff_client, users):
    users["reviewer"].email = "Rev@Example.org"
    users["reviewer"].save()
    draft = _to_members(staff_client)
    url = reverse("setup_members", args=[draft])
    staff_client.post(url, {"identifier": "ann", "role": "annotator"})
    staff_client.post(url, {"identifier": "rev@example.org", "role": "reviewer"})
    members = staff_client.session["quorum_project_drafts"][draft]["members"]
    assert [(m["username"], m["role"]) for m in members] == [
        ("ann", "annotator"),
        ("rev", "reviewer"),
    ]


def test_it_names_an_unknown_member(staff_client):
    draft = _to_members(staff_client)
    response = staff_client.post(
        reverse("setup_members", args=[draft]), {"identifier": "nobody@x.org", "role": "annotator"}
    )
    assert response.status_code == 400
    assert "no user with the username or e-mail &#x27;nobody@x.org&#x27;" in (
        response.content.decode()
    )
    assert staff_client.session["quorum_project_drafts"][draft]["members"] == []


def test_it_refuses_an_email_two_users_share(staff_client, users):
    for name in ("annotator", "annotator2"):
        users[name].email = "team@example.org"
        users[name].save()
    draft = _to_members(staff_client)
    response = staff_client.post(
        reverse("setup_members", args=[draft]), {"identifier": "team@example.org", "role": "admin"}
    )
    assert response.status_code == 400
    assert "more than one user has the e-mail" in response.content.decode()


def test_it_changes_a_members_role_and_removes_them(staff_client, users):
    draft = _to_members(staff_client)
    url = reverse("setup_members", args=[draft])
    staff_client.post(url, {"identifier": "ann", "role": "annotator"})
    staff_client.post(url, {"identifier": "ann", "role": "reviewer"})
    members = staff_client.session["quorum_project_drafts"][draft]["members"]
    assert [(m["username"], m["role"]) for m in members] == [("ann", "reviewer")]
    staff_client.post(url, {"remove": str(users["annotator"].pk)})
    assert staff_client.session["quorum_project_drafts"][draft]["members"] == []


def test_it_sends_members_back_to_settings_before_they_are_saved(staff_client):
    draft = _upload(staff_client)
    response = staff_client.get(reverse("setup_members", args=[draft]))
    assert response.status_code == 302 and response["Location"].endswith("/settings/")


# --- start --------------------------------------------------------------------------------------


def test_it_starts_the_project_with_its_settings_members_and_data(staff_client, users):
    draft = _to_members(staff_client)
    staff_client.post(
        reverse("setup_members", args=[draft]), {"identifier": "ann", "role": "annotator"}
    )
    assert staff_client.get(reverse("setup_start", args=[draft])).status_code == 200
    response = staff_client.post(reverse("setup_start", args=[draft]))
    project = Project.objects.get(name="From the pages")
    assert response["Location"] == reverse("setup_ready", args=[project.pk])
    assert (project.mode, project.candidates_per_task, project.annotators_per_task) == (
        "ranking",
        3,
        2,
    )
    assert (project.ties_allowed, project.blind, project.gold_rate) == (True, False, 0.05)
    assert project.rubric_dimensions == ["accuracy", "style"]
    assert project.instructions == "Pick the *true* one."
    roles = dict(project.memberships.values_list("user__username", "role"))
    assert roles == {"staff": "admin", "ann": "annotator"}
    assert project.prompts.count() == 3
    # N = 3 of 4 candidates: two tasks per prompt cover every candidate.
    assert Task.objects.filter(project=project).count() == 6
    assert ImportJob.objects.get(project=project).status == "done"
    assert not _uploads()
    assert draft not in staff_client.session.get("quorum_project_drafts", {})
    body = staff_client.get(response["Location"]).content.decode()
    assert "3 prompts, 12 candidates, 6 tasks and 0 judgments imported." in body
    assert "ann · annotator" in body


def test_it_leaves_nothing_when_the_import_fails_at_start(staff_client):
    draft = _to_members(staff_client)
    path = Path(staff_client.session["quorum_project_drafts"][draft]["path"])
    path.write_bytes(b'{"id": "x", "prompt": "?", "candidates": "nope"}\n')  # changed since
    response = staff_client.post(reverse("setup_start", args=[draft]))
    assert response.status_code == 400
    assert "The project could not be started" in response.content.decode()
    assert not Project.objects.exists() and not Membership.objects.exists()
    assert not ImportJob.objects.exists() and not _uploads()


def test_it_keeps_the_draft_when_the_name_was_taken_meanwhile(staff_client):
    draft = _to_members(staff_client)
    make_project(name="From the pages")
    response = staff_client.post(reverse("setup_start", args=[draft]))
    assert response.status_code == 400
    assert "exists already; rename it" in response.content.decode()
    assert Project.objects.count() == 1 and not ImportJob.objects.exists()
    assert draft in staff_client.session["quorum_project_drafts"] and len(_uploads()) == 1


def test_it_cancels_a_draft_and_deletes_the_upload(staff_client):
    draft = _upload(staff_client)
    response = staff_client.post(reverse("setup_cancel", args=[draft]))
    assert response.status_code == 302
    assert not _uploads() and draft not in staff_client.session["quorum_project_drafts"]


def test_rubric_check_numbers_rows_as_the_page_does():
    dims, errors = rubric_check(["  clarity ", "", "x" * 65, "Clarity"])
    assert dims == ["clarity"]
    assert errors == [
        "Rubric row 3: at most 64 characters",
        "Rubric row 4: 'Clarity' is already row 1",
    ]


# --- a failed background import; stale uploads -------------------------------------------------


def _started_in_background(client, settings) -> Project:
    settings.QUORUM_ASYNC_IMPORT_ROWS = 0
    draft = _to_members(client)
    client.post(reverse("setup_start", args=[draft]))
    return Project.objects.get(name="From the pages")


def _fail(project: Project) -> None:
    ImportJob.objects.filter(project=project).update(
        status=ImportJob.Status.FAILED, errors=["line 2, field 'prompt': must be a string"]
    )


def test_it_offers_to_delete_a_project_its_background_import_left_empty(staff_client, settings):
    project = _started_in_background(staff_client, settings)
    _fail(project)
    body = staff_client.get(reverse("setup_ready", args=[project.pk])).content.decode()
    assert "The import failed" in body and "line 2, field &#x27;prompt&#x27;" in body
    response = staff_client.post(reverse("setup_discard", args=[project.pk]))
    assert response["Location"] == reverse("home")
    assert not Project.objects.exists() and not Membership.objects.exists()
    assert not ImportJob.objects.exists()


def test_it_deletes_no_project_whose_import_is_not_failed(staff_client, settings):
    project = _started_in_background(staff_client, settings)
    body = staff_client.get(reverse("setup_ready", args=[project.pk])).content.decode()
    assert "Importing batch-1.zip in the background" in body
    assert reverse("setup_discard", args=[project.pk]) not in body
    response = staff_client.post(reverse("setup_discard", args=[project.pk]))
    assert response.status_code == 302
    assert Project.objects.filter(pk=project.pk).exists()


def test_it_refuses_discard_to_non_admins(client, staff_client, settings, users):
    project = _started_in_background(staff_client, settings)
    _fail(project)
    client.force_login(users["annotator"])
    assert client.post(reverse("setup_discard", args=[project.pk])).status_code == 404
    assert Project.objects.filter(pk=project.pk).exists()


def test_it_prunes_stale_uploads_but_not_those_in_use(staff_client, settings):
    mine = _upload(staff_client)
    settings.QUORUM_ASYNC_IMPORT_ROWS = 0
    _started_in_background(staff_client, settings)  # a pending job's upload
    abandoned = Path(settings.DATA_DIR) / "uploads" / "abandoned"
    abandoned.mkdir()
    (abandoned / "old.jsonl").write_text("{}\n")
    old = time.time() - STALE_UPLOAD_SECONDS - 60
    for folder in _uploads():
        os.utime(folder, (old, old))
    keep = [staff_client.session["quorum_project_drafts"][mine]["path"]]
    assert uploads_prune(keep=keep) == 1
    assert not abandoned.exists() and len(_uploads()) == 2


def test_it_prunes_stale_spooled_uploads_only(settings, tmp_path):
    """A file left in the upload spool by a request killed mid-way is deleted once stale; a
    recent one (a request still receiving it) is left alone."""
    settings.FILE_UPLOAD_TEMP_DIR = str(tmp_path / "spool")
    spool = Path(settings.FILE_UPLOAD_TEMP_DIR)
    spool.mkdir()
    stale, fresh = spool / "abc.upload.jsonl", spool / "def.upload.jsonl"
    stale.write_text("{}\n")
    fresh.write_text("{}\n")
    old = time.time() - STALE_UPLOAD_SECONDS - 60
    os.utime(stale, (old, old))
    assert uploads_prune() == 1
    assert not stale.exists() and fresh.exists()


# --- members of a started project ---------------------------------------------------------------


@pytest.fixture
def started(users) -> Project:
    project = make_project(name="started")
    Membership.objects.create(project=project, user=users["admin"], role="admin")
    Membership.objects.create(project=project, user=users["annotator"], role="annotator")
    return project


def _roles(project: Project) -> dict[str, str]:
    return dict(project.memberships.values_list("user__username", "role"))


def test_it_lets_a_project_admin_add_and_change_members(client, users, started):
    users["reviewer"].email = "rev@example.org"
    users["reviewer"].save()
    client.force_login(users["admin"])
    url = reverse("setup_project_members", args=[started.pk])
    client.post(url, {"identifier": "rev@example.org", "role": "reviewer"})
    client.post(url, {"identifier": "ann", "role": "admin"})
    assert _roles(started) == {"padmin": "admin", "ann": "admin", "rev": "reviewer"}


def test_it_keeps_the_last_admin(client, users, started):
    client.force_login(users["admin"])
    url = reverse("setup_project_members", args=[started.pk])
    response = client.post(url, {"remove": str(users["admin"].pk)})
    assert response.status_code == 400
    assert "padmin is the project&#x27;s only admin" in response.content.decode()
    response = client.post(url, {"identifier": "padmin", "role": "annotator"})
    assert response.status_code == 400
    assert _roles(started) == {"padmin": "admin", "ann": "annotator"}


def test_it_removes_a_member(client, users, started):
    client.force_login(users["admin"])
    url = reverse("setup_project_members", args=[started.pk])
    response = client.post(url, {"remove": str(users["annotator"].pk)})
    assert response.status_code == 302
    assert _roles(started) == {"padmin": "admin"}


def test_it_refuses_members_to_annotators_and_outsiders(client, users, started):
    url = reverse("setup_project_members", args=[started.pk])
    for name in ("annotator", "outsider"):
        client.force_login(users[name])
        assert client.get(url).status_code == 404
        response = client.post(url, {"identifier": name, "role": "admin"})
        assert response.status_code == 404
    assert _roles(started) == {"padmin": "admin", "ann": "annotator"}
