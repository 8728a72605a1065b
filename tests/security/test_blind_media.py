"""Blind mode: imported media reach the annotator without the metadata that names a model."""

from __future__ import annotations

import io
import json

import av
import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from annotate.media_metadata import strip_metadata
from annotate.models import Candidate, Project
from annotate.services import import_file
from tests.factories import make_user
from tests.media_fixtures import mp4_bytes, write

pytestmark = pytest.mark.django_db

SECRET = "gpt-4o-secret-model"


def _picture() -> Image.Image:
    rng = np.random.default_rng(0)
    return Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8))


def _exif() -> Image.Exif:
    exif = Image.Exif()
    exif[0x0131] = SECRET  # Software
    exif[0x010E] = SECRET  # ImageDescription
    return exif


def _png() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("model", SECRET)
    info.add_text("Comment", SECRET, zip=True)
    info.add_itxt("Description", SECRET)
    buf = io.BytesIO()
    _picture().save(buf, format="PNG", pnginfo=info, exif=_exif())
    return buf.getvalue() + SECRET.encode()  # and bytes after IEND


def _jpeg() -> bytes:
    buf = io.BytesIO()
    _picture().save(buf, format="JPEG", exif=_exif(), comment=SECRET, quality=95)
    return buf.getvalue() + SECRET.encode() + b"\xff\xd9"  # and a fake end after the end


def _gif() -> bytes:
    buf = io.BytesIO()
    _picture().convert("P").save(buf, format="GIF", comment=SECRET)
    return buf.getvalue()


def _webp() -> bytes:
    buf = io.BytesIO()
    xmp = f'<x:xmpmeta xmlns:x="adobe:ns:meta/">{SECRET}</x:xmpmeta>'.encode()
    _picture().save(buf, format="WEBP", lossless=True, exif=_exif(), xmp=xmp)
    return buf.getvalue() + b"XTRA" + len(SECRET).to_bytes(4, "little") + SECRET.encode()


def _mp4() -> bytes:
    with av.open(io.BytesIO(mp4_bytes())) as src:
        out = io.BytesIO()
        with av.open(out, mode="w", format="mp4") as dst:
            dst.metadata["title"] = SECRET
            dst.metadata["comment"] = SECRET
            stream = dst.add_stream_from_template(src.streams.video[0])
            stream.metadata["handler_name"] = SECRET
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)
    return out.getvalue()


MEDIA = {"png": _png, "jpg": _jpeg, "gif": _gif, "webp": _webp, "mp4": _mp4}


def _pixels(data: bytes, ext: str) -> list[np.ndarray]:
    if ext == "mp4":
        with av.open(io.BytesIO(data)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with Image.open(io.BytesIO(data)) as img:
        return [np.asarray(img.convert("RGB"))]


@pytest.mark.parametrize("ext", MEDIA)
def test_it_stores_media_without_the_metadata_that_names_a_model(ext, tmp_path, client):
    original = MEDIA[ext]()
    assert SECRET.encode() in original
    kind = "video" if ext == "mp4" else "image"
    write(tmp_path / f"answer.{ext}", original)
    row = {
        "id": "q1",
        "prompt": "Which is better?",
        "candidates": [
            {"id": "a", "model": SECRET, kind: f"answer.{ext}"},
            {"id": "b", "model": "other", "text": "words"},
        ],
    }
    (tmp_path / "rows.jsonl").write_text(
        json.dumps({"project": {"blind": True}}) + "\n" + json.dumps(row) + "\n"
    )
    import_file(path=tmp_path / "rows.jsonl", project_name="blind")
    assert Project.objects.get(name="blind").blind
    stored = Candidate.objects.get(external_id="a").media.name
    client.force_login(make_user("staff-blind", staff=True))
    served = b"".join(client.get(f"/media/{stored}").streaming_content)
    assert SECRET.encode() not in served
    for before, after in zip(_pixels(original, ext), _pixels(served, ext), strict=True):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("ext", MEDIA)
def test_stripping_twice_changes_nothing_more(ext):
    once = strip_metadata(MEDIA[ext](), ext)
    assert strip_metadata(once, ext) == once
