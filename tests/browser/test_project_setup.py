"""Project set-up pages in Chromium: a staff user goes from "New project" to a started project
with the keyboard and the mouse, every step screenshotted; a bad upload lists its problems."""

from __future__ import annotations

import json
import zipfile

import pytest

from annotate.models import ImportJob, Project
from annotate.services import import_job_run
from tests.browser.conftest import login, screenshot
from tests.e2e.quorum_files import flow_zip, prompt_row
from tests.factories import make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def shot(page, name: str) -> None:
    """A screenshot of a set-up page, which must not scroll sideways."""
    overflow = page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    assert overflow <= 0, f"{name} scrolls sideways by {overflow} px"
    screenshot(page, name)


@pytest.fixture
def people(db):
    lead = make_user("lead", staff=True)
    lead.is_superuser = False
    lead.save()
    ann = make_user("ann1")
    rev = make_user("rev1")
    rev.email = "rev1@example.org"
    rev.save()
    return {"lead": lead, "ann": ann, "rev": rev}


def test_it_sets_up_a_project_from_a_zip(page, people, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.QUORUM_ASYNC_IMPORT_ROWS = 0  # the import runs as a background job
    path = flow_zip(tmp_path / "flow.zip", text_prompts=3)
    login(page, "lead", "/")
    page.click("a:text-is('New project')")
    page.wait_for_url("**/projects/new/")
    shot(page, "setup-1-upload")
    page.set_input_files("#id_file", str(path))
    page.click("button:text('Upload and check')")

    page.wait_for_selector("h2:has-text('no problems found')")
    assert page.inner_text(".setup-facts").count("4 per prompt") == 1
    assert "Question img: which answer is best?" in page.inner_text("main")
    shot(page, "setup-2-preview")
    page.click("a:text('Continue to settings')")

    page.wait_for_selector("[data-setup-settings]")
    assert page.input_value("#id_name") == "flow"
    assert page.input_value("#id_annotators_per_task") == "3"  # from the file's project line
    page.fill("#id_name", "Setup in the browser")
    page.fill("#id_annotators_per_task", "2")
    page.fill("#id_gold_percent", "10")
    page.uncheck("#id_blind")
    # Rubric rows: type, Enter adds a row, the second row is removed again, a third is added.
    page.fill("[aria-label='Rubric dimension 1']", "accuracy")
    page.press("[aria-label='Rubric dimension 1']", "Enter")
    page.keyboard.type("typo")
    page.click("[aria-label='Remove rubric dimension 2']")
    page.click("button:text('Add dimension')")
    page.keyboard.type("helpfulness")
    rows = page.eval_on_selector_all("[name=rubric_dimensions]", "els => els.map(e => e.value)")
    assert rows == ["accuracy", "helpfulness"]
    page.fill("#id_instructions", "Rank by **correctness**, then style.")
    page.click("button:text('Preview instructions')")
    page.wait_for_selector("[data-instructions-preview] strong:text('correctness')")
    shot(page, "setup-3-settings")
    # The preview kept the form as typed; the JavaScript rows came back from the server.
    assert page.input_value("#id_name") == "Setup in the browser"
    page.check("input[name=mode][value=pairwise]")
    page.click("button:text('Continue to members')")
    page.wait_for_selector("#id_candidates_per_task_error")
    assert (
        page.inner_text("#id_candidates_per_task_error") == "a pairwise project shows 2 candidates"
    )
    assert page.get_attribute("#id_candidates_per_task", "aria-invalid") == "true"
    shot(page, "setup-3-settings-error")
    page.check("input[name=mode][value=ranking]")
    page.click("button:text('Continue to members')")

    page.wait_for_url("**/members/")
    page.fill("#id_identifier", "nobody")
    page.click("button:text('Add member')")
    assert "no user with the username or e-mail 'nobody'" in page.inner_text("#member-error")
    page.fill("#id_identifier", "ann1")
    page.click("button:text('Add member')")
    page.wait_for_selector("tr[data-member=ann1]")
    page.fill("#id_identifier", "rev1@example.org")
    page.select_option("#id_role", "reviewer")
    page.press("#id_identifier", "Enter")
    page.wait_for_selector("tr[data-member=rev1]")
    shot(page, "setup-4-members")
    page.click("a:text('Continue to start')")

    page.wait_for_url("**/start/")
    summary = page.inner_text(".setup-facts")
    assert "accuracy, helpfulness" in summary and "10.0%" in summary
    assert "ann1 (annotator), rev1 (reviewer)" in summary
    shot(page, "setup-5-start")
    page.click("button:text('Start project')")

    project = Project.objects.get(name="Setup in the browser")
    page.wait_for_url(f"**/projects/{project.pk}/ready/")
    page.wait_for_selector("[data-import-status=pending]")
    shot(page, "setup-6-importing")
    page.evaluate("window.notReloaded = true")
    import_job_run(job_id=ImportJob.objects.get(project=project).pk)
    page.wait_for_selector("[data-import-status=done]")
    assert page.evaluate("window.notReloaded") is True
    assert "4 prompts, 16 candidates, 4 tasks and 0 judgments imported." in page.inner_text(
        "[data-import-status=done]"
    )
    shot(page, "setup-7-ready")

    # Members later, from the project's page: ann1 becomes a reviewer too.
    page.click("a:text('Add or change members')")
    page.fill("#id_identifier", "ann1")
    page.select_option("#id_role", "reviewer")
    page.click("button:text('Save member')")
    page.wait_for_selector("ul.messages >> text=ann1 is now reviewer", state="attached")
    assert page.inner_text("tr[data-member=ann1] td:nth-child(2)") == "reviewer"
    shot(page, "setup-8-project-members")

    assert (project.annotators_per_task, project.blind, project.gold_rate) == (2, False, 0.1)
    assert project.rubric_dimensions == ["accuracy", "helpfulness"]
    assert dict(project.memberships.values_list("user__username", "role")) == {
        "lead": "admin",
        "ann1": "reviewer",
        "rev1": "reviewer",
    }


def test_it_lists_the_problems_of_a_bad_upload(page, people, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    path = tmp_path / "broken.zip"
    rows = [prompt_row("p0"), {"id": "p1", "prompt": "?", "candidates": [{"id": "x"}]}]
    rows.append({**prompt_row("p2"), "prompt": 5})
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("data.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    login(page, "lead", "/projects/new/")
    page.set_input_files("#id_file", str(path))
    page.click("button:text('Upload and check')")
    page.wait_for_selector(".setup-problems")
    text = page.inner_text(".setup-problems")
    assert "broken.zip cannot be imported" in text
    assert "line 2, field 'candidates'" in text and "line 3, field 'prompt'" in text
    shot(page, "setup-upload-problems")
    assert not Project.objects.exists()
