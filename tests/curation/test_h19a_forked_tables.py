"""Parquet and the Hugging Face folders written by a forked process (`exporting._TablesWriter`)
while the build's process encodes the JSONL: the same files and deflated members as written in
a thread, the process's rows are the tables' rows, and a process that fails or dies fails the
export with its reason and leaves nothing behind (no folder, no members, no process)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile

import pyarrow.parquet as pq
import pytest

from annotate.models import Task
from curation import exporting as E
from curation import services
from curation.download import deflated_members, iter_download_zip
from curation.models import DatasetExport
from tests.curation.builders import (
    fast_passwords,  # noqa: F401  (autouse fixture)
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

OPTIONS = {"splits": {"train": 0.5, "test": 0.5}}


@pytest.fixture
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


@pytest.fixture
def project(users):
    project = make_project(n_prompts=12, n_candidates=4, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    return project


def _build(project, **options) -> DatasetExport:
    export = services.export_create(project=project, options={**OPTIONS, **options}, enqueue=False)
    return services.export_build(export_id=export.pk)


def _contents(export: DatasetExport) -> tuple[dict, dict]:
    """Every file's bytes (the build time and version masked) and every deflated member's
    stream, CRC-32 and sizes, by path."""
    folder = export.path
    sheet = json.loads((folder / "datasheet.json").read_text())
    stamps = [sheet["created_at"].encode(), f" v{sheet['version']}".encode()]
    files = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            rel = path.relative_to(folder).as_posix()
            data = path.read_bytes()
            if rel == "datasheet.json":
                continue  # its file list holds the digests of the timed files
            for stamp in stamps:
                data = data.replace(stamp, b"<stamp>")
            files[rel] = hashlib.sha256(data).hexdigest()
    where, index = deflated_members(folder)
    streams = {
        rel: (
            hashlib.sha256((where / e["member"]).read_bytes()).hexdigest(),
            e["crc32"],
            e["bytes"],
            e["compressed"],
        )
        for rel, e in index.items()
        if not rel.startswith("datasheet") and not rel.endswith("README.md")
    }
    return files, streams


def _leftovers(export: DatasetExport) -> list[str]:
    parent = export.path.parent
    return sorted(p.name for p in parent.iterdir()) if parent.is_dir() else []


@pytest.mark.django_db
def test_the_forked_writer_writes_what_the_thread_writes(_data_dir, project, monkeypatch):
    assert E.FORK_TABLES  # POSIX: the build forks
    forked = _build(project)
    assert forked.status == DatasetExport.Status.DONE, forked.error
    monkeypatch.setattr(E, "FORK_TABLES", False)
    threaded = _build(project)
    assert threaded.status == DatasetExport.Status.DONE, threaded.error
    files, streams = _contents(forked)
    assert (files, streams) == _contents(threaded)
    # Both splits' shards of the three tables, each deflated by the build for the download.
    shards = [rel for rel in streams if rel.endswith(".arrow")]
    assert len(shards) == 6, sorted(streams)
    assert {rel for rel in files if rel.startswith("parquet/")} == {
        f"parquet/{name}.parquet" for name in ("pairs", "rankings", "rankings_4")
    }


@pytest.mark.django_db
def test_the_forked_writers_files_hold_every_row_and_are_listed(_data_dir, project):
    export = _build(project)
    assert export.status == DatasetExport.Status.DONE, export.error
    folder = export.path
    sheet = json.loads((folder / "datasheet.json").read_text())
    counts = sheet["counts"]
    listed = {f["path"]: f for f in export.files if "sha256" in f}
    for name in ("pairs", "rankings", "rankings_4"):
        parquet = pq.read_table(folder / "parquet" / f"{name}.parquet")
        assert parquet.num_rows == counts[name] > 0, name
        jsonl = sum(
            len((folder / name / f"{split}.jsonl").read_text().splitlines())
            for split in OPTIONS["splits"]
        )
        assert jsonl == parquet.num_rows, name
        shards = 0
        for split in OPTIONS["splits"]:
            for shard in (folder / "hf" / name / split).glob("*.arrow"):
                rel = shard.relative_to(folder).as_posix()
                assert listed[rel]["sha256"] == hashlib.sha256(shard.read_bytes()).hexdigest()
                shards += _arrow_rows(shard)
        assert shards == parquet.num_rows, name
        rel = f"parquet/{name}.parquet"
        assert listed[rel]["sha256"] == hashlib.sha256((folder / rel).read_bytes()).hexdigest()
    body = b"".join(iter_download_zip(folder, "x"))
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None  # the adopted members' CRC-32s are their bytes'
        for shard in folder.glob("hf/*/*/*.arrow"):
            rel = shard.relative_to(folder).as_posix()
            assert archive.read(f"x/{rel}") == shard.read_bytes()


def _arrow_rows(path) -> int:
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        return pa.ipc.open_stream(source).read_all().num_rows


@pytest.mark.django_db
def test_an_error_in_the_forked_writer_fails_the_export_with_it(_data_dir, project, monkeypatch):
    parent = os.getpid()
    write = E.save_dataset_dict

    def broken(parts, folder):
        assert os.getpid() != parent  # raised in the forked process, not here
        if folder.name == "rankings":
            raise ValueError("no room for the rankings shard")
        write(parts, folder)

    monkeypatch.setattr(E, "save_dataset_dict", broken)
    export = _build(project)
    assert export.status == DatasetExport.Status.FAILED
    assert "no room for the rankings shard" in export.error
    assert _leftovers(export) == []  # no folder, no members' folder


@pytest.mark.django_db
def test_a_forked_writer_that_dies_fails_the_export(_data_dir, project, monkeypatch):
    write = E.save_dataset_dict

    def dies(parts, folder):
        if folder.name == "rankings_4":
            os._exit(3)
        write(parts, folder)

    monkeypatch.setattr(E, "save_dataset_dict", dies)
    export = _build(project)
    assert export.status == DatasetExport.Status.FAILED
    assert "ended (exit code 3) without its files" in export.error
    assert _leftovers(export) == []


@pytest.mark.django_db
def test_a_failing_build_kills_and_reaps_its_forked_writer(_data_dir, project, monkeypatch):
    forked = []
    fork = E._TablesWriter._fork

    def noted(self):
        fork(self)
        forked.append(self._pid)

    def jsonl_fails(table, shape):
        raise OSError("disk full")
        yield  # a generator, as jsonl_chunks is

    monkeypatch.setattr(E._TablesWriter, "_fork", noted)
    monkeypatch.setattr(E, "jsonl_chunks", jsonl_fails)
    export = _build(project)
    assert export.status == DatasetExport.Status.FAILED
    assert "disk full" in export.error
    assert len(forked) == 1
    with pytest.raises(ChildProcessError):
        os.waitpid(forked[0], os.WNOHANG)  # reaped already: no zombie left
    assert _leftovers(export) == []
