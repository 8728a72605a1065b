from django.contrib import admin
from django.utils.html import format_html
from django.utils.safestring import mark_safe

from workers.jobs import jobs_cancel
from workers.models import Job, ScoringRun

# Marks a cell that live.js keeps fetching while its job is unfinished.
_LIVE = mark_safe("<span data-live hidden></span>")


@admin.register(ScoringRun)
class ScoringRunAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "reward_model",
        "status",
        "progress",
        "failed_candidates",
        "reason",
        "created_at",
    ]
    list_filter = ["status", "reward_model"]
    search_fields = ["project__name", "reward_model__name"]
    list_select_related = ["project", "reward_model"]
    exclude = ["prompt_ids"]
    readonly_fields = [
        "project",
        "reward_model",
        "status",
        "total_prompts",
        "done_prompts",
        "scored_candidates",
        "failed_candidates",
        "reason",
        "created_by",
        "created_at",
        "finished_at",
        "progress",
    ]

    class Media:
        js = ["curation/live.js"]  # progress cells update themselves (data-live-region)

    @admin.display(description="progress")
    def progress(self, obj):
        return format_html(
            '<span data-live-region="scoring-run-{}">{}<progress max="100" value="{}" '
            'aria-label="scoring progress"></progress> {} / {} prompts</span>',
            obj.pk,
            _LIVE if obj.status == ScoringRun.Status.RUNNING else "",
            obj.progress_percent,
            obj.done_prompts,
            obj.total_prompts,
        )

    def has_add_permission(self, request):
        return False


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    """Background jobs: what is queued, running, done or failed, and why."""

    list_display = [
        "id",
        "name",
        "status",
        "progress_display",
        "attempts",
        "worker",
        "created_at",
        "finished_at",
        "problem",
    ]
    list_filter = ["status", "name", "queue"]
    search_fields = ["name", "worker", "error", "dedupe_key"]
    readonly_fields = [f.name for f in Job._meta.fields]
    actions = ["cancel"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    class Media:
        js = ["curation/live.js"]  # progress cells update themselves (data-live-region)

    @admin.display(description="progress")
    def progress_display(self, obj: Job) -> str:
        return format_html(
            '<span data-live-region="job-{}">{}{}</span>',
            obj.pk,
            _LIVE if obj.status in Job.UNFINISHED else "",
            f"{obj.progress}% {obj.phase}".strip(),
        )

    @admin.display(description="problem")
    def problem(self, obj: Job) -> str:
        if obj.publish_error and obj.status == Job.Status.QUEUED:
            return f"not yet on the broker: {obj.publish_error}"[:200]
        return obj.error[:200]

    @admin.action(description="Cancel the selected waiting jobs")
    def cancel(self, request, queryset) -> None:
        n = jobs_cancel(
            ids=list(queryset.values_list("pk", flat=True)),
            reason=f"cancelled by {request.user.get_username()}",
        )
        self.message_user(request, f"{n} waiting job(s) cancelled.")
