"""The build deflates an export's big files once, beside its folder (`DeflatedMembers`); every
download streams them: the same zip as deflating the folder's files there, byte for byte, and a
file changed after the build is deflated again, never served stale."""

from __future__ import annotations

import io
import json
import os
import random
import zipfile

import pytest

from curation import exporting as E
from curation.download import (
    BLOCK_SIZE,
    MEMBERS_INDEX,
    DeflatedMembers,
    deflated_members,
    iter_download_zip,
    members_folder,
)
from curation.models import DatasetExport
from tests.curation.builders import fast_passwords  # noqa: F401  (autouse fixture)


def _zip(folder, **kwargs) -> bytes:
    return b"".join(iter_download_zip(folder, "x", **kwargs))


def _live(folder, **kwargs) -> bytes:
    """The download with the build's members out of the way: every file deflated here."""
    members = members_folder(folder)
    aside = members.with_name(members.name + "-aside")
    members.rename(aside)
    try:
        assert deflated_members(folder) is None
        return _zip(folder, **kwargs)
    finally:
        aside.rename(members)


def _read_back(body: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        return {i.filename.removeprefix("x/"): archive.read(i) for i in archive.infolist()}


def _folder_files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.django_db
def test_it_deflates_the_jsonl_and_arrow_files_beside_the_folder(_data_dir, ranked_export):
    folder = ranked_export.path
    found = deflated_members(folder)
    assert found is not None
    members, index = found
    assert members.parent == folder.parent and members.name.startswith(".zip-")
    big = {
        rel for rel in _folder_files(folder) if rel.endswith((".arrow", ".jsonl")) and "/" in rel
    }
    assert set(index) == big
    # The folder holds the dataset only: what its datasheet lists, and the datasheet.
    listed = {f["path"] for f in ranked_export.files}
    assert set(_folder_files(folder)) == listed


@pytest.mark.django_db
def test_the_download_is_the_zip_it_deflates_itself(_data_dir, ranked_export):
    folder = ranked_export.path
    body = _zip(folder)
    assert body == _live(folder)
    assert _read_back(body) == _folder_files(folder)
    for formats in ({"jsonl"}, {"hf"}, {"parquet", "hf"}):
        assert _zip(folder, formats=formats) == _live(folder, formats=formats)


@pytest.mark.django_db
def test_a_base_folder_download_rewrites_the_jsonl_paths_still(_data_dir, ranked_export):
    folder = ranked_export.path
    body = _zip(folder, base_folder="/data/export")
    assert body == _live(folder, base_folder="/data/export")


@pytest.mark.django_db
@pytest.mark.parametrize("same_size", [True, False])
def test_a_file_changed_after_the_build_is_deflated_again(_data_dir, ranked_export, same_size):
    folder = ranked_export.path
    path = folder / "rankings" / "train.jsonl"
    data = path.read_bytes()
    changed = data.replace(b'"', b"'") if same_size else data + data
    assert changed != data and (len(changed) == len(data)) == same_size
    stat = path.stat()
    path.write_bytes(changed)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert _read_back(_zip(folder))["rankings/train.jsonl"] == changed


def _write(out_dir, files: dict[str, bytes], chunk: int) -> None:
    """``files`` written as a build writes them, each member fed in ``chunk``-byte pieces."""
    members = DeflatedMembers(out_dir)
    for rel, data in files.items():
        (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (out_dir / rel).write_bytes(data)
        if rel != "datasheet.json":
            member = members.member(rel)
            for start in range(0, len(data), chunk):
                member.write(memoryview(data)[start : start + chunk])
            member.end()
    members.finish()


@pytest.mark.parametrize("chunk", [1000, BLOCK_SIZE, 3 * BLOCK_SIZE + 7])
def test_blocks_are_cut_as_the_download_cuts_them(tmp_path, chunk):
    rng = random.Random(chunk)
    words = [b"alpha", b"beta", b"gamma", b"\xc3\xa9", b"\xe4\xb8\xad", bytes(range(256))]
    text = b" ".join(rng.choices(words, k=700_000))
    files = {
        "datasheet.json": b'{"files": []}\n',
        "pairs/train.jsonl": text,  # several blocks and a part
        "rankings/train.jsonl": text[: 2 * BLOCK_SIZE],  # exactly two blocks
        "rankings_4/train.jsonl": text[:BLOCK_SIZE],  # exactly one
        "hf/pairs/train/data-00000-of-00001.arrow": rng.randbytes(BLOCK_SIZE + 5),
        "small/train.jsonl": text[:100],
        "empty/train.jsonl": b"",
    }
    out_dir = tmp_path / "v1"
    out_dir.mkdir()
    _write(out_dir, files, chunk)
    members, index = deflated_members(out_dir)
    assert sorted(p.name for p in members.iterdir()) == sorted(
        [MEMBERS_INDEX, *(e["member"] for e in index.values())]
    )
    body = _zip(out_dir)
    assert body == _live(out_dir)
    assert _read_back(body) == dict(sorted(files.items()))


def test_a_write_that_fails_leaves_nothing_beside_the_folder(tmp_path):
    out_dir = tmp_path / "exports" / "v1"
    out_dir.mkdir(parents=True)
    members = DeflatedMembers(out_dir)
    member = members.member("pairs/train.jsonl")
    member.write(b"x" * (3 * BLOCK_SIZE))
    members.discard()
    assert [p.name for p in out_dir.parent.iterdir()] == ["v1"]


@pytest.mark.django_db
def test_a_failed_build_leaves_no_members(_data_dir, ranked_export, monkeypatch):
    from curation import services

    def fail(*args, **kwargs):
        raise OSError("disk full")

    before = sorted(p.name for p in ranked_export.path.parent.iterdir())
    monkeypatch.setattr(E, "datasheet_markdown", fail)
    export = services.export_create(project=ranked_export.project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.FAILED
    assert sorted(p.name for p in ranked_export.path.parent.iterdir()) == before


@pytest.mark.django_db
def test_the_index_records_each_file_as_written(_data_dir, ranked_export):
    folder = ranked_export.path
    _members, index = deflated_members(folder)
    for rel, entry in index.items():
        stat = (folder / rel).stat()
        assert (entry["bytes"], entry["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns)
    assert json.loads((members_folder(folder) / MEMBERS_INDEX).read_text()) == index


@pytest.mark.django_db
def test_a_build_removes_members_no_folder_has(_data_dir, ranked_export):
    from curation import services

    first = members_folder(ranked_export.path)
    orphan = first.with_name(".zip-" + "0" * 64)
    orphan.mkdir()
    (orphan / MEMBERS_INDEX).write_text("{}")
    building = first.with_name(".zip-tmp-.v9-abc")  # another build's, still being written
    building.mkdir()
    export = services.export_create(project=ranked_export.project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE
    assert not orphan.exists()
    assert first.is_dir() and building.is_dir()
    assert deflated_members(ranked_export.path) is not None
    assert deflated_members(export.path) is not None


@pytest.mark.django_db
def test_a_leaderboard_that_fails_fails_the_build(_data_dir, ranked_export, monkeypatch):
    # The leaderboard is worked out in a thread beside the writing: its error is the build's.
    from curation import graph as G
    from curation import services

    def fail(*args, **kwargs):
        raise ValueError("no fit")

    monkeypatch.setattr(G, "leaderboard_stability", fail)
    export = services.export_create(project=ranked_export.project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.FAILED
    assert export.error == "ValueError: no fit"
    assert not export.path.exists()
    assert [p.name for p in export.path.parent.iterdir() if p.name.startswith(".zip-tmp")] == []
