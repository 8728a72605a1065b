"""The pair files of a curated export are written while the build works out the ranking rows
(`build_snapshot`'s ``out_dir``, `exporting._EarlyPairs`): the same files, byte for byte, as
writing everything after the build, and a build that fails after the pairs were handed over
leaves nothing behind."""

from __future__ import annotations

import dataclasses
import io
import threading
import zipfile

import pytest

from annotate.models import Task
from curation import exporting as E
from curation import services
from curation.download import iter_download_zip
from curation.models import DatasetExport
from tests.curation.builders import (
    disputed_ranking_project,
    fast_passwords,  # noqa: F401  (autouse fixture)
    judge_ranking,
    make_project,
    members,
    slots,
)


@pytest.fixture
def _data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    return settings.DATA_DIR


def _files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _written(project, options, out_dir, *, early: bool) -> dict[str, bytes]:
    """Every file of the export, built with the pairs written early or all written after."""
    export = services.export_create(project=project, options=options, enqueue=False)
    opts = E.ExportOptions.from_dict(export.options)
    # Both builds as version 1 (the version is in the datasheet and the cards).
    source = dataclasses.replace(services._snapshot_input(export), version=1)
    out_dir.mkdir(parents=True)
    snapshot = E.build_snapshot(source, opts, out_dir=out_dir if early else None)
    assert (snapshot.early is not None) is early
    snapshot.datasheet["created_at"] = "fixed"
    E.write_snapshot(snapshot, out_dir, source, opts)
    return _files(out_dir)


@pytest.mark.django_db
@pytest.mark.parametrize("denoise", [True, False])
def test_the_early_pairs_are_the_same_files(_data_dir, users, tmp_path, denoise):
    project, _ = disputed_ranking_project(users, n_prompts=12)
    options = {"denoise": denoise, "splits": {"train": 0.5, "test": 0.5}, "include_media": False}
    after = _written(project, options, tmp_path / "after" / "v1", early=False)
    early = _written(project, options, tmp_path / "early" / "v1", early=True)
    assert {"pairs/train.jsonl", "parquet/pairs.parquet", "hf/pairs/test/state.json"} <= set(early)
    assert early == after
    # The download streams each build's deflated members: the same entries, sizes compressed
    # included (the entries' times are the files', which differ between the two builds).
    entries = []
    for side in ("after", "early"):
        body = b"".join(iter_download_zip(tmp_path / side / "v1", "x"))
        with zipfile.ZipFile(io.BytesIO(body)) as archive:
            entries.append(
                (
                    len(body),
                    [
                        (i.filename, i.CRC, i.compress_type, i.compress_size, i.file_size)
                        for i in archive.infolist()
                    ],
                )
            )
    assert entries[0] == entries[1]
    # Each build left its deflated members beside its folder, and nothing half written.
    for side in ("after", "early"):
        names = sorted(p.name for p in (tmp_path / side).iterdir())
        assert names[0].startswith(".zip-") and len(names[0]) == 69 and names[1:] == ["v1"]


@pytest.mark.django_db
def test_the_pairs_are_handed_over_before_the_ranking_rows(_data_dir, users, monkeypatch):
    project = make_project(n_prompts=4, n_candidates=3, k=1)
    members(project, users)
    for task in Task.objects.filter(project=project):
        judge_ranking(task, users["annotator"], [[c] for c in slots(task)])
    events: list[str] = []
    real_early, real_row = E._EarlyPairs.__init__, E._ranking_row

    def early(self, out_dir, source, options, pairs):
        events.append(f"pairs {pairs.num_rows}")
        real_early(self, out_dir, source, options, pairs)

    def row(*args, **kwargs):
        events.append("ranking row")
        return real_row(*args, **kwargs)

    monkeypatch.setattr(E._EarlyPairs, "__init__", early)
    monkeypatch.setattr(E, "_ranking_row", row)
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    assert events[0] == "pairs 12" and events.count("ranking row") == 4
    assert export.counts["pairs"] == 12


@pytest.mark.django_db
def test_a_build_failing_after_the_pairs_leaves_nothing(_data_dir, users, monkeypatch):
    project, _ = disputed_ranking_project(users, n_prompts=3)
    started = threading.Event()
    real_write = E._EarlyPairs._write

    def slow_write(self, *args):
        started.set()
        real_write(self, *args)

    def fail(*args, **kwargs):
        assert started.wait(10)  # the pairs' thread is writing
        raise OSError("disk full")

    monkeypatch.setattr(E._EarlyPairs, "_write", slow_write)
    monkeypatch.setattr(E, "_ranking_row", fail)
    export = services.export_create(project=project, options={}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.FAILED
    assert export.error == "OSError: disk full"
    assert list(export.path.parent.iterdir()) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("export-pairs")]


@pytest.mark.django_db
def test_one_split_needs_no_content_keys(_data_dir, users, tmp_path, monkeypatch):
    project, _ = disputed_ranking_project(users, n_prompts=4)
    options = {"include_media": False}
    grouped = _written(project, options, tmp_path / "grouped" / "v1", early=True)

    def no_keys(*args, **kwargs):
        raise AssertionError("content keys worked out for a single split")

    monkeypatch.setattr(E, "_content_keys", no_keys)
    assert _written(project, options, tmp_path / "one" / "v1", early=True) == grouped
    with pytest.raises(AssertionError, match="content keys"):
        _written(
            project, {"splits": {"train": 0.5, "test": 0.5}}, tmp_path / "two" / "v1", early=True
        )
