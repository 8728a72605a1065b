"""The Hugging Face folders written without `datasets` (`exporting.write_hf_folder`), byte for
byte what the export wrote through `datasets` before (``ArrowWriter`` given the features that
``Features.from_arrow_schema`` and ``Image`` give, ``DatasetInfo``'s dict), and what
``DatasetDict.save_to_disk`` writes; read back by ``load_from_disk`` with the values put in;
and an export that no longer imports `datasets`.

The reference here is the export's code before this change (h20c), run in the test.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curation import exporting as E
from tests.media_fixtures import png_bytes

REPO = Path(__file__).resolve().parents[2]


def _shuffled_rows(schema: pa.Schema, n: int, seed: int) -> list[dict]:
    """``n`` rows of ``schema``'s columns: unicode, empty and null strings, lists of every
    length, a picture path in one image cell in three (the image columns' paths name the
    pictures `_read` gives)."""
    rng = random.Random(seed)

    def value(name: str, kind: pa.DataType, i: int):
        if rng.random() < 0.1 and name != "split":
            return None
        if pa.types.is_list(kind):
            return [value(name, kind.value_type, i) for _ in range(rng.randrange(4))]
        if name in E.HF_IMAGE_COLUMNS + E.HF_IMAGE_LIST_COLUMNS:
            return f"media/{rng.randrange(3)}/pic{rng.randrange(5)}.png" if i % 3 == 0 else None
        if name == "split":
            return rng.choice(["train", "train", "test"])
        if pa.types.is_string(kind):
            return rng.choice(["", "plain", "ünïcode ✓ \u2028", f'"q" \\ {rng.random()}\t'])
        if pa.types.is_boolean(kind):
            return rng.random() < 0.5
        if pa.types.is_integer(kind):
            return rng.randrange(-5, 10**6)
        return rng.choice([0.0, -0.5, rng.random(), 1e-300])

    return [{f.name: value(f.name, f.type, i) for f in schema} for i in range(n)]


def _read(path: str) -> bytes:
    """A distinct PNG per path (size from the path)."""
    size = 4 + int(hashlib.sha256(path.encode()).hexdigest(), 16) % 9
    return png_bytes(size=size)


def _with_datasets(table: pa.Table, read) -> tuple[pa.Table, object]:
    """The export's `hf_image_columns` before h20c: the cells as now, the features from
    `datasets`."""
    import datasets

    image = datasets.Image()

    def cell(path):
        return None if path is None else {"bytes": read(path), "path": os.path.basename(path)}

    features = datasets.Features.from_arrow_schema(table.schema)
    for index, name in enumerate(table.column_names):
        if name not in E.HF_IMAGE_COLUMNS + E.HF_IMAGE_LIST_COLUMNS:
            continue
        values = table.column(name).to_pylist()
        if name in E.HF_IMAGE_COLUMNS:
            column = pa.array([cell(p) for p in values], type=image.pa_type)
            features[name] = image
        else:
            cells = [None if ps is None else [cell(p) for p in ps] for ps in values]
            column = pa.array(cells, type=pa.list_(image.pa_type))
            features[name] = datasets.List(image)
        table = table.set_column(index, name, column)
    return table, features


def _datasets_folder(folder: Path, tables: dict, features, fingerprints: dict) -> dict:
    """The export's `save_dataset_dict` before h20c (`datasets`' ArrowWriter and dicts); the
    parts, as `datasets.Dataset`s."""
    import datasets
    from datasets.arrow_writer import ArrowWriter
    from datasets.table import InMemoryTable
    from datasets.utils.py_utils import asdict

    info = datasets.DatasetInfo(features=features)
    parts = {
        split: datasets.Dataset(
            InMemoryTable(table), info=info.copy(), fingerprint=fingerprints[split]
        )
        for split, table in tables.items()
    }
    folder.mkdir(parents=True)
    (folder / "dataset_dict.json").write_text(json.dumps({"splits": list(parts)}))
    for split, part in parts.items():
        (folder / split).mkdir()
        shard = "data-00000-of-00001.arrow"
        stream = pa.OSFile(str(folder / split / shard), "wb")
        writer = ArrowWriter(features=part.features, stream=stream, embed_local_files=False)
        writer.write_table(part.data.table)
        writer.finalize()
        writer.close()
        state = {
            "_data_files": [{"filename": shard}],
            "_fingerprint": part._fingerprint,
            "_format_columns": None,
            "_format_kwargs": {},
            "_format_type": None,
            "_output_all_columns": False,
            "_split": None,
        }
        (folder / split / "state.json").write_text(json.dumps(state, indent=2, sort_keys=True))
        as_dict = asdict(part.info)
        (folder / split / "dataset_info.json").write_text(
            json.dumps({key: as_dict[key] for key in sorted(as_dict)}, indent=2)
        )
    return parts


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _stream(data: bytes) -> pa.Table:
    return pa.ipc.open_stream(data).read_all()


def _splits(table: pa.Table, names) -> dict[str, pa.Table]:
    return {name: E._split_rows(table, name) for name in names}


TABLES = {
    "pairs, 2,345 rows in chunks": (E._pair_schema, 2345, ("train", "test", "empty")),
    "rankings, 1,001 rows": (E._ranking_schema, 1001, ("train",)),
    "rankings, 7 rows": (E._ranking_schema, 7, ("test", "train")),
}


@pytest.mark.parametrize("pictures", [True, False], ids=["pictures", "no-pictures"])
@pytest.mark.parametrize("shape", sorted(TABLES))
def test_the_folder_is_what_datasets_writes_byte_for_byte(tmp_path, shape, pictures):
    import datasets

    datasets.disable_progress_bars()
    schema_of, n, names = TABLES[shape]
    rows = _shuffled_rows(schema_of(), n, seed=n)
    if not pictures:
        for row in rows:
            for name in E.HF_IMAGE_COLUMNS + E.HF_IMAGE_LIST_COLUMNS:
                if name in row:
                    row[name] = None
    table = pa.Table.from_pylist(rows, schema=schema_of())
    # In chunks, as a table concatenated from several builds (the writer combines them).
    table = pa.concat_tables([table.slice(0, n // 3), table.slice(n // 3)])
    fingerprints = {split: hashlib.sha256(split.encode()).hexdigest()[:16] for split in names}

    ours_table, features = E.hf_image_columns(table, _read)
    theirs_table, theirs_features = _with_datasets(table, _read)
    assert ours_table.equals(theirs_table)
    assert datasets.Features.from_dict(features) == theirs_features
    E.write_hf_folder(tmp_path / "ours", _splits(ours_table, names), features, fingerprints)
    parts = _datasets_folder(
        tmp_path / "theirs", _splits(theirs_table, names), theirs_features, fingerprints
    )
    datasets.DatasetDict(parts).save_to_disk(
        str(tmp_path / "library"), num_shards=dict.fromkeys(names, 1)
    )

    ours = _files(tmp_path / "ours")
    assert len(ours) == 1 + 3 * len(names)
    assert ours == _files(tmp_path / "theirs")
    # `save_to_disk` cuts the shards' record batches by bytes, not rows: the same files but
    # the shards, which hold the same table.
    library = _files(tmp_path / "library")
    assert {k: v for k, v in ours.items() if not k.endswith(".arrow")} == {
        k: v for k, v in library.items() if not k.endswith(".arrow")
    }
    for split in names:
        shard = f"{split}/data-00000-of-00001.arrow"
        assert _stream(ours[shard]).equals(_stream(library[shard]), check_metadata=True)

    loaded = datasets.load_from_disk(str(tmp_path / "ours"))
    assert list(loaded) == list(names)
    expected = table.to_pylist()
    for split in names:
        part = loaded[split]
        assert part.features == theirs_features
        assert part.with_format("arrow")[:].equals(E._split_rows(ours_table, split))
        for name in E.HF_IMAGE_COLUMNS + E.HF_IMAGE_LIST_COLUMNS:
            if name in part.column_names:
                part = part.cast_column(name, _image_feature(name, decode=False))
        want = [row for row in expected if row["split"] == split]
        got = part.to_list()
        assert len(got) == len(want)
        for row, put in zip(got, want, strict=True):
            for name, value in put.items():
                if name in E.HF_IMAGE_COLUMNS:
                    value = _cell(value)
                elif name in E.HF_IMAGE_LIST_COLUMNS and value is not None:
                    value = [_cell(p) for p in value]
                assert row[name] == value, name
    if pictures and "train" in names:
        decoded = loaded["train"][0]
        for name in E.HF_IMAGE_COLUMNS:
            if name in decoded and decoded[name] is not None:
                assert decoded[name].size[0] >= 4  # a PIL image


def _image_feature(name: str, decode: bool):
    import datasets

    image = datasets.Image(decode=decode)
    return image if name in E.HF_IMAGE_COLUMNS else datasets.List(image)


def _cell(path):
    return None if path is None else {"bytes": _read(path), "path": os.path.basename(path)}


def test_the_features_name_every_type_an_export_holds_and_refuse_others():
    assert E.hf_features(pa.schema([("n", pa.int32()), ("x", pa.float64())])) == {
        "n": {"dtype": "int32", "_type": "Value"},
        "x": {"dtype": "float64", "_type": "Value"},
    }
    with pytest.raises(ValueError, match="'when' has a type"):
        E.hf_features(pa.schema([("when", pa.timestamp("s"))]))
    # A picture struct outside the image columns is not taken for an Image.
    with pytest.raises(ValueError, match="'other'"):
        E.hf_features(pa.schema([("other", E._hf_image_type())]))


def test_a_split_whose_columns_are_not_the_features_is_refused(tmp_path):
    table = pa.table({"a": [1]})
    features = E.hf_features(pa.schema([("b", pa.int64())]))
    with pytest.raises(ValueError, match="columns"):
        E.write_hf_folder(tmp_path / "x", {"train": table}, features, {"train": "f"})


@pytest.mark.django_db
def test_an_image_export_writes_the_folders_datasets_wrote(users, settings, tmp_path):
    """A real export with pictures in every image column: its folders equal the `datasets`
    path's, built from its own Parquet tables and media."""
    import datasets
    import pyarrow.parquet as pq

    from tests.curation.test_export import _build, _image_project

    settings.DATA_DIR = tmp_path / "data"
    export = _build(_image_project(users))
    root = Path(export.path)
    for name in ("pairs", "rankings", "rankings_4"):
        parquet = root / "parquet" / f"{name}.parquet"
        table = pq.read_table(parquet)
        content = hashlib.sha256(parquet.read_bytes()).hexdigest()
        names = json.loads((root / "hf" / name / "dataset_dict.json").read_text())["splits"]
        fingerprints = {
            s: hashlib.sha256(f"{content}:{s}".encode()).hexdigest()[:16] for s in names
        }
        theirs_table, features = _with_datasets(table, lambda p: (root / p).read_bytes())
        _datasets_folder(tmp_path / name, _splits(theirs_table, names), features, fingerprints)
        ours = {k: v for k, v in _files(root / "hf" / name).items() if k != "README.md"}
        assert ours == _files(tmp_path / name), name
        if name == "pairs":
            assert theirs_table.column("chosen_image").null_count == 0
            loaded = datasets.load_from_disk(str(root / "hf" / name))["train"]
            assert loaded.with_format("arrow")[:].equals(theirs_table)


def test_an_export_does_not_import_datasets(tmp_path):
    """A fresh process builds an export (import, build, write every format) and `datasets`
    stays out of ``sys.modules``."""
    script = f"""
import os, sys
sys.path[:0] = [{str(REPO)!r}, {str(REPO / "bench" / "peers")!r}]
os.environ["QUORUM_DATA_DIR"] = {str(tmp_path / "data")!r}
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
import django
django.setup()
from django.core.management import call_command
call_command("migrate", verbosity=0)
from pathlib import Path
from workload import write_quorum_jsonl
from annotate.models import Project
from annotate.services import import_file
from curation import services
path = write_quorum_jsonl(Path({str(tmp_path / "w.jsonl")!r}), 30, judged=True, k=1)
import_file(path=path, project_name="w")
export = services.export_create(project=Project.objects.get(name="w"), options={{}}, enqueue=False)
export = services.export_build(export_id=export.pk)
assert export.status == "done", export.error
assert (Path(export.path) / "hf" / "pairs" / "train" / "data-00000-of-00001.arrow").is_file()
print(sorted(m for m in sys.modules if m == "datasets" or m.startswith("datasets.")))
"""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"
