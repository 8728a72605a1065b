"""Schema of the curation app: noise flags, reviewer decisions with their audit trail,
per-annotator quality, and immutable dataset exports.

Nothing here is ever deleted by the app: a reviewer action records its before and after
state and is undone by restoring "before" (the row stays, marked undone); flags close
instead of disappearing; an export, once built, is a frozen version and a new build is a
new row.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models
from django.db.models import Q


class Flag(models.Model):
    """A noise signal for reviewers: one per (project, kind, subject)."""

    class Kind(models.TextChoices):
        LOW_AGREEMENT = "low_agreement", "Low agreement"
        RM_DISAGREEMENT = "rm_disagreement", "Reward model vs consensus"
        CYCLE = "cycle", "Intransitive cycle"
        UNRELIABLE_ANNOTATOR = "unreliable_annotator", "Unreliable annotator"
        POSITION_BIAS = "position_bias", "Position bias"
        TOO_FAST = "too_fast", "Too fast"
        FAILED_GOLD = "failed_gold", "Failed gold"

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        RESOLVED = "resolved", "Resolved by a reviewer"
        CLEARED = "cleared", "Cleared (no longer holds)"

    project = models.ForeignKey("annotate.Project", on_delete=models.CASCADE, related_name="flags")
    kind = models.CharField(max_length=24, choices=Kind.choices)
    # Subject within the project: "prompt:<id>", "evaluator:<evaluator id>", "judgment:<id>".
    key = models.CharField(max_length=255)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    severity = models.FloatField(default=0.0, help_text="0..1; queues sort highest first.")
    prompt = models.ForeignKey(
        "annotate.Prompt", null=True, blank=True, on_delete=models.CASCADE, related_name="flags"
    )
    task = models.ForeignKey(
        "annotate.Task", null=True, blank=True, on_delete=models.CASCADE, related_name="flags"
    )
    judgment = models.ForeignKey(
        "annotate.Judgment", null=True, blank=True, on_delete=models.CASCADE, related_name="flags"
    )
    evaluator = models.CharField(max_length=255, blank=True)
    details = models.JSONField(default=dict, blank=True)
    evidence = models.PositiveIntegerField(
        default=0, help_text="Judgments behind the check; a resolved flag reopens when it grows."
    )
    resolved_by = models.ForeignKey(
        "ReviewAction", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-severity", "id"]
        constraints = [
            models.UniqueConstraint(fields=["project", "kind", "key"], name="flag_unique_subject"),
            models.CheckConstraint(
                condition=Q(status__in=["open", "resolved", "cleared"]), name="flag_status_valid"
            ),
        ]
        indexes = [models.Index(fields=["project", "kind", "status", "-severity"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.key} ({self.status})"


class ReviewAction(models.Model):
    """One reviewer action: who, when, what it changed (before/after), and whether undone.

    ``before`` and ``after`` hold the state the action touched (the prompt decision, task
    status and required judgments, an annotator's mark, the flags it closed), enough to
    put "before" back on undo.
    """

    class Kind(models.TextChoices):
        ACCEPT_CONSENSUS = "accept_consensus", "Accept consensus"
        SET_RANKING = "set_ranking", "Set final ranking"
        DISCARD_PROMPT = "discard_prompt", "Discard prompt"
        REQUEST_MORE = "request_more", "Request more judgments"
        MARK_UNRELIABLE = "mark_unreliable", "Mark annotator unreliable"
        DISMISS_FLAG = "dismiss_flag", "Dismiss flag"
        MARK_GOLD = "mark_gold", "Mark gold"

    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="review_actions"
    )
    kind = models.CharField(max_length=24, choices=Kind.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="review_actions"
    )
    prompt = models.ForeignKey(
        "annotate.Prompt",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="review_actions",
    )
    evaluator = models.CharField(max_length=255, blank=True)
    flag = models.ForeignKey(
        Flag, null=True, blank=True, on_delete=models.SET_NULL, related_name="actions"
    )
    note = models.TextField(blank=True)
    before = models.JSONField(default=dict)
    after = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)
    undone_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="undone_review_actions",
    )

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["project", "-id"]),
            models.Index(fields=["prompt", "-id"]),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(undone_at__isnull=True) | Q(undone_by__isnull=False),
                name="reviewaction_undo_has_actor",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor_id} ({'undone' if self.undone_at else 'in effect'})"


class PromptDecision(models.Model):
    """Reviewers' current word on a prompt: a final ranking and/or discarded.

    Kept as state (changed only by review actions, restored by undo), so exports read it in
    one query. ``final_ranking`` holds tie groups of candidate ids, best first.
    """

    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="prompt_decisions"
    )
    prompt = models.OneToOneField(
        "annotate.Prompt", on_delete=models.CASCADE, related_name="decision"
    )
    final_ranking = models.JSONField(null=True, blank=True)
    discarded = models.BooleanField(default=False)
    action = models.ForeignKey(
        ReviewAction, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"decision on prompt {self.prompt_id}"


class PromptAgreement(models.Model):
    """A prompt's agreement as the flags last computed it, for browsing and filtering.

    Written by the full flags pass for every prompt of a project and by the per-task update for
    its prompt; ``agreement`` is None where no two evaluators compared the same candidates.
    """

    prompt = models.OneToOneField(
        "annotate.Prompt", on_delete=models.CASCADE, primary_key=True, related_name="agreement"
    )
    agreement = models.FloatField(null=True, blank=True)
    comparisons = models.PositiveIntegerField(default=0)
    computed_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"agreement of prompt {self.prompt_id}: {self.agreement}"


class AnnotatorQuality(models.Model):
    """Per-project quality of one evaluator, written by the full flag recompute; the
    reviewer's "unreliable" mark lives here too (it survives recomputes)."""

    project = models.ForeignKey(
        "annotate.Project", on_delete=models.CASCADE, related_name="annotator_quality"
    )
    evaluator = models.CharField(max_length=255)
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="curation_quality",
    )
    label = models.CharField(max_length=255, blank=True)
    n_judgments = models.PositiveIntegerField(default=0)
    agreement = models.FloatField(null=True, blank=True)
    loo_agreement = models.FloatField(null=True, blank=True)
    gold_accuracy = models.FloatField(null=True, blank=True)
    n_gold = models.PositiveIntegerField(default=0)
    weight = models.FloatField(default=1.0, help_text="CROWDLAB reliability weight.")
    # The joint annotator model (curation.crowd_bt): None where it was not fitted (no strict
    # preference, or a project too large for its arrays).
    eta = models.FloatField(
        null=True, blank=True, help_text="Crowd-BT reliability: share of votes read as real."
    )
    shown_first = models.FloatField(
        null=True, blank=True, help_text="Crowd-BT: chance a noise vote picks the first shown."
    )
    n_separable = models.PositiveIntegerField(
        default=0,
        help_text="Crowd-BT: strict votes that can tell a real judgment from a slot habit "
        "(what eta rests on; below a handful a low eta says little).",
    )
    bias_p = models.FloatField(null=True, blank=True, help_text="Holm-adjusted p-value.")
    favoured_slot = models.PositiveSmallIntegerField(null=True, blank=True)
    median_ms = models.FloatField(null=True, blank=True)
    fast_share = models.FloatField(null=True, blank=True)
    anomalous = models.BooleanField(default=False)
    marked_unreliable = models.BooleanField(default=False)
    computed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["evaluator"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "evaluator"], name="annotatorquality_unique"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.label or self.evaluator} in {self.project_id}"


