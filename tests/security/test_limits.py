"""Limits: request bodies, text fields, unpacked data files, pixels, and uploads left behind."""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from annotate.importing import ImportRejected
from annotate.services import api_token_create, import_file
from tests.factories import make_user
from tests.media_fixtures import mp4_bytes, png_bytes, write

pytestmark = pytest.mark.django_db


def _rows(prompt: str = "Which is better?", text: str = "an answer", rationale: str = "") -> str:
    row = {
        "id": "q1",
        "prompt": prompt,
        "candidates": [
            {"id": "a", "model": "m1", "text": text},
            {"id": "b", "model": "m2", "text": "another"},
        ],
        "judgments": [{"annotator": "x", "ranking": [["a"], ["b"]], "rationale": rationale}],
    }
    return json.dumps(row) + "\n"


def _problems(path: Path) -> list[str]:
    with pytest.raises(ImportRejected) as info:
        import_file(path=path, project_name="limits")
    return [str(p) for p in info.value.problems]


def _png_header(width: int, height: int) -> bytes:
    """A valid PNG that declares ``width`` x ``height`` but holds a few bytes of pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


# --- request bodies ----------------------------------------------------------------------------


def test_it_refuses_an_oversize_body_to_the_login_page_before_reading_it(client, settings):
    settings.QUORUM_MAX_REQUEST_BYTES = 4096
    big = SimpleUploadedFile("junk.bin", b"x" * 20_000)
    response = client.post("/accounts/login/", {"username": "a", "password": "b", "junk": big})
    assert response.status_code == 413
    assert b"QUORUM_MAX_REQUEST_MB" in response.content


@pytest.mark.parametrize("url", ["/admin/annotate/project/import/", "/projects/new/"])
def test_it_allows_staff_import_uploads_past_the_request_limit_only(url, client, settings):
    settings.QUORUM_MAX_REQUEST_BYTES = 4096
    body = {"file": SimpleUploadedFile("votes.jsonl", b" " * 20_000 + _rows().encode())}
    client.force_login(make_user("not-staff"))
    response = client.post(url, body)
    assert response.status_code == 413
    client.force_login(make_user("boss", staff=True))
    body["file"].seek(0)
    response = client.post(url, body)
    assert response.status_code == 302


# --- text fields -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"prompt": "p" * 101}, "'prompt'"),
        ({"text": "t" * 101}, "'candidates[0].text'"),
        ({"rationale": "r" * 101}, "'judgments[0].rationale'"),
    ],
)
def test_it_rejects_a_text_field_over_the_limit_naming_line_and_field(
    fields, field, tmp_path, settings
):
    settings.QUORUM_MAX_TEXT_CHARS = 100
    path = tmp_path / "long.jsonl"
    path.write_text(_rows(**fields))
    (problem,) = _problems(path)
    assert problem.startswith(f"line 1, field {field}")
    assert "101 characters" in problem and "QUORUM_MAX_TEXT_CHARS" in problem


def test_it_rejects_long_seed_responses_and_arena_prompts(tmp_path, settings):
    settings.QUORUM_MAX_TEXT_CHARS = 100
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"prompt": "q", "responses": ["a", "b" * 101], "rankings": [1, 2]}))
    (problem,) = _problems(seed)
    assert "field 'responses[1]'" in problem and "QUORUM_MAX_TEXT_CHARS" in problem
    arena = tmp_path / "arena.jsonl"
    vote = {"model_a": "x", "model_b": "y", "winner": "tie", "prompt": "p" * 101}
    arena.write_text(json.dumps(vote))
    (problem,) = _problems(arena)
    assert "field 'prompt'" in problem and "QUORUM_MAX_TEXT_CHARS" in problem


# --- unpacked sizes ----------------------------------------------------------------------------


def test_it_rejects_a_zipped_data_file_that_unpacks_past_the_limit(tmp_path, settings):
    settings.QUORUM_MAX_DATA_BYTES = 50_000
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.jsonl", _rows() + " " * 1_000_000 + "\n")
    assert path.stat().st_size < 10_000
    (problem,) = _problems(path)
    assert "data.jsonl" in problem and "QUORUM_MAX_DATA_MB" in problem


@pytest.mark.parametrize("door", ["admin", "set-up page", "api", "command line"])
def test_a_zip_bomb_is_refused_at_every_door_naming_the_limit(door, client, settings, tmp_path):
    from django.core.management import call_command
    from django.core.management.base import CommandError

    from annotate.models import ImportJob, Project

    settings.QUORUM_MAX_DATA_BYTES = 50_000
    settings.DATA_DIR = tmp_path / "data"
    path = tmp_path / "bomb.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.jsonl", _rows() + " " * 1_000_000 + "\n")
    upload = {"file": SimpleUploadedFile("bomb.zip", path.read_bytes()), "project_name": "bomb"}
    boss = make_user("boss", staff=True)
    client.force_login(boss)
    if door == "command line":
        with pytest.raises(CommandError) as info:
            call_command("import_project", str(path), "--project", "bomb")
        shown = str(info.value)
    elif door == "api":
        _, key = api_token_create(user=boss)
        response = client.post("/api/imports", upload, HTTP_AUTHORIZATION=f"Bearer {key}")
        assert response.status_code == 422
        shown = json.dumps(response.json()["errors"])
    elif door == "admin":
        response = client.post("/admin/annotate/project/import/", upload, follow=True)
        assert response.status_code == 200
        assert "Import rejected" in response.content.decode()
        shown = " ".join(ImportJob.objects.get().errors)
    else:
        response = client.post("/projects/new/", upload)
        assert response.status_code == 400
        shown = response.content.decode()
    assert "data.jsonl" in shown and "QUORUM_MAX_DATA_MB" in shown
    assert not Project.objects.filter(name="bomb").exists()
    assert not any((tmp_path / "data" / "uploads").rglob("*.zip"))


def _lying_zip(path: Path, name: str, head: bytes, unpacked_mb: int, **others: bytes) -> Path:
    """A zip whose last entry, ``name``, declares 1,000 bytes and inflates to ``unpacked_mb`` MB."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for other, data in others.items():
            zf.writestr(other, data)
        zf.writestr(name, head + b" " * (unpacked_mb << 20))
        offset = zf.getinfo(name).header_offset
    raw = bytearray(path.read_bytes())
    struct.pack_into("<I", raw, offset + 22, 1000)  # the local header's unpacked size
    struct.pack_into("<I", raw, raw.rindex(b"PK\x01\x02") + 24, 1000)  # the central record's
    path.write_bytes(bytes(raw))
    return path


