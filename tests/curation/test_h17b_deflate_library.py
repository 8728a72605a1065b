"""The download's deflate (`curation.download`) by ISA-L (the `isal` package) where it is
installed, else by zlib: either way every block primed with the 32 KB before it and ended by a
sync flush (the last one finished) joins into one raw deflate stream that zlib, `zipfile` and
Info-ZIP's ``unzip`` read back byte for byte; the build's deflated members are that stream."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import zipfile
import zlib

import pytest

from curation import download as D


def _text(seed: int, words: int) -> bytes:
    rng = random.Random(seed)
    vocab = [b"alpha", b"beta", b"gamma", b"\xc3\xa9", b"\xe4\xb8\xad", b'{"k": 1}\n']
    return b" ".join(rng.choices(vocab, k=words))


def _stream(data: bytes, block: int) -> bytes:
    """``data`` deflated as the download does: blocks, each primed with the 32 KB before."""
    out, primer = [], b""
    starts = range(0, max(len(data), 1), block)
    for start in starts:
        chunk = data[start : start + block]
        out.append(D._deflate(chunk, primer, start == starts[-1]))
        primer = (primer + chunk)[-D.WINDOW :]
    return b"".join(out)


@pytest.mark.parametrize("size", [0, 1, 70_000, 3 * 65_536 + 5])
def test_the_blocks_join_into_one_raw_deflate_stream(size):
    data = (_text(size, size // 4 + 1) + random.Random(size).randbytes(size // 8))[:size]
    stream = _stream(data, 65_536)
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(stream) == data
    assert inflater.eof and not inflater.unused_data


def test_blocks_refer_back_into_the_block_before():
    # The second block repeats the first: primed with it, it deflates to a few bytes.
    block = random.Random(7).randbytes(20_000)
    primed = D._deflate(block, block, True)
    alone = D._deflate(block, b"", True)
    assert len(primed) < 1_000 < 20_000 < len(alone)
    assert zlib.decompressobj(-15, zdict=block).decompress(primed) == block


def test_isal_deflates_where_it_is_installed():
    isal_zlib = pytest.importorskip("isal.isal_zlib")
    assert D.DEFLATE_LIBRARY == "isal"
    data = _text(1, 200_000)
    compressor = isal_zlib.compressobj(D.COMPRESS_LEVEL, isal_zlib.DEFLATED, -15)
    assert D._deflate(data, b"", True) == compressor.compress(data) + compressor.flush()
    assert D._zlib.crc32(data, 5) == zlib.crc32(data, 5)


def test_without_isal_it_is_zlib_level_1(monkeypatch):
    monkeypatch.setattr(D, "_zlib", zlib)
    data = _text(2, 200_000)
    compressor = zlib.compressobj(1, zlib.DEFLATED, -15)
    assert D._deflate(data, b"", True) == compressor.compress(data) + compressor.flush()


@pytest.mark.parametrize("library", ["installed", "zlib"])
def test_the_zip_reads_back_with_zipfile_and_unzip(tmp_path, monkeypatch, library):
    if library == "zlib":
        monkeypatch.setattr(D, "_zlib", zlib)
    folder = tmp_path / "v1"
    (folder / "pairs").mkdir(parents=True)
    files = {
        "datasheet.json": b'{"files": []}\n',
        "pairs/train.jsonl": _text(3, 900_000),
        "pairs/empty.jsonl": b"",
        "pairs/random.bin": random.Random(4).randbytes(300_000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    # The build's members, then the download that streams them.
    members = D.DeflatedMembers(folder)
    for name in ("pairs/train.jsonl", "pairs/random.bin"):
        member = members.member(name)
        member.write(files[name])
        member.end()
    members.finish()
    body = b"".join(D.iter_download_zip(folder, "x", chunk_size=D.BLOCK_SIZE))
    index = D.deflated_members(folder)[1]
    assert index["pairs/train.jsonl"]["crc32"] == zlib.crc32(files["pairs/train.jsonl"])
    with zipfile.ZipFile(io.BytesIO(body)) as archive:
        assert archive.testzip() is None
        assert {i.filename.removeprefix("x/"): archive.read(i) for i in archive.infolist()} == files
    # A download that deflates the files itself is the same zip.
    (D.members_folder(folder) / D.MEMBERS_INDEX).unlink()
    assert b"".join(D.iter_download_zip(folder, "x", chunk_size=D.BLOCK_SIZE)) == body
    if shutil.which("unzip") is None:
        pytest.skip("no unzip on this machine")
    (tmp_path / "x.zip").write_bytes(body)
    out = tmp_path / "unzip"
    subprocess.run(["unzip", "-q", str(tmp_path / "x.zip"), "-d", str(out)], check=True)
    assert {
        p.relative_to(out / "x").as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()
    } == files
