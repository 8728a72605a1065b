"""A newcomer's path on a deployment, in Chromium only and without ever opening ``/admin/``:
a staff user who is not a superuser creates a project from a zip on Quorum's own set-up pages
(the import runs as a background job), adds members by username and by e-mail, the annotators
find the project on their home page and rank with the keyboard, the reviewer resolves a flag
from the review queue, and the project's creator builds an export and downloads it.

Judgments: ann1 and ann2 rank every prompt a > b > c > d; ann3 ranks p0 the same way and every
other prompt d > c > b > a: every prompt but p0 has low agreement, and a majority a > b > c > d.
"""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import pytest

from tests.e2e.conftest import ANNOTATORS, PASSWORD, REVIEWER, open_page, reload_until
from tests.e2e.quorum_files import flow_zip

pytestmark = pytest.mark.browser

LEAD = "lead"
PROJECT = "Newcomer project"
PROMPTS = ["p0", "p1", "p2", "p3", "p4", "p5", "img"]
JOB_WAIT = 90  # seconds: a background job must reach the worker and end well within this

USERS_CODE = f"""
import json
from django.contrib.auth import get_user_model
User = get_user_model()
User.objects.create_user({LEAD!r}, "lead@example.org", {PASSWORD!r}, is_staff=True)
User.objects.filter(username="ann2").update(email="Ann.Two@example.org")
print(json.dumps(User.objects.get(username={LEAD!r}).is_superuser))
"""


def order_for(annotator: str, prompt_id: str) -> str:
    return "dcba" if annotator == "ann3" and prompt_id != "p0" else "abcd"


class Visits:
    """Every URL a page requested, to show that nobody went through the Django admin."""

    def __init__(self) -> None:
        self.urls: list[str] = []

    def watch(self, page) -> None:
        page.on("request", lambda request: self.urls.append(request.url))

    def admin(self) -> list[str]:
        return [u for u in self.urls if re.search(r"://[^/]+/admin(/|$)", u)]


@pytest.fixture(scope="module")
def world(deploy, browser):
    deployment = deploy()
    assert deployment.shell(USERS_CODE) is False  # staff, not a superuser
    visits = Visits()
    lead = open_page(browser, deployment, LEAD)
    visits.watch(lead)
    yield deployment, browser, lead, visits
    lead.context.close()


def _open(world, username: str):
    deployment, browser, _, visits = world
    page = open_page(browser, deployment, username)
    visits.watch(page)
    return page


def _reload_until(page, what: str, check, timeout: float = JOB_WAIT):
    return reload_until(page, what, check, timeout=timeout)


@pytest.fixture(scope="module")
def project_id(world, tmp_path_factory) -> int:
    """The lead creates the project on the set-up pages and waits on its page for the data."""
    _, _, page, _ = world
    path = flow_zip(tmp_path_factory.mktemp("newcomer") / "first-batch.zip")
    page.goto("/")
    page.click("a:text-is('New project')")
    page.set_input_files("#id_file", str(path))
    page.click("button:text('Upload and check')")
    page.wait_for_selector("h2:has-text('first-batch.zip: no problems found')")
    page.click("a:text('Continue to settings')")
    page.fill("#id_name", PROJECT)
    page.fill("[aria-label='Rubric dimension 1']", "correctness")
    page.click("button:text('Continue to members')")
    page.wait_for_url("**/members/")
    for identifier, username, role in (
        ("ann1", "ann1", "annotator"),
        ("ann.two@example.org", "ann2", "annotator"),  # by e-mail, in another case
        ("ann3", "ann3", "annotator"),
        (REVIEWER, REVIEWER, "reviewer"),
    ):
        page.fill("#id_identifier", identifier)
        page.select_option("#id_role", role)
        page.click("button:text('Add member')")
        page.wait_for_selector(f"tr[data-member={username}]")
    page.click("a:text('Continue to start')")
    page.click("button:text('Start project')")
    page.wait_for_url("**/ready/")
    # Above the deployment's async threshold: a background import, followed without a reload.
    page.wait_for_selector("[data-import-status=done]", timeout=JOB_WAIT * 1000)
    assert "7 prompts, 28 candidates, 7 tasks and 0 judgments imported." in page.inner_text(
        "[data-import-status=done]"
    )
    members = page.inner_text(".setup-member-list")
    for name, role in ((LEAD, "admin"), ("ann2", "annotator"), (REVIEWER, "reviewer")):
        assert f"{name} · {role}" in members
    return int(re.search(r"/projects/(\d+)/ready/", page.url).group(1))


