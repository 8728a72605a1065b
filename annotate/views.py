"""Pages of the annotate app. Thin: read through selectors, write through the work queue.

Annotator endpoints (any member of a project may annotate in it; everybody else gets 404):

- ``GET  projects/<p>/annotate/``                the annotation page (leases or resumes a task);
                                                 with ``X-Requested-With: fetch``, the task
                                                 fragment the page swaps in
- ``POST projects/<p>/assignments/<a>/submit/``  JSON judgment -> 201 (200 when replayed)
- ``POST projects/<p>/assignments/<a>/skip/``    JSON ``{"reason": ...}``
- ``GET  projects/<p>/judgments/<j>/edit/``      fragment to change the last judgment
- ``POST projects/<p>/judgments/<j>/revise/``    JSON, like submit, with ``edit_key``
- ``GET  projects/<p>/instructions/``            the project's instructions
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_POST

from annotate import queue, selectors
from annotate.models import Assignment, Judgment, Membership, Project
from annotate.services import JudgmentInvalid

JsonView = Callable[..., JsonResponse]


def _json_login_required(view: JsonView) -> JsonView:
    """Like ``login_required``, but answers 401 JSON: the caller is a fetch, not a person."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
        if not request.user.is_authenticated:
            return JsonResponse({"error": "log in first", "code": "login_required"}, status=401)
        return view(request, *args, **kwargs)

    return wrapper


def _membership_or_404(request: HttpRequest, project_id: int) -> Membership:
    membership = selectors.membership_for_annotation(user=request.user, project_id=project_id)
    if membership is None:
        raise Http404("no such project")
    return membership


def _json_body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise JudgmentInvalid("body", "must be a JSON object") from None
    if not isinstance(data, dict):
        raise JudgmentInvalid("body", "must be a JSON object")
    return data


