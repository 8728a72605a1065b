"""Every reviewer, admin and browse page renders in Chromium without a script error, a failed
request or a horizontal scrollbar at 1440 px, with a screenshot of each."""

from __future__ import annotations

import pytest

from annotate.models import Prompt
from curation import services
from curation.models import Flag
from tests.browser.conftest import login, screenshot
from tests.curation.builders import disputed_ranking_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_renders_every_reviewer_and_admin_page_cleanly(page, users, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    project, people = disputed_ranking_project(users, n_prompts=3)
    services.flags_recompute(project_id=project.pk)
    prompt = Prompt.objects.filter(project=project).order_by("id").first()
    services.review_discard_prompt(actor=users["reviewer"], prompt=prompt, note="off topic")
    export = services.export_create(project=project, options={}, enqueue=False)
    services.export_build(export_id=export.pk)
    flag = Flag.objects.filter(project=project, prompt__isnull=False).first()
    p = project.pk
    pages = {
        "home": "/",
        "queue": f"/curation/projects/{p}/review/",
        "flag": f"/curation/projects/{p}/flags/{flag.pk}/",
        "data": f"/curation/projects/{p}/data/",
        "prompt": f"/curation/projects/{p}/prompts/{prompt.pk}/",
        "annotator": f"/curation/projects/{p}/annotator/?evaluator=user:{people[3].pk}",
        "history": f"/curation/projects/{p}/history/",
        "dashboard": f"/curation/projects/{p}/dashboard/",
        "exports": f"/curation/projects/{p}/exports/",
        "datasheet": f"/curation/exports/{export.pk}/datasheet/",
        "members": f"/projects/{p}/members/",
        "settings": f"/projects/{p}/settings/",
    }
    page.set_viewport_size({"width": 1440, "height": 900})
    login(page, "padmin", "/")
    for name, url in pages.items():
        page.goto(url)
        page.wait_for_load_state("networkidle")
        assert page.title().endswith("Quorum"), (name, page.title())
        overflow = page.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} scrolls sideways by {overflow} px"
        screenshot(page, f"tour-{name}")


def test_it_shows_styled_error_pages_in_the_browser(browser, live_server, fast_passwords, users):
    # Not the `page` fixture: it fails any test that sees a 4xx response, and these are the point.
    context = browser.new_context(base_url=live_server.url)
    page = context.new_page()
    login(page, "ann", "/")
    project, _ = disputed_ranking_project(users, n_prompts=1)
    for url, status, heading in [
        ("/no/such/page/", 404, "Nothing here"),
        (f"/curation/projects/{project.pk}/dashboard/", 403, "You may not open this page"),
    ]:
        response = page.goto(url)
        assert response.status == status
        assert page.inner_text("h1") == heading
        assert page.evaluate("getComputedStyle(document.body).fontFamily").startswith("system-ui")
        screenshot(page, f"error-{status}")
    context.close()