@pytest.mark.parametrize("entry", ["data.jsonl", "a.png", "datasheet.json"])
def test_a_zip_entry_that_lies_about_its_size_is_never_inflated_in_full(entry, tmp_path):
    import tracemalloc

    path = tmp_path / "liar.zip"
    if entry == "a.png":
        rows = _image_rows("image", "a.png").encode()
        _lying_zip(path, entry, png_bytes(), 64, **{"data.jsonl": rows})
    else:
        _lying_zip(path, entry, _rows().encode(), 64)
    tracemalloc.start()
    try:
        with pytest.raises(ImportRejected):
            import_file(path=path, project_name="liar")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Inflated in one step, the 64 MB would be in memory at once.
    assert peak < 16 << 20, f"{peak >> 20} MB"


def _export_zip(path: Path, table) -> Path:
    """A zip laid out as a Quorum export, holding ``table`` as its rankings table."""
    import io

    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("export/datasheet.json", json.dumps({"format": "quorum-dataset-export/1"}))
        zf.writestr("export/parquet/rankings.parquet", buffer.getvalue())
    return path


def _rankings_table(prompts: list[str]):
    import pyarrow as pa

    n = len(prompts)
    return pa.table(
        {
            "prompt_id": [f"q{i}" for i in range(n)],
            "prompt": pa.array(prompts).dictionary_encode(),
            "responses": [["a", "b"]] * n,
            "rankings": [[1, 2]] * n,
            "models": [["m1", "m2"]] * n,
            "candidate_ids": [[f"q{i}-a", f"q{i}-b"] for i in range(n)],
        }
    )


