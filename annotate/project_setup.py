"""Setting up a project in Quorum's own pages: upload -> problems or preview -> settings ->
members -> start (``annotate.setup_views``).

Until "start" nothing is written to the database: the upload waits under
``DATA_DIR/uploads`` and the choices live in a *draft* (a JSON-able dict kept in the person's
session). ``project_start`` then creates the project with its settings, its members (the
importer as admin) and the import job in one transaction; an import that runs inline and fails
rolls all of it back. Its own module, not ``annotate.services``: only these pages use it, and
the importer's modules are worked on apart from it.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from django import forms
from django.conf import settings
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Q

from annotate.importing import ImportRejected, ParsedImport, Problem, parse_import
from annotate.models import ImportJob, Membership, Project, Task
from annotate.services import _SETTING_FIELDS, _project_defaults, import_job_create, import_limits

# An upload whose set-up was left unfinished this long is deleted (its session may be long gone).
STALE_UPLOAD_SECONDS = 3 * 24 * 3600
MAX_RUBRIC_DIMENSIONS = 12
MAX_DIMENSION_CHARS = 64
SAMPLE_PROMPTS = 5
# What a draft's settings hold, beside the form's fields: a file's own lease length is kept.
SETTING_KEYS = (
    "name",
    "mode",
    "candidates_per_task",
    "annotators_per_task",
    "ties_allowed",
    "blind",
    "rubric_dimensions",
    "gold_rate",
    "instructions",
    "lease_minutes",
)


class SetupRejected(Exception):
    """Starting a project failed; nothing was written. ``upload_gone``: the upload was used up
    (an import ran and failed), so the draft cannot be started again."""

    def __init__(self, problems: list[str], *, upload_gone: bool = False):
        self.problems = problems
        self.upload_gone = upload_gone
        super().__init__("; ".join(problems))


# --- upload -> preview --------------------------------------------------------------------------


def upload_preview(*, path: str | Path, original_name: str) -> dict[str, Any]:
    """Reads an uploaded import file completely, as the import will; returns its preview and
    the settings it suggests (JSON-able, for the draft).

    Raises:
        ImportRejected: with every problem of the file (the same the import would report).
    """
    parsed = parse_import(
        path,
        source_name=Path(original_name).stem or None,
        **import_limits(),
    )
    try:
        suggested = suggested_settings(parsed, name=Path(original_name).stem)
        return {"format": parsed.format, "preview": preview_of(parsed), "settings": suggested}
    finally:
        parsed.source.close()


def suggested_settings(parsed: ParsedImport, *, name: str) -> dict[str, Any]:
    """The settings a new project gets from this file: the importer's defaults for its shape,
    then the file's own ``{"project": ...}`` line, checked as the importer checks it."""
    values: dict[str, Any] = {
        "name": name[:200],
        "annotators_per_task": 3,
        "ties_allowed": True,
        "blind": True,
        "rubric_dimensions": [],
        "gold_rate": 0.0,
        "instructions": "",
        **_project_defaults(parsed),
    }
    problems = []
    for key, value in parsed.project_settings.items():
        expected = _SETTING_FIELDS.get(key)
        if expected is None:
            problems.append(Problem(1, f"project.{key}", "unknown project setting"))
            continue
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            problems.append(Problem(1, f"project.{key}", f"must be {expected.__name__}"))
            continue
        values[key] = value
    if values["mode"] not in Project.Mode.values:
        problems.append(Problem(1, "project.mode", f"unknown value {values['mode']!r}"))
    if problems:
        raise ImportRejected(problems)
    dims = values["rubric_dimensions"]
    values["rubric_dimensions"] = [d for d in dims if isinstance(d, str) and d.strip()]
    return values


