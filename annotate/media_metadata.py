"""Strips metadata from imported media, leaving the pixels and frames annotators judge as they are.

A blind project must not tell an annotator which model made a candidate, and media are served
byte for byte: a model name in a PNG text chunk, a JPEG's EXIF or comment, a GIF comment, a
WebP's EXIF/XMP or an MP4/WebM tag would reach the browser. Images are filtered at the container
level (chunks, segments, blocks), never re-encoded, so the compressed pixel data is copied
unchanged; every video is remuxed (packets copied, not re-encoded) into a fresh container that
holds its video and audio streams and nothing else. Colour profiles stay (they change how
pixels look) with their colour tags only: names, descriptions and private tags are cleared.

Pure functions of bytes: no Django. Called by ``annotate.services`` before media are stored.
"""

from __future__ import annotations

import io
import struct
import zlib

__all__ = ["strip_metadata"]

# PNG chunks that render the image (critical ones, colour, transparency, animation); every other
# ancillary chunk -- tEXt, zTXt, iTXt, eXIf, tIME, private ones -- is dropped.
_PNG_KEEP = {
    b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"iCCP", b"sBIT",
    b"bKGD", b"pHYs", b"acTL", b"fcTL", b"fdAT",
}  # fmt: skip
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG segments kept: frames (SOFn), Huffman/arithmetic/quantisation tables, DNL, restart
# interval. APP0, APP2 and APP14 are rebuilt from the fields that matter (``_jpeg_app``); every
# other APPn, comments and the reserved JPGn markers (which decoders skip) are dropped.
_JPEG_KEEP = set(range(0xC0, 0xD0)) - {0xC8} | {0xDB, 0xDC, 0xDD}
# ICC tag types that describe colour, kept as they are. Every other tag -- descriptions,
# copyright, device and viewing-condition names, private tags -- keeps its type and loses its
# content (CMMs and browsers never read text to convert colours); the header's vendor, device,
# creator and id fields are cleared.
_ICC_COLOUR_TYPES = {
    b"curv", b"para", b"XYZ ", b"mft1", b"mft2", b"mAB ", b"mBA ", b"sf32", b"chrm", b"clro",
    b"clrt", b"ncl2", b"mpet", b"sig ", b"meas", b"view", b"uf32", b"ui08", b"ui16", b"ui32",
    b"ui64", b"dtim", b"cicp",
}  # fmt: skip
# Header bytes cleared: preferred CMM, platform, device manufacturer and model, creator, profile
# id (an MD5 of the rest, which changes), reserved.
_ICC_HEADER_CLEARED = ((4, 8), (40, 44), (48, 56), (80, 128))
_ICC_MAX_BYTES = 16 * 1024 * 1024
# Units of a video bitstream that carry text, not pictures, dropped when remuxing: H.264 and
# HEVC SEI messages (user data, an encoder's own settings string), AV1 metadata OBUs. Decoding
# does not read them for the pictures' samples.
_VIDEO_TEXT_UNITS = {"h264": "6", "hevc": "39|40", "av1": "5"}
# WebP chunks that render the image (``ANMF`` frames are filtered inside as well).
_WEBP_KEEP = {b"VP8 ", b"VP8L", b"VP8X", b"ALPH", b"ANIM", b"ANMF", b"ICCP"}


def strip_metadata(data: bytes, ext: str) -> bytes:
    """Returns ``data`` without metadata that could carry text; same pixels, same frames.

    Args:
        data: a checked image or video (the importer has decoded it once).
        ext: its extension as the importer detected it: png, jpg, gif, webp, mp4 or webm.

    Raises:
        ValueError: the file's structure is not what its format requires.
    """
    strip = {"png": _strip_png, "jpg": _strip_jpeg, "gif": _strip_gif, "webp": _strip_webp}
    if ext in ("mp4", "webm"):
        return _strip_video(data, ext)
    if ext not in strip:
        raise ValueError(f"unknown media type {ext!r}")
    try:
        return strip[ext](data)
    except (IndexError, struct.error):  # a block cut short where its fields should be
        raise ValueError(f"truncated or damaged {ext.upper()} structure") from None


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
        if kind == b"iCCP":  # name (free text), NUL, method, compressed profile
            name_end = data.find(b"\0", pos + 8, end)
            if name_end < 0:
                raise ValueError("bad PNG iCCP chunk")
            if data[name_end + 1 : name_end + 2] != b"\0":
                raise ValueError("bad PNG iCCP chunk")
            profile = _inflate(data[name_end + 2 : end - 4], _ICC_MAX_BYTES)
            body = b"ICC Profile\0\0" + zlib.compress(_clean_icc(profile), 9)
            out.append(_png_chunk(kind, body))
        elif kind in _PNG_KEEP:
            out.append(data[pos:end])
        pos = end
        if kind == b"IEND":
            break  # bytes after IEND are not the image's
    return b"".join(out)


