"""Schema for projects, prompts, candidates, tasks, assignments and judgments.

Integrity lives in the database (unique external ids per project, one judgment per
assignment, unique idempotency keys, well-formed judgment rows); the rules that need the
task's candidates (a ranking covers exactly them) live in ``annotate.services``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.query_utils import DeferredAttribute

from annotate.rendering import html_or_rendered, markdown_html


def _render_on_save(instance: models.Model, source: str, target: str, kwargs: dict) -> None:
    """Stores ``source`` rendered to sanitised HTML in ``target`` before ``save()`` writes.

    Pages read the stored HTML; rendering lives here because admin forms, services, the demo and
    tests all write through ``save()`` (bulk inserts go through `_RenderedTextQuerySet`).
    """
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and source not in update_fields:
        return
    setattr(instance, target, markdown_html(getattr(instance, source)))
    if update_fields is not None:
        kwargs["update_fields"] = {*update_fields, target}


def texts_render(objs) -> None:
    """Fills ``text_html`` of unsaved rows (bulk writes bypass ``save()``)."""
    for obj in objs:
        if obj.text and not obj.text_html:
            obj.text_html = markdown_html(obj.text)


class _HtmlOrRendered(DeferredAttribute):
    """``text_html`` of an instance: the stored HTML, or ``text`` rendered where a bulk import
    stored ``""`` for a plain paragraph (``annotate.rendering.markdown_html_stored_many``).

    A data descriptor (it has ``__set__``), so every read comes here; the value lives in the
    instance's ``__dict__`` as Django keeps any field's. ``.values()`` and raw SQL read the
    column as stored: those readers call ``html_or_rendered`` (``annotate.selectors``).
    """

    def __get__(self, instance, cls=None):
        if instance is None:
            return self
        html = super().__get__(instance, cls)
        if html:
            return html
        return html_or_rendered(html, instance.text)

    def __set__(self, instance, value):
        instance.__dict__[self.field.attname] = value


class RenderedHtmlField(models.TextField):
    """A ``TextField`` of HTML rendered from the row's ``text`` (see ``_HtmlOrRendered``);
    the same column as before (reported to migrations as a ``TextField``)."""

    descriptor_class = _HtmlOrRendered

    def deconstruct(self):
        name, _path, args, kwargs = super().deconstruct()
        return name, "django.db.models.TextField", args, kwargs


class _RenderedTextQuerySet(models.QuerySet):
    """Fills ``text_html`` on bulk writes, which bypass ``save()``."""

    def update(self, **kwargs):
        if "text" in kwargs and "text_html" not in kwargs:
            if not isinstance(kwargs["text"], str):
                raise TypeError("text: update with a string, so text_html can be rendered")
            kwargs["text_html"] = markdown_html(kwargs["text"])
        return super().update(**kwargs)

    def bulk_create(self, objs, *args, **kwargs):
        objs = list(objs)
        texts_render(objs)
        return super().bulk_create(objs, *args, **kwargs)

    def bulk_update(self, objs, fields, *args, **kwargs):
        if "text" in fields:
            objs = list(objs)
            for obj in objs:
                obj.text_html = markdown_html(obj.text)
            fields = [*fields, "text_html"]
        return super().bulk_update(objs, fields, *args, **kwargs)


class _RenderedTextModel(models.Model):
    """A row named by its ``external_id`` whose ``text`` is rendered into ``text_html`` when
    written: through ``save()``, or the bulk writes of `_RenderedTextQuerySet`."""

    objects = _RenderedTextQuerySet.as_manager()

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return self.external_id

    def save(self, *args, **kwargs) -> None:
        _render_on_save(self, "text", "text_html", kwargs)
        super().save(*args, **kwargs)


class Project(models.Model):
    class Mode(models.TextChoices):
        RANKING = "ranking", "Rank N candidates"
        PAIRWISE = "pairwise", "Pairwise judgment"

    name = models.CharField(max_length=200, unique=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.RANKING)
    candidates_per_task = models.PositiveSmallIntegerField(
        default=4, help_text="N candidates shown per task (2 for pairwise projects)."
    )
    annotators_per_task = models.PositiveSmallIntegerField(
        default=3, help_text="k: judgments wanted per task."
    )
    ties_allowed = models.BooleanField(default=True)
    blind = models.BooleanField(
        default=True, help_text="Hide model names from annotators everywhere."
    )
    instructions = models.TextField(blank=True, help_text="Markdown shown to annotators.")
    instructions_html = models.TextField(blank=True, default="", editable=False)
    rubric_dimensions = models.JSONField(
        default=list, blank=True, help_text='Optional rating dimensions, e.g. ["accuracy"].'
    )
    gold_rate = models.FloatField(default=0.0, help_text="Share of served tasks that are gold.")
    lease_minutes = models.PositiveSmallIntegerField(default=10)
    prioritize_uncertain = models.BooleanField(
        default=True, help_text="Serve tasks the active reward model is least sure of first."
    )
    annotators_see_model_ranking = models.BooleanField(default=False)
    active_reward_model = models.ForeignKey(
        "annotate.RewardModel",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="active_in_projects",
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL, through="Membership", related_name="quorum_projects"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(candidates_per_task__gte=2, candidates_per_task__lte=8),
                name="project_n_between_2_and_8",
            ),
            models.CheckConstraint(
                condition=~Q(mode="pairwise") | Q(candidates_per_task=2),
                name="project_pairwise_has_2_candidates",
            ),
            models.CheckConstraint(
                condition=Q(annotators_per_task__gte=1), name="project_k_at_least_1"
            ),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0, gold_rate__lte=1), name="project_gold_rate_0_1"
            ),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        _render_on_save(self, "instructions", "instructions_html", kwargs)
        super().save(*args, **kwargs)


class Membership(models.Model):
    class Role(models.TextChoices):
        ANNOTATOR = "annotator"
        REVIEWER = "reviewer"
        ADMIN = "admin"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.ANNOTATOR)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="membership_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.project} ({self.role})"


class Prompt(_RenderedTextModel):
    # No index of its own: prompt_external_id_unique (project, external_id) leads with it.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="prompts", db_index=False
    )
    external_id = models.CharField(max_length=255)
    text = models.TextField(blank=True)
    # ``text`` rendered and sanitised when the row is written (annotate.rendering); ``""`` for
    # a plain paragraph written by a bulk import, rendered on read (RenderedHtmlField).
    text_html = RenderedHtmlField(blank=True, default="", editable=False)
    image = models.FileField(upload_to="prompts/", blank=True)
    video = models.FileField(upload_to="prompts/", blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="prompt_external_id_unique"
            )
        ]


class Candidate(_RenderedTextModel):
    class Kind(models.TextChoices):
        TEXT = "text"
        IMAGE = "image"
        VIDEO = "video"

    # Indexed through candidate_external_id_unique and candidate_project_model, which lead
    # with it; a model name is only ever looked up within a project (candidate_project_model).
    # Every index costs each imported row a write (issue 13).
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="candidates", db_index=False
    )
    prompt = models.ForeignKey(Prompt, on_delete=models.CASCADE, related_name="candidates")
    external_id = models.CharField(max_length=255)
    model_name = models.CharField(max_length=200)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TEXT)
    text = models.TextField(blank=True)
    # ``text`` rendered and sanitised when the row is written (annotate.rendering); ``""`` for
    # a plain paragraph written by a bulk import, rendered on read (RenderedHtmlField).
    text_html = RenderedHtmlField(blank=True, default="", editable=False)
    media = models.FileField(upload_to="candidates/", blank=True)
    metadata = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["project", "external_id"], name="candidate_external_id_unique"
            ),
            models.CheckConstraint(
                condition=Q(kind__in=["text", "image", "video"]), name="candidate_kind_valid"
            ),
        ]
        indexes = [
            # A project's model names one index probe each (the data browser's model list).
            models.Index(fields=["project", "model_name"], name="candidate_project_model"),
        ]


class Task(models.Model):
    """A prompt with the candidates to show together (N for ranking, 2 for pairwise)."""

    class Status(models.TextChoices):
        OPEN = "open"
        COMPLETE = "complete"
        DISCARDED = "discarded"

    # Indexed through the (project, status, -priority, id) index and task_unique (prompt,
    # candidate_key), which lead with them.
    project = models.ForeignKey(
        Project, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    prompt = models.ForeignKey(
        Prompt, on_delete=models.CASCADE, related_name="tasks", db_index=False
    )
    candidates = models.ManyToManyField(Candidate, through="TaskCandidate", related_name="tasks")
    # Sorted candidate ids joined with "-": makes "the same task" a database fact.
    candidate_key = models.CharField(max_length=255)
    priority = models.FloatField(default=0.0, help_text="Higher is served first.")
    is_gold = models.BooleanField(default=False)
    gold_ranking = models.JSONField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.OPEN)
    required_judgments = models.PositiveSmallIntegerField(
        null=True, blank=True, help_text="Overrides the project's k (reviewers may raise it)."
    )
    judgment_count = models.PositiveIntegerField(default=0)
    # Set by every judgment write in its transaction; cleared by the flag update that saw it.
    # The sweep re-publishes flag updates for tasks left dirty (a broker outage loses none).
    flags_dirty_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["prompt", "candidate_key"], name="task_unique"),
            models.CheckConstraint(
                condition=Q(status__in=["open", "complete", "discarded"]),
                name="task_status_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["project", "status", "-priority", "id"]),
            models.Index(
                fields=["flags_dirty_at"],
                condition=Q(flags_dirty_at__isnull=False),
                name="task_flags_dirty",
            ),
        ]

    def __str__(self) -> str:
        return f"task {self.pk} ({self.prompt_id})"


class TaskCandidate(models.Model):
    # Indexed through taskcandidate_unique (task, candidate), which leads with it.
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="slots", db_index=False)
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="slots")
    position = models.PositiveSmallIntegerField()

    class Meta:
        ordering = ["task", "position"]
        constraints = [
            models.UniqueConstraint(fields=["task", "candidate"], name="taskcandidate_unique"),
            models.UniqueConstraint(fields=["task", "position"], name="taskcandidate_position"),
        ]

    def __str__(self) -> str:
        return f"{self.task_id}[{self.position}] = {self.candidate_id}"


class Assignment(models.Model):
    class Status(models.TextChoices):
        LEASED = "leased"
        SUBMITTED = "submitted"
        SKIPPED = "skipped"
        EXPIRED = "expired"

    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="assignments"
    )
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.LEASED)
    leased_until = models.DateTimeField()
    # Candidate ids in the order they were shown (the randomised letters A, B, ...).
    presented_order = models.JSONField(default=list)
    skip_reason = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["task", "annotator"], name="assignment_unique"),
        ]
        indexes = [models.Index(fields=["annotator", "status"])]

    def __str__(self) -> str:
        return f"assignment {self.pk}"


class Judgment(models.Model):
    """One evaluator's verdict on a task: a ranking as ordered tie groups, or a pair outcome.

    ``ranking`` holds candidate ids, best group first: ``[[12], [13, 14], [15]]``.
    For pairs, ``outcome`` "a" means the task's candidate in position 0 won, "b" position 1.
    """

    class Kind(models.TextChoices):
        RANKING = "ranking"
        PAIR = "pair"

    class Outcome(models.TextChoices):
        A = "a"
        B = "b"
        TIE = "tie"
        BOTH_BAD = "both_bad"

    class Source(models.TextChoices):
        HUMAN = "human", "Annotator in Quorum"
        EXTERNAL = "external", "Imported external source"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="judgments")
    task = models.ForeignKey(Task, on_delete=models.CASCADE, related_name="judgments")
    assignment = models.OneToOneField(
        Assignment, null=True, blank=True, on_delete=models.PROTECT, related_name="judgment"
    )
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="judgments",
    )
    source = models.CharField(max_length=12, choices=Source.choices, default=Source.HUMAN)
    source_name = models.CharField(max_length=200, blank=True)
    external_annotator = models.CharField(max_length=200, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices)
    ranking = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, blank=True)
    presented_order = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    ratings = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    idempotency_key = models.CharField(max_length=200, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(kind="ranking", ranking__isnull=False, outcome="")
                    | Q(
                        kind="pair", ranking__isnull=True, outcome__in=["a", "b", "tie", "both_bad"]
                    )
                ),
                name="judgment_shape_valid",
            ),
            models.CheckConstraint(
                condition=Q(source="external") | Q(annotator__isnull=False),
                name="judgment_human_has_annotator",
            ),
            models.UniqueConstraint(
                fields=["task", "annotator"],
                condition=Q(annotator__isnull=False),
                name="judgment_one_per_annotator_task",
            ),
        ]
        indexes = [models.Index(fields=["project", "created_at"])]

    def __str__(self) -> str:
        return f"judgment {self.pk} on task {self.task_id}"

    def save(self, *args, **kwargs):
        # A partial save writes ``updated_at`` too: curation reuses a project's loaded
        # judgments while their count, largest id and latest ``updated_at`` stay the same
        # (`curation.selectors._judgments_mark`).
        update_fields = kwargs.get("update_fields")
        if update_fields and "updated_at" not in update_fields:
            kwargs["update_fields"] = {*update_fields, "updated_at"}
        super().save(*args, **kwargs)

    @property
    def evaluator(self) -> str:
        """Stable evaluator id for curation: a user, or an external source's annotator."""
        if self.annotator_id is not None:
            return f"user:{self.annotator_id}"
        return f"ext:{self.source_name}:{self.external_annotator}"


