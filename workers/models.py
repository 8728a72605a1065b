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


class Job(models.Model):
    """One background job: recorded in the transaction that asks for it, published after.

    The row, not the broker message, is the job. A message that could not be published stays
    ``queued`` and the sweep (``workers.jobs.jobs_sweep``) publishes it again; a worker claims
    the row with a conditional UPDATE before running it, so a duplicate delivery runs nothing;
    a running job whose worker stopped beating is retried or failed with the reason.
    """

    class Status(models.TextChoices):
        QUEUED = "queued"  # recorded; publishing not yet confirmed
        PUBLISHED = "published"  # a message is on the broker
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    UNFINISHED = (Status.QUEUED, Status.PUBLISHED, Status.RUNNING)

    name = models.CharField(max_length=100, help_text="Celery task name, e.g. quorum.export_build")
    kwargs = models.JSONField(default=dict, blank=True)
    queue = models.CharField(max_length=20, default="default")
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.QUEUED)
    # Coalesces work: at most one unstarted job per non-empty key (e.g. one recompute per
    # project waiting at a time).
    dedupe_key = models.CharField(max_length=200, blank=True, default="")
    attempts = models.PositiveSmallIntegerField(default=0, help_text="Runs started.")
    max_attempts = models.PositiveSmallIntegerField(default=3)
    publish_count = models.PositiveIntegerField(default=0)
    publish_error = models.CharField(max_length=500, blank=True)
    worker = models.CharField(max_length=200, blank=True, help_text="host:pid of the runner")
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    progress = models.PositiveSmallIntegerField(default=0)
    phase = models.CharField(max_length=200, blank=True)
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(
                    status__in=["queued", "published", "running", "done", "failed", "cancelled"]
                ),
                name="job_status_valid",
            ),
            models.UniqueConstraint(
                fields=["dedupe_key"],
                condition=models.Q(status__in=["queued", "published"]) & ~models.Q(dedupe_key=""),
                name="job_one_waiting_per_key",
            ),
        ]
        indexes = [models.Index(fields=["status", "published_at"])]

    def __str__(self) -> str:
        return f"job {self.pk} {self.name} ({self.status})"
