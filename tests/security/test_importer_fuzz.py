"""Property: whatever the bytes, the importer returns records or rejects them by line and field.

Never another exception (which the web shows as "internal error" and the CLI as a traceback).
"""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from annotate.importing import ImportRejected, parse_import

LIMITS = {
    "max_media_bytes": 1_000_000,
    "max_file_bytes": 2_000_000,
    "max_data_bytes": 1_000_000,
    "max_text_chars": 1000,
    "max_image_pixels": 1_000_000,
}
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    ["id", "prompt", "candidates", "judgments", "model", "text", "image", "video", "kind",
     "ranking", "pair", "outcome", "annotator", "responses", "rankings", "model_a", "model_b",
     "winner", "project", "metadata", "placeholder", "presented_order", "rationale"]
)  # fmt: skip
rows = st.recursive(
    st.dictionaries(keys, json_values, max_size=6),
    lambda children: st.dictionaries(keys, children | st.lists(children, max_size=3), max_size=6),
    max_leaves=12,
)


def _parse(name: str, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(data)
        try:
            parsed = parse_import(path, **LIMITS)
        except ImportRejected as exc:
            assert exc.problems
            assert all(folder not in str(p) for p in exc.problems), exc.problems
        else:
            parsed.source.close()


def _damaged_zip(objects: list[dict], media: bytes, offset: int, garbage: bytes) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data.jsonl", "\n".join(json.dumps(o) for o in objects))
        zf.writestr("media/a.png", media)
    raw = bytearray(buffer.getvalue())
    at = offset % len(raw)
    raw[at : at + len(garbage)] = garbage
    return bytes(raw)


uploads = st.one_of(
    # rows of JSON in the shapes the formats use, with wrong types anywhere
    st.tuples(
        st.just("rows.jsonl"),
        st.lists(rows, min_size=1, max_size=4).map(
            lambda objects: "\n".join(json.dumps(o) for o in objects).encode()
        ),
    ),
    # any bytes, named as a data file or as a zip
    st.tuples(st.sampled_from(["rows.jsonl", "rows.json"]), st.binary(max_size=400)),
    st.tuples(st.just("rows.zip"), st.binary(max_size=400).map(lambda b: b"PK\x03\x04" + b)),
    # a well-formed zip with a few bytes overwritten anywhere
    st.tuples(
        st.just("upload.zip"),
        st.builds(
            _damaged_zip,
            st.lists(rows, min_size=1, max_size=3),
            st.binary(max_size=200),
            st.integers(min_value=0, max_value=400),
            st.binary(min_size=1, max_size=8),
        ),
    ),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(uploads)
# Found by this test: an entry flagged as encrypted, one whose header offset points before the
# start of the file, a list where a string is expected.
@example(("upload.zip", _damaged_zip([{}], b"\x00", 96, b"\x01")))
@example(("rows.jsonl", b'{"winner": [], "model_a": "a", "model_b": "b"}'))  # unhashable
@example(
    (
        "upload.zip",
        _damaged_zip([{}, {"id": {}, "prompt": {}, "candidates": {"id": None}}], b"", 257, b"\x01"),
    )
)
def test_it_rejects_or_reads_any_upload(upload):
    name, data = upload
    _parse(name, data)


def _zip_with_unnamed_entry(sheet: bool) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr(zipfile.ZipInfo(""), b"x")
        archive.writestr("rows.jsonl", b'{"prompt": "p", "candidates": ["a", "b"]}\n')
        if sheet:
            archive.writestr("datasheet.json", b'{"format": "quorum-export/1"}')
    return buffer.getvalue()


# Found by test_it_rejects_or_reads_any_upload (CI, 2026-12-06): an entry whose name is empty
# made zipfile's ``is_dir()`` raise IndexError while the export's datasheet was looked for.
def test_it_rejects_a_zip_entry_without_a_name_by_name(tmp_path):
    for sheet in (False, True):
        path = tmp_path / f"upload{int(sheet)}.zip"
        path.write_bytes(_zip_with_unnamed_entry(sheet))
        try:
            parse_import(path, **LIMITS).source.close()
        except ImportRejected as exc:
            assert [(p.field, p.message) for p in exc.problems] == [
                ("zip", f"{path.name}: an entry without a name")
            ]
        else:
            raise AssertionError("a zip with an unnamed entry was read")


# --- metadata stripping of damaged media ----------------------------------------------------
# The importer strips what it has checked (``sniff_image`` opens and verifies the header, not
# every block), and turns only ValueError into a line-and-field problem.


def _images() -> dict[str, tuple[str, bytes]]:
    import numpy as np
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), np.uint8))
    turned = picture.rotate(90)
    made = {}
    for name, fmt, options in [
        ("png", "PNG", {}),
        ("jpg", "JPEG", {"progressive": True}),
        ("gif", "GIF", {"save_all": True, "append_images": [turned], "loop": 0}),
        ("webp", "WEBP", {"save_all": True, "append_images": [turned], "lossless": True}),
    ]:
        buffer = io.BytesIO()
        picture.save(buffer, format=fmt, **options)
        made[name] = (name, buffer.getvalue())
    return made


IMAGES = _images()


def _strip_checked(ext: str, data: bytes) -> None:
    from annotate.importing import sniff_image
    from annotate.media_metadata import strip_metadata

    try:
        sniff_image(data)
    except ValueError:
        return  # the importer refuses it before stripping
    with contextlib.suppress(ValueError):
        strip_metadata(data, ext)


def test_stripping_a_truncated_image_raises_nothing_but_value_error():
    # Every cut: an animated GIF cut inside an extension raised IndexError (an internal error).
    for ext, data in IMAGES.values():
        for cut in range(1, len(data)):
            _strip_checked(ext, data[:cut])


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(sorted(IMAGES)),
    st.lists(st.tuples(st.integers(0, 10**6), st.binary(min_size=1, max_size=4)), max_size=3),
)
def test_stripping_a_damaged_image_raises_nothing_but_value_error(name, damage):
    ext, data = IMAGES[name]
    raw = bytearray(data)
    for offset, garbage in damage:
        at = offset % len(raw)
        raw[at : at + len(garbage)] = garbage
    _strip_checked(ext, bytes(raw))
