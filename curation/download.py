"""The download of a curated export: its folder streamed as a zip while the zip is written.

Deflate at level 1 for what compresses (JSONL, the Hugging Face folders' Arrow shards, the
datasheet), and Parquet stored as it is: its pages are compressed already (Snappy), deflate
takes a tenth of a second per 10 MB of it to save about 8 %. Measured on the export of 10,000
judged ranking tasks (229 MB of files, ``bench/peers``' workload): level 6 for every file, as
before, 4.3 s of CPU for a 38 MB zip; this, about 1.0 s for 48 MB with zlib, and about 0.3 s
for 50.1 MB with ISA-L's deflate (the `isal` package, used where it is installed; zlib's
interface, any inflater reads its streams). A download is one core's work on the web server
while the client waits on it, so its CPU is the user's wait.

A file is deflated a block (``chunk_size``) at a time, blocks compressed in threads (zlib and
ISA-L run without the GIL) while the zip goes out in path order, as pigz does: each block
primed with the 32 KB before it (``zdict``) and ended by a sync flush (byte-aligned, not
final), the file's last block finished. The blocks joined are one deflate stream; a large
file (the pairs' JSONL, the pairs' Arrow shard) keeps every thread busy, not one. The entries
are those `zipfile` writes to a stream (a data descriptor after each entry, zip64 sizes).

``formats`` (`FORMATS`) keeps only the named formats' folders: ``parquet/``, ``hf/``, or the
JSONL folders (every other folder but ``media/``); the datasheet, the overruled arcs and media
always go.

An export folder never changes once built, so its big files are deflated once, by the build
(`DeflatedMembers`, on the cores the build leaves free while it writes them), into a folder
beside the export's, ``.zip-<SHA-256 of datasheet.json>/``: each file's deflate stream, made
block by block exactly as here, with its CRC-32. A download streams those (`deflated_members`)
instead of deflating again: the same zip, byte for byte, for about a twentieth of the CPU.
A file whose size or modification time differs from what the build recorded, a missing
folder, or JSONL rewritten for ``base_folder`` are deflated here as before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import threading
import zipfile
import zlib
from collections import deque
from collections.abc import Collection, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from annotate.zip_sink import ZipSink
from curation.exporting import export_file_chunks

try:
    # ISA-L's deflate (the `isal` package, `zlib`'s interface): on the 10k export's files
    # about a quarter of zlib's CPU at level 1, and a zip a few per cent smaller; any inflater
    # reads it. Without the package, zlib.
    from isal import isal_zlib as _zlib
except ImportError:  # pragma: no cover - depends on what is installed
    _zlib = zlib

# Which library deflates (its streams differ byte for byte; both are plain deflate).
DEFLATE_LIBRARY = "isal" if _zlib is not zlib else "zlib"
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
# The download's block size (`iter_download_zip`'s ``chunk_size``): `DeflatedMembers` cuts
# blocks the same, so a file deflated by the build is the stream a download would make.
BLOCK_SIZE = 1 << 20
# Beside an export folder: its files deflated by the build, named by its datasheet's digest.
MEMBERS_PREFIX = ".zip-"
MEMBERS_INDEX = "index.json"


def compress_type(path: Path) -> int:
    return zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED


def file_format(rel: str) -> str | None:
    """The format an export file belongs to (`FORMATS`), or None for what every download holds
    (the datasheet, the overruled arcs, media)."""
    top, _, rest = rel.partition("/")
    if not rest or top == "media":
        return None
    return _FORMAT_FOLDERS.get(top, "jsonl")


def _deflate(block: bytes | memoryview, primer: bytes, last: bool) -> bytes:
    """``block`` as deflate data that continues the stream ``primer`` ended (its last 32 KB)."""
    compressor = (
        _zlib.compressobj(COMPRESS_LEVEL, _zlib.DEFLATED, -15, zdict=primer)
        if primer
        else _zlib.compressobj(COMPRESS_LEVEL, _zlib.DEFLATED, -15)
    )
    data = compressor.compress(block)
    return data + compressor.flush(_zlib.Z_FINISH if last else _zlib.Z_SYNC_FLUSH)


def members_folder(folder: Path) -> Path | None:
    """Where the build left ``folder``'s deflated files (`DeflatedMembers`): beside it, named by
    the SHA-256 of its ``datasheet.json``; None when the folder has no datasheet."""
    try:
        sheet = (folder / "datasheet.json").read_bytes()
    except OSError:
        return None
    return folder.parent / f"{MEMBERS_PREFIX}{hashlib.sha256(sheet).hexdigest()}"


class DeflatedMember:
    """One file deflated as `iter_download_zip` deflates it: cut into ``BLOCK_SIZE`` blocks
    (the last one finished), each primed with the 32 KB before it, compressed in ``pool``'s
    threads and written in order to ``target``.

    With ``digester`` (a one-thread executor), the blocks' CRC-32 and the file's SHA-256
    (`sha256`) are worked out there, in order, instead of in the writing thread, and with
    ``copy_to`` the blocks are also written there, to that file (created here): all of it runs
    without the GIL on a block, so the thread that encodes the file does not wait on it."""

    def __init__(
        self,
        pool: ThreadPoolExecutor,
        target: Path,
        digester: ThreadPoolExecutor | None = None,
        copy_to: Path | None = None,
    ):
        if copy_to is not None and digester is None:
            raise ValueError("copy_to needs a digester")
        self._pool = pool
        self._fh = open(target, "wb")  # noqa: SIM115 - closed by close()
        self._buffer = bytearray()
        self._pending: deque[Future] = deque()
        self._primer = b""
        self.crc = self.size = self.compressed = 0
        self._digester = digester
        self._sha = hashlib.sha256() if digester is not None else None
        self._checked: list[Future] = []
        self._copy = open(copy_to, "wb") if copy_to is not None else None  # noqa: SIM115

    def write(self, data: bytes | memoryview) -> None:
        """The file's next bytes (not to be changed afterwards: blocks of them are compressed
        in place, without a copy). A full block goes out once a byte after it is known: the
        file's last block is held back for `end`."""
        view = memoryview(data).cast("B")
        if self._buffer:
            need = BLOCK_SIZE - len(self._buffer)
            if len(view) <= need:
                self._buffer += view
                return
            self._buffer += view[:need]
            view = view[need:]
            self._block(bytes(self._buffer), last=False)
            self._buffer = bytearray()
        whole = (len(view) - 1) // BLOCK_SIZE * BLOCK_SIZE if len(view) else 0
        for start in range(0, whole, BLOCK_SIZE):
            self._block(view[start : start + BLOCK_SIZE], last=False)
        self._buffer += view[whole:]

    def end(self) -> None:
        """The file is written: its last block goes to the threads (`finish` waits for it; with
        ``copy_to``, `sha256` or `finish` before reading the copy)."""
        self._block(bytes(self._buffer), last=True)
        self._buffer = bytearray()
        if self._copy is not None:
            self._checked.append(self._digester.submit(self._copy.close))

    def finish(self) -> None:
        while self._pending:
            self._send()
        self._fh.close()
        self._digested()

    def sha256(self) -> str:
        """The SHA-256 of the file's bytes (`end`ed; made with a ``digester``)."""
        if self._sha is None:
            raise ValueError("this member was made without a digester")
        self._digested()
        return self._sha.hexdigest()

    def close_quietly(self) -> None:
        """Closes the file without finishing the stream (the build failed)."""
        for future in self._pending:
            future.cancel()
        for future in self._checked:
            future.cancel()
        self._fh.close()
        if self._copy is not None:
            for future in self._checked:
                if not future.cancelled():
                    future.exception()  # a block being copied: wait before closing
            self._copy.close()

    def _digested(self) -> None:
        """Waits for the digester's work on this member's blocks (its errors raised here)."""
        while self._checked:
            self._checked.pop(0).result()

    def _check(self, block: bytes | memoryview) -> None:
        # In the digester's one thread: blocks in the order they were cut.
        self.crc = _zlib.crc32(block, self.crc)
        self._sha.update(block)
        if self._copy is not None:
            self._copy.write(block)

    def _block(self, block: bytes | memoryview, last: bool) -> None:
        if self._digester is None:
            self.crc = _zlib.crc32(block, self.crc)
        else:
            self._checked.append(self._digester.submit(self._check, block))
            while len(self._checked) > BLOCKS_AHEAD:  # blocks held for it: a few MB at most
                self._checked.pop(0).result()
        self.size += len(block)
        self._pending.append(self._pool.submit(_deflate, block, self._primer, last))
        tail = block if len(block) >= WINDOW else self._primer + block
        self._primer = bytes(tail[-WINDOW:])
        while len(self._pending) > BLOCKS_AHEAD:
            self._send()

    def _send(self) -> None:
        data = self._pending.popleft().result()
        self.compressed += len(data)
        self._fh.write(data)


