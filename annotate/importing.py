"""Reading import files into plain records, with every problem named by line and field.

Three formats (see the README for complete examples):

- ``quorum``: Quorum's own JSONL, one prompt per line with its candidates and optional
  judgments; an optional first line ``{"project": {...}}`` carries project settings.
- ``seed``: the multi-response reward model's training format
  ``{"prompt", "responses", "rankings", "image"?, "video"?}`` (rankings: 1 = best, ties allowed).
- ``arena``: external pairwise votes ``{"model_a", "model_b", "winner", ...}`` as a JSON array
  or JSONL, ``winner`` in ``model_a | model_b | tie | tie (bothbad)``.

Seed rows may also carry the multimodal layout of exports (``response_kinds``,
``response_images``, ``response_videos``): those responses become image/video candidates. A
Quorum dataset export (its zip, or a JSONL file where it lies in the unpacked export) is read
back as seed rows; see "a Quorum dataset export, imported back" below.

Media paths are relative to the import file: a folder beside it, or inside the same ``.zip``
(an export's: relative to the export root).
Nothing here touches the database: the service in ``annotate.services`` writes the records
only when this module found no problem at all.
"""

from __future__ import annotations

import hashlib
import io
import json
import marshal
import os
import select
import signal
import struct
import tempfile
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import orjson

FORMATS = ("quorum", "seed", "arena")
# Candidate metadata key set on a text answer that is empty (imported, not rejected).
EMPTY_ANSWER = "empty_answer"
PAIR_OUTCOMES = ("a", "b", "tie", "both_bad")
KINDS = ("text", "image", "video")
# The multimodal layout's keys beside a seed row's (exports' rankings_multimodal/).
MULTIMODAL_KEYS = ("response_kinds", "response_images", "response_videos")
ARENA_WINNERS = {"model_a": "a", "model_b": "b", "tie": "tie", "tie (bothbad)": "both_bad"}
IMAGE_FORMATS = {"PNG": "png", "JPEG": "jpg", "GIF": "gif", "WEBP": "webp"}
MAX_PROBLEMS = 200
# A rubric rating's bounds: those of annotate.queue (RATING_MIN, RATING_MAX), which imports
# this module's importer and so cannot be imported here.
RATING_MIN, RATING_MAX = 1, 5
# ``forked``: where an item lies in the scratch file (offset, size); how long the child may
# send nothing before it is taken for stuck (killed, its items cut off: the caller falls back),
# as a child forked from a process with other threads could be on a lock one of them held.
_PLACE = struct.Struct("<QQ")
FORKED_SILENCE_S = 30.0
_CHILD_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1)


@dataclass(frozen=True)
class Problem:
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        return (
            f"{where}, field {self.field!r}: {self.message}"
            if self.field
            else f"{where}: {self.message}"
        )


