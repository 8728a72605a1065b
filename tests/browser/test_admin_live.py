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