def _cards(page) -> tuple[str, dict[str, str]]:
    texts = page.eval_on_selector_all(
        "[data-task] [data-candidate]", "cards => cards.map(c => [c.dataset.letter, c.innerText])"
    )
    shown = {}
    for letter, text in texts:
        own = re.search(r"Answer ([a-d]) to (\w+)", text)
        shown[own.group(1)] = letter
    return own.group(2), shown


@pytest.fixture(scope="module")
def judged(world, project_id) -> dict[str, list[str]]:
    """Each annotator opens Quorum, clicks Annotate on the project and ranks every task."""
    done: dict[str, list[str]] = {}
    for annotator in ANNOTATORS:  # one after the other: ann3's submit sees all three
        page = _open(world, annotator)
        try:
            # Keys go to the page's script: wait for the new page to load (its deferred
            # scripts run before that), not just for its first elements.
            with page.expect_navigation():
                page.click(f"li.project-row:has-text('{PROJECT}') a:text-is('Annotate')")
            done[annotator] = []
            while True:
                page.wait_for_selector("[data-task]")
                if page.query_selector("[data-task][data-mode=none]"):
                    break
                url = page.get_attribute("[data-task]", "data-submit-url")
                prompt_id, shown = _cards(page)
                for letter in order_for(annotator, prompt_id):
                    page.keyboard.press(shown[letter].lower())
                page.keyboard.press("Enter")
                page.wait_for_function(
                    "u => !document.querySelector(`[data-task][data-submit-url='${u}']`)", arg=url
                )
                done[annotator].append(prompt_id)
            assert not page.errors, page.errors
        finally:
            page.context.close()
    return done


def test_it_lets_the_members_annotate_every_task(judged):
    assert {name: sorted(ids) for name, ids in judged.items()} == {
        name: sorted(PROMPTS) for name in ANNOTATORS
    }


def test_it_lets_the_reviewer_resolve_a_flag_from_the_queue(world, judged):
    page = _open(world, REVIEWER)
    try:
        page.click(f"li.project-row:has-text('{PROJECT}') a:text-is('Review')")
        page.click("a:has-text('Low agreement')")
        page.wait_for_url("**/review/low_agreement/")
        queue = page.url
        _reload_until(page, "a low-agreement flag", lambda: page.query_selector("a[data-row]"))
        subject = page.text_content("a[data-row]").strip()
        with page.expect_navigation():  # the shortcut needs the page's script loaded
            page.click("a[data-row]")
        page.wait_for_selector("h1:has-text('Prompt')")
        page.keyboard.press("a")  # Accept consensus
        page.wait_for_selector("ul.messages >> text=recorded as action", state="attached")
        page.goto(queue + "?status=resolved")
        resolved = {a.text_content().strip() for a in page.query_selector_all("a[data-row]")}
        assert resolved == {subject}
        assert not page.errors, page.errors
    finally:
        page.context.close()


def test_it_exports_and_downloads_the_dataset(world, judged, tmp_path):
    _, _, page, _ = world
    page.goto("/")
    page.click(f"li.project-row:has-text('{PROJECT}') a:text-is('Exports')")
    page.fill("input[name=splits]", "train=1.0")
    page.click("button:text('Build export')")
    page.wait_for_selector("ul.messages >> text=Export v1 queued", state="attached")
    # The exports page follows the build without a reload (live.js).
    page.wait_for_selector("#export-v1 a:text-is('zip')", timeout=JOB_WAIT * 1000)
    with page.expect_download() as download:
        page.click("#export-v1 a:text-is('zip')")
    archive = tmp_path / "export.zip"
    download.value.save_as(archive)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "x")
    (root,) = (tmp_path / "x").iterdir()
    rankings = _jsonl(root / "rankings" / "train.jsonl")
    assert len(rankings) == len(PROMPTS)
    for line in rankings:
        prompt_id = re.search(r"Question (\w+):", line["prompt"]).group(1)
        assert dict(zip(line["responses"], line["rankings"], strict=True)) == {
            f"Answer {c} to {prompt_id}": rank for rank, c in enumerate("abcd", start=1)
        }
    assert not page.errors, page.errors


def test_it_never_opened_the_django_admin(world, judged):
    _, _, _, visits = world
    assert len(visits.urls) > 50  # every page of the path was watched
    assert visits.admin() == []


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