def preview_of(parsed: ParsedImport) -> dict[str, Any]:
    """What a person checks before going on: counts, candidates per prompt, models, the first
    prompts with their candidates (texts cut short)."""
    sizes = [len(p.candidates) for p in parsed.prompts]
    kinds = [c.kind for p in parsed.prompts for c in p.candidates]
    models = sorted({c.model_name for p in parsed.prompts for c in p.candidates if c.model_name})
    samples = [
        {
            "external_id": p.external_id,
            "text": _cut(p.text, 300),
            "media": "image" if p.image else "video" if p.video else "",
            "candidates": [
                {"model": c.model_name, "kind": c.kind, "text": _cut(c.text, 160)}
                for c in p.candidates[:8]
            ],
            "more_candidates": max(0, len(p.candidates) - 8),
        }
        for p in parsed.prompts[:SAMPLE_PROMPTS]
    ]
    return {
        "prompts": len(parsed.prompts),
        "candidates": parsed.candidate_count,
        "judgments": parsed.judgment_count,
        "ranking_judgments": sum(
            1 for p in parsed.prompts for j in p.judgments if j.kind == "ranking"
        ),
        "media_files": len(parsed.media),
        "kinds": {kind: kinds.count(kind) for kind in sorted(set(kinds))},
        "min_candidates": min(sizes, default=0),
        "max_candidates": max(sizes, default=0),
        "models": models[:12],
        "more_models": max(0, len(models) - 12),
        "samples": samples,
    }


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- settings -----------------------------------------------------------------------------------


class ProjectSettingsForm(forms.Form):
    """The settings step. Rubric dimensions come as a list of rows (``rubric_check``)."""

    name = forms.CharField(max_length=200, label="Project name")
    mode = forms.ChoiceField(choices=Project.Mode.choices, widget=forms.RadioSelect)
    candidates_per_task = forms.IntegerField(
        min_value=2, max_value=8, label="N: candidates per task"
    )
    annotators_per_task = forms.IntegerField(
        min_value=1, max_value=100, label="k: judgments per task"
    )
    ties_allowed = forms.BooleanField(required=False, label="Annotators may mark ties")
    blind = forms.BooleanField(required=False, label="Blind: hide model names from annotators")
    gold_percent = forms.FloatField(
        min_value=0, max_value=100, label="Gold rate (% of served tasks)"
    )
    instructions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="Markdown, shown to annotators.",
    )

    def __init__(self, *args: Any, preview: dict[str, Any], **kwargs: Any):
        self.preview = preview
        super().__init__(*args, **kwargs)

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("give the project a name")
        if Project.objects.filter(name=name).exists():
            raise forms.ValidationError(f"a project named {name!r} exists already")
        return name

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        if data.get("mode") == Project.Mode.PAIRWISE:
            if data.get("candidates_per_task") not in (None, 2):
                self.add_error("candidates_per_task", "a pairwise project shows 2 candidates")
            if self.preview.get("ranking_judgments"):
                self.add_error(
                    "mode",
                    f"the file holds {self.preview['ranking_judgments']} ranking judgment(s), "
                    "which a pairwise project cannot take; choose ranking",
                )
        return data

    @classmethod
    def initial_from(cls, values: dict[str, Any]) -> dict[str, Any]:
        initial = {k: values[k] for k in cls.base_fields if k in values}
        initial["gold_percent"] = round(100 * float(values.get("gold_rate", 0.0)), 4)
        return initial

    def settings(self, rubric: list[str], lease_minutes: int | None) -> dict[str, Any]:
        data = self.cleaned_data
        values = {k: data[k] for k in SETTING_KEYS if k in data}
        values["gold_rate"] = data["gold_percent"] / 100
        values["rubric_dimensions"] = rubric
        if lease_minutes is not None:
            values["lease_minutes"] = lease_minutes
        return values


