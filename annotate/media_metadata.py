"""Strips metadata from imported media, leaving the pixels and frames annotators judge as they are.

A blind project must not tell an annotator which model made a candidate, and media are served
byte for byte: a model name in a PNG text chunk, a JPEG's EXIF or comment, a GIF comment, a
WebP's EXIF/XMP or an MP4/WebM tag would reach the browser. Images are filtered at the container
level (chunks, segments, blocks), never re-encoded, so the compressed pixel data is copied
unchanged; every video is remuxed (packets copied, not re-encoded) into a fresh container that
holds its video and audio streams and nothing else. Colour profiles stay (they change how
pixels look, and hold no per-file text of ours).

Pure functions of bytes: no Django. Called by ``annotate.services`` before media are stored.
"""

from __future__ import annotations

import io
import struct

__all__ = ["strip_metadata"]

# PNG chunks that render the image (critical ones, colour, transparency, animation); every other
# ancillary chunk -- tEXt, zTXt, iTXt, eXIf, tIME, private ones -- is dropped.
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"bKGD", b"pHYs", b"acTL", b"fcTL", b"fdAT",
}  # fmt: skip
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG APPn markers kept: APP0 (JFIF), APP2 (ICC profile), APP14 (Adobe colour transform).
_JPEG_KEEP_APP = {0xE0, 0xE2, 0xEE}


def strip_metadata(data: bytes, ext: str) -> bytes:
    """Returns ``data`` without metadata that could carry text; same pixels, same frames.

    Args:
        data: a checked image or video (the importer has decoded it once).
        ext: its extension as the importer detected it: png, jpg, gif, webp, mp4 or webm.

    Raises:
        ValueError: the file's structure is not what its format requires.
    """
    if ext == "png":
        return _strip_png(data)
    if ext == "jpg":
        return _strip_jpeg(data)
    if ext == "gif":
        return _strip_gif(data)
    if ext == "webp":
        return _strip_webp(data)
    if ext in ("mp4", "webm"):
        return _strip_video(data, ext)
    raise ValueError(f"unknown media type {ext!r}")


def _strip_png(data: bytes) -> bytes:
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    out = [_PNG_SIGNATURE]
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        end = pos + 12 + length
        if end > len(data):
            raise ValueError("truncated PNG chunk")
        if kind in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break  # bytes after IEND are not the image's
    return b"".join(out)


def _strip_jpeg(data: bytes) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    out = [b"\xff\xd8"]
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("bad JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if end > len(data):
            raise ValueError("truncated JPEG segment")
        if marker == 0xDA:  # start of scan: the compressed data runs to EOI, copied whole
            # Entropy-coded data never holds FF D9 (an FF in it is followed by 00 or a restart
            # marker), so the first one is the end; anything after it is not the image's.
            scan_end = data.find(b"\xff\xd9", end)
            if scan_end < 0:
                raise ValueError("JPEG without an end marker")
            out.append(data[pos : scan_end + 2])
            return b"".join(out)
        is_app = 0xE0 <= marker <= 0xEF
        if marker != 0xFE and (not is_app or marker in _JPEG_KEEP_APP):  # 0xFE: comment
            out.append(data[pos:end])
        pos = end
    raise ValueError("JPEG without image data")


def _gif_sub_blocks_end(data: bytes, pos: int) -> int:
    """Index just past the sub-block chain starting at ``pos`` (ends with a zero-size block)."""
    while True:
        if pos >= len(data):
            raise ValueError("truncated GIF block")
        size = data[pos]
        pos += 1 + size
        if size == 0:
            return pos


def _strip_gif(data: bytes) -> bytes:
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        raise ValueError("not a GIF")
    flags = data[10]
    pos = 13 + (3 * 2 ** ((flags & 7) + 1) if flags & 0x80 else 0)
    out = [data[:pos]]
    while pos < len(data):
        introducer = data[pos]
        if introducer == 0x3B:  # trailer
            out.append(b"\x3b")
            return b"".join(out)
        if introducer == 0x21:  # extension
            label = data[pos + 1]
            end = _gif_sub_blocks_end(data, pos + 2)
            keep = label in (0xF9, 0x01)  # graphic control, plain text (drawn, so pixels)
            if label == 0xFF:  # application: only the animation loop count
                keep = data[pos + 3 : pos + 14] in (b"NETSCAPE2.0", b"ANIMEXTS1.0")
            if keep:
                out.append(data[pos:end])
            pos = end
        elif introducer == 0x2C:  # image descriptor, optional local table, LZW data
            local = data[pos + 9]
            table = 3 * 2 ** ((local & 7) + 1) if local & 0x80 else 0
            end = _gif_sub_blocks_end(data, pos + 10 + table + 1)
            out.append(data[pos:end])
            pos = end
        else:
            raise ValueError("bad GIF block")
    raise ValueError("GIF without a trailer")


def _strip_webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    limit = min(len(data), 8 + riff_size)  # bytes after the RIFF are not the image's
    chunks = []
    pos = 12
    while pos + 8 <= limit:
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + size + (size & 1)
        if end > limit + (size & 1):
            raise ValueError("truncated WebP chunk")
        if kind not in (b"EXIF", b"XMP "):
            chunk = data[pos:end]
            if kind == b"VP8X":  # clear the "has EXIF" and "has XMP" flags
                chunk = chunk[:8] + bytes([chunk[8] & ~0x0C]) + chunk[9:]
            chunks.append(chunk)
        pos = end
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _strip_video(data: bytes, ext: str) -> bytes:
    """Remuxes every video, packets copied: tags, extra boxes or elements (``free``, ``uuid``,
    ``udta``, Matroska tags, attachments) and bytes after the last box are left behind, as are
    subtitle and data streams. Never shortcut on "only the muxer's own tags": ffmpeg reports no
    unknown box nor trailing bytes, and a tag's value can start like the muxer's and go on with
    a model name. ``bitexact``: no random segment id or version string, so the same input gives
    the same bytes."""
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as src:
            out = io.BytesIO()
            with av.open(
                out,
                mode="w",
                format="mp4" if ext == "mp4" else "webm",
                options={"fflags": "+bitexact"},
            ) as dst:
                mapping = {}
                for stream in src.streams:
                    if stream.type in ("video", "audio"):
                        copy = dst.add_stream_from_template(stream)
                        copy.metadata.clear()
                        mapping[stream.index] = copy
                for packet in src.demux(*(src.streams[i] for i in mapping)):
                    if packet.dts is None:
                        continue  # the demuxer's end-of-stream marker
                    packet.stream = mapping[packet.stream.index]
                    dst.mux(packet)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot be rewritten without its metadata ({exc})") from None
    return out.getvalue()
