"""Blind mode: no annotator-facing response (page, fragment, JSON, media, error) names a model."""

from __future__ import annotations

import hashlib
import re

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from annotate.models import Assignment, Candidate, Project, Prompt, Task, TaskCandidate
from annotate.services import candidate_key
from tests.annotate.conftest import new_key, post_json
from tests.factories import add_member
from tests.media_fixtures import mp4_bytes, png_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

MODELS = ["gpt-4o-2024-05-13", "Claude-3-Opus", "gemini_1.5_pro", "llava-next-34b"]
FETCH = {"HTTP_X_REQUESTED_WITH": "fetch"}


def _stored(project: Project, data: bytes, ext: str) -> str:
    digest = hashlib.sha256(data).hexdigest()
    return default_storage.save(f"p{project.pk}/{digest[:2]}/{digest}.{ext}", ContentFile(data))


def _project(*, blind: bool) -> Project:
    """Three prompts: text, image and video candidates, each from the four models."""
    project = Project.objects.create(
        name=f"blind-{blind}",
        annotators_per_task=1,
        blind=blind,
        instructions="Judge the answers, not who wrote them.",
        rubric_dimensions=["accuracy"],
    )
    for p, kind in enumerate(["text", "image", "video"]):
        prompt = Prompt.objects.create(
            project=project,
            external_id=f"q{p}",
            text=f"Question {p}",
            image=_stored(project, png_bytes((p, 9, 9)), "png"),
            metadata={"source_model": MODELS[0]},
        )
        cands = []
        for i, model in enumerate(MODELS):
            media = ""
            if kind == "image":
                media = _stored(project, png_bytes((i * 40, p, 0)), "png")
            elif kind == "video":
                media = _stored(project, mp4_bytes(frames=4, color=(i * 40, 0, p)), "mp4")
            cands.append(
                Candidate.objects.create(
                    project=project,
                    prompt=prompt,
                    external_id=f"q{p}-{i}",
                    model_name=model,
                    kind=kind,
                    text=f"Answer {i}" if kind == "text" else "",
                    media=media,
                    metadata={"model": model},
                )
            )
        task = Task.objects.create(
            project=project, prompt=prompt, candidate_key=candidate_key(c.pk for c in cands)
        )
        TaskCandidate.objects.bulk_create(
            TaskCandidate(task=task, candidate=c, position=i) for i, c in enumerate(cands)
        )
    return project


def _walk(client, project: Project) -> list[bytes]:
    """Everything an annotator's browser receives while working through the project."""
    seen: list[bytes] = []

    def keep(response) -> None:
        body = b"".join(response.streaming_content) if response.streaming else response.content
        headers = "\n".join(f"{k}: {v}" for k, v in response.items()).encode()
        seen.append(headers + b"\n\n" + body)

    def get(url: str, **extra):
        response = client.get(url, **extra)
        keep(response)
        return response

    def post(url: str, body: dict):
        response = post_json(client, url, body)
        keep(response)
        return response

    get(reverse("home"))
    page = get(reverse("annotate_work", args=[project.pk]))
    get(reverse("annotate_instructions", args=[project.pk]))
    html = page.content.decode()
    for _round in range(3):
        a = Assignment.objects.filter(task__project=project, status="leased").latest("id")
        for url in set(re.findall(r'(?:src|data-zoom-src)="(/media/[^"]+)"', html)):
            assert re.fullmatch(r"/media/p\d+/[0-9a-f]{2}/[0-9a-f]{64}\.(png|mp4)", url), url
            assert get(url).status_code == 200
            assert get(url, HTTP_RANGE="bytes=0-99").status_code == 206
        submit_url = reverse("annotate_submit", args=[project.pk, a.pk])
        bad = post(submit_url, {"idempotency_key": new_key(), "ranking": [[1, 2]]})
        assert bad.status_code == 400
        ranking = [[c] for c in a.presented_order]
        response = post(
            submit_url,
            {
                "idempotency_key": new_key(),
                "ranking": ranking,
                "ratings": {"accuracy": {str(a.presented_order[0]): 4}},
            },
        )
        assert response.status_code == 201
        saved = response.json()
        again = post(submit_url, {"idempotency_key": new_key(), "ranking": ranking})
        assert again.status_code == 409
        assert get(saved["edit_url"], **FETCH).status_code == 200
        get(saved["edit_url"])
        revise_url = reverse("annotate_revise", args=[project.pk, saved["judgment_id"]])
        revised = post(revise_url, {"edit_key": new_key(), "ranking": [a.presented_order]})
        assert revised.status_code == 201
        html = get(saved["next_url"], **FETCH).content.decode()
    get(reverse("annotate_work", args=[project.pk]))
    return seen


def _leaks(seen: list[bytes]) -> list[str]:
    found = []
    for response in seen:
        text = response.decode("latin-1").lower()
        found += [m for m in MODELS if m.lower() in text]
    return found


def test_it_never_names_a_model_to_annotators_of_a_blind_project(client, users):
    project = _project(blind=True)
    add_member(project, users["annotator"])
    client.force_login(users["annotator"])
    seen = _walk(client, project)
    assert len(seen) > 30
    assert _leaks(seen) == []


def test_it_names_the_models_when_the_project_is_not_blind(client, users):
    project = _project(blind=False)
    add_member(project, users["annotator"])
    client.force_login(users["annotator"])
    assert set(_leaks(_walk(client, project))) == set(MODELS)
