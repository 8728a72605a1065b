"""Round trip: an export (its zip, or a JSONL file where it lies in the unpacked export) imports
back into a new project, media candidates come back as media, and exporting that project again
gives the same rankings. Rankings are compared by content (answer text, media bytes), read the
way consumers read them: Parquet through pyarrow, JSONL line by line, paths under the export
root."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from django.core.files.base import ContentFile
from django.urls import reverse

from annotate.importing import ImportRejected
from annotate.media_metadata import strip_metadata
from annotate.models import Candidate, Judgment, Project, Prompt, Task
from annotate.services import import_file
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


def _build(project: Project) -> DatasetExport:
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export


def _download(client, user, export: DatasetExport, tmp_path: Path) -> Path:
    client.force_login(user)
    response = client.get(reverse("curation:export_download", args=[export.pk]))
    assert response.status_code == 200
    path = tmp_path / f"export-{export.pk}.zip"
    path.write_bytes(b"".join(response.streaming_content))
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def _rankings(root: Path, *, with_models: bool = True) -> dict:
    """Per prompt (text, context media bytes): {(answer content, model): rank}, from the
    export's rankings table; media paths resolve under the export root."""
    out = {}
    for row in pq.read_table(root / "parquet" / "rankings.parquet").to_pylist():
        context = [_digest(root / row[k]) for k in ("image", "video") if row[k]]
        answers = {}
        for i, rank in enumerate(row["rankings"]):
            kind = row["response_kinds"][i]
            if kind == "text":
                content = ("text", row["responses"][i])
            else:
                assert row["responses"][i] == ""
                content = (kind, _digest(root / row[f"response_{kind}s"][i]))
            answers[content + ((row["models"][i],) if with_models else ())] = rank
        out[(row["prompt"], *context)] = answers
    return out


def _judge(project: Project, users) -> None:
    """Two annotators who disagree on the lower places; the first ranks a tie."""
    annotators = members(project, users)
    for task in Task.objects.filter(project=project).order_by("id"):
        ids = slots(task)
        judge_ranking(task, annotators[0], [[ids[0]], ids[1:]])
        judge_ranking(task, annotators[1], [[c] for c in ids])


def _vqa_project(users) -> Project:
    """Text answers to image prompts."""
    project = make_project(n_prompts=2, n_candidates=3, k=2)
    for n, prompt in enumerate(Prompt.objects.filter(project=project).order_by("id")):
        prompt.image.save(f"q{n}.png", ContentFile(png_bytes(size=10 + n)), save=True)
    _judge(project, users)
    return project


def _media_project(users, kind: str) -> Project:
    """Text-to-image or text-to-video: every candidate is a distinct media file."""
    project = make_project(n_prompts=2, n_candidates=3, k=2)
    for n, cand in enumerate(Candidate.objects.filter(project=project).order_by("id")):
        cand.kind, cand.text = kind, ""
        if kind == "image":
            cand.media.save(f"c{n}.png", ContentFile(png_bytes(size=8 + n)), save=True)
        else:
            data = mp4_bytes(frames=4, size=16, color=(20 * n, 40, 200 - 20 * n))
            data = strip_metadata(data, "mp4")  # as an import stores every video
            cand.media.save(f"c{n}.mp4", ContentFile(data), save=True)
    _judge(project, users)
    return project


KINDS = {
    "text answers to image prompts": lambda users: _vqa_project(users),
    "text-to-image": lambda users: _media_project(users, "image"),
    "text-to-video": lambda users: _media_project(users, "video"),
}


@pytest.mark.parametrize("kind", KINDS)
def test_it_imports_an_export_zip_back_with_the_same_rankings(client, users, tmp_path, kind):
    project = KINDS[kind](users)
    first = _build(project)
    zipped = _download(client, users["admin"], first, tmp_path)

    result = import_file(path=zipped, project_name="round-trip")

    again = _build(result.project)
    expected = _rankings(first.path)
    assert len(expected) == 2 and all(len(r) == 3 for r in expected.values())
    assert sorted(r for rows in expected.values() for r in rows.values()) != [1] * 6
    assert _rankings(again.path) == expected
    assert result.counts["judgments"] == 2
    # The ids travel too: a trainer's prompt_id and candidate ids mean the same thing.
    ids = {c.external_id for c in Candidate.objects.filter(project=result.project)}
    assert ids == {c.external_id for c in Candidate.objects.filter(project=project)}
    prompts = Prompt.objects.filter(project=result.project)
    assert {p.metadata["split"] for p in prompts} == {"train"}


@pytest.mark.parametrize("kind", ["image", "video"])
def test_it_brings_media_candidates_back_as_media(client, users, tmp_path, kind):
    project = _media_project(users, kind)
    zipped = _download(client, users["admin"], _build(project), tmp_path)

    imported = import_file(path=zipped, project_name="round-trip").project

    originals = {c.external_id: c for c in Candidate.objects.filter(project=project)}
    for cand in Candidate.objects.filter(project=imported):
        assert (cand.kind, cand.text) == (kind, "")
        assert cand.media.read() == originals[cand.external_id].media.read()
        assert cand.model_name == originals[cand.external_id].model_name


