"""Reads for the annotate app."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet

from annotate.models import Membership, Project


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
