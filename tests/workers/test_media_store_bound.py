"""The media store's bound: least recently used entries deleted past `max_bytes` (no Django)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from workers.reward_model.media_cache import MediaStore

SCOPE = "scope"


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture: this pure-core file runs
    with ``-p no:django`` and touches no Django settings."""


def _frames(seed: int) -> np.ndarray:
    # Random pixels do not compress: each entry is about 12 KB on disk.
    return np.random.default_rng(seed).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)


def _entries(root: Path) -> dict[str, int]:
    """The store's entries as the file system has them: digest -> bytes on disk."""
    return {
        p.stem: p.stat().st_size
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")
    }


def _digest(i: int) -> str:
    return f"{i:02x}" + "ab" * 31


def test_the_folder_never_holds_more_than_the_bound(tmp_path):
    entry = 64 * 64 * 3
    store = MediaStore(tmp_path / "store", max_bytes=10 * entry)

    sizes = []
    for i in range(40):
        store.write(SCOPE, "image", _digest(i), _frames(i), {})
        sizes.append(sum(_entries(tmp_path / "store").values()))

    assert max(sizes) <= 10 * entry
    assert store.writes == 40 and store.evictions > 0
    assert len(_entries(tmp_path / "store")) >= 8  # swept down to 90 %, not emptied
    # The newest entries are the ones kept.
    assert _digest(39) in _entries(tmp_path / "store")
    assert store.read(SCOPE, "image", _digest(0)) is None


def test_entries_read_recently_are_kept_and_the_others_go_first(tmp_path):
    entry = 64 * 64 * 3
    store = MediaStore(tmp_path / "store", max_bytes=6 * entry)
    for i in range(5):
        store.write(SCOPE, "image", _digest(i), _frames(i), {})
    # Written long ago, oldest first: without the reads, 0 and 1 would go first.
    for i, path in enumerate(sorted((tmp_path / "store").rglob("*.image"))):
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
    frames, _ = store.read(SCOPE, "image", _digest(0))  # used again: now the most recent
    assert np.array_equal(frames, _frames(0))

    for i in range(5, 8):
        store.write(SCOPE, "image", _digest(i), _frames(i), {})

    kept = _entries(tmp_path / "store")
    assert _digest(0) in kept and _digest(1) not in kept and _digest(2) not in kept
    assert all(_digest(i) in kept for i in range(5, 8))


def test_another_process_writing_the_same_folder_is_counted(tmp_path):
    entry = 64 * 64 * 3
    bound = 16 * entry
    store = MediaStore(tmp_path / "store", max_bytes=bound)
    store.write(SCOPE, "image", _digest(0), _frames(0), {})
    # Another worker process fills the folder past this process's picture of it.
    script = textwrap.dedent(
        f"""
        import numpy as np
        from workers.reward_model.media_cache import MediaStore
        store = MediaStore({str(tmp_path / "store")!r}, max_bytes={bound})
        for i in range(100, 116):
            frames = np.random.default_rng(i).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8)
            store.write("{SCOPE}", "image", f"{{i:02x}}" + "ab" * 31, frames, {{}})
        """
    )
    subprocess.run(
        [sys.executable, "-c", script],
        check=True,
        cwd=Path(__file__).resolve().parents[2],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert sum(_entries(tmp_path / "store").values()) <= bound

    sizes = []
    for i in range(1, 12):
        store.write(SCOPE, "image", _digest(i), _frames(i), {})
        sizes.append(sum(_entries(tmp_path / "store").values()))

    # This process sweeps after writing an eighth of the bound: what the other wrote is
    # counted then, so the folder passes the bound by at most that eighth.
    assert max(sizes) <= bound * (1 + MediaStore.SWEEP_SHARE) + entry
    assert sizes[-1] <= bound


def test_a_bound_of_zero_turns_the_store_off(tmp_path):
    store = MediaStore()
    store.configure(tmp_path / "store", 0)

    store.write(SCOPE, "image", _digest(0), _frames(0), {})

    assert not store.enabled and store.read(SCOPE, "image", _digest(0)) is None
    assert not (tmp_path / "store").exists()
    store.configure(tmp_path / "store", 2**20)
    store.write(SCOPE, "image", _digest(0), _frames(0), {})
    assert np.array_equal(store.read(SCOPE, "image", _digest(0))[0], _frames(0))


def test_stale_temporary_files_are_swept(tmp_path):
    store = MediaStore(tmp_path / "store", max_bytes=2**20)
    store.write(SCOPE, "image", _digest(0), _frames(0), {})
    folder = next((tmp_path / "store").rglob("*.image")).parent
    stale, fresh = folder / ".deadbeef-1-stale", folder / ".deadbeef-2-fresh"
    stale.write_bytes(b"x" * 100)
    fresh.write_bytes(b"x" * 100)
    os.utime(stale, (1_000_000, 1_000_000))

    store.sweep()

    assert not stale.exists() and fresh.exists()