class ImportRejected(Exception):
    """The file has problems; nothing was written."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        shown = "\n".join(f"  - {p}" for p in problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        super().__init__(f"import rejected with {len(problems)} problem(s):\n{shown}{more}")


@dataclass
class MediaRef:
    """A media file named by an import row, checked and ready to store."""

    name: str  # as written in the file
    kind: str  # image | video
    sha256: str = ""
    ext: str = ""
    size: int = 0


@dataclass
class CandidateRecord:
    external_id: str
    model_name: str
    kind: str
    text: str = ""
    media: MediaRef | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class JudgmentRecord:
    """A judgment with candidates named by external id; ``ranking`` is best group first."""

    line: int
    kind: str  # ranking | pair
    idempotency_key: str
    source_name: str
    external_annotator: str
    ranking: list[list[str]] | None = None
    pair: tuple[str, str] | None = None
    outcome: str = ""
    rationale: str = ""
    duration_ms: int | None = None
    presented_order: list[str] | None = None  # candidate ids in the order they were shown
    # {rubric dimension: {candidate id: RATING_MIN..RATING_MAX}}; the dimensions are checked
    # against the project's rubric when the rows are written (the project is not known here).
    ratings: dict[str, dict[str, int]] = field(default_factory=dict)


@dataclass
class PromptRecord:
    line: int
    external_id: str
    text: str
    image: MediaRef | None = None
    video: MediaRef | None = None
    metadata: dict = field(default_factory=dict)
    candidates: list[CandidateRecord] = field(default_factory=list)
    judgments: list[JudgmentRecord] = field(default_factory=list)


@dataclass
class ParsedImport:
    format: str
    prompts: list[PromptRecord]
    project_settings: dict
    media: dict[str, MediaRef]  # by name as written
    source: MediaSource

    @property
    def judgment_count(self) -> int:
        return sum(len(p.judgments) for p in self.prompts)

    @property
    def candidate_count(self) -> int:
        return sum(len(p.candidates) for p in self.prompts)


# --- where the import file and its media live ---------------------------------------------


class MediaSource:
    """The import file plus the media beside it (a folder) or inside the same zip."""

    def __init__(
        self,
        path: Path,
        *,
        max_media_bytes: int,
        max_file_bytes: int,
        max_data_bytes: int | None = None,
        max_image_pixels: int | None = None,
    ):
        self.path = Path(path)
        self.max_media_bytes = max_media_bytes
        self.max_file_bytes = max_file_bytes
        # The data file as parsed (unpacked from a zip), and images/frames as decoded.
        self.max_data_bytes = max_data_bytes or max_file_bytes
        self.max_image_pixels = max_image_pixels
        self._zip: zipfile.ZipFile | None = None
        self._zip_base = PurePosixPath("")
        self.data_name = self.path.name
        # Set when the file is a Quorum dataset export, or lies inside an unpacked one: its
        # datasheet, and the export root that media paths are relative to.
        self.export: dict | None = None
        self._base: Path | None = None

    def open(self) -> list[Problem]:
        """Checks the container; returns problems (zip entries escaping, oversize files)."""
        if not self.path.is_file():
            return [Problem(None, "", f"{self.path.name}: no such file")]
        size = self.path.stat().st_size
        if size > self.max_file_bytes:
            return [
                Problem(
                    None,
                    "",
                    f"{self.path.name}: {size} bytes is over the import limit of "
                    f"{self.max_file_bytes} (QUORUM_MAX_IMPORT_MB)",
                )
            ]
        # The container is what the name and the first bytes both say: a .jsonl with a zip
        # appended (a zip is read from its end) must not be imported as the zip.
        with open(self.path, "rb") as fh:
            starts_as_zip = fh.read(4) in _ZIP_MAGIC
        named_zip = self.path.suffix.lower() == ".zip"
        if named_zip and not starts_as_zip:
            return [
                Problem(None, "", f"{self.path.name}: not a zip file (it does not start as one)")
            ]
        if not named_zip and (starts_as_zip or zipfile.is_zipfile(self.path)):
            return [
                Problem(
                    None,
                    "",
                    f"{self.path.name}: holds a zip archive; a data file is JSON text only "
                    "(name a zip .zip)",
                )
            ]
        if not named_zip:
            if size > self.max_data_bytes:
                return [
                    Problem(None, "", _over_data_limit(self.path.name, size, self.max_data_bytes))
                ]
            found = export_root_of_file(self.path)
            if found is not None:
                self._base, self.export = found
            return []
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, ValueError, EOFError, OSError) as exc:
            return [Problem(None, "", f"{self.path.name}: not a readable zip file ({exc})")]
        unnamed = sum(1 for info in self._zip.infolist() if not info.filename)
        if unnamed:  # no path to check, read or report (zipfile's is_dir() fails on one)
            noun = "an entry" if unnamed == 1 else f"{unnamed} entries"
            return [Problem(None, "zip", f"{self.path.name}: {noun} without a name")]
        problems = []
        data_files = []
        export = export_root_in_zip(self._zip, max_bytes=self.max_media_bytes)
        for info in self._zip.infolist():
            name = info.filename
            pure = PurePosixPath(name.replace("\\", "/"))
            if (
                name.startswith(("/", "\\"))
                or pure.is_absolute()
                or (len(name) > 1 and name[1] == ":")
            ):
                problems.append(Problem(None, "zip", f"entry {name!r} has an absolute path"))
            elif ".." in pure.parts:
                problems.append(
                    Problem(None, "zip", f"entry {name!r} escapes the archive with '..'")
                )
            elif (
                not info.is_dir()
                and info.file_size > self.max_media_bytes
                and not name.endswith((".jsonl", ".json"))
                and not (export and is_export_table(pure, export[0]))
            ):
                problems.append(
                    Problem(
                        None,
                        "zip",
                        f"entry {name!r} is {info.file_size} bytes, over the limit of "
                        f"{self.max_media_bytes} (QUORUM_MAX_MEDIA_MB)",
                    )
                )
            if (
                not info.is_dir()
                and pure.suffix in (".jsonl", ".json")
                and "__MACOSX" not in pure.parts
            ):
                # The size an entry declares bounds what reading it unpacks (zipfile stops
                # there and fails the CRC), so a bomb is refused here, before any inflating.
                if info.file_size > self.max_data_bytes:
                    problems.append(
                        Problem(
                            None, "zip", _over_data_limit(name, info.file_size, self.max_data_bytes)
                        )
                    )
                data_files.append(pure)
        if problems:
            return problems
        if export is not None:
            return self._open_export(*export)
        if not data_files:
            return [Problem(None, "zip", f"{self.path.name}: no .jsonl or .json file inside")]
        # The data file nearest the root; media paths are relative to its folder.
        data_files.sort(key=lambda p: (len(p.parts), str(p)))
        if len(data_files) > 1 and len(data_files[0].parts) == len(data_files[1].parts):
            names = ", ".join(str(p) for p in data_files[:3])
            return [
                Problem(
                    None,
                    "zip",
                    f"{self.path.name}: several data files at the same level ({names}); keep one",
                )
            ]
        self.data_name = str(data_files[0])
        self._zip_base = data_files[0].parent
        return []

    def _open_export(self, root: PurePosixPath, sheet: dict) -> list[Problem]:
        """A zipped export: its rankings table is the data, media are relative to its root."""
        member = str(root / EXPORT_RANKINGS) if str(root) != "." else EXPORT_RANKINGS
        try:
            info = self._zip.getinfo(member)
        except KeyError:
            return [
                Problem(
                    None,
                    "zip",
                    f"{self.path.name}: a Quorum export without {EXPORT_RANKINGS}; import one of "
                    "its rankings/<split>.jsonl files instead",
                )
            ]
        if info.file_size > self.max_data_bytes:  # the data file, as any zip's
            return [
                Problem(None, "zip", _over_data_limit(member, info.file_size, self.max_data_bytes))
            ]
        self.export = sheet
        self.data_name = member
        self._zip_base = root
        return []

    def read_data(self) -> bytes:
        if self._zip is not None and self.export is not None:
            parquet = read_zip_entry(self._zip, self.data_name)
            return export_seed_rows(parquet, self.data_name, max_bytes=self.max_data_bytes)
        if self._zip is not None:
            return read_zip_entry(self._zip, self.data_name)
        return self.path.read_bytes()

    def read_media(self, name: str) -> bytes:
        """Returns the bytes of a media file named relative to the data file.

        Raises ValueError (path escapes, absolute), FileNotFoundError or OSError.
        """
        if not name or name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
            raise ValueError(
                "absolute paths are not allowed; give a path relative to the import file"
            )
        pure = PurePosixPath(name.replace("\\", "/"))
        if ".." in pure.parts:
            raise ValueError("path escapes the media folder ('..')")
        if self._zip is not None:
            member = str(self._zip_base / pure) if str(self._zip_base) != "." else str(pure)
            try:
                info = self._zip.getinfo(member)
            except KeyError:
                raise FileNotFoundError(f"{member} is not in {self.path.name}") from None
            if info.file_size > self.max_media_bytes:
                raise OSError(
                    f"{info.file_size} bytes is over the media limit of {self.max_media_bytes} "
                    "(QUORUM_MAX_MEDIA_MB)"
                )
            try:
                data = read_zip_entry(self._zip, info)
            except _ZIP_ERRORS as exc:
                raise OSError(f"corrupt zip entry {member!r} ({_zip_error(exc)})") from None
            if len(data) > self.max_media_bytes:
                raise OSError(
                    f"over the media limit of {self.max_media_bytes} bytes (QUORUM_MAX_MEDIA_MB)"
                )
            return data
        base = (self._base or self.path.parent).resolve()
        target = (base / pure).resolve()
        # resolve() follows symlinks, so a link pointing outside is caught here too.
        if base != target and base not in target.parents:
            raise ValueError("path resolves outside the media folder")
        if not target.is_file():
            raise FileNotFoundError(f"{pure} does not exist beside {self.path.name}")
        size = target.stat().st_size
        if size > self.max_media_bytes:
            raise OSError(
                f"{size} bytes is over the media limit of {self.max_media_bytes} "
                "(QUORUM_MAX_MEDIA_MB)"
            )
        return target.read_bytes()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def read_zip_entry(archive: zipfile.ZipFile, entry: str | zipfile.ZipInfo) -> bytes:
    """An entry's bytes, inflated 1 MiB at a time.

    zipfile stops at the size the entry declares (and fails its CRC), but ``read()`` inflates up
    to 2 GiB in one step before cutting: a small zip whose header lies about a huge entry would
    take that much memory. Read in steps, memory stays at the declared size (checked against
    the limits before) plus a step.
    """
    with archive.open(entry) as fh:
        return b"".join(iter(lambda: fh.read(1 << 20), b""))


# --- a Quorum dataset export, imported back -----------------------------------------------
#
# An export (``curation/exporting.py``) is recognised by its datasheet: ``datasheet.json`` at the
# export root with ``format`` ``quorum-dataset-export/<n>``. Every media path in it is relative
# to that root (the trainer's base folder), never to the file that names it. A zipped export is
# read from its rankings table, which keeps prompt and candidate ids and model names; a JSONL
# file lying in an unpacked export is read as it is, with media resolved under the root.

EXPORT_FORMAT_PREFIX = "quorum-dataset-export/"
EXPORT_RANKINGS = "parquet/rankings.parquet"
# Folders of an export whose JSONL files are seed rows (the multimodal ones add media lists).
EXPORT_SEED_FOLDERS = ("rankings", "rankings_multimodal", "rankings_4", "rankings_4_multimodal")
_DATASHEET = "datasheet.json"
_DATASHEET_MAX_BYTES = 64 * 1024 * 1024


def export_datasheet(data: bytes) -> dict | None:
    """The datasheet of a Quorum dataset export, or None when ``data`` is not one."""
    try:
        sheet = json.loads(data)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError
        return None
    fmt = sheet.get("format") if isinstance(sheet, dict) else None
    return sheet if isinstance(fmt, str) and fmt.startswith(EXPORT_FORMAT_PREFIX) else None


def export_root_in_zip(
    archive: zipfile.ZipFile, *, max_bytes: int
) -> tuple[PurePosixPath, dict] | None:
    """The export root inside a zip (the folder of the datasheet nearest the top) and its
    datasheet, or None when the zip holds no Quorum export."""
    sheets = sorted(
        (
            PurePosixPath(info.filename)
            for info in archive.infolist()
            if not info.filename.endswith("/")  # is_dir(), safe for an entry without a name
            and PurePosixPath(info.filename).name == _DATASHEET
            and info.file_size <= min(max_bytes, _DATASHEET_MAX_BYTES)
            and "__MACOSX" not in PurePosixPath(info.filename).parts
        ),
        key=lambda p: (len(p.parts), str(p)),
    )
    if not sheets:
        return None
    sheet = export_datasheet(read_zip_entry(archive, str(sheets[0])))
    return (sheets[0].parent, sheet) if sheet is not None else None


def export_root_of_file(path: Path) -> tuple[Path, dict] | None:
    """For a JSONL file lying in an unpacked export (``<root>/rankings/train.jsonl``): the
    export root and its datasheet; None for any other file."""
    folder = path.parent
    sheet_path = folder.parent / _DATASHEET
    if path.suffix != ".jsonl" or folder.name not in EXPORT_SEED_FOLDERS:
        return None
    if not sheet_path.is_file() or sheet_path.stat().st_size > _DATASHEET_MAX_BYTES:
        return None
    sheet = export_datasheet(sheet_path.read_bytes())
    return (folder.parent, sheet) if sheet is not None else None


def is_export_table(entry: PurePosixPath, root: PurePosixPath) -> bool:
    """Whether a zip entry is one of the export's tables (not media, which has size limits)."""
    try:
        inside = entry.relative_to(root)
    except ValueError:
        return False
    tables = ("parquet", "hf", "pairs", *EXPORT_SEED_FOLDERS)
    return bool(inside.parts) and inside.parts[0] in tables


