"""Media loading for the reward-model workers: images through Pillow, video frames through PyAV.

Every failure to read a file (missing, unreadable, corrupt, no video stream, no decodable
frame) is raised as :class:`MediaError` whose message names the file, so a scoring batch can
report it against the one prompt or candidate that referenced it.

PyAV is imported lazily, inside the video functions: it is only needed when a video is
actually decoded, and keeping it out of module import lets the scoring core run where no
FFmpeg wheel is installed (e.g. a GPU benchmark box scoring pre-decoded frames).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "MediaError",
    "VideoFrames",
    "encode_video",
    "evenly_spaced_indices",
    "load_image",
    "sample_video_frames",
]


class MediaError(Exception):
    """A media file could not be read or decoded.

    Args:
        path (`str` or `os.PathLike`):
            The offending file; it is always part of the message.
        reason (`str`):
            What went wrong, in words a user can act on.
    """

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


@dataclass(frozen=True)
class VideoFrames:
    """Frames sampled from a video.

    Attributes:
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)`, dtype `uint8`):
            RGB frames in presentation order.
        indices (`list[int]`):
            Index of each sampled frame among all decoded frames.
        timestamps (`list[float]`):
            Presentation time of each sampled frame in seconds.
        fps (`float`):
            Rate of the sampled frames (frames per second of video time), used by Qwen2.5-VL's
            temporal position ids; 1.0 when the clip has a single sampled frame.
        source_fps (`float`, *optional*):
            The file's own frame rate (its stream's average rate), from which Qwen3-VL
            computes frame timestamps (index / rate); `None` for frames not read from a file.
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: list[float]
    fps: float
    source_fps: float | None = None


def evenly_spaced_indices(total: int, count: int) -> list[int]:
    """Pick `min(count, total)` evenly spaced indices in `range(total)`, first and last included.

    Args:
        total (`int`): Number of frames available.
        count (`int`): Maximum number of frames wanted (>= 1).

    Returns:
        `list[int]`: Strictly increasing indices.
    """
    if total <= 0:
        return []
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    if count >= total:
        return list(range(total))
    if count == 1:
        return [(total - 1) // 2]
    # The Qwen-VL video processors' rule, computed as they compute it (numpy's linspace, then
    # round half to even); with count < total consecutive picks are at least 1 apart, so
    # rounding never duplicates.
    return [int(i) for i in np.linspace(0, total - 1, count).round()]


def _capped_size(width: int, height: int, max_side: int | None) -> tuple[int, int]:
    if max_side is None or max(width, height) <= max_side:
        return width, height
    scale = max_side / max(width, height)
    # Even sizes keep yuv420 rescaling exact and never reach zero.
    new_w = max(2, int(round(width * scale / 2)) * 2)
    new_h = max(2, int(round(height * scale / 2)) * 2)
    return min(new_w, max_side), min(new_h, max_side)


def _check_pixels(path: str | os.PathLike[str], width: int, height: int) -> None:
    """Refuses, from the header's size and before decoding, more than `Image.MAX_IMAGE_PIXELS`.

    Pillow itself only warns up to twice that many.
    """
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise MediaError(
            path,
            f"{width}x{height} is {width * height} pixels, over the limit of {limit} "
            "(QUORUM_MAX_IMAGE_MEGAPIXELS)",
        )


def load_image(path: str | os.PathLike[str], *, max_side: int | None = None) -> Image.Image:
    """Open an image file as RGB, fully decoded.

    Args:
        path (`str` or `os.PathLike`): Image file.
        max_side (`int`, *optional*): Downscale (keeping aspect ratio) so neither side exceeds it.

    Returns:
        `PIL.Image.Image`: An RGB image detached from the file.

    Raises:
        MediaError: The file is missing, unreadable, not an image, truncated, or has more pixels
            than `Image.MAX_IMAGE_PIXELS` (set from `QUORUM_MAX_IMAGE_MEGAPIXELS` at start-up).
    """
    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    try:
        with Image.open(path) as img:
            _check_pixels(path, img.width, img.height)
            # load() forces a full decode now, so truncated files fail here and not later
            # inside the image processor with an unrelated message.
            img.load()
            # An RGB file is used as decoded (convert() would copy it: a tenth of the time).
            rgb = img if img.mode == "RGB" else img.convert("RGB")
    # DecompressionBombError (Pillow's guard against huge images) is reported like any
    # other unreadable upload.
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(path, f"cannot decode image ({exc.__class__.__name__}: {exc})") from exc
    if max_side is not None:
        width, height = _capped_size(rgb.width, rgb.height, max_side)
        if (width, height) != rgb.size:
            rgb = rgb.resize((width, height), Image.Resampling.BICUBIC)
    return rgb


# Pixels to decode (frames up to the last sampled one x frame size) above which FFmpeg decodes
# a clip in threads of its own: 32 frames at 1024 x 1024.
THREADED_DECODE_PIXELS = 2**25

_local = threading.local()


def _reformatter():  # noqa: ANN202 - PyAV types are runtime-only
    """This thread's PyAV frame converter, kept between frames and clips.

    ``VideoFrame.reformat`` builds a new converter (an FFmpeg scaling context, its filter
    tables computed afresh) for every frame, which cost more than decoding the frame: about
    2.5 ms per 256 px frame against 0.2 ms for a converter kept. The context re-initialises
    itself when a frame's size or format differs, so the pixels are the same.
    """
    from av.video.reformatter import VideoReformatter

    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter


def _count_frames(container, stream) -> int:  # noqa: ANN001 - PyAV types are runtime-only
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    # Some containers (e.g. raw or fragmented streams) leave the frame count at 0. Counting
    # packets demuxes without decoding, so it is cheap compared with a decode pass.
    count = sum(1 for packet in container.demux(stream) if packet.size > 0)
    container.seek(0, stream=stream)
    return count


def sample_video_frames(
    path: str | os.PathLike[str],
    *,
    max_frames: int = 8,
    max_side: int | None = 448,
    fps: float | None = None,
    frame_count: Callable[[int, float], int] | None = None,
    frame_size: Callable[[int, int, int], tuple[int, int]] | None = None,
    frame_indices: Callable[[int, float], list[int]] | None = None,
) -> VideoFrames:
    """Decode `max_frames` evenly spaced RGB frames of a video, downscaled to `max_side`.

    With `fps`, the clip is sampled at that rate (Qwen2-VL's processors use 2 frames per
    second), still at most `max_frames` and at least two frames where the clip has them.

    Frames are decoded sequentially and only the picked ones are converted to RGB; decoding
    stops after the last picked frame.

    Args:
        path (`str` or `os.PathLike`): Video file (any container/codec FFmpeg reads).
        max_frames (`int`, *optional*, defaults to 8): Cap on the number of frames returned.
        max_side (`int`, *optional*, defaults to 448): Cap on the longer side of each frame;
            `None` keeps the native resolution.
        fps (`float`, *optional*): Sampling rate in frames per second of video time.
        frame_count (`Callable[[int, float], int]`, *optional*): A backbone's own rule for
            how many frames to sample, given the file's frame count and rate (0.0 when the
            container does not say); replaces `fps` and `max_frames`.
        frame_size (`Callable[[int, int, int], tuple[int, int]]`, *optional*): The (width,
            height) every frame is resized to (Pillow, bicubic), given the sampled frame count
            and the file's width and height; replaces `max_side`. Frames are resized once,
            from their decoded size, as a video processor resizes them.
        frame_indices (`Callable[[int, float], list[int]]`, *optional*): A backbone's own
            rule for which frames to sample, given the file's frame count and rate (0.0 when
            the container does not say); replaces `frame_count`, `fps` and `max_frames`.

    Returns:
        [`VideoFrames`]: The sampled frames with their indices, timestamps and sampling rate.

    Raises:
        MediaError: The file is missing, corrupt, has no video stream or no decodable frame.
    """
    import av  # lazy: see module docstring

    path = Path(path)
    if not path.is_file():
        raise MediaError(path, "file not found")
    if max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise MediaError(path, f"cannot open video ({exc.__class__.__name__}: {exc})") from exc
    with container:
        if not container.streams.video:
            raise MediaError(path, "no video stream")
        stream = container.streams.video[0]
        _check_pixels(path, stream.codec_context.width, stream.codec_context.height)
        try:
            total = _count_frames(container, stream)
            count = max_frames
            rate = float(stream.average_rate or 0)
            if frame_count is not None:
                count = frame_count(total, rate)
            elif fps is not None and rate > 0:
                count = min(max_frames, max(2, round(total / rate * fps)))
            if frame_indices is not None:
                wanted = sorted(set(frame_indices(total, rate)))
            else:
                wanted = evenly_spaced_indices(total, count)
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(
                path, f"cannot decode video ({exc.__class__.__name__}: {exc})"
            ) from exc
        clip_width, clip_height = stream.codec_context.width, stream.codec_context.height
        if wanted and (wanted[-1] + 1) * clip_width * clip_height > THREADED_DECODE_PIXELS:
            # FFmpeg's own threads decode ahead: worth it for long or large clips. For short
            # small ones (the demo's: 16 frames of 256 px) starting them costs a quarter of
            # the decoding, and the workers' prefetch threads already decode clips side by side.
            stream.thread_type = "AUTO"
        # Outside the decode guard: a size rule's ValueError is about the clip, not the file.
        size = (
            frame_size(len(wanted), clip_width, clip_height)
            if frame_size is not None and wanted
            else None
        )
        try:
            wanted_set = set(wanted)
            frames: list[np.ndarray] = []
            indices: list[int] = []
            timestamps: list[float] = []
            if wanted:
                last_wanted = wanted[-1]
                reformatter = _reformatter()
                for index, frame in enumerate(container.decode(stream)):
                    if index in wanted_set and size is not None:
                        # RGB at the decoded size (what frame.to_image() gives).
                        rgb = reformatter.reformat(frame, format="rgb24").to_ndarray()
                        if (rgb.shape[1], rgb.shape[0]) != size:
                            picture = Image.fromarray(rgb).resize(size, Image.Resampling.BICUBIC)
                            rgb = np.asarray(picture)
                        frames.append(rgb)
                    elif index in wanted_set:
                        width, height = _capped_size(frame.width, frame.height, max_side)
                        rgb = reformatter.reformat(
                            frame, width=width, height=height, format="rgb24"
                        )
                        frames.append(rgb.to_ndarray())
                    if index in wanted_set:
                        indices.append(index)
                        timestamps.append(float(frame.time) if frame.time is not None else 0.0)
                    if index >= last_wanted:
                        break
        except (av.FFmpegError, OSError, ValueError) as exc:
            raise MediaError(
                path, f"cannot decode video ({exc.__class__.__name__}: {exc})"
            ) from exc
    if not frames:
        raise MediaError(path, "no decodable video frame")
    span = timestamps[-1] - timestamps[0]
    fps = (len(frames) - 1) / span if len(frames) > 1 and span > 0 else 1.0
    return VideoFrames(
        frames=np.stack(frames),
        indices=indices,
        timestamps=timestamps,
        fps=float(fps),
        source_fps=rate or None,
    )


def encode_video(
    path: str | os.PathLike[str], frames: np.ndarray | list[np.ndarray], *, fps: int = 10
) -> Path:
    """Write RGB frames as a lossless H.264 mp4 (for tests, demos and benchmarks).

    Args:
        path (`str` or `os.PathLike`): Output file; its parent must exist.
        frames (`np.ndarray` of shape `(num_frames, height, width, 3)` or list of such frames):
            uint8 RGB frames; height and width must be even (yuv420).
        fps (`int`, *optional*, defaults to 10): Frame rate.

    Returns:
        `Path`: The written file.
    """
    import av  # lazy: see module docstring

    frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
    if not frames:
        raise ValueError("encode_video needs at least one frame")
    height, width = frames[0].shape[:2]
    if height % 2 or width % 2:
        raise ValueError(f"frame size must be even for yuv420, got {width}x{height}")
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        # qp 0 = lossless luma, so tests can read frame identities back from pixel values.
        stream.options = {"qp": "0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
