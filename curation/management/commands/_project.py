"""Shared lookup for curation commands: a project by name, or by id."""

from __future__ import annotations

from django.core.management.base import CommandError

from annotate.models import Project


def project_by_name_or_id(value: str) -> Project:
    project = Project.objects.select_related("active_reward_model").filter(name=value).first()
    if project is None and value.isdigit():
        project = (
            Project.objects.select_related("active_reward_model").filter(pk=int(value)).first()
        )
    if project is None:
        raise CommandError(f"no project named {value!r} (nor with that id)")
    return project
