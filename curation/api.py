"""REST endpoints of the curation app, mounted under ``/api/`` by ``annotate.api``.

Bearer-token auth as the rest of the API. Reviewers (and admins, staff) read flags;
project admins (and staff) recompute flags, read the leaderboard and start and download
exports, through the same services as the pages, the admin and the CLI.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

from django.http import StreamingHttpResponse
from django.shortcuts import get_object_or_404
from ninja import Query, Router, Schema, Status
from ninja.errors import HttpError

from annotate.models import Project
from annotate.pagination import Page, paginate
from annotate.services import row_status_wait
from curation import selectors, services
from curation.download import FORMATS as DOWNLOAD_FORMATS
from curation.download import iter_download_zip
from curation.exporting import ExportOptionsInvalid, check_base_folder
from curation.models import DatasetExport, Flag

router = Router(tags=["curation"])


def _project(request, project_id: int, *, admin: bool) -> Project:
    project = get_object_or_404(
        Project.objects.select_related("active_reward_model"), pk=project_id
    )
    check = selectors.can_administer if admin else selectors.can_review
    if not check(user=request.auth, project=project):
        raise HttpError(403, "your role in this project does not allow this")
    return project


class FlagOut(Schema):
    id: int
    kind: str
    key: str
    status: str
    severity: float
    prompt_id: int | None
    prompt_external_id: str | None
    task_id: int | None
    judgment_id: int | None
    evaluator: str
    # Who the evaluator is as the user knows them: the username, or the external annotator
    # of an imported source ("" when the flag names no evaluator).
    annotator: str
    details: dict
    evidence: int
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None


class FlagFilter(Schema):
    kind: str | None = None
    status: str = "open"
    limit: int = 100
    offset: int = 0


class FlagPage(Page):
    results: list[FlagOut]


FLAGS_MAX_LIMIT = 1000


@router.get(
    "/projects/{project_id}/flags",
    response=FlagPage,
    summary="Flags, most severe first (limit/offset pages, at most 1000 a page)",
)
def list_flags(request, project_id: int, filters: Query[FlagFilter]):
    project = _project(request, project_id, admin=False)
    if filters.kind is not None and filters.kind not in Flag.Kind.values:
        raise HttpError(422, f"kind: unknown value {filters.kind!r}")
    if filters.status not in Flag.Status.values:
        raise HttpError(422, f"status: unknown value {filters.status!r}")
    flags = Flag.objects.filter(project=project, status=filters.status)
    if filters.kind:
        flags = flags.filter(kind=filters.kind)
    page, envelope = paginate(
        request,
        flags.select_related("prompt").order_by("-severity", "id"),
        limit=filters.limit,
        offset=filters.offset,
        maximum=FLAGS_MAX_LIMIT,
    )
    labels = selectors.evaluator_labels({f.evaluator for f in page if f.evaluator})
    results = [
        {
            **{field: getattr(f, field) for field in FlagOut.model_fields if hasattr(f, field)},
            "prompt_external_id": f.prompt.external_id if f.prompt is not None else None,
            "annotator": _annotator(f.evaluator, labels),
        }
        for f in page
    ]
    return {**envelope, "results": results}


def _annotator(evaluator: str, labels: dict[str, str]) -> str:
    if evaluator.startswith("ext:") and evaluator.count(":") >= 2:
        return evaluator.split(":", 2)[2]
    return labels.get(evaluator, evaluator) if evaluator else ""


@router.post(
    "/projects/{project_id}/flags/recompute",
    response={202: dict},
    summary="Recompute every flag (Celery task)",
)
def recompute_flags(request, project_id: int):
    project = _project(request, project_id, admin=True)
    services.flags_recompute_enqueue(project_id=project.pk)
    return Status(202, {"project": project.pk, "queued": "quorum.flags_recompute"})


class LeaderboardRowOut(Schema):
    rank: int
    model: str
    score: float
    ci_low: float | None
    ci_high: float | None
    comparisons: int
    component: int


class LeaderboardOut(Schema):
    rows: list[LeaderboardRowOut]
    leader: str | None
    votes_to_change_leader: int | None
    new_leader: str | None
    votes: int


@router.get(
    "/projects/{project_id}/leaderboard",
    response=LeaderboardOut,
    summary="Bradley-Terry leaderboard",
)
def leaderboard(request, project_id: int, bootstrap: int | None = None, seed: int = 0):
    """``bootstrap`` defaults to ``QUORUM_LEADERBOARD_BOOTSTRAP`` (as the CLI and dashboard)."""
    project = _project(request, project_id, admin=True)
    if seed < 0:  # numpy seeds are non-negative; a negative one was a 500
        raise HttpError(422, f"seed: must be 0 or more, not {seed}")
    data = selectors.project_data(project=project, with_presented=False, with_times=False)
    if bootstrap is not None:
        bootstrap = max(0, min(bootstrap, 1000))
    rows, stability = selectors.project_leaderboard(data=data, bootstrap=bootstrap, seed=seed)

    def finite(x: float) -> float | None:
        return None if math.isnan(x) else round(x, 2)

    return {
        "rows": [
            {
                "rank": i + 1,
                "model": str(r.model),
                "score": round(r.score, 2),
                "ci_low": finite(r.ci_low),
                "ci_high": finite(r.ci_high),
                "comparisons": r.n_comparisons,
                "component": r.component,
            }
            for i, r in enumerate(rows)
        ],
        "leader": None if stability is None else str(stability.leader),
        "votes_to_change_leader": None if stability is None else stability.votes_to_change,
        "new_leader": None
        if stability is None or stability.new_leader is None
        else str(stability.new_leader),
        "votes": 0 if stability is None else stability.n_votes,
    }


class ExportIn(Schema):
    denoise: bool = True
    rm_evaluator: bool = False
    min_agreement: float | None = None
    use_decisions: bool = True
    splits: dict[str, float] | str = {"train": 1.0}
    seed: int = 0
    include_media: bool = True
    variants_per_prompt: int = 3
    # Opt-in model-strength prior (curation.prior); needs denoise, not with rm_evaluator.
    model_prior: bool = False


class ExportOut(Schema):
    id: int
    project_id: int
    version: int
    status: str
    progress: int
    phase: str
    options: dict
    counts: dict
    error: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    datasheet: dict[str, Any]


class ExportPage(Page):
    results: list[ExportOut]


EXPORTS_MAX_LIMIT = 100


@router.get(
    "/projects/{project_id}/exports",
    response=ExportPage,
    summary="Export versions, newest first (limit/offset pages, at most 100 a page)",
)
def list_exports(request, project_id: int, limit: int = 20, offset: int = 0):
    project = _project(request, project_id, admin=True)
    exports = DatasetExport.objects.filter(project=project).order_by("-version")
    page, envelope = paginate(
        request, exports, limit=limit, offset=offset, maximum=EXPORTS_MAX_LIMIT
    )
    return {**envelope, "results": page}


@router.post(
    "/projects/{project_id}/exports",
    response={201: ExportOut},
    summary="Build a new export version",
)
def create_export(request, project_id: int, payload: ExportIn):
    project = _project(request, project_id, admin=True)
    try:
        export = services.export_create(
            project=project, options=payload.model_dump(), created_by=request.auth
        )
    except ExportOptionsInvalid as exc:
        raise HttpError(422, str(exc)) from None
    return Status(201, export)


def _export(request, export_id: int) -> DatasetExport:
    export = get_object_or_404(DatasetExport, pk=export_id)
    _project(request, export.project_id, admin=True)
    return export


@router.get("/exports/{export_id}", response=ExportOut, summary="Status and progress of an export")
def export_status(request, export_id: int, wait: float = 0):
    """``wait`` (seconds, at most 10): answer once the export is done, failed or cancelled, or
    after that long, so a client learns of the end without polling (and without its polls
    taking CPU from the build on a small machine). Each waiting request holds one web worker."""
    export = _export(request, export_id)
    finished = (
        DatasetExport.Status.DONE,
        DatasetExport.Status.FAILED,
        DatasetExport.Status.CANCELLED,
    )
    return row_status_wait(row=export, finished=finished, seconds=wait)


@router.get("/exports/{export_id}/download", summary="The export's files as a zip")
def export_download(request, export_id: int, base_folder: str | None = None, format: str = "all"):
    """``base_folder``: where the zip's top folder will be unpacked; JSONL paths are then
    absolute under it (for a local training run). ``format``: ``all`` (the default), or one
    of ``jsonl``, ``parquet``, ``hf`` (comma-separated for several): the zip then holds only
    those formats' folders, with the datasheet, the overruled arcs and media."""
    export = _export(request, export_id)
    formats = None
    if format != "all":
        formats = {f.strip() for f in format.split(",")}
        if not formats <= set(DOWNLOAD_FORMATS):
            raise HttpError(
                400, f"format must be all or among {', '.join(DOWNLOAD_FORMATS)}: {format!r}"
            )
    if export.status != DatasetExport.Status.DONE or not export.path.is_dir():
        raise HttpError(409, f"export is {export.status}, not done")
    if base_folder:
        try:
            base_folder = check_base_folder(base_folder)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from None
    name = f"quorum-{export.project_id}-v{export.version}"
    response = StreamingHttpResponse(
        iter_download_zip(export.path, name, base_folder=base_folder or None, formats=formats),
        content_type="application/zip",
    )
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response


