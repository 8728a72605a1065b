"""The curated export's download (page and API): the folder's files, byte for byte; Parquet
stored as it is (compressed already), everything else deflated at level 1 (`curation.download`:
ISA-L's deflate, the pinned ``isal`` package, where it imports; zlib's otherwise)."""

from __future__ import annotations

import io
import zipfile
import zlib

import pytest
from django.urls import reverse

from annotate.services import api_token_create
from curation.download import COMPRESS_LEVEL, iter_download_zip
from curation.models import DatasetExport
from tests.curation.builders import fast_passwords  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]

try:  # the deflater the build uses (requirements.txt pins isal): its level-1 stream is the reference
    from isal import isal_zlib as deflater
except ImportError:  # pragma: no cover - an install without isal deflates with zlib
    deflater = zlib


def _deflated_size(data: bytes, level: int, library=deflater) -> int:
    compressor = library.compressobj(level, library.DEFLATED, -15)
    return len(compressor.compress(data) + compressor.flush())


@pytest.fixture
def export(ranked_export) -> DatasetExport:
    return ranked_export


def _check(body: bytes, export: DatasetExport) -> None:
    prefix = f"quorum-{export.project_id}-v{export.version}/"
    files = {
        p.relative_to(export.path).as_posix(): p.read_bytes()
        for p in sorted(export.path.rglob("*"))
        if p.is_file()
    }
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        infos = archive.infolist()
        assert [i.filename for i in infos] == [prefix + name for name in files]
        assert {i.filename.removeprefix(prefix): archive.read(i) for i in infos} == files
    kinds = {i.filename.rsplit(".", 1)[-1]: i.compress_type for i in infos}
    assert kinds["parquet"] == zipfile.ZIP_STORED
    assert kinds["jsonl"] == kinds["arrow"] == kinds["json"] == zipfile.ZIP_DEFLATED
    # Level 1, not zipfile's default (6): its deflate stream is what level 1 writes.
    biggest = max(
        (i for i in infos if i.compress_type == zipfile.ZIP_DEFLATED), key=lambda i: i.file_size
    )
    data = files[biggest.filename.removeprefix(prefix)]
    assert biggest.compress_size != _deflated_size(data, 6, zlib)
    assert biggest.compress_size == _deflated_size(data, COMPRESS_LEVEL)


def test_the_api_download_is_the_folder_with_parquet_stored(client, users, export):
    _token, key = api_token_create(user=users["admin"])
    response = client.get(f"/api/exports/{export.pk}/download", HTTP_AUTHORIZATION=f"Bearer {key}")
    assert response.status_code == 200 and response.streaming
    _check(b"".join(response.streaming_content), export)


def test_the_page_download_is_the_same_zip(client, users, export):
    client.force_login(users["admin"])
    response = client.get(reverse("curation:export_download", args=[export.pk]))
    assert response.status_code == 200 and response.streaming
    body = b"".join(response.streaming_content)
    _check(body, export)
    name = f"quorum-{export.project_id}-v{export.version}"
    assert body == b"".join(iter_download_zip(export.path, name))