def rubric_check(rows: Iterable[str]) -> tuple[list[str], list[str]]:
    """Rubric dimensions from the page's rows: blank rows dropped, the rest trimmed.

    Returns (dimensions, errors), each error naming its row (1-based, as the page numbers them).
    """
    dims: list[str] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(rows, start=1):
        name = raw.strip()
        if not name:
            continue
        if len(name) > MAX_DIMENSION_CHARS:
            errors.append(f"Rubric row {number}: at most {MAX_DIMENSION_CHARS} characters")
        elif name.lower() in seen:
            errors.append(f"Rubric row {number}: {name!r} is already row {seen[name.lower()]}")
        else:
            seen[name.lower()] = number
            dims.append(name)
    if len(dims) > MAX_RUBRIC_DIMENSIONS:
        errors.append(f"Rubric: at most {MAX_RUBRIC_DIMENSIONS} dimensions")
    return dims, errors


# --- members ------------------------------------------------------------------------------------


def member_find(*, identifier: str) -> AbstractBaseUser:
    """The active user with this username, else with this e-mail address.

    Raises:
        ValueError: naming the identifier when nobody (or more than one person) matches.
    """
    User = get_user_model()
    identifier = identifier.strip()
    if not identifier:
        raise ValueError("enter a username or an e-mail address")
    user = User.objects.filter(username=identifier, is_active=True).first()
    if user is not None:
        return user
    if "@" in identifier:
        matches = list(User.objects.filter(email__iexact=identifier, is_active=True)[:2])
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise ValueError(f"more than one user has the e-mail {identifier!r}; use a username")
    raise ValueError(f"no user with the username or e-mail {identifier!r}")


# --- start --------------------------------------------------------------------------------------


def project_start(*, draft: dict[str, Any], user: AbstractBaseUser) -> ImportJob:
    """Creates the project with the draft's settings, the importer as its admin, the draft's
    members, and imports the upload into it.

    Small files import inline within the same transaction; large ones become a background import
    job that commits with the project (its page follows the job).

    Raises:
        SetupRejected: naming what failed; nothing was written.
    """
    values = {k: v for k, v in draft["settings"].items() if k in SETTING_KEYS}
    name = values.pop("name")
    path = Path(draft["path"])
    if not path.is_file():
        raise SetupRejected(["the uploaded file is gone; upload it again"], upload_gone=True)
    User = get_user_model()
    member_ids = [m["user_id"] for m in draft["members"]]
    users = User.objects.in_bulk(member_ids)
    missing = [m["username"] for m in draft["members"] if m["user_id"] not in users]
    if missing:
        raise SetupRejected([f"member {n!r} no longer exists; remove them" for n in missing])
    try:
        with transaction.atomic():
            if Project.objects.filter(name=name).exists():
                raise SetupRejected([f"a project named {name!r} exists already; rename it"])
            project = Project.objects.create(name=name, **values)
            Membership.objects.create(project=project, user=user, role=Membership.Role.ADMIN)
            Membership.objects.bulk_create(
                Membership(project=project, user=users[m["user_id"]], role=m["role"])
                for m in draft["members"]
                if m["user_id"] != user.pk
            )
            job = import_job_create(
                path=path,
                project=project,
                format=draft["format"],
                original_name=draft["original_name"],
                created_by=user,
            )
            if job.status == ImportJob.Status.FAILED:
                raise SetupRejected(list(job.errors), upload_gone=True)
    except IntegrityError:  # a project of that name was made meanwhile
        raise SetupRejected([f"a project named {name!r} exists already; rename it"]) from None
    return job


def project_discard_failed(*, project: Project) -> bool:
    """Deletes a project whose only import ran in the background and failed, leaving it empty
    (the set-up's one way to leave a project behind). Returns whether it was deleted."""
    with transaction.atomic():
        project = Project.objects.select_for_update().get(pk=project.pk)
        jobs = list(project.imports.values_list("status", flat=True))
        if jobs != [ImportJob.Status.FAILED] or project.prompts.exists():
            return False
        project.delete()
    return True


