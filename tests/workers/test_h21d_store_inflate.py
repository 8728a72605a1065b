"""The media store's read path (h21d): entries inflated by ISA-L where it is installed, files
read unbuffered; the same frames and digests as zlib and a buffered read give, and a damaged
stream still a miss (no Django)."""

from __future__ import annotations

import hashlib
import logging
import zlib

import numpy as np
import pytest

from workers.reward_model import media_cache
from workers.reward_model.media_cache import MediaStore, file_digest


def _entry(store: MediaStore) -> bytes:
    (path,) = [p for p in store.directory.rglob("*") if p.is_file()]
    return path.read_bytes()


@pytest.mark.parametrize("shape", [(1, 84, 84, 3), (4, 56, 56, 3), (3, 1, 1, 3)])
def test_an_entry_reads_back_the_frames_written(tmp_path, shape):
    frames = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    frames[:, : shape[1] // 2] = 7  # a run, as pictures have: the stream holds back-references
    store = MediaStore(tmp_path)
    store.write("scope", "video", "ab" * 32, frames, {"fps": 2.0})

    got, meta = store.read("scope", "video", "ab" * 32)

    assert got.dtype == np.uint8 and got.shape == shape and np.array_equal(got, frames)
    assert got.flags.writeable and meta == {"fps": 2.0}
    # What was written is a plain zlib stream (any inflater reads it), the same bytes.
    data = _entry(store)
    assert zlib.decompress(data[data.index(b"\n", len(media_cache.STORE_MAGIC)) + 1 :]) == (
        frames.tobytes()
    )


def test_the_store_inflates_with_isal_where_it_is_installed():
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert media_cache._inflater is isal_zlib
    assert isal_zlib.error in media_cache._INFLATE_ERRORS


@pytest.mark.parametrize("damage", ["truncated", "flipped"])
def test_an_entry_whose_stream_is_damaged_is_a_miss(tmp_path, caplog, damage):
    frames = np.random.default_rng(3).integers(0, 256, (1, 56, 56, 3), dtype=np.uint8)
    store = MediaStore(tmp_path)
    store.write("scope", "image", "cd" * 32, frames, {"source": [56, 56]})
    (path,) = [p for p in tmp_path.rglob("*") if p.is_file()]
    data = bytearray(path.read_bytes())
    body = data.index(b"\n", len(media_cache.STORE_MAGIC)) + 1
    if damage == "truncated":
        del data[body + (len(data) - body) // 2 :]
    else:
        for offset in range(body + 2, len(data), 7):
            data[offset] ^= 0xFF
    path.write_bytes(bytes(data))

    with caplog.at_level(logging.WARNING, logger="workers.reward_model.media_cache"):
        assert store.read("scope", "image", "cd" * 32) is None

    assert store.misses == 1 and store.hits == 0
    assert "unreadable" in caplog.text and str(path) in caplog.text


@pytest.mark.parametrize("size", [0, 17_161, 2**20, 2**20 + 1, 3 * 2**20 + 5])
def test_a_file_digest_is_the_blake2b_of_its_bytes(tmp_path, size):
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "file.bin"
    path.write_bytes(data)

    assert file_digest(path) == hashlib.blake2b(data).hexdigest()
    assert file_digest(str(path)) == hashlib.blake2b(data).hexdigest()
    assert file_digest(tmp_path / "missing.png") is None