def export_source_name(sheet: dict) -> str:
    """Names the judgments read back from an export: its project and version."""
    project = sheet.get("project") if isinstance(sheet.get("project"), dict) else {}
    return f"{project.get('name') or 'export'} v{sheet.get('version', '?')}"


def _parquet_text_bytes(table) -> int:
    """The bytes ``table``'s values take once decoded: every string as often as rows name it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    total = 0
    for column in table.columns:
        for array in column.chunks:
            while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
                array = array.flatten()
            if pa.types.is_dictionary(array.type):
                lengths = pc.binary_length(array.dictionary).take(array.indices)
                total += pc.sum(lengths).as_py() or 0
            elif pa.types.is_string(array.type) or pa.types.is_binary(array.type):
                total += pc.sum(pc.binary_length(array)).as_py() or 0
            else:
                total += array.nbytes
    return total


def export_seed_rows(parquet: bytes, name: str, *, max_bytes: int | None = None) -> bytes:
    """An export's rankings table as seed JSONL rows, one per prompt, keeping its ids.

    Rows with image or video responses carry the multimodal layout's ``response_kinds``,
    ``response_images`` and ``response_videos``; ``split`` lands in the prompt's metadata.

    ``max_bytes`` (the data file limit) bounds the table as decompressed, as decoded and as
    rows: Parquet compresses and dictionary-encodes, so a table of a few KB can name one long
    string in a million rows. Strings are read as dictionaries (each distinct one once) and
    measured before any is copied into a row; rows are built a batch at a time.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    def over(size: int) -> ImportRejected:
        return ImportRejected([Problem(None, "zip", _over_data_limit(name, size, max_bytes))])

    try:
        table_file = pq.ParquetFile(io.BytesIO(parquet))
        meta = table_file.metadata
        unpacked = sum(
            meta.row_group(g).column(c).total_uncompressed_size
            for g in range(meta.num_row_groups)
            for c in range(meta.num_columns)
        )
        if max_bytes is not None and unpacked > max_bytes:
            raise over(unpacked)
        strings = [
            column.path for column in table_file.schema if column.physical_type == "BYTE_ARRAY"
        ]
        table = pq.read_table(io.BytesIO(parquet), read_dictionary=strings)
        decoded = _parquet_text_bytes(table)
        if max_bytes is not None and decoded > max_bytes:
            raise over(decoded)
        batches = table.to_batches(max_chunksize=1024)
    except (pa.ArrowException, OSError) as exc:
        problem = Problem(None, "", f"{name}: not a readable Parquet table ({exc})")
        raise ImportRejected([problem]) from None
    lines = []
    size = 0
    for row in (row for batch in batches for row in batch.to_pylist()):
        line = {
            "id": row.get("prompt_id"),
            "prompt": row.get("prompt"),
            "responses": row.get("responses"),
            "rankings": row.get("rankings"),
            "models": row.get("models"),
            "candidate_ids": row.get("candidate_ids"),
        }
        if any(kind != "text" for kind in row.get("response_kinds") or ()):
            for key in ("response_kinds", "response_images", "response_videos"):
                line[key] = row.get(key)
        for key in ("image", "video", "split"):
            if row.get(key):
                line[key] = row[key]
        lines.append(json.dumps(line, ensure_ascii=False))
        size += len(lines[-1]) + 1
        if max_bytes is not None and size > max_bytes:
            raise over(size)
    return "".join(f"{line}\n" for line in lines).encode()


# --- content checks -----------------------------------------------------------------------


def _over_data_limit(name: str, size: int, limit: int) -> str:
    return (
        f"{name}: {size} bytes unpacked is over the data file limit of {limit} (QUORUM_MAX_DATA_MB)"
    )


class _PixelLimitExceeded(ValueError):
    pass


def _over_pixel_limit(width: int, height: int, limit: int) -> str:
    return (
        f"{width}x{height} is {width * height} pixels, over the limit of {limit} "
        "(QUORUM_MAX_IMAGE_MEGAPIXELS)"
    )


def sniff_image(data: bytes, *, max_pixels: int | None = None) -> str:
    """Returns the file extension of a real image, or raises ValueError.

    ``max_pixels`` is checked on the header's size, before anything is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format
            if max_pixels is not None and img.width * img.height > max_pixels:
                raise _PixelLimitExceeded(_over_pixel_limit(img.width, img.height, max_pixels))
            img.verify()
    except _PixelLimitExceeded:
        raise
    except Image.DecompressionBombError as exc:
        # Pillow's own guard (past twice Image.MAX_IMAGE_PIXELS) fires inside open().
        raise ValueError(f"{exc} (QUORUM_MAX_IMAGE_MEGAPIXELS)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise ValueError(f"not a readable image ({exc.__class__.__name__}: {exc})") from None
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format {fmt} is not supported (PNG, JPEG, GIF, WEBP)")
    return IMAGE_FORMATS[fmt]


def sniff_video(data: bytes, *, max_pixels: int | None = None) -> str:
    """Returns the file extension of a real video with a decodable frame, or raises ValueError."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            fmt = container.format.name
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            if max_pixels is not None and width * height > max_pixels:
                raise ValueError(_over_pixel_limit(width, height, max_pixels))
            for _frame in container.decode(stream):
                break
            else:
                raise ValueError("no decodable frame")
    except av.FFmpegError as exc:
        raise ValueError(f"not a readable video ({exc.__class__.__name__})") from None
    if "mp4" in fmt or "mov" in fmt:
        return "mp4"
    if "webm" in fmt or "matroska" in fmt:
        return "webm"
    raise ValueError(f"video container {fmt} is not supported (MP4, WebM)")


# --- parsing ------------------------------------------------------------------------------


# Nesting of a row's JSON: rows are a few levels deep; thousands would exhaust the parser's
# stack (RecursionError) or every later reader's.
MAX_JSON_DEPTH = 64
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")
# RuntimeError: an entry flagged as encrypted ("password required").
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, OSError)


def _zip_error(exc: Exception) -> str:
    # An OSError's text names the file it failed on: a server path.
    return (exc.strerror or type(exc).__name__) if isinstance(exc, OSError) else str(exc)