def _inflate(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj()
    try:
        out = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise ValueError(f"bad compressed colour profile ({exc})") from None
    if inflater.unconsumed_tail:
        raise ValueError(f"colour profile over {limit} bytes")
    return out


def _clean_icc(profile: bytes) -> bytes:
    """``profile`` with the colour tags as they are and every other byte cleared."""
    if len(profile) < 132 or profile[36:40] != b"acsp":
        raise ValueError("not an ICC colour profile")
    count = int.from_bytes(profile[128:132], "big")
    table_end = 132 + 12 * count
    if table_end > len(profile):
        raise ValueError("truncated ICC colour profile")
    out = bytearray(len(profile))
    out[:table_end] = profile[:table_end]
    out[:4] = len(profile).to_bytes(4, "big")
    for start, end in _ICC_HEADER_CLEARED:
        out[start:end] = bytes(end - start)
    for entry in range(132, table_end, 12):
        _, offset, size = struct.unpack(">4sII", profile[entry : entry + 12])
        if size < 8 or offset + size > len(profile):
            raise ValueError("bad ICC tag")
        kind = profile[offset : offset + 4]
        if kind in _ICC_COLOUR_TYPES:
            out[offset : offset + size] = profile[offset : offset + size]
        else:
            out[offset : offset + 4] = kind
            if kind == b"mluc" and size >= 16:  # no records, of the one record size there is
                out[offset + 12 : offset + 16] = (12).to_bytes(4, "big")
    return bytes(out)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    crc = zlib.crc32(kind + body) & 0xFFFFFFFF
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)


def _jpeg_app(marker: int, body: bytes) -> bytes | None:
    """An APPn segment rebuilt from what a decoder reads of it, or None to drop it."""
    if marker == 0xE0 and body.startswith(b"JFIF\0") and len(body) >= 14:
        body = body[:12] + b"\0\0"  # version, density units and values; no thumbnail
    elif marker == 0xEE and body.startswith(b"Adobe") and len(body) >= 12:
        body = body[:12]  # version, flags, colour transform
    else:
        return None
    return bytes([0xFF, marker]) + struct.pack(">H", len(body) + 2) + body


def _jpeg_icc(chunks: list[bytes]) -> bytes:
    """The APP2 segments of the colour profile that ``chunks`` (in file order) hold, cleaned."""
    ordered = sorted(chunks, key=lambda c: c[12:13])  # by sequence number
    profile = _clean_icc(b"".join(c[14:] for c in ordered))
    step = 65533 - 14
    parts = [profile[i : i + step] for i in range(0, len(profile), step)]
    return b"".join(
        b"\xff\xe2"
        + struct.pack(">H", len(part) + 16)
        + b"ICC_PROFILE\0"
        + bytes([n, len(parts)])
        + part
        for n, part in enumerate(parts, start=1)
    )