def _page_tokens(
    assignment_id: int, task_id: int, positions: list[int] | None = None
) -> dict[int, int]:
    """Candidate pk -> the id the annotator's page shows (``selectors.candidate_tokens``)."""
    return selectors.candidate_tokens(
        assignment_id=assignment_id,
        candidate_ids=queue.task_positions(task_id) if positions is None else positions,
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(key: str) -> bool:
    return key.isascii() and key.isdigit()


def _verdict_from_page(data: dict[str, Any], tokens: dict[int, int]) -> tuple[object, object]:
    """The body's ranking and ratings with the page's candidate ids turned into database ids.

    Anything else passes through unchanged for the services to validate (a script may send
    database ids; a wrong shape is their 400).
    """
    pks = {token: pk for pk, token in tokens.items()}
    ranking, ratings = data.get("ranking"), data.get("ratings")
    if isinstance(ranking, list):
        ranking = [
            [pks.get(x, x) if _is_int(x) else x for x in group]
            if isinstance(group, list)
            else group
            for group in ranking
        ]
    if isinstance(ratings, dict):
        ratings = {
            dim: {
                str(pks[int(k)]) if _is_number(k) and int(k) in pks else k: v
                for k, v in per.items()
            }
            if isinstance(per, dict)
            else per
            for dim, per in ratings.items()
        }
    return ranking, ratings


def _verdict_for_page(judgment: Judgment) -> dict[str, Any]:
    """A judgment's ranking and ratings as its edit page names candidates."""
    tokens = _page_tokens(judgment.assignment_id, judgment.task_id)
    ranking = judgment.ranking
    if isinstance(ranking, list):
        ranking = [[tokens.get(x, x) for x in group] for group in ranking]
    ratings = {
        dim: {str(tokens.get(int(k), k)) if _is_number(k) else k: v for k, v in per.items()}
        for dim, per in (judgment.ratings or {}).items()
    }
    return {"ranking": ranking, "ratings": ratings}


def _error(exc: JudgmentInvalid | queue.QueueError) -> JsonResponse:
    if isinstance(exc, JudgmentInvalid):
        return JsonResponse({"error": str(exc), "field": exc.field}, status=400)
    return JsonResponse({"error": str(exc), "code": exc.code}, status=exc.status)


def _task_context(request: HttpRequest, project: Project) -> dict[str, Any]:
    """Leases (or resumes) the annotator's task and builds what the fragment shows."""
    assignment = queue.assignment_next(project=project, annotator=request.user)
    display = None
    if assignment is not None:
        display = selectors.task_display(
            project=project,
            task_id=assignment.task_id,
            assignment_id=assignment.pk,
            presented_order=assignment.presented_order,
        )
    return {
        "project": project,
        "assignment": assignment,
        "display": display,
        "progress": queue.annotator_progress(project=project, annotator=request.user),
        "edit": None,
    }


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    projects = selectors.projects_for_user(user=request.user).order_by("name")
    roles = dict(Membership.objects.filter(user=request.user).values_list("project_id", "role"))
    rows = [(p, roles.get(p.pk)) for p in projects]
    context: dict[str, Any] = {"rows": rows}
    if request.user.is_staff:
        from workers.jobs import jobs_status_for_staff

        context["jobs_status"] = jobs_status_for_staff()
    return render(request, "annotate/home.html", context)


def _render_task(
    request: HttpRequest, project: Project, context: dict[str, Any], status: int = 200
) -> HttpResponse:
    """The task fragment for the page's fetch; the whole page otherwise."""
    context = {**context, **_looked_up(context)}
    if request.headers.get("X-Requested-With") == "fetch":
        return render(request, "annotate/_task.html", context, status=status)
    context["instructions_html"] = mark_safe(project.instructions_html)  # sanitised when stored
    context["last_letter"] = selectors.LETTERS[project.candidates_per_task - 1]
    return render(request, "annotate/work.html", context, status=status)


def _looked_up(context: dict[str, Any]) -> dict[str, Any]:
    """The task and progress as dicts, their properties included: the template engine tries
    ``value[name]`` before ``getattr(value, name)``, so each of the fragment's ~60 lookups on a
    dataclass raised and caught a TypeError first (a sixth of the fragment's render)."""
    out: dict[str, Any] = {}
    display = context.get("display")
    if display is not None:
        out["display"] = {
            **vars(display),
            "candidates": [vars(c) for c in display.candidates],
            "has_video": display.has_video,
        }
    progress = context.get("progress")
    if progress is not None:
        out["progress"] = {**vars(progress), "remaining_label": progress.remaining_label}
    return out


@login_required
@require_GET
def work(request: HttpRequest, project_id: int) -> HttpResponse:
    """The annotation page; its task fragment alone when the page fetches the next task."""
    project = _membership_or_404(request, project_id).project
    return _render_task(request, project, _task_context(request, project))


@_json_login_required
@require_POST
def submit(request: HttpRequest, project_id: int, assignment_id: int) -> JsonResponse:
    """The membership check, the read of the task and the write share one transaction
    (``queue.judgment_submit_as``): a body that is not JSON is refused before it, and a
    missing idempotency key too, whoever asks (nothing is read for them)."""
    try:
        data = _json_body(request)

        def verdict(assignment: Assignment, positions: list[int]) -> dict[str, object]:
            tokens = _page_tokens(assignment.pk, assignment.task_id, positions)
            ranking, ratings = _verdict_from_page(data, tokens)
            return {
                "ranking": ranking,
                "choice": data.get("choice"),
                "rationale": data.get("rationale", ""),
                "ratings": ratings,
                "duration_ms": data.get("duration_ms"),
            }

        submitted = queue.judgment_submit_as(
            annotator=request.user,
            project_id=project_id,
            assignment_id=assignment_id,
            idempotency_key=data.get("idempotency_key"),
            verdict=verdict,
        )
    except (JudgmentInvalid, queue.QueueError) as exc:
        return _error(exc)
    if submitted is None:
        raise Http404("no such assignment")
    result, project = submitted
    return _saved(result, project)


@_json_login_required
@require_POST
def skip(request: HttpRequest, project_id: int, assignment_id: int) -> JsonResponse:
    assignment = _assignment_or_404(request, project_id, assignment_id)
    try:
        queue.assignment_skip(assignment=assignment, reason=_json_body(request).get("reason", ""))
    except (JudgmentInvalid, queue.QueueError) as exc:
        return _error(exc)
    return JsonResponse({"skipped": True, "next_url": reverse("annotate_work", args=[project_id])})


@login_required
@require_GET
def edit(request: HttpRequest, project_id: int, judgment_id: int) -> HttpResponse:
    judgment = _judgment_or_404(request, project_id, judgment_id)
    project = judgment.project
    editable = queue.judgment_editable(judgment=judgment, annotator=request.user)
    context = {
        "project": project,
        "assignment": judgment.assignment,
        "display": selectors.task_display(
            project=project,
            task_id=judgment.task_id,
            assignment_id=judgment.assignment_id,
            presented_order=judgment.presented_order,
        )
        if editable
        else None,
        "progress": queue.annotator_progress(project=project, annotator=request.user),
        "edit": {
            "judgment": judgment,
            "editable": editable,
            "initial": {
                "choice": _shown_choice(judgment),
                "rationale": judgment.rationale,
                **_verdict_for_page(judgment),
            },
        },
    }
    return _render_task(request, project, context, status=200 if editable else 409)


@_json_login_required
@require_POST
def revise(request: HttpRequest, project_id: int, judgment_id: int) -> JsonResponse:
    judgment = _judgment_or_404(request, project_id, judgment_id)
    try:
        data = _json_body(request)
        ranking, ratings = _verdict_from_page(
            data, _page_tokens(judgment.assignment_id, judgment.task_id)
        )
        result = queue.judgment_revise(
            judgment=judgment,
            project=judgment.project,
            annotator=request.user,
            edit_key=data.get("edit_key"),
            ranking=ranking,
            choice=data.get("choice"),
            rationale=data.get("rationale", ""),
            ratings=ratings,
            duration_ms=data.get("duration_ms"),
        )
    except (JudgmentInvalid, queue.QueueError) as exc:
        return _error(exc)
    return _saved(result, judgment.project)


@login_required
@require_GET
def instructions(request: HttpRequest, project_id: int) -> HttpResponse:
    project = _membership_or_404(request, project_id).project
    return render(
        request,
        "annotate/instructions.html",
        {"project": project, "instructions_html": mark_safe(project.instructions_html)},
    )


# --- helpers ----------------------------------------------------------------------------------


def _assignment_or_404(request: HttpRequest, project_id: int, assignment_id: int) -> Assignment:
    assignment = selectors.assignment_for_annotator(
        user=request.user, project_id=project_id, assignment_id=assignment_id
    )
    if assignment is None:
        raise Http404("no such assignment")
    return assignment


def _judgment_or_404(request: HttpRequest, project_id: int, judgment_id: int) -> Judgment:
    judgment = selectors.judgment_for_annotator(
        user=request.user, project_id=project_id, judgment_id=judgment_id
    )
    if judgment is None or judgment.assignment is None:
        raise Http404("no such judgment")
    return judgment


def _shown_choice(judgment: Judgment) -> str | None:
    if judgment.kind != Judgment.Kind.PAIR:
        return None
    return queue.pair_choice_shown(
        outcome=judgment.outcome,
        presented=judgment.presented_order,
        positions=queue.task_positions(judgment.task_id),
    )


def _saved(result: queue.SubmitResult, project: Project) -> JsonResponse:
    return JsonResponse(
        {
            "judgment_id": result.judgment.pk,
            "created": result.created,
            "next_url": reverse("annotate_work", args=[project.pk]),
            "edit_url": reverse("annotate_edit", args=[project.pk, result.judgment.pk]),
        },
        status=201 if result.created else 200,
    )
