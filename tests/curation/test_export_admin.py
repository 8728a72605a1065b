"""The admin's export detail page reads as a summary, not as stored JSON."""

from __future__ import annotations

import html
import re

import pytest
from django.urls import reverse

from curation import services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    disputed_ranking_project,
    fast_passwords,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


def test_the_export_detail_page_shows_options_counts_and_files_in_words(client, users):
    project, _ = disputed_ranking_project(users, n_prompts=6)
    export = services.export_create(
        project=project, options={"splits": "train=0.5,test=0.5", "seed": 3}, enqueue=False
    )
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    client.force_login(users["staff"])
    page = client.get(reverse("admin:curation_datasetexport_change", args=[export.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    text = html.unescape(re.sub(r"<[^>]+>", " ", body))
    # Options as phrases, counts as labelled numbers, files with sizes and links.
    assert "splits train 50 %, test 50 %" in text and "seed 3" in text
    counts = export.counts
    assert re.search(rf"prompts exported\s+{counts['prompts_exported']}\b", text)
    assert re.search(rf"chosen/rejected pairs\s+{counts['pairs']:,}\b", text)
    assert f"{len(export.files)} files" in text
    assert export.files[0]["path"] in text
    assert reverse("curation:export_download", args=[export.pk]) in body
    assert reverse("curation:export_datasheet", args=[export.pk]) in body
    # No stored JSON on the page: no dict or list literals, no sha256 digests, no builder id.
    assert not re.search(r"\{\s*\"|\{'|\[\{", text), text[:2000]
    assert export.files[0]["sha256"] not in text
    assert export.builder not in text or not export.builder
