"""Fixtures for the annotator queue and pages: a ranking and a pairwise project with members."""

from __future__ import annotations

import itertools
import json
import uuid
from typing import Any

import pytest

from annotate.models import Project
from tests.factories import add_member, make_project

_keys = itertools.count(1)


def new_key() -> str:
    return f"test-{next(_keys)}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def fast_passwords(settings) -> None:
    """PBKDF2 costs ~0.3 s per user on this machine; these tests do not test hashing."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def ranking_project(users) -> Project:
    """3 prompts x 4 text candidates, k = 2; ann, ann2 annotators, rev reviewer, padmin admin.

    The outsider annotates in another project.
    """
    project = make_project(name="rank-project", n_prompts=3, n_candidates=4, k=2)
    _add_members(project, users)
    return project


@pytest.fixture
def pair_project(users) -> Project:
    project = make_project(name="pair-project", mode="pairwise", n_prompts=3, k=2)
    _add_members(project, users)
    return project


def _add_members(project: Project, users: dict) -> None:
    add_member(project, users["annotator"], "annotator")
    add_member(project, users["annotator2"], "annotator")
    add_member(project, users["reviewer"], "reviewer")
    add_member(project, users["admin"], "admin")
    elsewhere = make_project(name=f"elsewhere-{project.pk}", n_prompts=1)
    add_member(elsewhere, users["outsider"], "annotator")


def post_json(client, url: str, body: Any, **extra):
    return client.post(url, data=json.dumps(body), content_type="application/json", **extra)