class ImportJob(models.Model):
    """One import of a file, whichever door it came through; progress for the admin."""

    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    project = models.ForeignKey(
        Project, null=True, blank=True, on_delete=models.CASCADE, related_name="imports"
    )
    project_name = models.CharField(max_length=200, blank=True)
    source_file = models.CharField(max_length=1000)
    original_name = models.CharField(max_length=500, blank=True)
    format = models.CharField(max_length=16, blank=True)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PENDING)
    total_rows = models.PositiveIntegerField(default=0)
    processed_rows = models.PositiveIntegerField(default=0)
    counts = models.JSONField(default=dict, blank=True)
    errors = models.JSONField(default=list, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"import {self.pk} ({self.status})"

    @property
    def progress_percent(self) -> int:
        if not self.total_rows:
            return 100 if self.status == self.Status.DONE else 0
        return min(100, round(100 * self.processed_rows / self.total_rows))


class ApiToken(models.Model):
    """Bearer token for the REST API. Only a SHA-256 digest of the key is stored."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=200, blank=True)
    digest = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"token {self.name or self.pk} for {self.user}"


class RewardModel(models.Model):
    """A registered reward-model checkpoint on local disk (one row per version)."""

    class Backend(models.TextChoices):
        MULTI_RESPONSE = "multi_response", "Multi-response (seed release layout)"
        SEQ_CLASSIFICATION = "seq_classification", "Single-response sequence classifier"

    name = models.CharField(max_length=200)
    version = models.CharField(max_length=100)
    backend = models.CharField(max_length=24, choices=Backend.choices)
    path = models.CharField(max_length=1000, help_text="Local checkpoint directory.")
    metrics = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name", "-created_at"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="rewardmodel_unique")
        ]

    def __str__(self) -> str:
        return f"{self.name}@{self.version}"


class ModelScore(models.Model):
    candidate = models.ForeignKey(Candidate, on_delete=models.CASCADE, related_name="scores")
    reward_model = models.ForeignKey(RewardModel, on_delete=models.CASCADE, related_name="scores")
    score = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    layout = models.CharField(
        max_length=16,
        blank=True,
        help_text="packed (all candidates of the prompt in one row), isolated or separate",
    )
    note = models.TextField(blank=True, help_text="why the layout is not packed, if it is not")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["candidate", "reward_model"], name="modelscore_unique"),
            models.CheckConstraint(
                condition=Q(score__isnull=False) | ~Q(error=""), name="modelscore_score_or_error"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.reward_model}: {self.candidate_id} = {self.score}"


class JudgmentRevision(models.Model):
    """A superseded version of a judgment, kept when its annotator changes it.

    The annotator may change their last judgment while its lease lasts; the previous values
    are copied here first, so no verdict is ever lost. ``edit_key`` is the idempotency key of
    the edit that superseded this version (a retried edit stores one revision).
    """

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="revisions")
    number = models.PositiveIntegerField(help_text="1 for the first version, then 2, ...")
    ranking = models.JSONField(null=True, blank=True)
    outcome = models.CharField(max_length=8, blank=True)
    presented_order = models.JSONField(default=list, blank=True)
    rationale = models.TextField(blank=True)
    ratings = models.JSONField(default=dict, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    edit_key = models.CharField(max_length=200, unique=True)
    submitted_at = models.DateTimeField(help_text="When this version was submitted.")
    superseded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["judgment", "number"]
        constraints = [
            models.UniqueConstraint(fields=["judgment", "number"], name="judgmentrevision_unique")
        ]

    def __str__(self) -> str:
        return f"judgment {self.judgment_id} v{self.number}"
