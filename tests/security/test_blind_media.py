"""Blind mode: imported media reach the annotator without the metadata that names a model."""

from __future__ import annotations

import io
import json
import struct
import zlib

import av
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageSequence, PngImagePlugin

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


def _with_chunk(png: bytes, kind: bytes, body: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR."""
    chunk = struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return png[:33] + chunk + png[33:]


def _png_profile_named() -> bytes:
    # A colour profile is kept (it changes how pixels look), but its name is free text.
    buf = io.BytesIO()
    _picture().save(buf, format="PNG")
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _with_chunk(buf.getvalue(), b"iCCP", SECRET.encode() + b"\0\0" + zlib.compress(profile))


def _icc_profile() -> bytes:
    """An sRGB profile that also names the model: a description and a private text tag."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    count = int.from_bytes(profile[128:132], "big")
    entries = [struct.unpack(">4sII", profile[132 + 12 * i : 144 + 12 * i]) for i in range(count)]
    body = profile[132 + 12 * count :]
    name = SECRET.encode() + b"\0"
    added = [
        (b"dmdd", b"desc" + bytes(4) + struct.pack(">I", len(name)) + name + bytes(79)),
        (b"qrm0", b"text" + bytes(4) + name),
    ]
    data_start = 132 + 12 * (count + len(added))
    table = [(sig, offset + 12 * len(added), size) for sig, offset, size in entries]
    tail = b""
    for sig, data in added:
        table.append((sig, data_start + len(body) + len(tail), len(data)))
        tail += data + bytes(-len(data) % 4)
    out = bytearray(profile[:128] + struct.pack(">I", len(table)))
    out += b"".join(struct.pack(">4sII", *entry) for entry in table) + body + tail
    out[:4] = struct.pack(">I", len(out))
    return bytes(out)


def _with_profile(fmt: str) -> bytes:
    buf = io.BytesIO()
    options = {"lossless": True} if fmt == "WEBP" else {}
    _picture().save(buf, format=fmt, icc_profile=_icc_profile(), **options)
    return buf.getvalue()


def _segment(marker: int, body: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _jpeg_in_kept_segments() -> bytes:
    """The name in segments a decoder reads only the first fields of, or ignores."""
    buf = io.BytesIO()
    _picture().save(buf, format="JPEG", quality=95)  # starts with a JFIF APP0
    jpeg = buf.getvalue()
    app0_end = 4 + struct.unpack(">H", jpeg[4:6])[0]
    jfif = _segment(0xE0, b"JFIF\0\1\1\0\0\1\0\1" + bytes([1, 7]) + SECRET.encode() + b"!!")
    extra = (
        _segment(0xE2, b"FPXR\0" + SECRET.encode())  # not a colour profile
        + _segment(0xEE, b"Adobe\0\x64\0\0\0\0\1" + SECRET.encode())  # past the fields
    )
    return jpeg[:2] + jfif + extra + jpeg[app0_end:]


def _jpeg_progressive() -> bytes:
    """Comments between the scans of a progressive JPEG, where the compressed data goes on."""
    buf = io.BytesIO()
    _picture().save(buf, format="JPEG", progressive=True, quality=90)
    jpeg = buf.getvalue()
    second_scan = jpeg.index(b"\xff\xc4", jpeg.index(b"\xff\xda"))  # tables before scan 2
    comment = _segment(0xFE, SECRET.encode())
    return jpeg[:second_scan] + comment + jpeg[second_scan:-2] + comment + jpeg[-2:]


def _gif_animated() -> bytes:
    """The name in a plain text extension and in sub-blocks after the fields decoders read."""
    frames = [_picture().convert("P"), _picture().rotate(180).convert("P")]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], loop=0, duration=80)
    gif = buf.getvalue()
    name = bytes([len(SECRET)]) + SECRET.encode()
    netscape = gif.index(b"\x21\xff\x0bNETSCAPE2.0") + 18
    gif = gif[:netscape] + name + gif[netscape:]  # a second data sub-block
    control = gif.index(b"\x21\xf9\x04") + 7
    gif = gif[:control] + name + gif[control:]
    plain_text = b"\x21\x01\x0c" + bytes(12) + name + b"\0"
    return gif[:-1] + plain_text + b"\x3b"


def _webp_animated() -> bytes:
    """Chunks no decoder reads, in the RIFF and inside an animation frame."""
    frames = [_picture(), _picture().rotate(180)]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:], lossless=True)
    webp = buf.getvalue()
    odd = b"ZZZZ" + struct.pack("<I", len(SECRET)) + SECRET.encode() + b"\0" * (len(SECRET) & 1)
    frame = webp.index(b"ANMF")
    (size,) = struct.unpack("<I", webp[frame + 4 : frame + 8])
    body = webp[frame + 8 : frame + 8 + size] + odd
    webp = webp[:frame] + b"ANMF" + struct.pack("<I", len(body)) + body + webp[frame + 8 + size :]
    body = webp[8:] + odd
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _remuxed(
    data: bytes, fmt: str, title: str = "", handler: str = "", language: str = ""
) -> bytes:
    """``data``'s video packets in a new ``fmt`` container carrying the given tags."""
    with av.open(io.BytesIO(data)) as src:
        out = io.BytesIO()
        with av.open(out, mode="w", format=fmt) as dst:
            if title:
                dst.metadata["title"] = title
                dst.metadata["comment"] = title
            stream = dst.add_stream_from_template(src.streams.video[0])
            if handler:
                stream.metadata["handler_name"] = handler
            if language:
                stream.metadata["language"] = language
            for packet in src.demux(src.streams.video[0]):
                if packet.dts is not None:
                    packet.stream = stream
                    dst.mux(packet)
    return out.getvalue()


