"""Admin for the curation app. Exports are started from here (the "Add" page builds a new
version through the same service as the CLI and the API) and are read-only afterwards;
flags, reviewer actions, decisions and annotator figures are read-only records."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from annotate.models import Project
from curation.exporting import ExportOptions, ExportOptionsInvalid, parse_splits
from curation.models import AnnotatorQuality, DatasetExport, Flag, PromptDecision, ReviewAction
from curation.services import (
    ExportNotCancellable,
    export_cancel,
    export_create,
    export_rebuild,
    flags_recompute_enqueue,
)
from curation.wording import export_options_text

# Marks a cell that live.js keeps fetching while its job is unfinished.
_LIVE = mark_safe("<span data-live hidden></span>")


class ExportForm(forms.Form):
    project = forms.ModelChoiceField(queryset=Project.objects.all())
    denoise = forms.BooleanField(required=False, initial=True, help_text="Remove feedback arcs.")
    rm_evaluator = forms.BooleanField(
        required=False, help_text="Add the project's active reward model as an evaluator."
    )
    min_agreement = forms.FloatField(
        required=False, min_value=0, max_value=1, help_text="Drop prompts below this agreement."
    )
    use_decisions = forms.BooleanField(
        required=False, initial=True, help_text="Reviewer decisions override the consensus."
    )
    splits = forms.CharField(
        initial="train=0.9,test=0.1", help_text="By prompt: name=fraction, ..."
    )
    seed = forms.IntegerField(initial=0, min_value=0)
    include_media = forms.BooleanField(required=False, initial=True)

    def clean_splits(self) -> dict[str, float]:
        try:
            return parse_splits(self.cleaned_data["splits"])
        except ExportOptionsInvalid as exc:
            raise forms.ValidationError(str(exc)) from None

    def options(self) -> ExportOptions:
        data = {k: v for k, v in self.cleaned_data.items() if k != "project"}
        return ExportOptions.from_dict(data)


COUNT_LABELS = {
    "prompts_in_project": "prompts in the project",
    "prompts_exported": "prompts exported",
    "prompts_with_rankings": "prompts with a ranking",
    "judgments_in_project": "judgments in the project",
    "judgments_used": "judgments used",
    "pairs": "chosen/rejected pairs",
    "rankings": "full rankings",
    "rankings_4": "4-response rankings",
    "reviewer_rankings_used": "reviewer rankings used",
}


@admin.register(DatasetExport)
class DatasetExportAdmin(admin.ModelAdmin):
    list_display = [
        "__str__",
        "project",
        "version",
        "status",
        "progress_display",
        "created_by",
        "created_at",
        "files_link",
    ]
    list_filter = ["status", "project"]
    list_select_related = ["project", "created_by"]
    # The detail page reads as a summary, not as stored JSON: options as phrases, counts as a
    # table, files with sizes and a link, the datasheet rendered on its own page.
    readonly_fields = [
        "project",
        "version",
        "status",
        "progress_display",
        "options_display",
        "counts_display",
        "files_display",
        "datasheet_link",
        "error",
        "created_by",
        "created_at",
        "started_at",
        "finished_at",
    ]
    fields = readonly_fields
    actions = ["rebuild", "cancel", "train_reward_model"]

    def add_view(
        self, request: HttpRequest, form_url: str = "", extra_context=None
    ) -> HttpResponse:
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            export = export_create(
                project=form.cleaned_data["project"],
                options=form.options(),
                created_by=request.user,
            )
            messages.success(request, f"Export {export.project.name} v{export.version} queued.")
            return HttpResponseRedirect(reverse("admin:curation_datasetexport_changelist"))
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "New dataset export",
        }
        return render(request, "admin/curation/datasetexport/start.html", context)

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False  # immutable: a new build is a new version

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    class Media:
        js = ["curation/live.js"]  # progress cells update themselves (data-live-region)

    @admin.display(description="progress")
    def progress_display(self, obj: DatasetExport) -> str:
        unfinished = obj.status in (DatasetExport.Status.PENDING, DatasetExport.Status.RUNNING)
        return format_html(
            '<span data-live-region="export-{}">{}{}</span>',
            obj.pk,
            _LIVE if unfinished else "",
            f"{obj.progress}% {obj.phase}".strip(),
        )

    @admin.display(description="options")
    def options_display(self, obj: DatasetExport) -> str:
        return format_html_join(
            mark_safe("<br>"), "{}", ((p,) for p in export_options_text(obj.options))
        )

    @admin.display(description="counts")
    def counts_display(self, obj: DatasetExport) -> str:
        counts = obj.counts or {}
        if not counts:
            return "–"
        rows = [
            (COUNT_LABELS.get(key, key.replace("_", " ")), f"{value:,}")
            for key, value in counts.items()
            if isinstance(value, int)
        ]
        for split, by_kind in sorted((counts.get("by_split") or {}).items()):
            parts = ", ".join(f"{n:,} {kind}" for kind, n in sorted(by_kind.items()))
            rows.append((f"split {split}", parts or "empty"))
        return format_html(
            '<table class="export-counts">{}</table>',
            format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows),
        )

    @admin.display(description="files")
    def files_display(self, obj: DatasetExport) -> str:
        if obj.status != DatasetExport.Status.DONE or not obj.files:
            return "–"
        listing = format_html_join(
            "",
            "<li><code>{}</code> ({})</li>",
            ((f["path"], filesizeformat(f.get("bytes", 0))) for f in obj.files),
        )
        total = sum(f.get("bytes", 0) for f in obj.files)
        return format_html(
            '<a href="{}">Download the zip</a> · {} files, {}<ul>{}</ul>',
            reverse("curation:export_download", args=[obj.pk]),
            len(obj.files),
            filesizeformat(total),
            listing,
        )

    @admin.display(description="datasheet")
    def datasheet_link(self, obj: DatasetExport) -> str:
        if obj.status != DatasetExport.Status.DONE:
            return "–"
        warnings = (obj.datasheet or {}).get("warnings") or []
        return format_html(
            '<a href="{}">Read the datasheet</a>{}',
            reverse("curation:export_datasheet", args=[obj.pk]),
            format_html(
                '<ul class="errorlist">{}</ul>',
                format_html_join("", "<li>{}</li>", ((w,) for w in warnings)),
            )
            if warnings
            else "",
        )

    @admin.display(description="files")
    def files_link(self, obj: DatasetExport) -> str:
        if obj.status in (DatasetExport.Status.PENDING, DatasetExport.Status.RUNNING):
            return format_html(
                '<span data-live-region="export-files-{}">–<span data-live hidden></span></span>',
                obj.pk,
            )
        if obj.status != DatasetExport.Status.DONE:
            return "–"
        return format_html(
            '<span data-live-region="export-files-{}"><a href="{}">zip</a> · <a href="{}">datasheet</a></span>',
            obj.pk,
            reverse("curation:export_download", args=[obj.pk]),
            reverse("curation:export_datasheet", args=[obj.pk]),
        )

    @admin.action(description="Cancel the selected pending or running exports")
    def cancel(self, request: HttpRequest, queryset) -> None:
        for export in queryset:
            try:
                export_cancel(export=export, actor=request.user)
            except ExportNotCancellable as exc:
                messages.warning(request, f"Not cancelled: {exc}.")
            else:
                messages.success(request, f"v{export.version} cancelled.")

    @admin.action(description="Train the next reward model from the selected exports")
    def train_reward_model(self, request: HttpRequest, queryset) -> None:
        from workers.model_training import TrainingError, training_enqueue

        for export in queryset.select_related("project"):
            try:
                job = training_enqueue(export=export)
            except TrainingError as exc:
                messages.warning(request, f"{export.project.name} v{export.version}: {exc}.")
            else:
                messages.success(
                    request,
                    f"{export.project.name} v{export.version}: training queued (job {job.pk}); "
                    "the new version appears on the project's reward models page.",
                )

    @admin.action(description="Build a new version with the same options")
    def rebuild(self, request: HttpRequest, queryset) -> None:
        for export in queryset.select_related("project"):
            new = export_rebuild(export=export, created_by=request.user)
            messages.success(request, f"{new.project.name} v{new.version} queued.")


class ReadOnlyAdmin(admin.ModelAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        return False


@admin.register(Flag)
class FlagAdmin(ReadOnlyAdmin):
    list_display = ["kind", "key", "project", "status", "severity", "updated_at", "review_link"]
    list_filter = ["kind", "status", "project"]
    search_fields = ["key", "evaluator"]
    list_select_related = ["project"]
    actions = ["recompute"]

    @admin.display(description="review")
    def review_link(self, obj: Flag) -> str:
        return format_html(
            '<a href="{}">open</a>', reverse("curation:flag", args=[obj.project_id, obj.pk])
        )

    @admin.action(description="Recompute all flags of these flags' projects")
    def recompute(self, request: HttpRequest, queryset) -> None:
        for project_id in set(queryset.values_list("project_id", flat=True)):
            flags_recompute_enqueue(project_id=project_id)
        messages.success(request, "Flag recompute queued.")


@admin.register(ReviewAction)
class ReviewActionAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "kind",
        "project",
        "actor",
        "prompt",
        "evaluator",
        "created_at",
        "undone_at",
    ]
    list_filter = ["kind", "project"]
    list_select_related = ["project", "actor", "prompt"]


@admin.register(PromptDecision)
class PromptDecisionAdmin(ReadOnlyAdmin):
    list_display = ["prompt", "project", "discarded", "final_ranking", "updated_at"]
    list_filter = ["discarded", "project"]
    list_select_related = ["prompt", "project"]


@admin.register(AnnotatorQuality)
class AnnotatorQualityAdmin(ReadOnlyAdmin):
    list_display = [
        "label",
        "project",
        "n_judgments",
        "weight",
        "agreement",
        "gold_accuracy",
        "bias_p",
        "fast_share",
        "marked_unreliable",
    ]
    list_filter = ["marked_unreliable", "project"]
    list_select_related = ["project"]
    search_fields = ["label", "evaluator"]