def _json_depth_error(value: Any, text: str) -> json.JSONDecodeError | None:
    """A JSONDecodeError naming the nesting when ``value`` is nested past MAX_JSON_DEPTH."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return json.JSONDecodeError(f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return None


# Digits as "0", so that a run of 19 (a number orjson may read as a float) is one substring.
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")
_LONG_DIGITS = b"0" * 19


def _has_long_digits(data: bytes) -> bool:
    """Whether ``data`` holds 19 digits in a row: an integer past 64 bits, which orjson reads
    as a float where json reads an int (a C scan, not a regular expression: 13 MB in ~20 ms)."""
    return _LONG_DIGITS in data.translate(_DIGITS_AS_ZERO)


def _loads(text: str, *, long_ints_possible: bool = True) -> Any:
    """``json.loads``, with too deep nesting as a JSONDecodeError (never RecursionError).

    ``long_ints_possible=False``: the caller found no run of 19 digits in the text.
    """
    try:
        # orjson first (about 3x faster) when it reads what json reads; what it refuses (NaN,
        # lone surrogates, malformed text) goes to json, whose value or error stands.
        if long_ints_possible and _has_long_digits(text.encode("utf-8", "surrogatepass")):
            raise orjson.JSONDecodeError("integers past 64 bits: json reads them", text, 0)
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        try:
            value = json.loads(text)
        except RecursionError:
            raise json.JSONDecodeError(
                f"nested deeper than {MAX_JSON_DEPTH} levels", text, 0
            ) from None
    if text.count("[") + text.count("{") < MAX_JSON_DEPTH:
        # Each level opens a bracket, and the walk counts the values inside the deepest as
        # one level more: with fewer brackets than the limit nothing can pass it.
        return value
    error = _json_depth_error(value, text)
    if error is not None:
        raise error
    return value


# Every byte but the brackets that open a level and the newline (``_lines_shallow``).
_NOT_OPENING_OR_NEWLINE = bytes(b for b in range(256) if b not in b"[{\n")


def _lines_shallow(data: bytes) -> bool:
    """Whether every line of ``data`` (UTF-8 JSONL) holds fewer than ``MAX_JSON_DEPTH``
    opening brackets, so that no row can nest past the limit (``_loads``' count, for all rows
    at once: one C scan of the file instead of two counts a row).

    Per line split at ``\n`` only: each line ``str.splitlines`` gives lies inside one of these
    (it splits at more characters, never fewer), and no byte of a multi-byte UTF-8 character is
    a bracket, so a line's count here bounds the count ``_loads`` would make of it."""
    kept = data.translate(None, _NOT_OPENING_OR_NEWLINE)
    return max(map(len, kept.split(b"\n"))) < MAX_JSON_DEPTH


def _iter_rows(data: bytes, name: str) -> Iterator[tuple[int, Any, str]]:
    """Yields (line number, parsed object or a JSONDecodeError, raw text) per row."""
    text = data.decode("utf-8-sig", errors="strict")
    long_ints = _has_long_digits(data)
    stripped = text.lstrip()
    if stripped.startswith("["):
        try:
            items = _loads(text, long_ints_possible=long_ints)
        except json.JSONDecodeError as exc:
            yield exc.lineno, exc, ""
            return
        for index, item in enumerate(items, start=1):
            yield index, item, json.dumps(item, sort_keys=True)
        return
    # No integer past 64 bits and no line deep enough to need the nesting walk: ``orjson``
    # directly (``_loads`` would call it and return its value); a row it refuses goes through
    # ``_loads``, whose value or error stands.
    fast = orjson.loads if not long_ints and _lines_shallow(data) else None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if fast is not None:
            try:
                obj = fast(line)
            except orjson.JSONDecodeError:
                pass
            else:
                yield number, obj, line
                continue
        try:
            yield number, _loads(line, long_ints_possible=long_ints), line
        except json.JSONDecodeError as exc:
            yield number, exc, line


def detect_format(first: Any) -> str | None:
    if not isinstance(first, dict):
        return None
    if "project" in first and len(first) == 1:
        return "quorum"
    if "responses" in first and "rankings" in first:
        return "seed"
    if {"model_a", "model_b", "winner"} <= first.keys():
        return "arena"
    if "candidates" in first:
        return "quorum"
    return None


def _digest(*parts: str) -> str:
    h = hashlib.sha1()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()


_QUORUM_ROW_KEYS = frozenset(
    {"id", "prompt", "image", "video", "metadata", "candidates", "judgments"}
)
# A Quorum row's text candidate as most files write it (``_Parser.quorum``'s fast path).
_PLAIN_CANDIDATE_KEYS = frozenset({"id", "model", "text", "kind", "metadata"})
_NO_METADATA: dict = {}