def _mp4() -> bytes:
    return _remuxed(mp4_bytes(), "mp4", title=SECRET, handler=SECRET)


def _mp4_handler_like_the_muxers() -> bytes:
    # A tag whose value starts as the muxer's own ("VideoHandler") and goes on with the name.
    return _remuxed(mp4_bytes(), "mp4", handler=f"VideoHandler {SECRET}")


def _mp4_free_box() -> bytes:
    # No tag at all: the name sits in a box ffmpeg skips and reports nothing about.
    return mp4_bytes() + struct.pack(">I", 8 + len(SECRET)) + b"free" + SECRET.encode()


def _mp4_trailing() -> bytes:
    return mp4_bytes() + SECRET.encode()


def _mp4_sei() -> bytes:
    """The name in the H.264 stream itself: an SEI user data message before the pictures."""
    from av.bitstream import BitStreamFilterContext

    uuid = "086f3693-b7b3-4f2c-9653-21492feee5b8"
    with av.open(io.BytesIO(mp4_bytes())) as src:
        out = io.BytesIO()
        with av.open(out, mode="w", format="mp4") as dst:
            stream = dst.add_stream_from_template(src.streams.video[0])
            insert = BitStreamFilterContext(
                f"h264_metadata=sei_user_data={uuid}+{SECRET}", src.streams.video[0], stream
            )
            for packet in src.demux(src.streams.video[0]):
                for filtered in insert.filter(packet if packet.dts is not None else None):
                    filtered.stream = stream
                    dst.mux(filtered)
    return out.getvalue()


def _webm() -> bytes:
    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="webm") as container:
        stream = container.add_stream("libvpx-vp9", rate=12)
        stream.width, stream.height, stream.pix_fmt = 32, 24, "yuv420p"
        for _ in range(4):
            pixels = rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return _remuxed(buf.getvalue(), "webm", title=SECRET, language=SECRET) + SECRET.encode()


MEDIA = {
    "png": _png,
    "jpg": _jpeg,
    "gif": _gif,
    "webp": _webp,
    "png-profile-named": _png_profile_named,
    "jpg-kept-segments": _jpeg_in_kept_segments,
    "jpg-progressive": _jpeg_progressive,
    "gif-animated": _gif_animated,
    "png-profile": lambda: _with_profile("PNG"),
    "jpg-profile": lambda: _with_profile("JPEG"),
    "webp-profile": lambda: _with_profile("WEBP"),
    "webp-animated": _webp_animated,
    "mp4": _mp4,
    "mp4-handler": _mp4_handler_like_the_muxers,
    "mp4-free-box": _mp4_free_box,
    "mp4-trailing": _mp4_trailing,
    "mp4-sei": _mp4_sei,
    "webm": _webm,
}
VIDEOS = ("mp4", "webm")


def _ext(case: str) -> str:
    return case.split("-")[0]


def _pixels(data: bytes, ext: str) -> list[np.ndarray]:
    if ext in VIDEOS:
        with av.open(io.BytesIO(data)) as container:
            return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with Image.open(io.BytesIO(data)) as img:
        return [np.asarray(frame.convert("RGBA")) for frame in ImageSequence.Iterator(img)]


@pytest.mark.parametrize("case", MEDIA)
def test_it_stores_media_without_the_metadata_that_names_a_model(case, tmp_path, client):
    original, ext = MEDIA[case](), _ext(case)
    assert SECRET.encode() in original + _profile(original, ext)
    kind = "video" if ext in VIDEOS else "image"
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
    assert SECRET.encode() not in _profile(served, ext)  # compressed in a PNG
    if "profile" in case:
        assert _managed(served) == _managed(original)  # the same colours on screen


def _profile(data: bytes, ext: str) -> bytes:
    if ext in VIDEOS:
        return b""
    with Image.open(io.BytesIO(data)) as img:
        return img.info.get("icc_profile") or b""


def _managed(data: bytes) -> bytes:
    """The image converted to sRGB through its own colour profile."""
    with Image.open(io.BytesIO(data)) as img:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(img.info["icc_profile"]))
        srgb = ImageCms.createProfile("sRGB")
        return ImageCms.profileToProfile(img.convert("RGB"), profile, srgb).tobytes()


@pytest.mark.parametrize("case", MEDIA)
def test_stripping_twice_changes_nothing_more(case):
    ext = _ext(case)
    once = strip_metadata(MEDIA[case](), ext)
    twice = strip_metadata(once, ext)
    if ext == "webm":
        # Matroska keeps no duration for the last block, so a second remux may shorten the
        # stated duration by a frame; the frames themselves stay.
        for a, b in zip(_pixels(once, ext), _pixels(twice, ext), strict=True):
            np.testing.assert_array_equal(a, b)
    else:
        assert twice == once
