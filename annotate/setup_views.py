"""Project setup pages: a staff user creates a project from an upload without the Django admin.

- ``GET|POST projects/new/``                  upload a file; its problems, or on to the preview
- ``GET      projects/new/<d>/``              the preview of draft ``d``
- ``GET|POST projects/new/<d>/settings/``     mode, N, k, ties, blind, rubric rows, gold, instructions
- ``GET|POST projects/new/<d>/members/``      add by username or e-mail with a role; remove
- ``GET|POST projects/new/<d>/start/``        the summary; POST creates the project and imports
- ``POST     projects/new/<d>/cancel/``       drops the draft and its upload
- ``GET      projects/<p>/ready/``            what was imported, who is in, what to do next
- ``POST     projects/<p>/ready/discard/``    deletes a project a failed background import left empty
- ``GET|POST projects/<p>/members/``          members of a started project (its admins, staff)
- ``GET|POST projects/<p>/settings/``         settings of a started project (its admins, staff)

Drafts live in the session of the person who uploaded (``quorum_project_drafts``): another
person, even staff, gets 404 for them; uploads of set-ups left unfinished are pruned after three
days (``project_setup.uploads_prune``, on the next upload). Only staff may create projects (403 for everybody else).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from annotate import project_setup, selectors
from annotate.importing import ImportRejected
from annotate.models import ImportJob, Membership, Project
from annotate.rendering import markdown_html
from annotate.services import upload_discard, upload_save
from annotate.wording import import_counts_text

SESSION_KEY = "quorum_project_drafts"
MAX_DRAFTS = 5
STEPS = (
    ("upload", "Upload"),
    ("preview", "Preview"),
    ("settings", "Settings"),
    ("members", "Members"),
    ("start", "Start"),
)
ROLES = Membership.Role.choices

View = Callable[..., HttpResponse]


def _staff_only(view: View) -> View:
    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.user.is_staff:
            raise PermissionDenied("only staff may create projects")
        return view(request, *args, **kwargs)

    return login_required(wrapper)


def _draft_or_404(request: HttpRequest, draft_id: str) -> dict[str, Any]:
    draft = request.session.get(SESSION_KEY, {}).get(draft_id)
    if draft is None or draft.get("owner") != request.user.pk:
        raise Http404("no such project draft")
    return draft


def _draft_save(request: HttpRequest, draft_id: str, draft: dict[str, Any]) -> None:
    drafts = request.session.get(SESSION_KEY, {})
    drafts[draft_id] = draft
    request.session[SESSION_KEY] = drafts


def _draft_drop(request: HttpRequest, draft_id: str, *, discard_upload: bool) -> None:
    drafts = request.session.get(SESSION_KEY, {})
    draft = drafts.pop(draft_id, None)
    request.session[SESSION_KEY] = drafts
    if draft is not None and discard_upload:
        upload_discard(path=draft["path"])


def _context(draft_id: str, draft: dict[str, Any], step: str, **extra: Any) -> dict[str, Any]:
    reached = draft.get("reached", "preview")
    names = [name for name, _ in STEPS]
    links = {
        "preview": reverse("setup_preview", args=[draft_id]),
        "settings": reverse("setup_settings", args=[draft_id]),
        "members": reverse("setup_members", args=[draft_id]),
        "start": reverse("setup_start", args=[draft_id]),
    }
    steps = [
        {
            "label": label,
            "current": name == step,
            "url": links.get(name) if names.index(name) <= names.index(reached) else None,
        }
        for name, label in STEPS
    ]
    return {"draft_id": draft_id, "draft": draft, "steps": steps, **extra}


def _reach(draft: dict[str, Any], step: str) -> None:
    names = [name for name, _ in STEPS]
    if names.index(step) > names.index(draft.get("reached", "preview")):
        draft["reached"] = step


@_staff_only
@require_http_methods(["GET", "POST"])
def upload(request: HttpRequest) -> HttpResponse:
    """Step 1: the file. A file with problems is listed problem by problem and not kept."""
    context = _upload_context()
    if request.method == "POST":
        uploaded = request.FILES.get("file")
        if uploaded is None:
            context["problems"] = ["choose a file to upload (.jsonl, .json or .zip)"]
            return render(request, "annotate/setup/upload.html", context, status=400)
        drafts = request.session.get(SESSION_KEY, {})
        project_setup.uploads_prune(keep=[d["path"] for d in drafts.values()])
        path = upload_save(uploaded_file=uploaded)
        try:
            found = project_setup.upload_preview(path=path, original_name=uploaded.name)
        except ImportRejected as exc:
            upload_discard(path=path)
            context["problems"] = [str(p) for p in exc.problems[:200]]
            context["more_problems"] = max(0, len(exc.problems) - 200)
            context["file_name"] = uploaded.name
            return render(request, "annotate/setup/upload.html", context, status=400)
        draft_id = secrets.token_urlsafe(9)
        drafts = request.session.get(SESSION_KEY, {})
        while len(drafts) >= MAX_DRAFTS:  # the oldest unfinished draft makes room
            _draft_drop(request, next(iter(drafts)), discard_upload=True)
            drafts = request.session.get(SESSION_KEY, {})
        _draft_save(
            request,
            draft_id,
            {
                "owner": request.user.pk,
                "path": str(path),
                "original_name": uploaded.name,
                "format": found["format"],
                "preview": found["preview"],
                "settings": found["settings"],
                "members": [],
                "reached": "preview",
            },
        )
        return HttpResponseRedirect(reverse("setup_preview", args=[draft_id]))
    return render(request, "annotate/setup/upload.html", context)


def _upload_context(**extra: Any) -> dict[str, Any]:
    return {
        "steps": [
            {"label": label, "current": name == "upload", "url": None} for name, label in STEPS
        ],
        "problems": [],
        "file_name": "",
        "max_mb": settings.QUORUM_MAX_IMPORT_BYTES // (1024 * 1024),
        **extra,
    }


@_staff_only
@require_GET
def preview(request: HttpRequest, draft_id: str) -> HttpResponse:
    draft = _draft_or_404(request, draft_id)
    return render(request, "annotate/setup/preview.html", _context(draft_id, draft, "preview"))


def _rubric_rows_posted(request: HttpRequest, *, default_action: str) -> tuple[list[str], str]:
    """The rubric rows a settings form posted, after its "Remove" or "Add dimension" button
    (which work without JavaScript), and the action: ``edit`` when a row was removed."""
    rows = request.POST.getlist("rubric_dimensions")
    action = request.POST.get("action", default_action)
    remove = request.POST.get("remove_row")
    if remove is not None and remove.isdigit() and int(remove) < len(rows):
        rows.pop(int(remove))
        action = "edit"
    elif action == "add_row":
        rows.append("")
    return rows, action


@_staff_only
@require_http_methods(["GET", "POST"])
def settings_step(request: HttpRequest, draft_id: str) -> HttpResponse:
    """Step 3. Buttons without JavaScript: "Add dimension" and "Remove" re-render the rows,
    "Preview" renders the instructions; "Continue" checks everything and saves to the draft."""
    draft = _draft_or_404(request, draft_id)
    values = draft["settings"]
    rubric_errors: list[str] = []
    if request.method == "POST":
        form = project_setup.ProjectSettingsForm(request.POST, preview=draft["preview"])
        rows, action = _rubric_rows_posted(request, default_action="continue")
        if action == "continue":
            dims, rubric_errors = project_setup.rubric_check(rows)
            if form.is_valid() and not rubric_errors:
                draft["settings"] = form.settings(dims, values.get("lease_minutes"))
                _reach(draft, "members")
                _draft_save(request, draft_id, draft)
                return HttpResponseRedirect(reverse("setup_members", args=[draft_id]))
        instructions = request.POST.get("instructions", "")
        status = 400 if action == "continue" else 200
    else:
        form = project_setup.ProjectSettingsForm(
            initial=project_setup.ProjectSettingsForm.initial_from(values),
            preview=draft["preview"],
        )
        rows = list(values.get("rubric_dimensions", []))
        instructions = values.get("instructions", "")
        status = 200
    if not rows or rows[-1].strip():
        rows.append("")  # always one empty row to type into
    context = _context(
        draft_id,
        draft,
        "settings",
        form=form,
        rubric_rows=rows,
        rubric_errors=rubric_errors,
        instructions_preview=mark_safe(markdown_html(instructions)),  # sanitised by the renderer
        max_rubric=project_setup.MAX_RUBRIC_DIMENSIONS,
    )
    return render(request, "annotate/setup/settings.html", context, status=status)


@_staff_only
@require_http_methods(["GET", "POST"])
def members(request: HttpRequest, draft_id: str) -> HttpResponse:
    """Step 4. The importer is the project's admin whatever is chosen here."""
    draft = _draft_or_404(request, draft_id)
    if draft.get("reached") not in ("members", "start"):
        return HttpResponseRedirect(reverse("setup_settings", args=[draft_id]))
    error = ""
    identifier = ""
    role = Membership.Role.ANNOTATOR
    if request.method == "POST":
        if "remove" in request.POST:
            keep = [m for m in draft["members"] if str(m["user_id"]) != request.POST["remove"]]
            draft["members"] = keep
            _draft_save(request, draft_id, draft)
            return HttpResponseRedirect(reverse("setup_members", args=[draft_id]))
        identifier = request.POST.get("identifier", "").strip()
        role = request.POST.get("role", "")
        try:
            if role not in Membership.Role.values:
                raise ValueError(f"unknown role {role!r}")
            user = project_setup.member_find(identifier=identifier)
            if user.pk == request.user.pk:
                raise ValueError("you are this project's admin already")
        except ValueError as exc:
            error = str(exc)
        else:
            others = [m for m in draft["members"] if m["user_id"] != user.pk]
            changed = len(others) != len(draft["members"])
            draft["members"] = [
                *others,
                {"user_id": user.pk, "username": user.get_username(), "role": role},
            ]
            _draft_save(request, draft_id, draft)
            messages.success(
                request,
                f"{user.get_username()} {'is now' if changed else 'added as'} {role}.",
            )
            return HttpResponseRedirect(reverse("setup_members", args=[draft_id]))
    context = _context(
        draft_id,
        draft,
        "members",
        roles=ROLES,
        error=error,
        identifier=identifier,
        role=role,
    )
    return render(request, "annotate/setup/members.html", context, status=400 if error else 200)