def uploads_prune(*, keep: Iterable[str | Path] = (), now: float | None = None) -> int:
    """Deletes upload folders older than ``STALE_UPLOAD_SECONDS`` that no unfinished import job
    and no path in ``keep`` uses: set-ups left half way keep their upload only for a while.
    Also deletes files as old in ``FILE_UPLOAD_TEMP_DIR`` (an upload is spooled there only while
    its request runs; one left there, by a process killed mid-request, is never renamed).
    Returns how many folders and spooled files were deleted."""
    cutoff = (time.time() if now is None else now) - STALE_UPLOAD_SECONDS
    deleted = 0
    spool = Path(settings.FILE_UPLOAD_TEMP_DIR) if settings.FILE_UPLOAD_TEMP_DIR else None
    if spool is not None and spool.is_dir():
        for path in spool.iterdir():
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    deleted += 1
            except FileNotFoundError:  # renamed or removed by its request meanwhile
                pass
    uploads = Path(settings.DATA_DIR) / "uploads"
    if not uploads.is_dir():
        return deleted
    in_use = {Path(p).parent.name for p in keep}
    in_use |= {
        Path(p).parent.name
        for p in ImportJob.objects.filter(
            status__in=[ImportJob.Status.PENDING, ImportJob.Status.RUNNING]
        ).values_list("source_file", flat=True)
    }
    for folder in uploads.iterdir():
        if folder.is_dir() and folder.name not in in_use and folder.stat().st_mtime < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            deleted += 1
    return deleted


# --- members of a started project ---------------------------------------------------------------


def membership_set(*, project: Project, user: AbstractBaseUser, role: str) -> bool:
    """Makes ``user`` a member with ``role`` (changing the role of a member). Returns whether
    the user was new to the project.

    Raises:
        ValueError: an unknown role, or a change that would leave the project without an admin.
    """
    if role not in Membership.Role.values:
        raise ValueError(f"unknown role {role!r}")
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)  # one change of admins at a time
        current = Membership.objects.filter(project=project, user=user).first()
        if current is None:
            Membership.objects.create(project=project, user=user, role=role)
            return True
        if current.role == Membership.Role.ADMIN and role != Membership.Role.ADMIN:
            _keep_an_admin(project, user)
        current.role = role
        current.save(update_fields=["role"])
    return False


def membership_remove(*, project: Project, user: AbstractBaseUser) -> None:
    """Removes ``user`` from the project; their judgments stay.

    Raises:
        ValueError: the user is the project's last admin.
    """
    with transaction.atomic():
        Project.objects.select_for_update().get(pk=project.pk)
        current = Membership.objects.filter(project=project, user=user).first()
        if current is None:
            return
        if current.role == Membership.Role.ADMIN:
            _keep_an_admin(project, user)
        current.delete()


def _keep_an_admin(project: Project, leaving: AbstractBaseUser) -> None:
    others = Membership.objects.filter(project=project, role=Membership.Role.ADMIN).exclude(
        user=leaving
    )
    if not others.exists():
        raise ValueError(
            f"{leaving.get_username()} is the project's only admin; make someone else admin first"
        )


# --- settings of a started project --------------------------------------------------------------

# Fixed once a project has tasks: the tasks were built for them (N candidates each, pairs or
# rankings). Everything else below may change while people annotate.
FIXED_AFTER_START = ("mode", "candidates_per_task")
EDITABLE_FIELDS = (
    "name",
    "annotators_per_task",
    "ties_allowed",
    "blind",
    "gold_rate",
    "lease_minutes",
    "prioritize_uncertain",
    "annotators_see_model_ranking",
    "rubric_dimensions",
    "instructions",
)


