"""Admin for the annotate app: every model, useful columns, no N+1 list pages, and an
"Import file" page on projects (same service as the CLI and the API)."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.db.models import Count
from django.http import HttpResponseRedirect
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html

from annotate.importing import FORMATS
from annotate.models import (
    ApiToken,
    Assignment,
    Candidate,
    ImportJob,
    Judgment,
    JudgmentRevision,
    Membership,
    ModelScore,
    Project,
    Prompt,
    RewardModel,
    Task,
    TaskCandidate,
)
from annotate.services import import_job_create, upload_save
from annotate.wording import import_counts_text


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 1
    autocomplete_fields = ["user"]


class ImportForm(forms.Form):
    file = forms.FileField(
        help_text="JSONL/JSON (media must then be in a zip) or a .zip with media."
    )
    project = forms.ModelChoiceField(
        queryset=Project.objects.all(), required=False, help_text="Leave empty to create one."
    )
    project_name = forms.CharField(required=False, help_text="Name of the new project.")
    format = forms.ChoiceField(choices=[("", "detect")] + [(f, f) for f in FORMATS], required=False)


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = [
        "name",
        "mode",
        "candidates_per_task",
        "annotators_per_task",
        "blind",
        "prompt_count",
        "task_count",
        "active_reward_model",
        "created_at",
    ]
    list_filter = ["mode", "blind", "ties_allowed"]
    search_fields = ["name"]
    list_select_related = ["active_reward_model"]
    inlines = [MembershipInline]
    change_list_template = "admin/annotate/project/change_list.html"
    actions = ["score_with_active_model", "prepare_media_for_scoring"]

    @admin.action(description="Score all prompts with the project's active reward model")
    def score_with_active_model(self, request, queryset):
        from workers.scoring import scoring_run_start

        for project in queryset.select_related("active_reward_model"):
            run = scoring_run_start(project=project, reason="admin", created_by=request.user)
            if run is None:
                messages.warning(request, f"{project}: choose an active reward model first.")
            else:
                messages.success(
                    request,
                    f"{project}: scoring {run.total_prompts} prompts with {run.reward_model}.",
                )

    @admin.action(description="Prepare media for scoring with the project's active reward model")
    def prepare_media_for_scoring(self, request, queryset):
        # A first scoring run decodes every picture and clip (more CPU than a small model's
        # forward pass): a gpu worker decodes them into the media store now instead.
        from workers.scoring import media_prefill_start

        for project in queryset.select_related("active_reward_model"):
            started = media_prefill_start(project=project)
            if started is None:
                messages.warning(request, f"{project}: choose an active reward model first.")
            else:
                model, count = started
                messages.success(
                    request, f"{project}: decoding the media of {count} prompts for {model}."
                )

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                _prompts=Count("prompts", distinct=True), _tasks=Count("tasks", distinct=True)
            )
        )

    @admin.display(ordering="_prompts", description="prompts")
    def prompt_count(self, obj):
        return obj._prompts

    @admin.display(ordering="_tasks", description="tasks")
    def task_count(self, obj):
        return obj._tasks

    def get_urls(self):
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),
                name="annotate_project_import",
            )
        ] + super().get_urls()

    def import_view(self, request):
        if not request.user.has_perm("annotate.add_project"):
            messages.error(request, "You may not import projects.")
            return HttpResponseRedirect(reverse("admin:annotate_project_changelist"))
        form = ImportForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            saved = upload_save(uploaded_file=form.cleaned_data["file"])
            job = import_job_create(
                path=saved,
                project=form.cleaned_data["project"],
                project_name=form.cleaned_data["project_name"],
                format=form.cleaned_data["format"] or None,
                original_name=form.cleaned_data["file"].name,
                created_by=request.user,
            )
            if job.status == ImportJob.Status.FAILED:
                messages.error(
                    request, f"Import rejected: {len(job.errors)} problem(s). Nothing was written."
                )
            elif job.status == ImportJob.Status.DONE:
                messages.success(request, import_counts_text(job.counts))
            else:
                messages.info(request, "Large file: importing in the background; progress below.")
            return HttpResponseRedirect(reverse("admin:annotate_importjob_change", args=[job.pk]))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Import file",
            "opts": self.model._meta,
        }
        return render(request, "admin/annotate/project/import.html", context)


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "project", "role"]
    list_filter = ["role", "project"]
    search_fields = ["user__username", "project__name"]
    list_select_related = ["user", "project"]
    autocomplete_fields = ["user", "project"]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "short_text", "has_image", "has_video", "created_at"]
    list_filter = ["project"]
    search_fields = ["external_id", "text"]
    list_select_related = ["project"]
    raw_id_fields = ["project"]

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:80]

    @admin.display(boolean=True, description="image")
    def has_image(self, obj):
        return bool(obj.image)

    @admin.display(boolean=True, description="video")
    def has_video(self, obj):
        return bool(obj.video)


@admin.register(Candidate)
class CandidateAdmin(admin.ModelAdmin):
    list_display = ["external_id", "project", "prompt", "model_name", "kind", "short_text"]
    list_filter = ["project", "kind", "model_name"]
    search_fields = ["external_id", "model_name", "text"]
    list_select_related = ["project", "prompt"]
    raw_id_fields = ["project", "prompt"]

    @admin.display(description="text")
    def short_text(self, obj):
        return obj.text[:60]


class TaskCandidateInline(admin.TabularInline):
    model = TaskCandidate
    extra = 0
    raw_id_fields = ["candidate"]


@admin.register(Task)
class TaskAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "prompt", "status", "priority", "judgment_count", "is_gold"]
    list_filter = ["project", "status", "is_gold"]
    search_fields = ["prompt__external_id"]
    list_select_related = ["project", "prompt"]
    raw_id_fields = ["project", "prompt"]
    inlines = [TaskCandidateInline]


class LeaseStateFilter(admin.SimpleListFilter):
    """The queue treats a lease past its expiry as free without rewriting the row."""

    title = "lease"
    parameter_name = "lease"

    def lookups(self, request, model_admin):
        return [("live", "live"), ("expired", "expired")]

    def queryset(self, request, queryset):
        leased = queryset.filter(status=Assignment.Status.LEASED)
        if self.value() == "live":
            return leased.filter(leased_until__gt=timezone.now())
        if self.value() == "expired":
            return leased.filter(leased_until__lte=timezone.now())
        return queryset


class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["id", "task", "annotator", "state", "leased_until", "created_at"]
    list_filter = ["status", LeaseStateFilter, "task__project"]
    search_fields = ["annotator__username"]
    list_select_related = ["task", "annotator"]
    raw_id_fields = ["task", "annotator"]

    @admin.display(ordering="status", description="status")
    def state(self, obj):
        if obj.status == Assignment.Status.LEASED and obj.leased_until <= timezone.now():
            return "lease expired"
        return obj.status


admin.site.register(Assignment, AssignmentAdmin)


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "project",
        "task",
        "kind",
        "evaluator_name",
        "source",
        "outcome",
        "duration_ms",
        "created_at",
    ]
    list_filter = ["project", "kind", "source", "outcome"]
    search_fields = ["annotator__username", "external_annotator", "source_name", "idempotency_key"]
    list_select_related = ["project", "task", "annotator"]
    raw_id_fields = ["project", "task", "assignment", "annotator"]

    @admin.display(description="evaluator")
    def evaluator_name(self, obj):
        return (
            obj.annotator.username
            if obj.annotator_id
            else f"{obj.source_name}:{obj.external_annotator}"
        )


@admin.register(ImportJob)
class ImportJobAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "original_name",
        "project",
        "format",
        "status",
        "progress",
        "created_by",
        "created_at",
    ]
    list_filter = ["status", "format"]
    search_fields = ["original_name", "project__name"]
    list_select_related = ["project", "created_by"]
    readonly_fields = [f.name for f in ImportJob._meta.fields if f.name != "counts"] + [
        "progress",
        "imported",
        "problems",
    ]
    exclude = ["errors", "counts"]

    @admin.display(description="progress")
    def progress(self, obj):
        return format_html(
            '<progress max="100" value="{}" aria-label="import progress"></progress> {}% ({} / {} rows)',
            obj.progress_percent,
            obj.progress_percent,
            obj.processed_rows,
            obj.total_rows,
        )

    @admin.display(description="imported")
    def imported(self, obj):
        return import_counts_text(obj.counts) if obj.status == ImportJob.Status.DONE else "-"

    @admin.display(description="problems")
    def problems(self, obj):
        if not obj.errors:
            return "-"
        return format_html(
            "<ul>{}</ul>", format_html("".join("<li>{}</li>" for _ in obj.errors), *obj.errors)
        )

    def has_add_permission(self, request):
        return False


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["name", "user", "created_at", "last_used_at"]
    search_fields = ["name", "user__username"]
    list_select_related = ["user"]
    readonly_fields = ["digest", "created_at", "last_used_at"]


class RewardModelForm(forms.ModelForm):
    class Meta:
        model = RewardModel
        fields = ["name", "version", "backend", "path", "metrics"]

    def clean(self):
        from workers.scoring import checkpoint_problems

        cleaned = super().clean()
        if cleaned.get("path") and cleaned.get("backend"):
            problems = checkpoint_problems(cleaned["path"], cleaned["backend"])
            if problems:
                raise forms.ValidationError({"path": problems})
        return cleaned


@admin.register(RewardModel)
class RewardModelAdmin(admin.ModelAdmin):
    form = RewardModelForm
    list_display = ["name", "version", "backend", "path", "metric_summary", "created_at"]
    list_filter = ["backend"]
    search_fields = ["name", "version", "path"]

    @admin.display(description="metrics")
    def metric_summary(self, obj):
        return ", ".join(
            f"{k}={v}" for k, v in sorted(obj.metrics.items()) if not isinstance(v, dict | list)
        )[:120]


@admin.register(ModelScore)
class ModelScoreAdmin(admin.ModelAdmin):
    list_display = ["candidate", "reward_model", "score", "error", "created_at"]
    list_filter = ["reward_model"]
    search_fields = ["candidate__external_id"]
    list_select_related = ["candidate", "reward_model"]
    raw_id_fields = ["candidate", "reward_model"]


@admin.register(JudgmentRevision)
class JudgmentRevisionAdmin(admin.ModelAdmin):
    """Superseded versions of judgments that annotators changed (read-only history)."""

    list_display = ["judgment", "number", "outcome", "submitted_at", "superseded_at"]
    list_select_related = ["judgment"]
    search_fields = ["judgment__id", "edit_key"]
    raw_id_fields = ["judgment"]

    def has_change_permission(self, request, obj=None):
        return False

    def has_add_permission(self, request):
        return False