@_staff_only
@require_http_methods(["GET", "POST"])
def start(request: HttpRequest, draft_id: str) -> HttpResponse:
    """Step 5: the summary; POST creates the project (``project_setup.project_start``)."""
    draft = _draft_or_404(request, draft_id)
    if draft.get("reached") not in ("members", "start"):
        return HttpResponseRedirect(reverse("setup_settings", args=[draft_id]))
    problems: list[str] = []
    if request.method == "POST":
        try:
            job = project_setup.project_start(draft=draft, user=request.user)
        except project_setup.SetupRejected as exc:
            problems = exc.problems
            if exc.upload_gone:
                _draft_drop(request, draft_id, discard_upload=True)
                context = _upload_context(
                    problems=problems, file_name=draft["original_name"], start_failed=True
                )
                return render(request, "annotate/setup/upload.html", context, status=400)
        else:
            _draft_drop(request, draft_id, discard_upload=False)
            return HttpResponseRedirect(reverse("setup_ready", args=[job.project_id]))
    else:
        _reach(draft, "start")
        _draft_save(request, draft_id, draft)
    context = _context(
        draft_id,
        draft,
        "start",
        problems=problems,
        instructions_preview=mark_safe(markdown_html(draft["settings"].get("instructions", ""))),
        mode_label=Project.Mode(draft["settings"]["mode"]).label,
        gold_percent=round(100 * draft["settings"].get("gold_rate", 0.0), 2),
    )
    return render(request, "annotate/setup/start.html", context, status=400 if problems else 200)


