from django.contrib import admin
from django.utils.html import format_html

from workers.models import ScoringRun


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

    @admin.display(description="progress")
    def progress(self, obj):
        return format_html(
            '<progress max="100" value="{}" aria-label="scoring progress"></progress> {} / {} prompts',
            obj.progress_percent,
            obj.done_prompts,
            obj.total_prompts,
        )

    def has_add_permission(self, request):
        return False
