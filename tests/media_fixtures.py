"""Tiny real media files for tests: PNG via Pillow, H.264 MP4 via PyAV."""

from __future__ import annotations

import functools
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
    """The same bytes for the same clip, in a process: encoded once, then kept.

    Encoding again is not reproducible under load: one encode in some thousands comes out
    different (seen with x264 and the RGB -> YUV conversion on one thread as on several), so a
    test comparing a stored clip with a second encode could fail with the right bytes."""
    return _mp4_kept(frames, size, tuple(color))


@functools.cache
def _mp4_kept(frames: int, size: int, color: tuple[int, int, int]) -> bytes:
    return _encode_mp4(frames, size, color)


def _encode_mp4(frames: int, size: int, color: tuple[int, int, int]) -> bytes:
    """An H.264 clip of a ``color`` square with a growing white square, on one thread: the
    codec context's ``thread_count`` (0, one per core, by default) is what x264 and PyAV's
    swscale conversion to YUV are given."""
    buf = io.BytesIO()
    with av.open(buf, mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.codec_context.thread_count = 1
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


def write_quorum_media(folder: Path) -> None:
    """The media that `tests.annotate.test_import._quorum_rows` names, under ``folder/media``:
    a red prompt picture, a green generated picture and two clips."""
    write(folder / "media" / "q1.png", png_bytes((255, 0, 0)))
    write(folder / "media" / "gen.png", png_bytes((0, 255, 0)))
    write(folder / "media" / "clip.mp4", mp4_bytes())
    write(folder / "media" / "clip2.mp4", mp4_bytes(color=(200, 200, 0)))


def score_without_decoding(monkeypatch, *, project, reward_model, prompt_ids) -> int:  # noqa: ANN001
    """Scores ``prompt_ids`` with decoding made to fail (every picture and clip must come from
    the media store) and answers how many scores the model now has."""
    import workers.reward_model.inputs as inputs
    from annotate.models import ModelScore
    from workers.models import ScoringRun
    from workers.scoring import score_prompts

    def no_decoding(*args, **_):
        raise AssertionError(f"{args[0]} decoded by the scoring run")

    monkeypatch.setattr(inputs, "load_image", no_decoding)
    monkeypatch.setattr(inputs, "sample_video_frames", no_decoding)
    run = ScoringRun.objects.create(
        project=project, reward_model=reward_model, total_prompts=len(prompt_ids)
    )
    score_prompts(run_id=run.pk, prompt_ids=prompt_ids)
    return ModelScore.objects.filter(reward_model=reward_model, score__isnull=False).count()


def random_pictures_and_clip(root: Path, seed: int) -> tuple[dict[str, Path], np.random.Generator]:
    """Noise pictures "wide" (150 x 200), "small" (40 x 30) and "tall" (120 x 60) as PNGs and a
    10-frame 64 x 96 "clip" (H.264) under ``root``, drawn from ``seed``; with the generator, for
    more files drawn after them."""
    from workers.media import encode_video

    rng = np.random.default_rng(seed)
    out = {}
    for name, (height, width) in {"wide": (150, 200), "small": (40, 30), "tall": (120, 60)}.items():
        out[name] = root / f"{name}.png"
        Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(out[name])
    out["clip"] = encode_video(
        root / "clip.mp4", rng.integers(0, 255, (10, 64, 96, 3), dtype=np.uint8)
    )
    return out, rng