@_staff_only
@require_POST
def cancel(request: HttpRequest, draft_id: str) -> HttpResponse:
    _draft_or_404(request, draft_id)
    _draft_drop(request, draft_id, discard_upload=True)
    messages.info(request, "Project set-up cancelled; the upload was deleted.")
    return HttpResponseRedirect(reverse("home"))


@login_required
@require_GET
def ready(request: HttpRequest, project_id: int) -> HttpResponse:
    """After "start": the import (live while it runs), the members, the next steps. For the
    project's admins and staff; 404 for everybody else."""
    project = get_object_or_404(Project, pk=project_id)
    if not selectors.user_can_manage(user=request.user, project=project):
        raise Http404("no such project")
    job = ImportJob.objects.filter(project=project).order_by("pk").first()
    member_rows = (
        Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("role", "user__username")
    )
    context = {
        "project": project,
        "job": job,
        "discardable": job is not None
        and job.status == ImportJob.Status.FAILED
        and not project.prompts.exists(),
        "counts_text": import_counts_text(job.counts) if job and job.counts else "",
        "members": member_rows,
        "live": job is not None
        and job.status in (ImportJob.Status.PENDING, ImportJob.Status.RUNNING),
    }
    return render(request, "annotate/setup/ready.html", context)


@login_required
@require_POST
def discard(request: HttpRequest, project_id: int) -> HttpResponse:
    """Deletes a project left empty by a failed background import (``ready`` offers it)."""
    project = get_object_or_404(Project, pk=project_id)
    if not selectors.user_can_manage(user=request.user, project=project):
        raise Http404("no such project")
    if not project_setup.project_discard_failed(project=project):
        messages.error(request, "Only a project left empty by a failed import can be deleted here.")
        return HttpResponseRedirect(reverse("setup_ready", args=[project.pk]))
    messages.info(request, f"Project {project.name!r} deleted; nothing of it is left.")
    return HttpResponseRedirect(reverse("home"))


