"""Admin lists of background work update their progress cells without a reload."""

from __future__ import annotations

import pytest

from annotate.models import RewardModel
from tests.browser.conftest import login, screenshot
from tests.factories import make_project
from workers.models import ScoringRun

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_it_follows_a_scoring_run_on_the_admin_list(page, users):
    project = make_project(n_prompts=1)
    rm = RewardModel.objects.create(name="rm", version="1", backend="multi_response", path="/x")
    run = ScoringRun.objects.create(project=project, reward_model=rm, total_prompts=10)
    login(page, "staff", "/admin/workers/scoringrun/")
    page.evaluate("window.notReloaded = true")
    cell = f"[data-live-region='scoring-run-{run.pk}']"
    assert "0 / 10 prompts" in page.inner_text(cell)

    ScoringRun.objects.filter(pk=run.pk).update(done_prompts=4)
    page.wait_for_selector(f"{cell}:has-text('4 / 10 prompts')")
    ScoringRun.objects.filter(pk=run.pk).update(done_prompts=10, status="done")
    page.wait_for_selector(f"{cell}:has-text('10 / 10 prompts')")
    screenshot(page, "admin-scoring-runs")
    assert page.evaluate("window.notReloaded") is True
    # Done: nothing is live any more, so the page stops asking.
    assert page.query_selector(f"{cell} [data-live]") is None


def test_it_follows_a_background_import_on_its_job_page(page, users, tmp_path):
    from annotate.models import ImportJob

    path = tmp_path / "votes.json"
    path.write_text("[]")
    job = ImportJob.objects.create(
        source_file=str(path), original_name="votes.json", status="running", total_rows=8000
    )
    login(page, "staff", f"/admin/annotate/importjob/{job.pk}/change/")
    page.evaluate("window.notReloaded = true")
    assert "0 / 8000 rows" in page.inner_text("[data-live-region='import-job']")

    ImportJob.objects.filter(pk=job.pk).update(processed_rows=3000)
    page.wait_for_selector("[data-live-region='import-job'] :text('3000 / 8000 rows')")
    ImportJob.objects.filter(pk=job.pk).update(
        processed_rows=8000,
        status="done",
        counts={"prompts": 8000, "candidates": 16000, "tasks": 8000, "judgments": 8000},
    )
    page.wait_for_selector("text=8000 prompts, 16000 candidates, 8000 tasks and 8000 judgments")
    screenshot(page, "admin-import-job")
    assert page.evaluate("window.notReloaded") is True
    assert page.query_selector("[data-live-region='import-job'] [data-live]") is None
