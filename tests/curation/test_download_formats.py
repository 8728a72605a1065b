"""The curated export's download over the API with ``?format=``: one format's folders (read
with the library a user reads them with), the datasheet, the overruled arcs; ``all`` (the
default) every file; an unknown format refused. And a file of many blocks deflated in threads
is one deflate stream that `zipfile` and Info-ZIP's ``unzip`` read back byte for byte."""

from __future__ import annotations

import io
import json
import random
import shutil
import subprocess
import zipfile

import pyarrow.parquet as pq
import pytest

from annotate.services import api_token_create
from curation.download import iter_download_zip
from curation.models import DatasetExport
from tests.curation.builders import fast_passwords  # noqa: F401  (autouse fixture)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]
ALWAYS = {"datasheet.json", "datasheet.md", "overruled_arcs.jsonl"}


@pytest.fixture
def export(ranked_export) -> DatasetExport:
    return ranked_export


def _download(client, users, export, query: str = ""):
    _token, key = api_token_create(user=users["admin"])
    return client.get(
        f"/api/exports/{export.pk}/download{query}", HTTP_AUTHORIZATION=f"Bearer {key}"
    )


def _unpacked(response, tmp_path, export) -> tuple[set[str], object]:
    assert response.status_code == 200, response.content
    body = b"".join(response.streaming_content)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        archive.extractall(tmp_path / "unzipped")
    root = tmp_path / "unzipped" / f"quorum-{export.project_id}-v{export.version}"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}, root


def _folder_files(export) -> set[str]:
    return {p.relative_to(export.path).as_posix() for p in export.path.rglob("*") if p.is_file()}


def test_format_parquet_is_the_parquet_files_and_the_datasheet(client, users, export, tmp_path):
    names, root = _unpacked(_download(client, users, export, "?format=parquet"), tmp_path, export)
    assert names == ALWAYS | {n for n in _folder_files(export) if n.startswith("parquet/")}
    assert {n for n in names if n.startswith("parquet/")} == {
        "parquet/pairs.parquet",
        "parquet/rankings.parquet",
        "parquet/rankings_4.parquet",
    }
    rows = {}
    for name in ("pairs", "rankings", "rankings_4"):
        got = pq.read_table(root / "parquet" / f"{name}.parquet")
        assert got.equals(pq.read_table(export.path / "parquet" / f"{name}.parquet"))
        rows[name] = got.num_rows
    assert rows["pairs"] > 0 and rows["rankings"] > 0


def test_format_jsonl_is_the_json_lines_and_the_datasheet(client, users, export, tmp_path):
    names, root = _unpacked(_download(client, users, export, "?format=jsonl"), tmp_path, export)
    jsonl = {n for n in names if n not in ALWAYS}
    assert jsonl and all(n.endswith(".jsonl") for n in jsonl)
    assert not any(n.startswith(("parquet/", "hf/")) for n in names)
    assert jsonl == {
        n for n in _folder_files(export) if n.split("/")[0] in {"pairs", "rankings", "rankings_4"}
    }
    for name in jsonl:
        lines = (root / name).read_text(encoding="utf-8").splitlines()
        want = (export.path / name).read_text(encoding="utf-8").splitlines()
        assert [json.loads(line) for line in lines] == [json.loads(line) for line in want]
    assert any((root / n).stat().st_size for n in jsonl)


def test_format_hf_loads_with_datasets(client, users, export, tmp_path):
    import datasets

    names, root = _unpacked(_download(client, users, export, "?format=hf"), tmp_path, export)
    assert {n for n in names if n not in ALWAYS} == {
        n for n in _folder_files(export) if n.startswith("hf/")
    }
    rows = {}
    for name in ("pairs", "rankings", "rankings_4"):
        got = datasets.load_from_disk(str(root / "hf" / name))
        want = datasets.load_from_disk(str(export.path / "hf" / name))
        assert list(got) == list(want)
        assert {s: got[s].to_list() for s in got} == {s: want[s].to_list() for s in want}
        rows[name] = sum(len(got[s]) for s in got)
    assert rows["pairs"] > 0 and rows["rankings"] > 0


def test_the_default_and_all_are_every_file(client, users, export, tmp_path):
    names, _ = _unpacked(_download(client, users, export), tmp_path / "a", export)
    assert names == _folder_files(export)
    names, _ = _unpacked(_download(client, users, export, "?format=all"), tmp_path / "b", export)
    assert names == _folder_files(export)
    names, _ = _unpacked(
        _download(client, users, export, "?format=parquet,hf"), tmp_path / "c", export
    )
    assert names == {
        n for n in _folder_files(export) if n in ALWAYS or n.startswith(("parquet/", "hf/"))
    }


def test_an_unknown_format_is_refused(client, users, export):
    response = _download(client, users, export, "?format=csv")
    assert response.status_code == 400
    assert "csv" in response.json()["detail"]


def _big_folder(tmp_path):
    rng = random.Random(3)
    words = ["alpha", "beta", "gamma", "delta", "é", "中", "\u2028"]
    folder = tmp_path / "export"
    (folder / "pairs").mkdir(parents=True)
    files = {}
    for i, size in enumerate((700_000, 65_536, 1)):
        text = "".join(
            json.dumps({"i": n, "text": " ".join(rng.choices(words, k=30))}, ensure_ascii=False)
            + "\n"
            for n in range(size // 150 + 1)
        ).encode()
        files[f"pairs/part-{i}.jsonl"] = text
    files["pairs/random.bin"] = rng.randbytes(200_000)  # blocks that deflate cannot shrink
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder, files


def test_a_file_of_many_blocks_is_one_deflate_stream(tmp_path):
    folder, files = _big_folder(tmp_path)
    body = b"".join(iter_download_zip(folder, "x", chunk_size=16_384))
    (tmp_path / "x.zip").write_bytes(body)
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert {i.filename.removeprefix("x/"): archive.read(i) for i in archive.infolist()} == files
        assert all(i.compress_type == zipfile.ZIP_DEFLATED for i in archive.infolist())
    if shutil.which("unzip") is None:
        pytest.skip("no unzip on this machine")
    out = tmp_path / "unzip"
    subprocess.run(["unzip", "-q", str(tmp_path / "x.zip"), "-d", str(out)], check=True)
    assert {
        p.relative_to(out / "x").as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files