@login_required
@require_http_methods(["GET", "POST"])
def project_members(request: HttpRequest, project_id: int) -> HttpResponse:
    """Members of a started project: add by username or e-mail with a role, change a role,
    remove. For the project's admins and staff; 404 for everybody else. A project always keeps
    an admin."""
    project = get_object_or_404(Project, pk=project_id)
    if not selectors.user_can_manage(user=request.user, project=project):
        raise Http404("no such project")
    error = ""
    identifier = request.POST.get("identifier", "").strip()
    role = request.POST.get("role", Membership.Role.ANNOTATOR)
    if request.method == "POST":
        try:
            if "remove" in request.POST:
                member = get_object_or_404(
                    Membership, project=project, user_id=request.POST["remove"]
                )
                project_setup.membership_remove(project=project, user=member.user)
                note = f"{member.user.get_username()} removed; their judgments stay."
            else:
                user = project_setup.member_find(identifier=identifier)
                added = project_setup.membership_set(project=project, user=user, role=role)
                note = f"{user.get_username()} {'added as' if added else 'is now'} {role}."
        except ValueError as exc:
            error = str(exc)
        else:
            messages.success(request, note)
            return HttpResponseRedirect(reverse("setup_project_members", args=[project.pk]))
    context = {
        "project": project,
        "members": Membership.objects.filter(project=project)
        .select_related("user")
        .order_by("role", "user__username"),
        "roles": ROLES,
        "error": error,
        "identifier": identifier if error else "",
        "role": role,
    }
    return render(
        request, "annotate/setup/project_members.html", context, status=400 if error else 200
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_settings(request: HttpRequest, project_id: int) -> HttpResponse:
    """Settings of a started project (``project_setup.project_settings_update``): everything but
    mode and N, which its tasks were built for. Rubric rows and the instructions preview work
    without JavaScript, as in the set-up's settings step. For the project's admins and staff;
    404 for everybody else."""
    project = get_object_or_404(Project, pk=project_id)
    if not selectors.user_can_manage(user=request.user, project=project):
        raise Http404("no such project")
    rubric_errors: list[str] = []
    error = ""
    status = 200
    if request.method == "POST":
        form = project_setup.ProjectEditForm(request.POST, project=project)
        rows, action = _rubric_rows_posted(request, default_action="save")
        if action == "save":
            dims, rubric_errors = project_setup.rubric_check(rows)
            if form.is_valid() and not rubric_errors:
                try:
                    changed = project_setup.project_settings_update(
                        project=project, values=form.values(dims), user=request.user
                    )
                except ValueError as exc:
                    error = str(exc)
                else:
                    if changed:
                        messages.success(request, f"Saved: {', '.join(changed)}.")
                    else:
                        messages.info(request, "Nothing changed.")
                    return HttpResponseRedirect(
                        reverse("setup_project_settings", args=[project.pk])
                    )
            status = 400
        instructions = request.POST.get("instructions", "")
    else:
        form = project_setup.ProjectEditForm(
            initial=project_setup.ProjectEditForm.initial_for(project), project=project
        )
        rows = list(project.rubric_dimensions)
        instructions = project.instructions
    if not rows or rows[-1].strip():
        rows.append("")
    context = {
        "project": project,
        "form": form,
        "error": error,
        "rubric_rows": rows,
        "rubric_errors": rubric_errors,
        "instructions_preview": mark_safe(markdown_html(instructions)),  # sanitised
        "max_rubric": project_setup.MAX_RUBRIC_DIMENSIONS,
        "has_judgments": project.judgments.exists(),
    }
    return render(request, "annotate/setup/project_settings.html", context, status=status)
