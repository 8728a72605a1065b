"""An export with one split puts every prompt in it without working out content keys
(normalised prompt texts, media digests): the same files, byte for byte, as grouping by
content would give; two splits still group by content."""

from __future__ import annotations

import dataclasses

import pytest

from curation import exporting as E
from curation import services
from tests.curation.builders import (
    disputed_ranking_project,
    fast_passwords,  # noqa: F401  (autouse fixture)
)


def _files(folder) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _written(project, options, out_dir) -> dict[str, bytes]:
    """Every file of the export, built as version 1 (the version is in the datasheet)."""
    export = services.export_create(project=project, options=options, enqueue=False)
    opts = E.ExportOptions.from_dict(export.options)
    source = dataclasses.replace(services._snapshot_input(export), version=1)
    out_dir.mkdir(parents=True)
    snapshot = E.build_snapshot(source, opts)
    snapshot.datasheet["created_at"] = "fixed"
    E.write_snapshot(snapshot, out_dir, source, opts)
    return _files(out_dir)


@pytest.mark.django_db
def test_one_split_needs_no_content_keys(_data_dir, users, tmp_path, monkeypatch):
    project, _ = disputed_ranking_project(users, n_prompts=4)
    options = {"include_media": False}
    grouped = _written(project, options, tmp_path / "grouped" / "v1")

    def no_keys(*args, **kwargs):
        raise AssertionError("content keys worked out for a single split")

    monkeypatch.setattr(E, "_content_keys", no_keys)
    assert _written(project, options, tmp_path / "one" / "v1") == grouped
    with pytest.raises(AssertionError, match="content keys"):
        _written(project, {"splits": {"train": 0.5, "test": 0.5}}, tmp_path / "two" / "v1")
