"""Media store entries are written as a zlib stream of stored (uncompressed) blocks (h20i).

Every later scoring of a file inflates its entry: stored blocks cost a copy and a checksum,
level-1 deflate 2-6x that for a demo picture. The entry is still a zlib stream, so readers of
either kind of entry (those written before, at level 1, included) read the same frames.
"""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from workers.media import STORE_MAGIC, store_entry
from workers.reward_model.media_cache import MediaStore


def _payload(entry: bytes) -> bytes:
    end = entry.index(b"\n", len(STORE_MAGIC))
    return entry[end + 1 :]


@pytest.mark.parametrize("shape", [(1, 84, 84, 3), (4, 56, 56, 3), (1, 1, 1, 3), (0, 2, 2, 3)])
def test_entries_hold_the_frames_uncompressed(shape) -> None:
    # Constant frames: any compressing level would shrink them to a few hundred bytes.
    frames = np.full(shape, 7, dtype=np.uint8)
    payload = _payload(store_entry(frames, {"fps": 2.0}))
    assert len(payload) >= frames.nbytes
    assert zlib.decompress(payload) == frames.tobytes()


def test_a_strided_array_is_stored_as_its_frames() -> None:
    frames = np.arange(2 * 28 * 28 * 3, dtype=np.uint8).reshape(2, 28, 28, 3)[:, ::2, ::2]
    payload = _payload(store_entry(frames, {}))
    assert zlib.decompress(payload) == np.ascontiguousarray(frames).tobytes()


@pytest.mark.parametrize("level", [None, 1])
def test_the_store_reads_new_and_earlier_entries_alike(tmp_path, level) -> None:
    store = MediaStore(tmp_path / "store")
    frames = np.random.default_rng(3).integers(0, 256, (4, 56, 56, 3), dtype=np.uint8)
    frames[:, :28] = 0  # compressible, as pictures are
    meta = {"source": [56, 56], "fps": 2.0}
    store.write("scope", "video", "ab" * 32, frames, meta)
    path = store._path("scope", "video", "ab" * 32)
    if level is not None:  # as trees before this one wrote it
        header = json.dumps({"shape": list(frames.shape), "meta": meta}, separators=(",", ":"))
        path.write_bytes(
            STORE_MAGIC + header.encode() + b"\n" + zlib.compress(frames.tobytes(), level)
        )
    got, got_meta = store.read("scope", "video", "ab" * 32)
    assert np.array_equal(got, frames) and got.flags.writeable
    assert got_meta == meta
    assert (store.hits, store.misses) == (1, 0)
