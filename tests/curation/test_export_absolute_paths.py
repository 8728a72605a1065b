"""Exports for a local run: the download's ``base_folder`` option and ``export_local`` write
JSONL media paths absolute under the folder where the export lies, so a trainer given no base
folder finds every file."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.files.base import ContentFile
from django.core.management import CommandError, call_command
from django.urls import reverse

from annotate.models import Candidate, Prompt, Task
from annotate.services import api_token_create
from curation import services
from curation.models import DatasetExport
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project
from tests.media_fixtures import mp4_bytes, png_bytes

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


@pytest.fixture
def export(users) -> DatasetExport:
    """Image prompts with text answers (rankings/) and one prompt whose answers are a video
    and an image (rankings_multimodal/)."""
    project = make_project(n_prompts=3, n_candidates=2, k=1)
    members(project, users)
    prompts = list(Prompt.objects.filter(project=project).order_by("id"))
    for n, prompt in enumerate(prompts[:2]):
        prompt.image.save(f"q{n}.png", ContentFile(png_bytes(size=10 + n)), save=True)
    video, image = Candidate.objects.filter(prompt=prompts[2]).order_by("id")
    video.kind, video.text = "video", ""
    video.media.save("v.mp4", ContentFile(mp4_bytes(frames=4, size=16)), save=True)
    image.kind, image.text = "image", ""
    image.media.save("i.png", ContentFile(png_bytes(size=12)), save=True)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export


def _unzip(content: bytes, into: Path) -> Path:
    with zipfile.ZipFile(io.BytesIO(content)) as archive:
        archive.extractall(into)
    (root,) = into.iterdir()
    return root


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _paths(row: dict) -> list[str]:
    keys = ("image", "video", "chosen_image", "rejected_image", "chosen_video", "rejected_video")
    found = [row[k] for k in keys if row.get(k)]
    for key in ("response_images", "response_videos"):
        found += [p for p in row.get(key) or [] if p]
    return found


def _check_local(root: Path) -> int:
    """Every JSONL path is absolute and names the file the relative path names in the export
    root, the way a trainer with no base folder resolves it. Returns the paths checked."""
    checked = 0
    for path in sorted(root.glob("*/*.jsonl")):
        for row in _lines(path):
            for media in _paths(row):
                assert Path(media).is_absolute(), (path, media)
                assert Path(media).is_file(), media
                relative = Path(media).relative_to(root)
                assert relative.parts[0] == "media"
                checked += 1
    return checked


def test_it_writes_absolute_paths_under_the_base_folder_on_request(client, users, export, tmp_path):
    root = tmp_path / "local" / f"quorum-{export.project_id}-v{export.version}"
    client.force_login(users["admin"])

    response = client.get(
        reverse("curation:export_download", args=[export.pk]), {"base_folder": str(root)}
    )

    assert response.status_code == 200
    assert _unzip(b"".join(response.streaming_content), tmp_path / "local") == root
    # 2 context images (rankings/, pairs/), one video and one image answer (multimodal, pairs).
    assert _check_local(root) == 2 + 2 + 2 + 2
    (seed,) = [r for r in _lines(root / "rankings" / "train.jsonl") if r["prompt"] == "Question 0?"]
    assert seed["image"] == f"{root}/{_lines(export.path / 'rankings' / 'train.jsonl')[0]['image']}"
    # Parquet and HF keep the relative paths the datasheet describes.
    table = pq.read_table(root / "parquet" / "rankings.parquet")
    assert all(p is None or p.startswith("media/") for p in table.column("image").to_pylist())


def test_it_keeps_relative_paths_without_the_option(client, users, export, tmp_path):
    client.force_login(users["admin"])

    response = client.get(reverse("curation:export_download", args=[export.pk]))

    root = _unzip(b"".join(response.streaming_content), tmp_path / "plain")
    for folder in ("rankings", "rankings_multimodal", "pairs"):
        assert (root / folder / "train.jsonl").read_bytes() == (
            export.path / folder / "train.jsonl"
        ).read_bytes()


@pytest.mark.parametrize("base", ["relative/folder", "/data/../etc"])
def test_it_rejects_a_base_folder_that_is_not_absolute(client, users, export, base):
    client.force_login(users["admin"])

    response = client.get(
        reverse("curation:export_download", args=[export.pk]), {"base_folder": base}
    )

    assert response.status_code == 400
    assert b"base_folder" in response.content


def test_it_refuses_the_option_to_non_admins(client, users, export):
    client.force_login(users["annotator"])

    response = client.get(
        reverse("curation:export_download", args=[export.pk]), {"base_folder": "/tmp/x"}
    )

    assert response.status_code in (403, 404)


def test_it_takes_the_base_folder_through_the_api(client, users, export, tmp_path):
    _token, key = api_token_create(user=users["admin"], name="test")
    root = tmp_path / "api" / f"quorum-{export.project_id}-v{export.version}"
    headers = {"HTTP_AUTHORIZATION": f"Bearer {key}"}

    response = client.get(
        f"/api/exports/{export.pk}/download", {"base_folder": str(root)}, **headers
    )
    bad = client.get(f"/api/exports/{export.pk}/download", {"base_folder": "x"}, **headers)

    assert response.status_code == 200 and bad.status_code == 400
    _unzip(b"".join(response.streaming_content), tmp_path / "api")
    assert _check_local(root) == 8


def test_it_copies_an_export_with_absolute_paths_from_the_command_line(export, tmp_path):
    dest = tmp_path / "copy"
    out = io.StringIO()

    call_command("export_local", export.project.name, str(dest), stdout=out)

    assert f"copied to {dest}" in out.getvalue()
    assert _check_local(dest) == 8
    assert (dest / "datasheet.json").read_bytes() == (export.path / "datasheet.json").read_bytes()
    with pytest.raises(CommandError, match="not empty"):
        call_command("export_local", export.project.name, str(dest))
    with pytest.raises(CommandError, match="no built export"):
        call_command("export_local", export.project.name, str(tmp_path / "x"), export_version=9)
