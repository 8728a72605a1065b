"""Tiny real media files for tests: PNG via Pillow, H.264 MP4 via PyAV."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
from PIL import Image


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), color).save(buf, format="PNG")
    return buf.getvalue()


def mp4_bytes(
    frames: int = 12, size: int = 32, color: tuple[int, int, int] = (30, 30, 200)
) -> bytes:
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            img = np.zeros((size, size, 3), dtype=np.uint8)
            img[:, :] = color
            img[: (i % size) + 1, : (i % size) + 1] = 255  # a growing white square
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path
