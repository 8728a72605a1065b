"""Markdown is rendered and sanitised once, when a row is written; pages serve the stored HTML."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
from django.apps import apps
from django.urls import reverse

from annotate import rendering
from annotate.models import Candidate, Project, Prompt
from annotate.services import import_file
from tests.factories import add_member, make_project

pytestmark = pytest.mark.django_db

EVIL = "**Four**<script>alert(2)</script> [link](javascript:alert(3)) <img src=x onerror=alert(1)>"


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def test_it_stores_rendered_html_when_importing(tmp_path):
    path = _jsonl(
        tmp_path / "md.jsonl",
        [
            {"project": {"mode": "ranking", "candidates_per_task": 2, "instructions": "Be *kind*"}},
            {
                "id": "q1",
                "prompt": "What is `2+2`?",
                "candidates": [
                    {"id": "a", "model": "m1", "text": EVIL},
                    {"id": "b", "model": "m2", "text": "Five."},
                ],
            },
        ],
    )

    project = import_file(path=path).project

    project.refresh_from_db()
    assert project.instructions_html == "<p>Be <em>kind</em></p>"
    assert Prompt.objects.get(external_id="q1").text_html == "<p>What is <code>2+2</code>?</p>"
    evil = Candidate.objects.get(external_id="a").text_html
    assert "<strong>Four</strong>" in evil
    for bad in ("<script", "javascript:", "onerror", "<img"):
        assert bad not in evil
    assert Candidate.objects.get(external_id="b").text_html == "<p>Five.</p>"


def test_it_serves_the_next_task_without_rendering_markdown(client, users, monkeypatch):
    project = make_project(name="stored", n_prompts=1, n_candidates=4, k=1)
    project.instructions = "Rank by **accuracy**."
    project.save()
    add_member(project, users["annotator"], "annotator")
    client.force_login(users["annotator"])

    def fail(*args, **kwargs):
        raise AssertionError("markdown rendered on a request")

    monkeypatch.setattr(rendering, "_converter", fail)
    page = client.get(reverse("annotate_work", args=[project.pk]))
    fragment = client.get(
        reverse("annotate_work", args=[project.pk]), HTTP_X_REQUESTED_WITH="fetch"
    )

    assert page.status_code == 200
    assert "<strong>accuracy</strong>" in page.content.decode()
    assert fragment.status_code == 200
    assert Prompt.objects.get().text_html in fragment.content.decode()


def test_it_renders_again_when_the_text_is_saved():
    project = make_project(name="resave", n_prompts=1, n_candidates=2)
    candidate = Candidate.objects.first()
    candidate.text = "now **bold**"
    candidate.save(update_fields=["text"])
    project.instructions = "# Title"
    project.save()

    candidate.refresh_from_db()
    project.refresh_from_db()
    assert candidate.text_html == "<p>now <strong>bold</strong></p>"
    assert project.instructions_html == "<h1>Title</h1>"


def test_it_renders_on_queryset_updates_of_the_text():
    make_project(name="updated", n_prompts=2, n_candidates=2)

    Prompt.objects.update(text="*all*")

    assert set(Prompt.objects.values_list("text_html", flat=True)) == {"<p><em>all</em></p>"}


def test_it_fills_existing_rows_in_the_migration():
    project = make_project(name="old-rows", n_prompts=2, n_candidates=2)
    Project.objects.filter(pk=project.pk).update(instructions="*old*", instructions_html="")
    Prompt.objects.update(text_html="")
    Candidate.objects.update(text_html="")
    migration = importlib.import_module("annotate.migrations.0004_rendered_markdown")

    migration.fill_rendered_markdown(apps, None)

    project.refresh_from_db()
    assert project.instructions_html == "<p><em>old</em></p>"
    for row in [*Prompt.objects.all(), *Candidate.objects.all()]:
        assert row.text_html == rendering.markdown_html(row.text)
        assert row.text_html


def test_an_import_stores_plain_paragraphs_once_and_every_reader_shows_them(
    tmp_path, client, users, monkeypatch
):
    path = _jsonl(
        tmp_path / "plain.jsonl",
        [
            {"project": {"mode": "ranking", "candidates_per_task": 2, "annotators_per_task": 1}},
            {
                "id": "q1",
                "prompt": "Which answer is right?",
                "candidates": [
                    {"id": "a", "model": "m1", "text": "Plain answer one."},
                    {"id": "b", "model": "m2", "text": "An *emphatic* answer."},
                ],
            },
        ],
    )
    project = import_file(path=path).project
    add_member(project, users["annotator"], "annotator")
    client.force_login(users["annotator"])

    # As stored: "" for the plain paragraphs (the text alone), the HTML of the rest.
    assert dict(Candidate.objects.values_list("external_id", "text_html")) == {
        "a": "",
        "b": "<p>An <em>emphatic</em> answer.</p>",
    }
    assert Prompt.objects.values_list("text_html", flat=True).get() == ""
    # As read: the model, and the annotator's page, which renders no markdown on a request.
    assert Candidate.objects.get(external_id="a").text_html == "<p>Plain answer one.</p>"
    assert Prompt.objects.get().text_html == "<p>Which answer is right?</p>"
    monkeypatch.setattr(rendering, "_converter", None)
    page = client.get(reverse("annotate_work", args=[project.pk])).content.decode()
    for html in (
        "<p>Which answer is right?</p>",
        "<p>Plain answer one.</p>",
        "<p>An <em>emphatic</em> answer.</p>",
    ):
        assert html in page