class _Parser:
    def __init__(self, source: MediaSource, source_name: str, *, max_text_chars: int | None = None):
        self.source = source
        self.source_name = source_name
        self.max_text_chars = max_text_chars
        self.problems: list[Problem] = []
        self.media: dict[str, MediaRef] = {}
        self.seen_prompt_ids: dict[str, int] = {}
        self.seen_candidate_ids: dict[str, int] = {}
        self.seen_rows: Counter[str] = Counter()
        self.seed_records: dict[str, PromptRecord] = {}

    def problem(self, line: int | None, fld: str, message: str) -> None:
        self.problems.append(Problem(line, fld, message))

    def text(
        self, line: int, obj: dict, key: str, *, required: bool = False, where: str = ""
    ) -> str:
        value = obj.get(key)
        # The common case first, without building a field label (5 texts a row).
        if (
            type(value) is str
            and not (required and (not value or value.isspace()))
            and (self.max_text_chars is None or len(value) <= self.max_text_chars)
        ):
            return value
        label = f"{where}{key}"
        if value is None:
            if required:
                self.problem(line, label, "is required")
            return ""
        if not isinstance(value, str):
            self.problem(line, label, f"must be a string, got {type(value).__name__}")
            return ""
        if required and not value.strip():
            self.problem(line, label, "must not be empty")
        return value if self.text_fits(line, label, value) else ""

    def text_fits(self, line: int, label: str, value: str) -> bool:
        if self.max_text_chars is None or len(value) <= self.max_text_chars:
            return True
        self.problem(
            line,
            label,
            f"{len(value)} characters is over the limit of {self.max_text_chars} "
            "(QUORUM_MAX_TEXT_CHARS)",
        )
        return False

    def media_ref(
        self, line: int, obj: dict, key: str, kind: str, where: str = ""
    ) -> MediaRef | None:
        name = obj.get(key)
        if name in (None, ""):
            return None
        if not isinstance(name, str):
            self.problem(line, f"{where}{key}", f"must be a path string, got {type(name).__name__}")
            return None
        ref = self.media.get(name)
        if ref is None:
            ref = self.media[name] = MediaRef(name=name, kind=kind)
        elif ref.kind != kind:
            self.problem(line, f"{where}{key}", f"{name!r} is used as both {ref.kind} and {kind}")
        # Remember the first place a file is named, for error messages.
        ref.__dict__.setdefault("first_use", (line, f"{where}{key}"))
        return ref

    def register_prompt(self, line: int, external_id: str) -> bool:
        if external_id in self.seen_prompt_ids:
            self.problem(
                line,
                "id",
                f"prompt id {external_id!r} already used on line {self.seen_prompt_ids[external_id]}",
            )
            return False
        self.seen_prompt_ids[external_id] = line
        return True

    def register_candidate(self, line: int, external_id: str, fld: str) -> bool:
        if external_id in self.seen_candidate_ids:
            self.problem(
                line,
                fld,
                f"candidate id {external_id!r} already used on line {self.seen_candidate_ids[external_id]}",
            )
            return False
        self.seen_candidate_ids[external_id] = line
        return True

    def row_key(self, raw: str) -> str:
        """Idempotency key of a row: its content digest plus its occurrence in this file."""
        canonical = raw.strip()
        # Content only (not the file name): the same rows imported again are recognised.
        digest = _digest(canonical)
        self.seen_rows[digest] += 1
        return f"{digest[:32]}.{self.seen_rows[digest]}"

    # --- Quorum JSONL ---

    def quorum(self, line: int, obj: dict, raw: str) -> PromptRecord | None:
        limit = self.max_text_chars
        pid, text = obj.get("id"), obj.get("prompt")
        # The common id and prompt checked here (``text``'s first test), the rest by ``text``.
        if not (
            type(pid) is str and pid and not pid.isspace() and (limit is None or len(pid) <= limit)
        ):
            pid = self.text(line, obj, "id", required=True)
        if not (type(text) is str and (limit is None or len(text) <= limit)):
            text = self.text(line, obj, "prompt")
        if not _QUORUM_ROW_KEYS.issuperset(obj):
            self.problem(
                line,
                sorted(obj.keys() - _QUORUM_ROW_KEYS)[0],
                "unknown field (expected id, prompt, image, video, metadata, candidates, judgments)",
            )
        metadata = obj.get("metadata") or {}
        if not isinstance(metadata, dict):
            self.problem(line, "metadata", "must be an object")
            metadata = {}
        record = PromptRecord(
            line,
            pid,
            text,
            self.media_ref(line, obj, "image", "image") if "image" in obj else None,
            self.media_ref(line, obj, "video", "video") if "video" in obj else None,
            metadata,
        )
        if pid and not self.register_prompt(line, pid):
            return None
        candidates = obj.get("candidates")
        if not isinstance(candidates, list) or len(candidates) < 2:
            self.problem(line, "candidates", "must be a list of at least 2 candidates")
            candidates = []
        seen, plain_keys = self.seen_candidate_ids, _PLAIN_CANDIDATE_KEYS
        append = record.candidates.append
        for index, cand in enumerate(candidates):
            if (
                type(cand) is dict
                and plain_keys.issuperset(cand)
                and cand.get("kind", "text") == "text"
            ):
                # The common candidate (text, nothing but id, model, text, kind "text" and
                # metadata) checked in one expression; what it refuses takes the full path
                # below, which names the problem.
                cid, model, ctext = cand.get("id"), cand.get("model"), cand.get("text")
                cmeta = cand.get("metadata", _NO_METADATA)
                if (
                    type(cid) is str
                    and type(model) is str
                    and type(ctext) is str
                    and type(cmeta) is dict
                    and cid
                    and model
                    and cid not in seen
                    and not (cid.isspace() or model.isspace())
                    and (
                        limit is None
                        or (len(cid) <= limit and len(model) <= limit and len(ctext) <= limit)
                    )
                ):
                    seen[cid] = line
                    if not ctext or ctext.isspace():
                        cmeta = {**cmeta, EMPTY_ANSWER: True}
                    elif cmeta is _NO_METADATA:
                        cmeta = {}
                    append(CandidateRecord(cid, model, "text", ctext, None, cmeta))
                    continue
            where = f"candidates[{index}]."
            if not isinstance(cand, dict):
                self.problem(line, f"candidates[{index}]", "must be an object")
                continue
            cid = self.text(line, cand, "id", required=True, where=where)
            model = self.text(line, cand, "model", required=True, where=where)
            kind = cand.get("kind")
            present = [k for k in ("image", "video") if cand.get(k)]
            if kind is None:
                kind = present[0] if present else "text"
            if kind not in KINDS:
                self.problem(
                    line, f"{where}kind", f"unknown value {kind!r} (expected text, image or video)"
                )
                continue
            if len(present) > 1:
                self.problem(
                    line,
                    where + "video",
                    "a candidate has one media file: give image or video, not both",
                )
            media = None
            if kind in ("image", "video"):
                media = self.media_ref(line, cand, kind, kind, where)
                # "placeholder": the source gave no content (e.g. arena votes name models only).
                if media is None and not cand.get("text") and cand.get("placeholder") is not True:
                    self.problem(line, f"{where}{kind}", f"a {kind} candidate needs a {kind} file")
            elif present:
                self.problem(line, f"{where}kind", f"kind 'text' but {present[0]} given")
            ctext = self.text(line, cand, "text", where=where)
            cmeta = cand.get("metadata") or {}
            if not isinstance(cmeta, dict):
                self.problem(line, f"{where}metadata", "must be an object")
                cmeta = {}
            if kind == "text" and not isinstance(cand.get("text"), str):
                self.problem(
                    line, f"{where}text", 'a text candidate needs text ("" for an empty answer)'
                )
            elif kind == "text" and (not ctext or ctext.isspace()):  # as "not ctext.strip()"
                # Real preference data holds empty answers: kept (their votes count), marked,
                # counted in the import report, and left out of training rows by exports.
                cmeta = {**cmeta, EMPTY_ANSWER: True}
            if cid and self.register_candidate(line, cid, f"{where}id"):
                record.candidates.append(CandidateRecord(cid, model, kind, ctext, media, cmeta))
        judgments = obj.get("judgments")
        if not judgments:  # as ``or []``: no judgments, nothing to check
            return record
        if not isinstance(judgments, list):
            self.problem(line, "judgments", "must be a list")
            judgments = []
        cand_ids = {c.external_id for c in record.candidates} if judgments else set()
        for index, j in enumerate(judgments):
            where = f"judgments[{index}]."
            if not isinstance(j, dict):
                self.problem(line, f"judgments[{index}]", "must be an object")
                continue
            annotator = self.text(line, j, "annotator", required=True, where=where)
            source_name = self.text(line, j, "source", where=where) or self.source_name
            rationale = self.text(line, j, "rationale", where=where)
            duration = j.get("duration_ms")
            if duration is not None and (
                not isinstance(duration, int) or isinstance(duration, bool) or duration < 0
            ):
                self.problem(line, f"{where}duration_ms", "must be a non-negative integer")
                duration = None
            presented = j.get("presented_order")
            if presented is not None and not (
                isinstance(presented, list)
                and all(isinstance(x, str) and x in cand_ids for x in presented)
                and len(set(presented)) == len(presented)
            ):
                self.problem(
                    line,
                    f"{where}presented_order",
                    "must list distinct candidate ids of this prompt",
                )
                presented = None
            key = j.get("key") or f"{pid}:{self.row_key(json.dumps(j, sort_keys=True) + pid)}"
            if "ranking" in j:
                ranking = self.ranking_groups(line, j["ranking"], cand_ids, f"{where}ranking")
                if ranking is None:
                    continue
                ratings = self.ratings(line, j, {c for g in ranking for c in g}, where)
                if ratings is None:
                    continue
                record.judgments.append(
                    JudgmentRecord(
                        line,
                        "ranking",
                        str(key),
                        source_name,
                        annotator,
                        ranking=ranking,
                        rationale=rationale,
                        duration_ms=duration,
                        presented_order=presented,
                        ratings=ratings,
                    )
                )
            elif "pair" in j:
                pair = j["pair"]
                if not (
                    isinstance(pair, list)
                    and len(pair) == 2
                    and all(isinstance(x, str) for x in pair)
                    and pair[0] != pair[1]
                ):
                    self.problem(line, f"{where}pair", "must be two different candidate ids")
                    continue
                missing = [x for x in pair if x not in cand_ids]
                if missing:
                    self.problem(line, f"{where}pair", f"unknown candidate id {missing[0]!r}")
                    continue
                outcome = j.get("outcome")
                if outcome not in PAIR_OUTCOMES:
                    self.problem(
                        line,
                        f"{where}outcome",
                        f"unknown value {outcome!r} (expected a, b, tie or both_bad)",
                    )
                    continue
                ratings = self.ratings(line, j, set(pair), where)
                if ratings is None:
                    continue
                record.judgments.append(
                    JudgmentRecord(
                        line,
                        "pair",
                        str(key),
                        source_name,
                        annotator,
                        pair=(pair[0], pair[1]),
                        outcome=outcome,
                        rationale=rationale,
                        duration_ms=duration,
                        presented_order=presented,
                        ratings=ratings,
                    )
                )
            else:
                self.problem(line, f"judgments[{index}]", "needs 'ranking' or 'pair' + 'outcome'")
        return record

    def ratings(
        self, line: int, judgment: dict, members: set[str], where: str
    ) -> dict[str, dict[str, int]] | None:
        """A judgment's ``ratings`` ({dimension: {candidate id: rating}}) checked as a submit
        checks them (``annotate.queue._check_ratings``), candidates named by external id and in
        the judgment's task; None after a problem."""
        value = judgment.get("ratings")
        if value in (None, {}):
            return {}
        fld = f"{where}ratings"
        if not isinstance(value, dict):
            self.problem(line, fld, "must be an object of dimension -> {candidate id: rating}")
            return None
        clean: dict[str, dict[str, int]] = {}
        for dim, per_candidate in value.items():
            if not isinstance(per_candidate, dict):
                self.problem(line, f"{fld}.{dim}", "must map candidate ids to ratings")
                return None
            clean[dim] = {}
            for cand, rating in per_candidate.items():
                if cand not in members:
                    self.problem(
                        line, f"{fld}.{dim}", f"candidate {cand!r} is not in this judgment's task"
                    )
                    return None
                if not isinstance(rating, int) or isinstance(rating, bool):
                    self.problem(
                        line,
                        f"{fld}.{dim}",
                        f"candidate {cand!r}: the rating must be an integer, got {rating!r}",
                    )
                    return None
                if not RATING_MIN <= rating <= RATING_MAX:
                    self.problem(
                        line,
                        f"{fld}.{dim}",
                        f"candidate {cand!r}: the rating {rating} is not in "
                        f"{RATING_MIN}..{RATING_MAX}",
                    )
                    return None
                clean[dim][cand] = rating
        return clean

    def ranking_groups(
        self, line: int, value: Any, cand_ids: set[str], fld: str
    ) -> list[list[str]] | None:
        if not isinstance(value, list) or not value:
            self.problem(
                line, fld, 'must be a non-empty list of tie groups, e.g. [["a"], ["b", "c"]]'
            )
            return None
        groups: list[list[str]] = []
        seen: set[str] = set()
        for group in value:
            items = group if isinstance(group, list) else [group]
            if not items or not all(isinstance(x, str) for x in items):
                self.problem(line, fld, "each tie group must be a non-empty list of candidate ids")
                return None
            for x in items:
                if x not in cand_ids:
                    self.problem(line, fld, f"unknown candidate id {x!r}")
                    return None
                if x in seen:
                    self.problem(line, fld, f"candidate {x!r} appears twice")
                    return None
                seen.add(x)
            groups.append(list(items))
        if len(seen) < 2:
            self.problem(line, fld, "must rank at least 2 candidates")
            return None
        return groups

    # --- seed paper JSONL ---

    def seed(self, line: int, obj: dict, raw: str) -> PromptRecord | None:
        # A prompt may be empty when an image or video carries the question.
        text = self.text(line, obj, "prompt", required=not (obj.get("image") or obj.get("video")))
        responses = obj.get("responses")
        rankings = obj.get("rankings")
        if (
            not isinstance(responses, list)
            or len(responses) < 2
            or not all(isinstance(r, str) for r in responses)
        ):
            self.problem(line, "responses", "must be a list of at least 2 strings")
            return None
        if not all(self.text_fits(line, f"responses[{i}]", r) for i, r in enumerate(responses)):
            return None
        if not isinstance(rankings, list) or not all(
            isinstance(r, int) and not isinstance(r, bool) for r in rankings
        ):
            self.problem(line, "rankings", "must be a list of integers (1 = best)")
            return None
        if len(rankings) != len(responses):
            self.problem(
                line, "rankings", f"has {len(rankings)} entries for {len(responses)} responses"
            )
            return None
        n = len(responses)
        bad = [r for r in rankings if not 1 <= r <= n]
        if bad:
            self.problem(line, "rankings", f"rank {bad[0]} is outside 1..{n}")
            return None
        if 1 not in rankings:
            self.problem(line, "rankings", "no response has rank 1")
            return None
        models = obj.get("models")
        if models is not None and (
            not isinstance(models, list)
            or len(models) != n
            or not all(isinstance(m, str) for m in models)
        ):
            self.problem(line, "models", f"must be a list of {n} model names")
            models = None
        given_ids = obj.get("candidate_ids")
        if given_ids is not None and (
            not isinstance(given_ids, list)
            or len(given_ids) != n
            or not all(isinstance(c, str) and c for c in given_ids)
            or len(set(given_ids)) != n
        ):
            self.problem(line, "candidate_ids", f"must be a list of {n} distinct ids")
            return None
        answers = self.seed_response_media(line, obj, responses)
        if answers is None:
            return None
        media_names = [ref.name if ref else "" for ref in answers]
        image = self.media_ref(line, obj, "image", "image")
        video = self.media_ref(line, obj, "video", "video")
        pid = obj.get("id")
        if pid is not None and not isinstance(pid, str):
            self.problem(line, "id", "must be a string")
            return None
        pid = (
            pid
            or "seed-"
            + _digest(
                text,
                str(obj.get("image") or ""),
                str(obj.get("video") or ""),
                *responses,
                *(media_names if any(media_names) else ()),
            )[:16]
        )
        previous = self.seed_records.get(pid)
        if previous is not None and [
            (c.text, c.media.name if c.media else "") for c in previous.candidates
        ] == list(zip(responses, media_names, strict=True)):
            # The same prompt ranked again (another annotator): one more judgment on it.
            ids = [c.external_id for c in previous.candidates]
            groups = [
                [ids[i] for i in range(n) if rankings[i] == value]
                for value in sorted(set(rankings))
            ]
            previous.judgments.append(
                JudgmentRecord(
                    line,
                    "ranking",
                    f"{pid}:{self.row_key(raw)}",
                    self.source_name,
                    str(obj.get("annotator") or self.source_name),
                    ranking=groups,
                )
            )
            return None
        if not self.register_prompt(line, pid):
            return None
        metadata = {
            k: v
            for k, v in obj.items()
            if k not in {"prompt", "responses", "rankings", "image", "video", "id", "models"}
            and k not in {"candidate_ids", *MULTIMODAL_KEYS}
        }
        record = PromptRecord(line, pid, text, image, video, metadata)
        self.seed_records[pid] = record
        ids = []
        for i, resp in enumerate(responses):
            cid = given_ids[i] if given_ids else f"{pid}-r{i}"
            ids.append(cid)
            self.register_candidate(line, cid, f"responses[{i}]")
            media = answers[i]
            empty = media is None and not resp.strip()
            record.candidates.append(
                CandidateRecord(
                    cid,
                    models[i] if models else f"response-{i}",
                    media.kind if media else "text",
                    resp,
                    media,
                    {"response_index": i} | ({EMPTY_ANSWER: True} if empty else {}),
                )
            )
        groups = [
            [ids[i] for i in range(n) if rankings[i] == value] for value in sorted(set(rankings))
        ]
        record.judgments.append(
            JudgmentRecord(
                line,
                "ranking",
                f"{pid}:{self.row_key(raw)}",
                self.source_name,
                str(obj.get("annotator") or self.source_name),
                ranking=groups,
            )
        )
        return record

    def seed_response_media(
        self, line: int, obj: dict, responses: list[str]
    ) -> list[MediaRef | None] | None:
        """The media of each response in the multimodal layout (None for a text response),
        or None after reporting a problem.

        ``response_kinds[i]`` is text/image/video and ``response_images[i]`` /
        ``response_videos[i]`` the path of an image/video response (null otherwise), as
        exports write ``rankings_multimodal/``. A plain seed row has none of the three keys.
        """
        n = len(responses)
        kinds = obj.get("response_kinds")
        if kinds is None:
            given = [k for k in MULTIMODAL_KEYS[1:] if obj.get(k) is not None]
            if given:
                self.problem(line, given[0], "needs response_kinds beside it")
                return None
            return [None] * n
        if not (isinstance(kinds, list) and len(kinds) == n and all(k in KINDS for k in kinds)):
            self.problem(line, "response_kinds", f"must be a list of {n} of text, image, video")
            return None
        paths = {}
        for kind in ("image", "video"):
            key = f"response_{kind}s"
            value = obj.get(key)
            if value is None:
                value = [None] * n
            if not (isinstance(value, list) and len(value) == n):
                self.problem(line, key, f"must be a list of {n} paths or nulls")
                return None
            paths[kind] = value
        out: list[MediaRef | None] = []
        for i, kind in enumerate(kinds):
            for other in ("image", "video"):
                if other != kind and paths[other][i] is not None:
                    self.problem(
                        line, f"response_{other}s[{i}]", f"must be null for a {kind} response"
                    )
                    return None
            if kind == "text":
                out.append(None)
                continue
            key = f"response_{kind}s[{i}]"
            ref = self.media_ref(line, {key: paths[kind][i]}, key, kind)
            if ref is None:
                self.problem(line, key, f"an {kind} response needs a path")
                return None
            out.append(ref)
        return out

    # --- arena votes ---

    def arena(self, line: int, obj: dict, raw: str) -> PromptRecord | None:
        model_a = self.text(line, obj, "model_a", required=True)
        model_b = self.text(line, obj, "model_b", required=True)
        winner = obj.get("winner")
        if not isinstance(winner, str) or winner not in ARENA_WINNERS:
            self.problem(
                line,
                "winner",
                f"unknown value {winner!r} (expected model_a, model_b, tie or 'tie (bothbad)')",
            )
            return None
        if not model_a or not model_b:
            return None
        key = self.row_key(raw)
        pid = f"vote-{key}"
        self.register_prompt(line, pid)
        metadata = {
            k: obj[k] for k in ("tstamp", "anony", "judge", "question_id", "language") if k in obj
        }
        prompt_text = obj.get("prompt") if isinstance(obj.get("prompt"), str) else ""
        if not self.text_fits(line, "prompt", prompt_text):
            return None
        record = PromptRecord(line, pid, prompt_text, metadata=metadata)
        kind = obj.get("kind") if obj.get("kind") in KINDS else "image"
        record.candidates = [
            CandidateRecord(
                f"{pid}-a", model_a, kind, "", None, {"content": "not provided by the source"}
            ),
            CandidateRecord(
                f"{pid}-b", model_b, kind, "", None, {"content": "not provided by the source"}
            ),
        ]
        judge = obj.get("judge") if isinstance(obj.get("judge"), str) else ""
        record.judgments.append(
            JudgmentRecord(
                line,
                "pair",
                f"vote:{key}",
                self.source_name,
                judge,
                pair=(f"{pid}-a", f"{pid}-b"),
                outcome=ARENA_WINNERS[winner],
            )
        )
        return record

    # --- media ---

    def check_media(self, on_progress: Callable[[int], None] | None = None) -> None:
        for count, ref in enumerate(self.media.values(), start=1):
            line, fld = ref.__dict__.get("first_use", (None, ref.name))
            try:
                data = self.source.read_media(ref.name)
            except ValueError as exc:
                self.problem(line, fld, f"{ref.name!r}: {exc}")
                continue
            except FileNotFoundError as exc:
                self.problem(line, fld, f"{ref.name!r}: missing file ({exc})")
                continue
            except OSError as exc:
                self.problem(line, fld, f"{ref.name!r}: unreadable ({exc})")
                continue
            sniff = sniff_image if ref.kind == "image" else sniff_video
            try:
                ref.ext = sniff(data, max_pixels=self.source.max_image_pixels)
            except ValueError as exc:
                self.problem(line, fld, f"{ref.name!r} is not a valid {ref.kind}: {exc}")
                continue
            ref.sha256 = hashlib.sha256(data).hexdigest()
            ref.size = len(data)
            if on_progress is not None and count % 50 == 0:
                on_progress(count)