class ProjectEditForm(forms.Form):
    """Settings of a started project; mode and N are shown, not edited (``FIXED_AFTER_START``)."""

    name = forms.CharField(max_length=200, label="Project name")
    annotators_per_task = forms.IntegerField(
        min_value=1,
        max_value=100,
        label="k: judgments per task",
        help_text="Lowering k completes tasks that already have k judgments; raising it reopens "
        'them. Tasks given their own target ("more judgments" from review) keep it.',
    )
    gold_percent = forms.FloatField(
        min_value=0, max_value=100, label="Gold rate (% of served tasks)"
    )
    lease_minutes = forms.IntegerField(
        min_value=1,
        max_value=24 * 60,
        label="Lease (minutes)",
        help_text="How long a served task is held for its annotator before others may get it.",
    )
    ties_allowed = forms.BooleanField(
        required=False,
        label="Annotators may mark ties",
        help_text="Judgments already given keep their ties.",
    )
    blind = forms.BooleanField(required=False, label="Blind: hide model names from annotators")
    prioritize_uncertain = forms.BooleanField(
        required=False, label="Serve first the tasks the active reward model is least sure of"
    )
    annotators_see_model_ranking = forms.BooleanField(
        required=False,
        label="Show annotators the reward model's ranking (as letters; it may sway them)",
    )
    instructions = forms.CharField(
        required=False,
        widget=forms.Textarea(attrs={"rows": 8}),
        help_text="Markdown, shown to annotators.",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any):
        self.project = project
        super().__init__(*args, **kwargs)

    @classmethod
    def initial_for(cls, project: Project) -> dict[str, Any]:
        initial = {
            name: getattr(project, name) for name in cls.base_fields if name != "gold_percent"
        }
        initial["gold_percent"] = round(100 * project.gold_rate, 4)
        return initial

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        if not name:
            raise forms.ValidationError("give the project a name")
        if Project.objects.filter(name=name).exclude(pk=self.project.pk).exists():
            raise forms.ValidationError(f"a project named {name!r} exists already")
        return name

    def values(self, rubric: list[str]) -> dict[str, Any]:
        data = self.cleaned_data
        values = {k: data[k] for k in EDITABLE_FIELDS if k in data}
        values["gold_rate"] = data["gold_percent"] / 100
        values["rubric_dimensions"] = rubric
        return values


def project_settings_update(
    *, project: Project, values: dict[str, Any], user: AbstractBaseUser
) -> list[str]:
    """Applies new settings to a started project in one transaction and records the change in
    the project's admin history (``LogEntry``, what the Django admin's "History" lists).

    A new k re-decides every task that follows the project's k (``required_judgments`` unset):
    open tasks with at least k judgments complete, complete tasks with fewer reopen. Mode and N
    never change here (``FIXED_AFTER_START``).

    Returns:
        The verbose names of the fields that changed (empty: nothing was written).

    Raises:
        ValueError: a field that may not be edited, or a name another project has.
    """
    unknown = sorted(set(values) - set(EDITABLE_FIELDS))
    if unknown:
        raise ValueError(f"these settings cannot be changed on a started project: {unknown}")
    with transaction.atomic():
        current = Project.objects.select_for_update().get(pk=project.pk)
        changed = [k for k, v in values.items() if getattr(current, k) != v]
        if not changed:
            return []
        if (
            "name" in changed
            and Project.objects.filter(name=values["name"]).exclude(pk=current.pk).exists()
        ):
            raise ValueError(f"a project named {values['name']!r} exists already")
        old_k = current.annotators_per_task
        for key in changed:
            setattr(current, key, values[key])
        current.save()
        k = current.annotators_per_task
        if k != old_k:
            follows_k = Q(project=current, required_judgments__isnull=True)
            Task.objects.filter(follows_k, status=Task.Status.OPEN, judgment_count__gte=k).update(
                status=Task.Status.COMPLETE
            )
            Task.objects.filter(
                follows_k, status=Task.Status.COMPLETE, judgment_count__lt=k
            ).update(status=Task.Status.OPEN)
        labels = [str(Project._meta.get_field(key).verbose_name) for key in changed]
        LogEntry.objects.log_actions(
            user_id=user.pk,
            queryset=[current],
            action_flag=CHANGE,
            change_message=[{"changed": {"fields": labels}}],
            single_object=True,
        )
    for key in changed:
        setattr(project, key, getattr(current, key))
    project.instructions_html = current.instructions_html
    return labels