class DeflatedMembers:
    """The build's side of the download: an export's big files deflated while they are written,
    kept beside the folder for every download (see the module's docstring).

    Open with the export folder being written; `member` a file's bytes as they are written
    (any thread: each member's writes in order), and `finish` once ``datasheet.json`` is
    written (its digest names the folder). `discard` (or an exception before `finish`) leaves
    nothing behind. Writes nothing in ``out_dir`` itself: the folder is the dataset."""

    def __init__(self, out_dir: Path):
        self._out_dir = out_dir
        self._work = out_dir.parent / f"{MEMBERS_PREFIX}tmp-{out_dir.name}"
        self._work.mkdir()
        self._pool = ThreadPoolExecutor(max_workers=COMPRESSORS, thread_name_prefix="deflate")
        # One thread: a member's CRC-32 and SHA-256 are sums over its blocks in order.
        self._digester = ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest")
        self._lock = threading.Lock()
        self._members: dict[str, DeflatedMember] = {}

    def member(self, rel: str, *, digest: bool = False, write: bool = False) -> DeflatedMember:
        """A writer for ``rel`` (a path relative to the export folder); `end` it when the file
        is written. With ``digest``, its CRC-32 and SHA-256 (`DeflatedMember.sha256`) are
        worked out in a thread of their own, not in the writing thread; with ``write`` (and
        ``digest``) that thread also writes the file itself, ``out_dir / rel``."""
        with self._lock:
            number = len(self._members)
            member = DeflatedMember(
                self._pool,
                self._work / f"{number}.deflate",
                self._digester if digest else None,
                self._out_dir / rel if write else None,
            )
            self._members[rel] = member
        return member

    def finish(self) -> Path:
        """Records every member (each `end`ed) with its file's size and modification time (a
        file changed afterwards is deflated by the download again); returns the members'
        folder."""
        index: dict[str, Any] = {}
        for member in self._members.values():
            member.finish()
        self._pool.shutdown(wait=True)
        self._digester.shutdown(wait=True)
        for number, (rel, member) in enumerate(self._members.items()):
            stat = (self._out_dir / rel).stat()
            if stat.st_size != member.size:
                raise RuntimeError(f"{rel}: {stat.st_size} bytes written, {member.size} deflated")
            index[rel] = {
                "member": f"{number}.deflate",
                "crc32": member.crc,
                "bytes": member.size,
                "compressed": member.compressed,
                "mtime_ns": stat.st_mtime_ns,
            }
        (self._work / MEMBERS_INDEX).write_text(json.dumps(index, indent=1))
        target = members_folder(self._out_dir)
        if target is None:
            raise FileNotFoundError(f"{self._out_dir / 'datasheet.json'} is not written")
        if target.exists():  # the same datasheet: the same files, deflated already
            self.discard()
        else:
            os.replace(self._work, target)
        _prune_members(self._out_dir.parent)
        return target

    def discard(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._digester.shutdown(wait=True, cancel_futures=True)
        for member in self._members.values():
            member.close_quietly()
        shutil.rmtree(self._work, ignore_errors=True)


def _prune_members(parent: Path) -> None:
    """Removes members' folders beside no export folder of ``parent`` (a build that died or
    lost its row after writing, a folder replaced): a folder's members are named by its
    datasheet, so any folder there (published or still being moved) keeps its own."""
    kept = set()
    for folder in parent.iterdir():
        if folder.is_dir() and not folder.name.startswith(MEMBERS_PREFIX):
            members = members_folder(folder)
            if members is not None:
                kept.add(members.name)
    for members in parent.glob(f"{MEMBERS_PREFIX}*"):
        name = members.name.removeprefix(MEMBERS_PREFIX)
        if len(name) == 64 and members.name not in kept:  # not a build's tmp- folder
            shutil.rmtree(members, ignore_errors=True)


def deflated_members(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The members' folder of ``folder`` and its index (`DeflatedMembers.finish`), or None."""
    members = members_folder(folder)
    if members is None:
        return None
    try:
        return members, json.loads((members / MEMBERS_INDEX).read_text())
    except (OSError, ValueError):
        return None


def _stored_member(
    members: tuple[Path, dict[str, Any]] | None, rel: str, path: Path
) -> dict[str, Any] | None:
    """``rel``'s entry of the build's deflated members when it still describes the file."""
    if members is None:
        return None
    entry = members[1].get(rel)
    if entry is None:
        return None
    stat = path.stat()
    if stat.st_size != entry["bytes"] or stat.st_mtime_ns != entry["mtime_ns"]:
        return None
    return entry


def _read_chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
    with open(path, "rb") as src:
        yield from iter(lambda: src.read(chunk_size), b"")


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
    members = deflated_members(folder)
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
                rel = path.relative_to(folder).as_posix()
                info = zipfile.ZipInfo.from_file(path, f"{prefix}/{rel}")
                info.compress_type = compress_type(path)
                info.flag_bits = _DATA_DESCRIPTOR_FLAG
                ahead.append(("start", info))
                deflated = info.compress_type == zipfile.ZIP_DEFLATED
                rewritten = base_folder is not None and path.suffix == ".jsonl"
                stored = None if rewritten or not deflated else _stored_member(members, rel, path)
                if stored is not None:
                    # Deflated by the build: its stream as it is, read ahead of the sending.
                    for data in _read_chunks(members[0] / stored["member"], chunk_size):  # type: ignore[index]
                        ahead.append(("block", _done(data)))
                        blocks_ahead += 1
                        while blocks_ahead > BLOCKS_AHEAD:
                            send()
                        yield from sink.drain()
                    ahead.append(("end", (stored["crc32"], stored["bytes"])))
                    continue
                crc = size = 0
                primer = b""
                for block, last in _blocks(path, base_folder, chunk_size):
                    crc = _zlib.crc32(block, crc)
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
