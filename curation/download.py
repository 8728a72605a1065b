"""The download of a curated export: its folder streamed as a zip while the zip is written.

Deflate at level 1 for what compresses (JSONL, the Hugging Face folders' Arrow shards, the
datasheet), and Parquet stored as it is: its pages are compressed already (Snappy), deflate
takes a tenth of a second per 10 MB of it to save about 8 %. Measured on the export of 10,000
judged ranking tasks (229 MB of files, ``bench/peers``' workload): level 6 for every file, as
before, 4.3 s of CPU for a 38 MB zip; this, about 1.0 s for 48 MB. A download is one core's
work on the web server while the client waits on it, so its CPU is the user's wait.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

from annotate.zip_sink import ZipSink
from curation.exporting import export_file_chunks

COMPRESS_LEVEL = 1
# Files whose content is compressed already: stored in the zip as they are.
STORED_SUFFIXES = frozenset({".parquet"})


def compress_type(path: Path) -> int:
    return zipfile.ZIP_STORED if path.suffix in STORED_SUFFIXES else zipfile.ZIP_DEFLATED


def iter_download_zip(
    folder: Path, prefix: str, *, base_folder: str | None = None, chunk_size: int = 1 << 20
) -> Iterator[bytes]:
    """``folder`` as a zip (entries under ``prefix/``, in sorted path order), without a
    temporary file. ``base_folder``: where the user will unpack it; JSONL paths are then written
    absolute under it (`curation.exporting.with_base_folder`)."""
    sink = ZipSink()
    with zipfile.ZipFile(sink, "w", allowZip64=True) as archive:  # type: ignore[arg-type]
        for path in sorted(folder.rglob("*")):
            if not path.is_file():
                continue
            info = zipfile.ZipInfo.from_file(
                path, f"{prefix}/{path.relative_to(folder).as_posix()}"
            )
            info.compress_type = compress_type(path)
            info._compresslevel = COMPRESS_LEVEL  # what ZipFile.write sets from compresslevel
            with archive.open(info, "w", force_zip64=True) as dst:
                for chunk in export_file_chunks(
                    path, base_folder=base_folder, chunk_size=chunk_size
                ):
                    dst.write(chunk)
                    yield from sink.drain()
            yield from sink.drain()
    yield from sink.drain()