class DatasetExport(models.Model):
    """One immutable, versioned dataset snapshot of a project.

    Built by a Celery task (``quorum.export_build``); once ``done`` nothing about it changes
    (a new build is a new row with the next version). Files live under
    ``DATA_DIR/exports/<project id>/v<version>``, outside public media.
    """

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"
        CANCELLED = "cancelled"

    project = models.ForeignKey(
        "annotate.Project", on_delete=models.PROTECT, related_name="dataset_exports"
    )
    version = models.PositiveIntegerField()
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    options = models.JSONField(default=dict)
    progress = models.PositiveSmallIntegerField(default=0)
    phase = models.CharField(max_length=200, blank=True)
    counts = models.JSONField(default=dict, blank=True)
    datasheet = models.JSONField(default=dict, blank=True)
    files = models.JSONField(default=list, blank=True)
    error = models.TextField(blank=True)
    # The run that owns the build (job id and attempt): only it may publish the files.
    builder = models.CharField(max_length=100, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["project", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["project", "version"], name="datasetexport_version"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "running", "done", "failed", "cancelled"]),
                name="datasetexport_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(progress__lte=100), name="datasetexport_progress_0_100"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.project_id} v{self.version} ({self.status})"

    def save(self, *args, **kwargs) -> None:
        # Invariant: a finished export is frozen. Services move it through its states with
        # conditional UPDATEs; a save() on a done row (admin, shell) is refused.
        if self.pk and DatasetExport.objects.filter(pk=self.pk, status=self.Status.DONE).exists():
            raise ValueError(f"export {self.pk} is done and immutable; build a new version")
        super().save(*args, **kwargs)

    @property
    def path(self) -> Path:
        return Path(settings.DATA_DIR) / "exports" / f"{self.project_id}" / f"v{self.version}"