def _jpeg_scan_end(data: bytes, pos: int) -> int:
    """Index of the marker ending the entropy-coded data that starts at ``pos``."""
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= len(data):
            raise ValueError("JPEG without an end marker")
        following = data[pos + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:  # stuffed byte, restart marker
            pos += 2
        elif following == 0xFF:  # fill byte before a marker
            pos += 1
        else:
            return pos


def _strip_jpeg(data: bytes) -> bytes:
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    out = [b"\xff\xd8"]
    icc: list[bytes] = []  # the colour profile's chunks, rebuilt where the first one was
    icc_at = None
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("bad JPEG marker")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image; anything after it is not the image's
            out.append(b"\xff\xd9")
            if icc:
                out[icc_at] = _jpeg_icc(icc)
            return b"".join(out)
        if pos + 4 > len(data):
            break
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        end = pos + 2 + length
        if end > len(data):
            raise ValueError("truncated JPEG segment")
        if marker == 0xDA:
            # Start of scan, then its entropy-coded data up to the next marker; progressive
            # images have several scans, with tables (and possibly comments) between them.
            scan_end = _jpeg_scan_end(data, end)
            out.append(data[pos:scan_end])
            pos = scan_end
            continue
        if marker in _JPEG_KEEP:
            out.append(data[pos:end])
        elif marker == 0xE2 and data[pos + 4 : pos + 16] == b"ICC_PROFILE\0":
            if icc_at is None:
                icc_at = len(out)
                out.append(b"")
            icc.append(data[pos + 4 : end])
        elif 0xE0 <= marker <= 0xEF:
            rebuilt = _jpeg_app(marker, data[pos + 4 : end])
            if rebuilt is not None:
                out.append(rebuilt)
        pos = end
    raise ValueError("JPEG without an end marker")


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
            # Kept, rebuilt from their fixed fields (more sub-blocks could carry any text):
            # graphic control (delay, disposal, transparency) and the animation loop count.
            # Plain text extensions are dropped: browsers do not draw them.
            if label == 0xF9 and data[pos + 2] == 4:
                out.append(data[pos : pos + 7] + b"\0")
            elif (
                label == 0xFF
                and data[pos + 2 : pos + 14] in (b"\x0bNETSCAPE2.0", b"\x0bANIMEXTS1.0")
                and data[pos + 14 : pos + 16] == b"\x03\x01"
            ):
                out.append(data[pos : pos + 18] + b"\0")
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


def _webp_chunks(data: bytes, keep: set[bytes]) -> bytes:
    """The chunks of ``data`` whose kind is in ``keep``, padding zeroed; every other one dropped."""
    chunks = []
    pos = 0
    while pos + 8 <= len(data):
        kind = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + size
        if end > len(data):
            raise ValueError("truncated WebP chunk")
        if kind in keep:
            body = data[pos + 8 : end]
            if kind == b"VP8X":  # clear the "has EXIF" and "has XMP" flags
                body = bytes([body[0] & ~0x0C]) + body[1:]
            elif kind == b"ICCP":
                body = _clean_icc(body)
            elif kind == b"ANMF":  # frame header (16 bytes), then the frame's own chunks
                body = body[:16] + _webp_chunks(body[16:], {b"ALPH", b"VP8 ", b"VP8L"})
            chunks.append(kind + struct.pack("<I", len(body)) + body + b"\0" * (len(body) & 1))
        pos = end + (size & 1)
    return b"".join(chunks)


def _strip_webp(data: bytes) -> bytes:
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise ValueError("not a WebP")
    (riff_size,) = struct.unpack("<I", data[4:8])
    # Bytes after the RIFF are not the image's.
    body = b"WEBP" + _webp_chunks(data[12 : 8 + riff_size], _WEBP_KEEP)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _strip_video(data: bytes, ext: str) -> bytes:
    """Remuxes every video, packets copied: tags, extra boxes or elements (``free``, ``uuid``,
    ``udta``, Matroska tags, attachments) and bytes after the last box are left behind, as are
    subtitle and data streams and the bitstream's text units (``_VIDEO_TEXT_UNITS``). Never shortcut on "only the muxer's own tags": ffmpeg reports no
    unknown box nor trailing bytes, and a tag's value can start like the muxer's and go on with
    a model name. ``bitexact``: no random segment id or version string, so the same input gives
    the same bytes."""
    import av
    from av.bitstream import BitStreamFilterContext

    try:
        with av.open(io.BytesIO(data), mode="r") as src:
            out = io.BytesIO()
            with av.open(
                out,
                mode="w",
                format="mp4" if ext == "mp4" else "webm",
                # No btrt box: it states the input's bitrate, so a second remux would differ.
                options={"fflags": "+bitexact", **({"write_btrt": "0"} if ext == "mp4" else {})},
            ) as dst:
                mapping = {}
                filters = {}
                for stream in src.streams:
                    if stream.type in ("video", "audio"):
                        copy = dst.add_stream_from_template(stream)
                        copy.metadata.clear()
                        mapping[stream.index] = copy
                        units = _VIDEO_TEXT_UNITS.get(stream.codec_context.name)
                        if units:
                            filters[stream.index] = BitStreamFilterContext(
                                f"filter_units=remove_types={units}", stream, copy
                            )
                for packet in src.demux(*(src.streams[i] for i in mapping)):
                    index = packet.stream.index
                    if packet.dts is None:  # the demuxer's end-of-stream marker
                        packets = filters[index].filter(None) if index in filters else []
                    elif index in filters:
                        packets = filters[index].filter(packet)
                    else:
                        packets = [packet]
                    for out_packet in packets:
                        out_packet.stream = mapping[index]
                        dst.mux(out_packet)
    except av.FFmpegError as exc:
        raise ValueError(f"cannot be rewritten without its metadata ({exc})") from None
    return out.getvalue()
