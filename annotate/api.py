"""REST API (django-ninja): token-authenticated, OpenAPI schema at ``/api/openapi.json``.

Same services as the admin and the CLI. Authenticate with ``Authorization: Bearer <key>``;
create keys with ``python manage.py create_api_token USER``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from axes.handlers.proxy import AxesProxyHandler
from django.contrib.auth.signals import user_login_failed
from django.shortcuts import get_object_or_404
from django.utils import timezone
from ninja import File, Form, NinjaAPI, Schema, Status
from ninja.errors import HttpError
from ninja.files import UploadedFile
from ninja.security import HttpBearer

from annotate import selectors
from annotate.importing import FORMATS
from annotate.models import ApiToken, ImportJob, Project
from annotate.pagination import Page, paginate
from annotate.services import api_token_digest, import_job_create, import_job_wait, upload_save
from config.security import API_TOKEN_CREDENTIALS


class TokenAuth(HttpBearer):
    def authenticate(self, request, token: str):
        # A client past the failure limit gets no more guesses, right or wrong (django-axes
        # counts the failures, with the web and admin logins': config/security.py).
        if not AxesProxyHandler.is_allowed(request, API_TOKEN_CREDENTIALS):
            raise HttpError(429, "too many failed logins from this client; try again later")
        found = (
            ApiToken.objects.select_related("user")
            .filter(digest=api_token_digest(token), user__is_active=True)
            .first()
        )
        if found is None:
            user_login_failed.send(
                sender=type(self), credentials=dict(API_TOKEN_CREDENTIALS), request=request
            )
            return None
        ApiToken.objects.filter(pk=found.pk).update(last_used_at=timezone.now())
        request.user = found.user
        return found.user


api = NinjaAPI(
    title="Quorum API",
    version="1",
    description="Import preference data, follow import jobs. Bearer-token authentication.",
    auth=TokenAuth(),
    urls_namespace="api",
)


class ProjectOut(Schema):
    id: int
    name: str
    mode: str
    candidates_per_task: int
    annotators_per_task: int
    ties_allowed: bool
    blind: bool


class ImportJobOut(Schema):
    id: int
    project_id: int | None
    status: str
    format: str
    total_rows: int
    processed_rows: int
    progress_percent: int
    counts: dict
    errors: list[str]
    created_at: datetime
    finished_at: datetime | None


class ProjectPage(Page):
    results: list[ProjectOut]


PROJECTS_MAX_LIMIT = 1000


@api.get(
    "/projects",
    response=ProjectPage,
    summary="Projects you can see (limit/offset pages, at most 1000 a page)",
)
def list_projects(request, limit: int = 100, offset: int = 0):
    projects = selectors.projects_for_user(user=request.auth).order_by("id")
    page, envelope = paginate(
        request, projects, limit=limit, offset=offset, maximum=PROJECTS_MAX_LIMIT
    )
    return {**envelope, "results": page}


def _check_format(format: str | None) -> str | None:
    if format in (None, ""):
        return None
    if format not in FORMATS:
        raise HttpError(422, f"format: unknown value {format!r} (expected {', '.join(FORMATS)})")
    return format


@api.post(
    "/projects/{project_id}/imports",
    response={201: ImportJobOut, 422: ImportJobOut},
    summary="Import a file into a project",
)
def import_into_project(
    request, project_id: int, file: File[UploadedFile], format: Form[str | None] = None
):
    project = get_object_or_404(Project, pk=project_id)
    if not selectors.user_can_manage(user=request.auth, project=project):
        raise HttpError(403, "you are not an admin of this project")
    format = _check_format(format)  # before saving: a refused request leaves no upload behind
    path = upload_save(uploaded_file=file)
    job = import_job_create(
        path=path,
        project=project,
        format=format,
        original_name=file.name,
        created_by=request.auth,
    )
    return _import_status(job)


@api.post(
    "/imports",
    response={201: ImportJobOut, 422: ImportJobOut},
    summary="Import a file into a new project",
)
def import_new_project(
    request,
    file: File[UploadedFile],
    project_name: Form[str | None] = None,
    format: Form[str | None] = None,
):
    if not request.auth.is_staff:
        raise HttpError(403, "only staff may create projects")
    if project_name and "\x00" in project_name:  # PostgreSQL refuses it (a 500)
        raise HttpError(422, "project_name: must not contain a NUL character")
    format = _check_format(format)  # before saving: a refused request leaves no upload behind
    path = upload_save(uploaded_file=file)
    job = import_job_create(
        path=path,
        project_name=project_name or "",
        format=format,
        original_name=file.name,
        created_by=request.auth,
    )
    return _import_status(job)


def _import_status(job: ImportJob) -> Status:
    """201 for an import done or under way (large files run in the background), 422 with its
    problems for one rejected at once."""
    return Status(422 if job.status == ImportJob.Status.FAILED else 201, job)


@api.get("/imports/{job_id}", response=ImportJobOut, summary="Status of an import job")
def import_status(request, job_id: int, wait: float = 0):
    """``wait`` (seconds, at most 10): answer once the job is done or failed, or after that
    long, so a client learns of the end without polling. Each waiting request holds one web
    worker."""
    job = get_object_or_404(ImportJob, pk=job_id)
    if not (request.auth.is_staff or job.created_by_id == request.auth.pk):
        raise HttpError(404, "Not Found")
    return import_job_wait(job=job, seconds=wait)


from curation.api import router as curation_router  # noqa: E402

api.add_router("/", curation_router)


# --- reward-model scores and scoring runs ---------------------------------------------------


class ScoringRunOut(Schema):
    id: int
    project_id: int
    reward_model_id: int
    status: str
    total_prompts: int
    done_prompts: int
    scored_candidates: int
    failed_candidates: int
    progress_percent: int
    reason: str
    created_at: datetime
    finished_at: datetime | None


class ScoringRunIn(Schema):
    reward_model_id: int | None = None


class ScoreOut(Schema):
    candidate: str
    prompt: str
    candidate_id: int
    prompt_id: int
    score: float | None
    error: str


class ScorePage(Page):
    results: list[ScoreOut]


SCORES_MAX_LIMIT = 10_000


def _reward_model(model_id: int):
    from annotate.models import RewardModel

    model = RewardModel.objects.filter(pk=model_id).first()
    if model is None:
        raise HttpError(422, f"reward_model_id: no reward model {model_id}")
    return model


def _project_for_scores(request, project_id: int) -> Project:
    project = get_object_or_404(Project, pk=project_id)
    role = selectors.membership_role(user=request.auth, project=project)
    if not (request.auth.is_staff or role in ("admin", "reviewer")):
        raise HttpError(403, "only the project's reviewers and admins see model scores")
    return project


@api.post(
    "/projects/{project_id}/scoring-runs",
    response={201: ScoringRunOut},
    summary="Score the project's prompts with a reward model (default: the active one)",
)
def start_scoring_run(request, project_id: int, body: ScoringRunIn):
    from workers.scoring import scoring_run_start

    project = get_object_or_404(Project, pk=project_id)
    if not selectors.user_can_manage(user=request.auth, project=project):
        raise HttpError(403, "you are not an admin of this project")
    model = None
    if body.reward_model_id is not None:
        model = _reward_model(body.reward_model_id)
    run = scoring_run_start(
        project=project, reward_model=model, reason="api", created_by=request.auth
    )
    if run is None:
        raise HttpError(422, "reward_model_id: the project has no active reward model; give one")
    return Status(201, run)


@api.get("/scoring-runs/{run_id}", response=ScoringRunOut, summary="Progress of a scoring run")
def scoring_run_status(request, run_id: int):
    from workers.models import ScoringRun

    run = get_object_or_404(ScoringRun, pk=run_id)
    _project_for_scores(request, run.project_id)
    return run


@api.get(
    "/projects/{project_id}/scores",
    response=ScorePage,
    summary="Reward-model scores of the project's candidates (reviewers and admins; "
    "limit/offset pages, at most 10000 a page)",
)
def list_scores(
    request, project_id: int, reward_model_id: int | None = None, limit: int = 1000, offset: int = 0
):
    from annotate.models import ModelScore

    project = _project_for_scores(request, project_id)
    if reward_model_id is not None:  # an unknown one (or one past the database's integers)
        reward_model_id = _reward_model(reward_model_id).pk
    model_id = reward_model_id or project.active_reward_model_id
    if model_id is None:
        raise HttpError(422, "reward_model_id: the project has no active reward model; give one")
    rows = (
        ModelScore.objects.filter(reward_model_id=model_id, candidate__project=project)
        .order_by("candidate_id")
        .values_list(
            "candidate__external_id",
            "candidate__prompt__external_id",
            "candidate_id",
            "candidate__prompt_id",
            "score",
            "error",
        )
    )
    page, envelope = paginate(request, rows, limit=limit, offset=offset, maximum=SCORES_MAX_LIMIT)
    results = [
        {"candidate": c, "prompt": p, "candidate_id": ci, "prompt_id": pi, "score": s, "error": e}
        for c, p, ci, pi, s, e in page
    ]
    return {**envelope, "results": results}


# --- judgments --------------------------------------------------------------------------------


class JudgmentOut(Schema):
    id: int
    task_id: int
    prompt_id: int
    prompt_external_id: str
    kind: str
    # The task's candidates (external ids) in slot order: a pair's outcome "a" is the first.
    candidates: list[str]
    # Tie groups of candidate external ids, best first; null for a pair.
    ranking: list[list[str]] | None
    outcome: str
    presented_order: list[str]
    # A username, or the external annotator id of an imported source.
    annotator: str
    source: str
    source_name: str
    rationale: str
    ratings: dict
    duration_ms: int | None
    created_at: datetime
    updated_at: datetime


class JudgmentPage(Page):
    results: list[JudgmentOut]


JUDGMENTS_MAX_LIMIT = 1000


@api.get(
    "/projects/{project_id}/judgments",
    response=JudgmentPage,
    summary="Every judgment of the project, oldest first (reviewers and admins; "
    "limit/offset pages, at most 1000 a page)",
)
def list_judgments(
    request, project_id: int, prompt: str | None = None, limit: int = 100, offset: int = 0
):
    """``prompt``: only the judgments on the prompt with this external id."""
    from annotate.models import Judgment, TaskCandidate

    project = get_object_or_404(Project, pk=project_id)
    role = selectors.membership_role(user=request.auth, project=project)
    if not (request.auth.is_staff or role in ("admin", "reviewer")):
        raise HttpError(403, "only the project's reviewers and admins see judgments")
    rows = Judgment.objects.filter(project=project).select_related("task__prompt", "annotator")
    if prompt is not None and "\x00" in prompt:  # PostgreSQL refuses it (a 500)
        raise HttpError(422, "prompt: must not contain a NUL character")
    if prompt is not None:
        rows = rows.filter(task__prompt__external_id=prompt)
    page, envelope = paginate(
        request, rows.order_by("id"), limit=limit, offset=offset, maximum=JUDGMENTS_MAX_LIMIT
    )
    slots: dict[int, list[int]] = {}
    external: dict[int, str] = {}
    for task_id, candidate_id, external_id in (
        TaskCandidate.objects.filter(task_id__in={j.task_id for j in page})
        .order_by("task_id", "position")
        .values_list("task_id", "candidate_id", "candidate__external_id")
    ):
        slots.setdefault(task_id, []).append(candidate_id)
        external[candidate_id] = external_id

    def name(candidate_id) -> str:
        return external.get(candidate_id, str(candidate_id))

    results = [
        {
            "id": j.pk,
            "task_id": j.task_id,
            "prompt_id": j.task.prompt_id,
            "prompt_external_id": j.task.prompt.external_id,
            "kind": j.kind,
            "candidates": [name(c) for c in slots.get(j.task_id, [])],
            "ranking": None
            if j.ranking is None
            else [[name(c) for c in group] for group in j.ranking],
            "outcome": j.outcome,
            "presented_order": [name(c) for c in j.presented_order or []],
            "annotator": j.annotator.get_username() if j.annotator else j.external_annotator,
            "source": j.source,
            "source_name": j.source_name,
            "rationale": j.rationale,
            "ratings": j.ratings or {},
            "duration_ms": j.duration_ms,
            "created_at": j.created_at,
            "updated_at": j.updated_at,
        }
        for j in page
    ]
    return {**envelope, "results": results}


# --- raw export (every judgment as stored) -------------------------------------------------


@api.get(
    "/projects/{project_id}/raw-export",
    summary="The project's judgments as stored, in an import format, as a zip with its media "
    "(reviewers and admins; streamed)",
    openapi_extra={
        "responses": {
            200: {
                "description": "A zip: data.jsonl (data.json for arena) at the top and the "
                "media it names under media/, the files `manage.py export_project` writes. "
                "POST it to /api/imports as it is to import it back.",
                "content": {"application/zip": {"schema": {"type": "string", "format": "binary"}}},
            }
        }
    },
)
def raw_export(request, project_id: int, format: Literal["quorum", "seed", "arena"] = "quorum"):
    """``format``: quorum (every prompt, candidate and judgment), seed (ranking judgments, one
    row each) or arena (pair votes)."""
    from django.http import StreamingHttpResponse

    from annotate.exporting import iter_export_zip

    project = get_object_or_404(Project, pk=project_id)
    role = selectors.membership_role(user=request.auth, project=project)
    if not (request.auth.is_staff or role in ("admin", "reviewer")):
        raise HttpError(403, "only the project's reviewers and admins see judgments")
    response = StreamingHttpResponse(
        iter_export_zip(project, format), content_type="application/zip"
    )
    name = f"quorum-{project.pk}-raw-{format}"
    response["Content-Disposition"] = f'attachment; filename="{name}.zip"'
    return response
