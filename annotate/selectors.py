"""Reads for the annotate app."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.db.models import QuerySet
from django.urls import reverse
from django.utils.crypto import salted_hmac
from django.utils.safestring import SafeString, mark_safe

from annotate.models import (
    Assignment,
    Candidate,
    Judgment,
    Membership,
    ModelScore,
    Project,
    Task,
    TaskCandidate,
)
from annotate.prepared_queries import PreparedQuery, loaded
from annotate.rendering import html_or_rendered


def projects_for_user(*, user: AbstractBaseUser) -> QuerySet[Project]:
    """Projects a user may see: all for staff, else those they are a member of."""
    if user.is_staff:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()


def membership_role(*, user: AbstractBaseUser, project: Project) -> str | None:
    if not user.is_authenticated:
        return None
    return (
        Membership.objects.filter(user=user, project=project).values_list("role", flat=True).first()
    )


def user_can_manage(*, user: AbstractBaseUser, project: Project) -> bool:
    """Staff, or an admin member of the project."""
    return bool(user.is_staff or membership_role(user=user, project=project) == "admin")


# --- annotator task pages (appended for the annotator UI) ---------------------------------

LETTERS = "ABCDEFGH"


@dataclass(frozen=True)
class CandidateDisplay:
    letter: str
    # The page's id for the candidate: ``candidate_token``, not the database id.
    candidate_id: int
    kind: str
    text_html: SafeString
    media_url: str
    model_name: str  # empty in blind projects


@dataclass(frozen=True)
class TaskDisplay:
    assignment_id: int
    prompt_html: SafeString
    prompt_image_url: str
    prompt_video_url: str
    candidates: list[CandidateDisplay]
    # Letters best first by the active reward model; only where the project shows it.
    model_ranking: tuple[str, ...] = ()

    @property
    def has_video(self) -> bool:
        return any(c.kind == Candidate.Kind.VIDEO and c.media_url for c in self.candidates)


def _media_url(name: str) -> str:
    # Media names are content-addressed (``p{project}/ab/<sha256>.ext``): no model or file name.
    return reverse("media", kwargs={"path": name}) if name else ""


def candidate_tokens(*, assignment_id: int, candidate_ids: Iterable[int]) -> dict[int, int]:
    """The ids an annotator's page gives candidates, by database id: opaque, per assignment.

    Database ids follow the import file's order, so sorting a page's ids would tell which source
    (model) each candidate of a blind project came from. A keyed hash of the assignment and the
    candidate carries no order and differs between assignments. 48 bits with the top one set:
    an exact JavaScript Number, and never equal to a database id.
    """
    return {
        pk: int.from_bytes(
            salted_hmac("quorum.candidate-token", f"{assignment_id}:{pk}").digest()[:6], "big"
        )
        | 1 << 47
        for pk in candidate_ids
    }


def task_display(
    *, project: Project, task_id: int, assignment_id: int, presented_order: list[int]
) -> TaskDisplay:
    """What an annotator sees of a task, candidates in the order presented to them.

    One query. Model names are left out of blind projects here, so no template can show them;
    nothing marks a gold task.
    """
    slots = _SLOTS.rows(task_id=task_id)
    if not slots:
        raise Task.DoesNotExist(f"task {task_id} has no candidates")
    by_id = {row[0]: row for row in slots}
    order = [c for c in presented_order if c in by_id] or [row[0] for row in slots]
    _, _, _, _, _, prompt_html, prompt_image, prompt_video, _, prompt_text = slots[0]
    tokens = candidate_tokens(assignment_id=assignment_id, candidate_ids=order)
    candidates = [
        CandidateDisplay(
            letter=LETTERS[i],
            candidate_id=tokens[pk],
            kind=kind,
            # Sanitised when stored, or rendered here (a plain paragraph left "" by an import).
            text_html=mark_safe(html_or_rendered(text_html, text)),
            media_url=_media_url(media),
            model_name="" if project.blind else model_name,
        )
        for i, (pk, kind, text_html, media, model_name, *_, text, _) in enumerate(
            by_id[c] for c in order
        )
    ]
    return TaskDisplay(
        assignment_id=assignment_id,
        prompt_html=mark_safe(html_or_rendered(prompt_html, prompt_text)),
        prompt_image_url=_media_url(prompt_image),
        prompt_video_url=_media_url(prompt_video),
        candidates=candidates,
        model_ranking=_model_ranking(
            project, [(c.letter, pk) for c, pk in zip(candidates, order, strict=True)]
        ),
    )


def _slots_query(*, task_id: int) -> QuerySet:
    return (
        TaskCandidate.objects.filter(task_id=task_id)
        .order_by("position")
        .values_list(
            "candidate_id",
            "candidate__kind",
            "candidate__text_html",
            "candidate__media",
            "candidate__model_name",
            "task__prompt__text_html",
            "task__prompt__image",
            "task__prompt__video",
            # Read only to render a plain paragraph stored as "" (html_or_rendered).
            "candidate__text",
            "task__prompt__text",
        )
    )


# Every next-task request shows a task: compiled once per process.
_SLOTS = PreparedQuery(_slots_query, task_id="id")


def _model_ranking(project: Project, letters: list[tuple[str, int]]) -> tuple[str, ...]:
    """The active reward model's order as letters (from (letter, candidate pk) pairs); one
    query, and only when the project lets annotators see it (reviewers always see it in the
    review queue)."""
    if not (project.annotators_see_model_ranking and project.active_reward_model_id):
        return ()
    scores = dict(
        ModelScore.objects.filter(
            reward_model_id=project.active_reward_model_id,
            candidate_id__in=[pk for _, pk in letters],
            score__isnull=False,
        ).values_list("candidate_id", "score")
    )
    ranked = sorted((x for x in letters if x[1] in scores), key=lambda x: -scores[x[1]])
    return tuple(letter for letter, _ in ranked)


def membership_for_annotation(*, user: AbstractBaseUser, project_id: int) -> Membership | None:
    """The user's membership (with its project) when they may annotate there: any role.

    Every next task asks: the query is compiled once (``PreparedQuery``), the instances are
    built as the ORM builds them (``loaded``)."""
    if not user.is_authenticated:
        return None
    low, high = connection.ops.integer_field_range(Membership._meta.pk.get_internal_type())
    if not low <= project_id <= high:  # no such row; the ORM answers so without asking
        return None
    rows = _MEMBERSHIP.named_rows(project_id=project_id, user_id=user.pk)
    if not rows:
        return None
    membership = loaded(Membership, rows[0])
    membership.project = loaded(Project, rows[0])
    return membership


def _membership_query(*, project_id: int, user_id: int) -> QuerySet:
    return (
        Membership.objects.select_related("project")
        .filter(project_id=project_id, user_id=user_id)
        .order_by("pk")[:1]
    )


_MEMBERSHIP = PreparedQuery(_membership_query, project_id="id", user_id="id")


def assignment_for_annotator(
    *, user: AbstractBaseUser, project_id: int, assignment_id: int
) -> Assignment | None:
    """An assignment of this user in a project they are still a member of."""
    return (
        Assignment.objects.select_related("task__project")
        .filter(
            pk=assignment_id,
            annotator=user,
            task__project_id=project_id,
            task__project__memberships__user=user,
        )
        .first()
    )


def judgment_for_annotator(
    *, user: AbstractBaseUser, project_id: int, judgment_id: int
) -> Judgment | None:
    """A judgment this user made in a project they are still a member of."""
    return (
        Judgment.objects.select_related("assignment", "project")
        .filter(
            pk=judgment_id,
            annotator=user,
            project_id=project_id,
            project__memberships__user=user,
        )
        .first()
    )