class TrainIn(Schema):
    base_reward_model_id: int | None = None
    options: dict = {}


class JobOut(Schema):
    id: int
    name: str
    status: str
    progress: int
    phase: str
    error: str
    result: dict | None = None


@router.post(
    "/exports/{export_id}/train",
    response={202: JobOut},
    summary="Train the next reward model from this export (a job on the gpu queue)",
)
def export_train(request, export_id: int, payload: TrainIn):
    """Starts from the project's active reward model unless ``base_reward_model_id`` names
    another; ``options`` overrides the paper's settings (epochs, lr, grad_accum, lora_r, loss,
    ...). Poll ``GET /api/jobs/{id}``; when done, ``result.reward_model`` is the new version."""
    from annotate.models import RewardModel
    from workers.model_training import TrainingError, training_enqueue

    export = _export(request, export_id)
    base = None
    if payload.base_reward_model_id is not None:
        base = get_object_or_404(RewardModel, pk=payload.base_reward_model_id)
    try:
        job = training_enqueue(export=export, base=base, options=payload.options)
    except TrainingError as exc:
        raise HttpError(422, str(exc)) from None
    return Status(202, job)


@router.get("/jobs/{job_id}", response=JobOut, summary="Status and progress of a job")
def job_status(request, job_id: int):
    """Training jobs are visible to the admins of the export's project."""
    from workers.models import Job

    job = get_object_or_404(Job, pk=job_id)
    export_id = (job.kwargs or {}).get("export_id")
    if export_id is None:
        raise HttpError(404, "Not Found")
    _export(request, export_id)
    return job
