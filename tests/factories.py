"""Small builders for test data, written through the ORM (fast) or the import service."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from django.contrib.auth import get_user_model

from annotate.models import Candidate, Membership, Project, Prompt, Task, TaskCandidate
from annotate.services import candidate_key

_counter = itertools.count(1)


def make_user(username: str | None = None, *, staff: bool = False, password: str = "pw-quorum-1"):
    User = get_user_model()
    username = username or f"user{next(_counter)}"
    user = User.objects.create_user(
        username=username, password=password, is_staff=staff, is_superuser=staff
    )
    return user


def make_project(
    *,
    name: str | None = None,
    mode: str = "ranking",
    n_prompts: int = 3,
    n_candidates: int = 4,
    k: int = 2,
    blind: bool = True,
    ties_allowed: bool = True,
    models: list[str] | None = None,
) -> Project:
    """A project with prompts, text candidates and one task per prompt (all candidates)."""
    n = 2 if mode == "pairwise" else n_candidates
    project = Project.objects.create(
        name=name or f"project-{next(_counter)}",
        mode=mode,
        candidates_per_task=n,
        annotators_per_task=k,
        blind=blind,
        ties_allowed=ties_allowed,
    )
    models = models or [f"model-{chr(ord('a') + i)}" for i in range(n)]
    for p in range(n_prompts):
        prompt = Prompt.objects.create(project=project, external_id=f"p{p}", text=f"Question {p}?")
        cands = [
            Candidate.objects.create(
                project=project,
                prompt=prompt,
                external_id=f"p{p}-c{i}",
                model_name=models[i % len(models)],
                text=f"Answer {i} to question {p}",
            )
            for i in range(n)
        ]
        task = Task.objects.create(
            project=project, prompt=prompt, candidate_key=candidate_key(c.pk for c in cands)
        )
        TaskCandidate.objects.bulk_create(
            TaskCandidate(task=task, candidate=c, position=i) for i, c in enumerate(cands)
        )
    return project


def add_member(project: Project, user, role: str = "annotator") -> Membership:
    return Membership.objects.create(project=project, user=user, role=role)


def write_pair_rows(path: Path, count: int) -> Path:
    """An import file of ``count`` rows ``p0..``: one prompt and candidates "a" and "b" each."""
    path.write_text(
        "".join(
            json.dumps(
                {
                    "id": f"p{i}",
                    "prompt": "Which is better?",
                    "candidates": [{"id": f"p{i}-{c}", "model": c, "text": c} for c in "ab"],
                }
            )
            + "\n"
            for i in range(count)
        )
    )
    return path
