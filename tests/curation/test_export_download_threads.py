"""`curation.download.iter_download_zip` compresses files in threads ahead of the one being
sent: the zip is still every file in path order, an abandoned download stops its threads, and
a file that fails to read fails the download."""

from __future__ import annotations

import io
import json
import random
import threading
import time
import zipfile

import pytest

from curation.download import COMPRESSORS, iter_download_zip


def _folder(tmp_path, n_files: int = 7, size: int = 300_000):
    rng = random.Random(0)
    words = ["alpha", "beta", "gamma", "delta", "é", "中"]
    folder = tmp_path / "export"
    files = {}
    for i in range(n_files):
        name = f"{'pairs' if i % 2 else 'hf/pairs/train'}/part-{i}.jsonl"
        if i == 3:
            name = "parquet/pairs.parquet"  # stored, not deflated
        lines, total = [], 0
        while total < size:
            lines.append(json.dumps({"text": " ".join(rng.choices(words, k=20))}) + "\n")
            total += len(lines[-1])
        files[name] = "".join(lines).encode()
    files["empty.json"] = b""
    for name, data in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    return folder, files


def _zip_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("zip")]


def test_it_zips_every_file_in_path_order_through_small_chunks(tmp_path):
    folder, files = _folder(tmp_path)
    body = b"".join(iter_download_zip(folder, "quorum-1-v1", chunk_size=4096))
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None  # every CRC checks
        names = [i.filename for i in archive.infolist()]
        assert names == [f"quorum-1-v1/{name}" for name in sorted(files)]
        assert {n.removeprefix("quorum-1-v1/"): archive.read(n) for n in names} == files
        kinds = {i.filename: i.compress_type for i in archive.infolist()}
    assert kinds["quorum-1-v1/parquet/pairs.parquet"] == zipfile.ZIP_STORED
    assert kinds["quorum-1-v1/pairs/part-1.jsonl"] == zipfile.ZIP_DEFLATED
    assert not _zip_threads()


def test_it_stops_compressing_when_the_download_is_abandoned(tmp_path):
    # Incompressible: each 1 KB chunk gives a compressed chunk, far more than a file's
    # threads may hold ahead, so they wait on the download until it goes away.
    rng = random.Random(1)
    folder = tmp_path / "export"
    folder.mkdir()
    for i in range(6):
        (folder / f"media-{i}.bin").write_bytes(rng.randbytes(2_000_000))
    download = iter_download_zip(folder, "x", chunk_size=1024)
    next(download)
    assert 0 < len(_zip_threads()) <= COMPRESSORS
    download.close()  # the client went away
    deadline = time.monotonic() + 5
    while _zip_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _zip_threads()


def test_a_file_that_cannot_be_read_fails_the_download(tmp_path):
    folder, _ = _folder(tmp_path, n_files=3)
    (folder / "pairs" / "part-1.jsonl").write_text('{"text": "fine"}\n{not json\n')
    with pytest.raises(json.JSONDecodeError):
        b"".join(iter_download_zip(folder, "x", base_folder="/data/export"))
    assert not _zip_threads()
