"""The download of a curated export: its folder streamed as a zip while the zip is written.

Deflate at level 1 for what compresses (JSONL, the Hugging Face folders' Arrow shards, the
datasheet), and Parquet stored as it is: its pages are compressed already (Snappy), deflate
takes a tenth of a second per 10 MB of it to save about 8 %. Measured on the export of 10,000
judged ranking tasks (229 MB of files, ``bench/peers``' workload): level 6 for every file, as
before, 4.3 s of CPU for a 38 MB zip; this, about 1.0 s for 48 MB. A download is one core's
work on the web server while the client waits on it, so its CPU is the user's wait.

A file is deflated a block (``chunk_size``) at a time, blocks compressed in threads (zlib runs
without the GIL) while the zip goes out in path order, as pigz does: each block primed with the
32 KB before it (``zdict``) and ended by a sync flush (byte-aligned, not final), the file's
last block finished. The blocks joined are one deflate stream; a large file (the pairs' JSONL,
the pairs' Arrow shard) keeps every thread busy, not one. The entries are those `zipfile`
writes to a stream (a data descriptor after each entry, zip64 sizes).

``formats`` (`FORMATS`) keeps only the named formats' folders: ``parquet/``, ``hf/``, or the
JSONL folders (every other folder but ``media/``); the datasheet, the overruled arcs and media
always go.
"""

from __future__ import annotations

import struct
import zipfile
import zlib
from collections import deque
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from annotate.zip_sink import ZipSink
from curation.exporting import export_file_chunks

COMPRESS_LEVEL = 1
# Files whose content is compressed already: stored in the zip as they are.
STORED_SUFFIXES = frozenset({".parquet"})
# Threads deflating blocks, and blocks handed to them ahead of the one being sent: bounds the
# memory of a download to a few tens of MB.
COMPRESSORS = 2
BLOCKS_AHEAD = 8
# What deflate may refer back to: the block before primes the next one's compressor.
WINDOW = 1 << 15
# The download's formats: the folder of each (JSONL: every other folder but media/).
FORMATS = ("jsonl", "parquet", "hf")
_FORMAT_FOLDERS = {"parquet": "parquet", "hf": "hf"}
# What `zipfile` names these (its private constants: the same values, spelled out here).
_DATA_DESCRIPTOR_FLAG = 0x08
_DATA_DESCRIPTOR = struct.Struct("<LLQQ")  # signature, CRC-32, sizes (zip64)
_DATA_DESCRIPTOR_SIGNATURE = 0x08074B50


def compress_type(path: Path) -> int:
    return zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED


def file_format(rel: str) -> str | None:
    """The format an export file belongs to (`FORMATS`), or None for what every download holds
    (the datasheet, the overruled arcs, media)."""
    top, _, rest = rel.partition("/")
    if not rest or top == "media":
        return None
    return _FORMAT_FOLDERS.get(top, "jsonl")


def _deflate(block: bytes, primer: bytes, last: bool) -> bytes:
    """``block`` as deflate data that continues the stream ``primer`` ended (its last 32 KB)."""
    compressor = (
        zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15, zdict=primer)
        if primer
        else zlib.compressobj(COMPRESS_LEVEL, zlib.DEFLATED, -15)
    )
    data = compressor.compress(block)
    return data + compressor.flush(zlib.Z_FINISH if last else zlib.Z_SYNC_FLUSH)


def _blocks(path: Path, base_folder: str | None, chunk_size: int) -> Iterator[tuple[bytes, bool]]:
    """The file's chunks, each with whether it is the last (an empty file: one empty chunk)."""
    held = None
    for chunk in export_file_chunks(path, base_folder=base_folder, chunk_size=chunk_size):
        if held is not None:
            yield held, False
        held = chunk
    yield (held if held is not None else b""), True


def iter_download_zip(
    folder: Path,
    prefix: str,
    *,
    base_folder: str | None = None,
    chunk_size: int = 1 << 20,
    formats: Collection[str] | None = None,
) -> Iterator[bytes]:
    """``folder`` as a zip (entries under ``prefix/``, in sorted path order), without a
    temporary file. ``base_folder``: where the user will unpack it; JSONL paths are then written
    absolute under it (`curation.exporting.with_base_folder`). ``formats``: only these of
    `FORMATS` (None: all)."""
    if formats is not None and not set(formats) <= set(FORMATS):
        raise ValueError(f"formats must be among {', '.join(FORMATS)}: {sorted(formats)}")
    paths = []
    for path in sorted(folder.rglob("*")):
        kind = file_format(path.relative_to(folder).as_posix())
        if path.is_file() and (formats is None or kind is None or kind in formats):
            paths.append(path)
    sink = ZipSink()
    pool = ThreadPoolExecutor(max_workers=COMPRESSORS, thread_name_prefix="zip")
    # What goes out, in order: an entry's start, its blocks (futures, some still being
    # deflated), its end; sent from the left while the threads work ahead, across files.
    ahead: deque[tuple[str, object]] = deque()
    blocks_ahead = 0
    try:
        with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[arg-type]
            # `archive` writes the central directory at the end; the entries are written here
            # as `ZipFile.open(info, "w", force_zip64=True)` writes them to a stream.
            fp = archive.fp
            entry: zipfile.ZipInfo | None = None

            def send() -> None:
                nonlocal entry, blocks_ahead
                what, item = ahead.popleft()
                if what == "start":
                    entry = item  # type: ignore[assignment]
                    entry.header_offset = fp.tell()
                    entry.compress_size = 0
                    fp.write(entry.FileHeader(zip64=True))
                elif what == "block":
                    data = item.result()  # type: ignore[attr-defined]
                    blocks_ahead -= 1
                    entry.compress_size += len(data)
                    fp.write(data)
                else:
                    entry.CRC, entry.file_size = item  # type: ignore[misc]
                    fp.write(
                        _DATA_DESCRIPTOR.pack(
                            _DATA_DESCRIPTOR_SIGNATURE,
                            entry.CRC,
                            entry.compress_size,
                            entry.file_size,
                        )
                    )
                    archive.filelist.append(entry)
                    archive.NameToInfo[entry.filename] = entry
                    archive.start_dir = fp.tell()
                    archive._didModify = True

            for path in paths:
                info = zipfile.ZipInfo.from_file(
                    path, f"{prefix}/{path.relative_to(folder).as_posix()}"
                )
                info.compress_type = compress_type(path)
                info.flag_bits = _DATA_DESCRIPTOR_FLAG
                ahead.append(("start", info))
                deflated = info.compress_type == zipfile.ZIP_DEFLATED
                crc = size = 0
                primer = b""
                for block, last in _blocks(path, base_folder, chunk_size):
                    crc = zlib.crc32(block, crc)
                    size += len(block)
                    if deflated:
                        ahead.append(("block", pool.submit(_deflate, block, primer, last)))
                        tail = block if len(block) >= WINDOW else primer + block
                        primer = tail[-WINDOW:]
                    else:
                        ahead.append(("block", _done(block)))
                    blocks_ahead += 1
                    while blocks_ahead > BLOCKS_AHEAD:
                        send()
                    yield from sink.drain()
                ahead.append(("end", (crc, size)))
            while ahead:
                send()
                yield from sink.drain()
        yield from sink.drain()
    finally:
        for what, item in ahead:
            if what == "block":
                item.cancel()  # type: ignore[attr-defined]
        pool.shutdown(wait=True, cancel_futures=True)


def _done(data: bytes) -> Future:
    future: Future = Future()
    future.set_result(data)
    return future
