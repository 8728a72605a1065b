"""The exports page follows a build's progress without a reload, and keeps focus on Cancel."""

from __future__ import annotations

import pytest

from curation import services
from curation.models import DatasetExport
from tests.browser.conftest import login, screenshot
from tests.curation.builders import disputed_ranking_project

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_updates_export_progress_without_a_reload(page, users, settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    project, _ = disputed_ranking_project(users, n_prompts=1)
    export = services.export_create(project=project, options={}, enqueue=False)
    url = f"/curation/projects/{project.pk}/exports/"
    login(page, "padmin", url)
    page.evaluate("window.notReloaded = true")
    page.focus("[aria-label='Cancel export v1']")

    DatasetExport.objects.filter(pk=export.pk).update(
        status="running", progress=40, phase="writing pairs"
    )
    page.wait_for_selector("#export-v1 progress[value='40']")
    assert "writing pairs" in page.inner_text("#export-v1")
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == (
        "Cancel export v1"
    )
    screenshot(page, "exports-running")

    services.export_build(export_id=export.pk)
    page.wait_for_selector("#export-v1 a:has-text('datasheet')")
    assert page.evaluate("window.notReloaded") is True
    assert page.query_selector("#export-v1 progress") is None

    page.click("#export-v1 a:has-text('datasheet')")
    page.wait_for_selector("article.cur-datasheet h1:has-text('Datasheet')")
    assert page.query_selector("article.cur-datasheet table")
    screenshot(page, "export-datasheet")