def parse_import(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    source_name: str | None = None,
    max_media_bytes: int,
    max_file_bytes: int,
    max_data_bytes: int | None = None,
    max_text_chars: int | None = None,
    max_image_pixels: int | None = None,
    on_progress: Callable[[str, int, int], None] | None = None,
) -> ParsedImport:
    """Reads and checks an import file completely. Raises ImportRejected listing problems.

    Args:
        path: a ``.jsonl``/``.json`` file (media beside it) or a ``.zip`` holding one.
        format: one of ``FORMATS``; detected from the first row when None.
        source_name: names imported judgments' source; defaults to the file's stem.
        max_data_bytes, max_text_chars, max_image_pixels: the data file's unpacked size (default
            ``max_file_bytes``), each text field's length, each image's or frame's pixel count
            (default: no limit).
        on_progress: called as ``(phase, done, total)`` while rows and media are checked.
    """
    path = Path(path)
    if format is not None and format not in FORMATS:
        raise ImportRejected(
            [Problem(None, "format", f"unknown format {format!r} (expected {', '.join(FORMATS)})")]
        )
    source = MediaSource(
        path,
        max_media_bytes=max_media_bytes,
        max_file_bytes=max_file_bytes,
        max_data_bytes=max_data_bytes,
        max_image_pixels=max_image_pixels,
    )
    try:
        problems = source.open()
    except _ZIP_ERRORS as exc:
        problems = [Problem(None, "zip", f"{path.name}: corrupt zip file ({_zip_error(exc)})")]
    if problems:
        source.close()
        raise ImportRejected(problems)
    try:
        data = source.read_data()
        rows = list(_iter_rows(data, source.data_name))
    except ImportRejected:
        source.close()
        raise
    except _ZIP_ERRORS as exc:
        # A zip entry that does not inflate to what its header says (a CRC mismatch, a bomb
        # that lies about its size), points outside the file, or uses a method zipfile lacks.
        source.close()
        raise ImportRejected(
            [Problem(None, "zip", f"{source.data_name}: corrupt zip entry ({_zip_error(exc)})")]
        ) from None
    except UnicodeDecodeError as exc:
        source.close()
        raise ImportRejected(
            [
                Problem(
                    None,
                    "",
                    f"{source.data_name}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                )
            ]
        ) from None
    if source.export is not None:
        # An export's rankings are seed rows (plus media lists); its judgments are named after
        # the export they come from.
        if format not in (None, "seed"):
            source.close()
            raise ImportRejected(
                [Problem(None, "format", f"a Quorum export is read as seed rows, not {format!r}")]
            )
        format, source_name = "seed", source_name or export_source_name(source.export)
    parser = _Parser(
        source,
        source_name or Path(source.data_name).stem or path.stem,
        max_text_chars=max_text_chars,
    )
    project_settings: dict = {}
    prompts: list[PromptRecord] = []
    if not rows:
        source.close()
        raise ImportRejected([Problem(None, "", f"{source.data_name}: no rows")])
    for number, obj, _raw in rows:
        if isinstance(obj, json.JSONDecodeError):
            parser.problem(number, "", f"malformed JSON: {obj.msg} at column {obj.colno}")
    first = next((obj for _, obj, _ in rows if not isinstance(obj, json.JSONDecodeError)), None)
    fmt = format or detect_format(first)
    if fmt is None:
        parser.problem(
            rows[0][0],
            "",
            "cannot detect the format: expected Quorum JSONL ('candidates'), seed JSONL ('responses' + 'rankings') or arena votes ('model_a', 'model_b', 'winner'); pass --format",
        )
        source.close()
        raise ImportRejected(parser.problems)
    handler = getattr(parser, fmt)
    total = len(rows)
    for index, (number, obj, raw) in enumerate(rows, start=1):
        if isinstance(obj, json.JSONDecodeError):
            continue
        if not isinstance(obj, dict):
            parser.problem(number, "", f"expected a JSON object, got {type(obj).__name__}")
            continue
        if fmt == "quorum" and "project" in obj and len(obj) == 1:
            if index != 1 or not isinstance(obj["project"], dict):
                parser.problem(
                    number, "project", "project settings must be an object on the first line"
                )
            else:
                project_settings = obj["project"]
            continue
        record = handler(number, obj, raw)
        if record is not None:
            prompts.append(record)
        if len(parser.problems) >= MAX_PROBLEMS:
            break
        if on_progress is not None and (index % 1000 == 0 or index == total):
            on_progress("rows", index, total)
    if not parser.problems:
        parser.check_media(
            lambda n: on_progress("media", n, len(parser.media)) if on_progress else None
        )
    if parser.problems:
        source.close()
        raise ImportRejected(parser.problems)
    return ParsedImport(fmt, prompts, project_settings, parser.media, source)


class QuorumStream:
    """A Quorum JSONL file opened to be parsed a chunk of rows at a time (``quorum_stream``):
    the PostgreSQL import writes each chunk's candidates while the next is parsed.

    Only the files that parse exactly as ``parse_import`` would (its rows, records and
    problems) one chunk at a time: ``records`` answers None at the first problem, or at a row
    naming media, so that the caller falls back to ``parse_import``, which finds and orders
    every problem as ever.
    """

    def __init__(
        self,
        source: MediaSource,
        parser: _Parser,
        settings: dict,
        rows: list[tuple[int, str]],
        total: int,
        long_ints: bool,
        shallow: bool = False,
    ):
        self.source = source
        self.project_settings = settings
        # (line number, text) of each row after the project's settings.
        self.rows = rows
        self.total = total  # rows of the file, the settings' included (``parse_import``'s)
        self._parser = parser
        self._long_ints = long_ints
        # ``orjson`` directly where ``_loads`` would return its value (``_iter_rows``).
        self._fast = orjson.loads if shallow and not long_ints else None

    def records(self, start: int, stop: int) -> list[PromptRecord] | None:
        """The prompts of ``rows[start:stop]``; None where ``parse_import`` is needed."""
        parser, quorum, long_ints = self._parser, self._parser.quorum, self._long_ints
        fast = self._fast
        out = []
        for number, line in self.rows[start:stop]:
            try:
                obj = fast(line) if fast is not None else _loads(line, long_ints_possible=long_ints)
            except orjson.JSONDecodeError:
                try:  # what orjson refuses, json may read (``_loads``)
                    obj = _loads(line, long_ints_possible=long_ints)
                except json.JSONDecodeError:
                    return None
            except json.JSONDecodeError:
                return None
            if type(obj) is not dict or ("project" in obj and len(obj) == 1):
                return None
            record = quorum(number, obj, line)
            if record is None or parser.problems or parser.media:
                return None
            out.append(record)
        return out

    def chunks(self, size: int) -> Iterator[list[PromptRecord] | None]:
        """``records`` of every ``size`` rows in turn, ending after the first None."""
        for start in range(0, len(self.rows), size):
            chunk = self.records(start, start + size)
            yield chunk
            if chunk is None:
                return


def forked(items: Iterator[Any]) -> Iterator[Any]:
    """``items`` produced in a forked child process and yielded here as the child sends them,
    then None if the child did not end cleanly (an exception, a signal): its items are not all
    here, or where the child sent nothing for ``FORKED_SILENCE_S``. The caller works on one
    item while the child produces the next on another core.

    Each item (plain values only: ``marshal``'s types) is written into an unlinked scratch file
    and its place sent through a pipe (a pipe alone, 64 KiB at a time, made the two processes
    take turns for megabytes of rows). ``items`` must not touch the database connection or
    anything else the child shares with this process; the child leaves by ``os._exit`` (no
    clean-up of what it inherited). Closing the generator early kills the child.
    """
    read_fd, write_fd = os.pipe()
    with tempfile.TemporaryFile() as spool:
        pid = os.fork()
        if pid == 0:  # the child
            code = 1
            try:
                # The parent's handlers (a worker's warm shutdown) are not the child's to run.
                for number in _CHILD_SIGNALS:
                    signal.signal(number, signal.SIG_DFL)
                os.close(read_fd)
                offset = 0
                for item in items:
                    blob = marshal.dumps(item)
                    os.pwrite(spool.fileno(), blob, offset)
                    os.write(write_fd, _PLACE.pack(offset, len(blob)))
                    offset += len(blob)
                code = 0
            finally:
                os._exit(code)
        os.close(write_fd)
        ended = False  # the pipe read to its end, between two items
        try:
            with open(read_fd, "rb", buffering=0) as places:
                while True:
                    place = _read_within(places, _PLACE.size, FORKED_SILENCE_S)
                    if place == b"":
                        ended = True
                        break
                    if place is None or len(place) != _PLACE.size:
                        break  # silent, or cut off: the child died while writing
                    offset, size = _PLACE.unpack(place)
                    yield marshal.loads(os.pread(spool.fileno(), size, offset))
        finally:
            if not ended:
                os.kill(pid, signal.SIGKILL)
            status = os.waitpid(pid, 0)[1]
    if not ended or os.waitstatus_to_exitcode(status) != 0:
        yield None


def _read_within(pipe: io.RawIOBase, n: int, seconds: float) -> bytes | None:
    """Up to ``n`` bytes from ``pipe`` (fewer at its end); None where nothing came for
    ``seconds``."""
    got = b""
    while len(got) < n:
        if not select.select([pipe], [], [], seconds)[0]:
            return None
        more = pipe.read(n - len(got))
        if not more:
            break
        got += more
    return got


def quorum_stream(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    source_name: str | None = None,
    max_media_bytes: int,
    max_file_bytes: int,
    max_data_bytes: int | None = None,
    max_text_chars: int | None = None,
    max_image_pixels: int | None = None,
    unjudged: bool = False,
) -> QuorumStream | None:
    """``path`` opened as a ``QuorumStream`` (arguments as ``parse_import``'s), or None where
    it is not one: another format, a JSON array, an export, a zip, or a problem with the file
    (``parse_import`` then reads it, and reports the problem); ``unjudged``: or where a row
    may hold judgments (the text names them). The caller closes the stream's ``source``."""
    path = Path(path)
    if format not in (None, "quorum") or path.suffix.lower() == ".zip":
        return None
    source = MediaSource(
        path,
        max_media_bytes=max_media_bytes,
        max_file_bytes=max_file_bytes,
        max_data_bytes=max_data_bytes,
        max_image_pixels=max_image_pixels,
    )
    try:
        if source.open() or source.export is not None or source._zip is not None:
            source.close()
            return None
        data = source.read_data()
        text = data.decode("utf-8-sig", errors="strict")
    except (ImportRejected, UnicodeDecodeError, *_ZIP_ERRORS):
        source.close()
        return None
    if text.lstrip().startswith("[") or (unjudged and '"judgments"' in text):
        source.close()
        return None
    rows = [(n, line) for n, line in enumerate(text.splitlines(), start=1) if line.strip()]
    long_ints = _has_long_digits(data)
    try:
        first = _loads(rows[0][1], long_ints_possible=long_ints) if rows else None
    except json.JSONDecodeError:
        first = None
    if type(first) is not dict or (format is None and detect_format(first) != "quorum"):
        source.close()
        return None
    total = len(rows)
    settings: dict = {}
    if "project" in first and len(first) == 1:
        settings, rows = first["project"], rows[1:]
    if not isinstance(settings, dict) or not rows:
        source.close()
        return None
    parser = _Parser(
        source,
        source_name or Path(source.data_name).stem or path.stem,
        max_text_chars=max_text_chars,
    )
    return QuorumStream(
        source, parser, settings, rows, total, long_ints, shallow=_lines_shallow(data)
    )