def test_it_imports_an_export_zip_twice_without_creating_anything(client, users, tmp_path):
    zipped = _download(client, users["admin"], _build(_vqa_project(users)), tmp_path)
    import_file(path=zipped, project_name="round-trip")

    second = import_file(path=zipped, project_name="round-trip")

    written = ("prompts", "candidates", "tasks", "judgments")
    assert [second.counts[k] for k in written] == [0, 0, 0, 0]
    assert Judgment.objects.filter(project=second.project).count() == 2


def _unpack(zipped: Path, into: Path) -> Path:
    with zipfile.ZipFile(zipped) as archive:
        archive.extractall(into)
    (root,) = into.iterdir()
    return root


@pytest.mark.parametrize(
    ("kind", "folder"),
    [
        ("text answers to image prompts", "rankings"),
        ("text-to-image", "rankings_multimodal"),
        ("text-to-video", "rankings_multimodal"),
    ],
)
def test_it_imports_an_exports_jsonl_where_it_lies(client, users, tmp_path, kind, folder):
    first = _build(KINDS[kind](users))
    root = _unpack(_download(client, users["admin"], first, tmp_path), tmp_path / "unpacked")

    result = import_file(path=root / folder / "train.jsonl", project_name="round-trip")

    again = _build(result.project)
    assert _rankings(again.path, with_models=False) == _rankings(first.path, with_models=False)
    assert result.counts["prompts"] == 2


def test_it_rejects_an_exports_jsonl_whose_media_is_missing(client, users, tmp_path):
    first = _build(_media_project(users, "image"))
    root = _unpack(_download(client, users["admin"], first, tmp_path), tmp_path / "unpacked")
    row = json.loads((root / "rankings_multimodal" / "train.jsonl").read_text().splitlines()[0])
    (root / row["response_images"][0]).unlink()

    with pytest.raises(ImportRejected, match=r"response_images\[0\].*missing file"):
        import_file(path=root / "rankings_multimodal" / "train.jsonl", project_name="round-trip")
    assert not Project.objects.filter(name="round-trip").exists()


def test_it_resolves_a_copied_exports_jsonl_beside_its_data_file_as_before(users, tmp_path):
    """Outside an export a seed file's media stay relative to the file itself."""
    folder = tmp_path / "plain"
    (folder / "media").mkdir(parents=True)
    (folder / "media" / "q.png").write_bytes(png_bytes())
    line = {"prompt": "What?", "responses": ["a", "b"], "rankings": [2, 1], "image": "media/q.png"}
    data = folder / "rankings" / "train.jsonl"
    data.parent.mkdir()
    data.write_text(json.dumps(line) + "\n")

    with pytest.raises(ImportRejected, match="missing file"):
        import_file(path=data, project_name="plain")
    (folder / "rankings" / "media").mkdir()
    (folder / "rankings" / "media" / "q.png").write_bytes(png_bytes())
    assert import_file(path=data, project_name="plain").counts["prompts"] == 1


def test_it_rejects_a_media_response_without_its_path(users, tmp_path):
    line = {
        "prompt": "A cube",
        "responses": ["", "a drawing"],
        "response_kinds": ["image", "text"],
        "response_images": [None, None],
        "rankings": [1, 2],
    }
    data = tmp_path / "rows.jsonl"
    data.write_text(json.dumps(line) + "\n")

    with pytest.raises(ImportRejected, match=r"response_images\[0\].*needs a path"):
        import_file(path=data, project_name="bad")


def test_it_names_an_exports_missing_rankings_table(users, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("x/datasheet.json", json.dumps({"format": "quorum-dataset-export/2"}))
        archive.writestr("x/rankings/train.jsonl", "")
    (tmp_path / "x.zip").write_bytes(buf.getvalue())

    with pytest.raises(ImportRejected, match="without parquet/rankings.parquet"):
        import_file(path=tmp_path / "x.zip", project_name="bad")


def test_it_counts_an_export_zips_rankings_for_an_import_job(client, users, tmp_path):
    from annotate.models import ImportJob
    from annotate.services import import_job_create

    zipped = _download(client, users["admin"], _build(_vqa_project(users)), tmp_path)

    job = import_job_create(path=zipped, project_name="round-trip", run_async=False)

    assert (job.status, job.total_rows) == (ImportJob.Status.DONE, 2)
    assert Judgment.objects.filter(project__name="round-trip").count() == 2


def test_it_refuses_an_exports_rankings_table_over_the_data_limit(users, tmp_path, settings):
    settings.QUORUM_MAX_DATA_BYTES = 1000
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as archive:
        archive.writestr("x/datasheet.json", json.dumps({"format": "quorum-dataset-export/2"}))
        archive.writestr("x/parquet/rankings.parquet", b"\0" * 2000)
    (tmp_path / "x.zip").write_bytes(buf.getvalue())

    with pytest.raises(ImportRejected, match="over the data file limit of 1000"):
        import_file(path=tmp_path / "x.zip", project_name="big")