@pytest.mark.parametrize("repeated", [True, False], ids=["one-long-string", "many-rows"])
def test_an_exports_rankings_table_is_held_to_the_data_limit_as_decoded(
    repeated, tmp_path, settings
):
    import tracemalloc

    settings.QUORUM_MAX_DATA_BYTES = 1_000_000
    # 5 MB as rows from a table of a few KB: one string named by 500 rows, or 100,000 rows.
    prompts = ["long " * 2000] * 500 if repeated else ["short"] * 100_000
    path = _export_zip(tmp_path / "export.zip", _rankings_table(prompts))
    assert path.stat().st_size < 500_000
    tracemalloc.start()
    try:
        (problem,) = _problems(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert "rankings.parquet" in problem and "QUORUM_MAX_DATA_MB" in problem
    assert peak < 8 << 20, f"{peak >> 20} MB"
    if repeated:  # under the limit, the same table imports
        settings.QUORUM_MAX_DATA_BYTES = 50_000_000
        assert import_file(path=path, project_name="back").counts["prompts"] == 500


@pytest.mark.parametrize("where", ["folder", "zip"])
def test_a_media_file_over_the_limit_is_refused_naming_the_setting(where, tmp_path, settings):
    settings.QUORUM_MAX_MEDIA_BYTES = 100
    picture = png_bytes(size=64)
    assert len(picture) > 100
    rows = _image_rows("image", "a.png")
    if where == "folder":
        write(tmp_path / "a.png", picture)
        path = tmp_path / "rows.jsonl"
        path.write_text(rows)
    else:
        path = tmp_path / "rows.zip"
        with zipfile.ZipFile(path, "w") as zf:
            zf.writestr("data.jsonl", rows)
            zf.writestr("a.png", picture)
    (problem,) = _problems(path)
    assert "QUORUM_MAX_MEDIA_MB" in problem


def test_an_import_file_over_the_limit_is_refused_naming_the_setting(tmp_path, settings):
    settings.QUORUM_MAX_IMPORT_BYTES = 1000
    path = tmp_path / "rows.jsonl"
    path.write_text(_rows() * 20)
    (problem,) = _problems(path)
    assert "QUORUM_MAX_IMPORT_MB" in problem


def test_it_rejects_a_plain_data_file_past_the_limit(tmp_path, settings):
    settings.QUORUM_MAX_DATA_BYTES = 50_000
    path = tmp_path / "big.jsonl"
    path.write_text(_rows() * 1000)
    (problem,) = _problems(path)
    assert "QUORUM_MAX_DATA_MB" in problem


# --- pixels ------------------------------------------------------------------------------------


def _image_rows(kind: str, name: str) -> str:
    row = {
        "id": "q1",
        "prompt": "Which picture?",
        "candidates": [
            {"id": "a", "model": "m1", kind: name},
            {"id": "b", "model": "m2", "text": "words"},
        ],
    }
    return json.dumps(row) + "\n"


@pytest.mark.parametrize("size", [(7000, 7000), (50_000, 50_000)])
def test_it_rejects_an_image_whose_header_is_over_the_pixel_limit(size, tmp_path):
    # 49 megapixels: over the default 40; 2.5 gigapixels: past Pillow's own guard as well.
    write(tmp_path / "huge.png", _png_header(*size))
    path = tmp_path / "rows.jsonl"
    path.write_text(_image_rows("image", "huge.png"))
    (problem,) = _problems(path)
    assert "field 'candidates[0].image'" in problem
    assert "QUORUM_MAX_IMAGE_MEGAPIXELS" in problem


def test_it_rejects_a_video_whose_frames_are_over_the_pixel_limit(tmp_path, settings):
    settings.QUORUM_MAX_IMAGE_PIXELS = 100
    write(tmp_path / "clip.mp4", mp4_bytes())
    path = tmp_path / "rows.jsonl"
    path.write_text(_image_rows("video", "clip.mp4"))
    (problem,) = _problems(path)
    assert "QUORUM_MAX_IMAGE_MEGAPIXELS" in problem


def test_the_worker_refuses_an_image_over_the_pixel_limit_before_decoding(tmp_path, monkeypatch):
    from django.conf import settings
    from PIL import Image

    from workers.media import MediaError, load_image

    assert Image.MAX_IMAGE_PIXELS == settings.QUORUM_MAX_IMAGE_PIXELS
    # 40 x 40 = 1600 pixels: over 1000, under the 2000 where Pillow itself would refuse.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    path = write(tmp_path / "img.png", png_bytes(size=40))
    with pytest.raises(MediaError, match="QUORUM_MAX_IMAGE_MEGAPIXELS"):
        load_image(path)


def test_the_worker_refuses_a_video_over_the_pixel_limit_before_decoding(tmp_path, monkeypatch):
    from PIL import Image

    from workers.media import MediaError, sample_video_frames

    path = write(tmp_path / "clip.mp4", mp4_bytes(size=32))
    assert len(sample_video_frames(path, max_frames=2).frames) == 2
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 32 x 32 = 1024 pixels a frame
    with pytest.raises(MediaError, match="QUORUM_MAX_IMAGE_MEGAPIXELS"):
        sample_video_frames(path, max_frames=2)


# --- uploads -----------------------------------------------------------------------------------


@pytest.mark.parametrize("body", [_rows(), "not json\n"], ids=["imported", "rejected"])
def test_it_removes_an_uploaded_file_once_its_import_is_over(body, client, settings, tmp_path):
    from annotate.services import import_job_create

    settings.DATA_DIR = tmp_path
    _, key = api_token_create(user=make_user("boss", staff=True))
    response = client.post(
        "/api/imports",
        {"file": SimpleUploadedFile("votes.jsonl", body.encode()), "project_name": "up"},
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code in (201, 422), response.content
    assert response.json()["status"] in ("done", "failed")
    uploads = tmp_path / "uploads"
    assert uploads.is_dir() and not any(uploads.rglob("*"))
    # A file imported where it lies (the command line's) is the user's: it stays.
    path = tmp_path / "mine.jsonl"
    path.write_text(body)
    import_job_create(path=path, project_name="mine")
    assert path.is_file()


def test_it_keeps_no_upload_of_a_request_it_refuses(client, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    _, key = api_token_create(user=make_user("boss", staff=True))
    response = client.post(
        "/api/imports",
        {"file": SimpleUploadedFile("votes.jsonl", _rows().encode()), "format": "csv"},
        HTTP_AUTHORIZATION=f"Bearer {key}",
    )
    assert response.status_code == 422
    assert not any((tmp_path / "uploads").rglob("*.jsonl"))
