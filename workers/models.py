"""Bookkeeping of reward-model scoring runs (the registry itself is annotate.RewardModel)."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ScoringRun(models.Model):
    """One request to score a project's prompts with one reward-model version."""

    class Status(models.TextChoices):
        RUNNING = "running"
        DONE = "done"

    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="scoring_runs"
    )
    reward_model = models.ForeignKey(
        "annotate.RewardModel", on_delete=models.CASCADE, related_name="scoring_runs"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.RUNNING)
    total_prompts = models.PositiveIntegerField(default=0)
    done_prompts = models.PositiveIntegerField(default=0)
    scored_candidates = models.PositiveIntegerField(default=0)
    failed_candidates = models.PositiveIntegerField(default=0)
    reason = models.CharField(max_length=200, blank=True, help_text="import, admin, api...")
    prompt_ids = models.JSONField(default=list, help_text="The prompts this run scores.")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"scoring {self.project} with {self.reward_model} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if not self.total_prompts:
            return 100
        return min(100, round(100 * self.done_prompts / self.total_prompts))
