"""Media loading for the reward-model workers: images through Pillow, video frames through PyAV.

Every failure to read a file (missing, unreadable, corrupt, no video stream, no decodable
frame) is raised as :class:`MediaError` whose message names the file, so a scoring batch can
report it against the one prompt or candidate that referenced it.

PyAV is imported lazily, inside the video functions: it is only needed when a video is
actually decoded, and keeping it out of module import lets the scoring core run where no
FFmpeg wheel is installed (e.g. a GPU benchmark box scoring pre-decoded frames).
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = [
    "DECODE_POOL",
    "STORE_MAGIC",
    "DecodePool",
    "MediaBudget",
    "MediaError",
    "VideoFrames",
    "check_pixels",
    "decode_and_store",
    "decode_for_model",
    "encode_video",
    "evenly_spaced_indices",
    "load_image",
    "resize_frames",
    "sample_video_frames",
    "smart_resize",
    "store_entry",
    "write_store_file",
]

logger = logging.getLogger(__name__)

# Seconds a decoding pool whose processes could not start is not started again (each try
# costs a start); the asking threads decode meanwhile. A pool whose process died is started
# again at the next call.
START_RETRY_S = 60.0
_clock = time.monotonic  # tests move it


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

    def __reduce__(self):  # noqa: ANN204 - raised in a decoding process, re-raised here
        return (MediaError, (self.path, self.reason))


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
        source_size (`tuple[int, int]`, *optional*):
            The file's (width, height), checked against the pixel limit; `None` for frames
            not read from a file.
    """

    frames: np.ndarray
    indices: list[int]
    timestamps: list[float]
    fps: float
    source_fps: float | None = None
    source_size: tuple[int, int] | None = None


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


def check_pixels(path: str | os.PathLike[str], width: int, height: int) -> None:
    """Refuses, from the header's size and before decoding, more than `Image.MAX_IMAGE_PIXELS`.

    Pillow itself only warns up to twice that many. The input builders run it on a media
    store hit too, with the file's size stored beside its frames: a file stored under a
    higher limit is refused as a fresh decode would refuse it.
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
            check_pixels(path, img.width, img.height)
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
        check_pixels(path, stream.codec_context.width, stream.codec_context.height)
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
        source_size=(clip_width, clip_height),
    )


def smart_resize(
    height: int, width: int, *, factor: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """(height, width) a Qwen2-VL image processor resizes a picture (or a clip's frames) to:
    both multiples of `factor`, within [`min_pixels`, `max_pixels`], the aspect ratio kept.

    transformers' ``smart_resize`` of ``image_processing_pil_qwen2_vl``, written out here so
    that a decoding process need not import transformers (13 s and 380 MB);
    ``tests/workers/test_media_pool.py`` compares the two over a grid of sizes.
    """
    if max(height, width) / min(height, width) > 200:
        raise ValueError(
            f"absolute aspect ratio must be smaller than 200, got "
            f"{max(height, width) / min(height, width)}"
        )
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


def resize_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """Frames at (height, width), each resized by Pillow (bicubic); as they are when already."""
    if frames.shape[1:3] == (height, width):
        return frames
    return np.stack(
        [
            np.asarray(Image.fromarray(f).resize((width, height), Image.Resampling.BICUBIC))
            for f in frames
        ]
    )


@dataclass(frozen=True)
class MediaBudget:
    """What a Qwen-style input builder makes of a media file before patchifying it: the frames
    it keeps in the media store. Small and picklable: a decoding process gets it with the path.

    Attributes:
        factor (`int`): Sides are multiples of it (patch size x merge size).
        min_pixels (`int`), max_pixels (`int`): The pixel budget (per frame for clips).
        resample (`int`): Pillow's resampling filter for pictures (the image processor's).
        max_frames (`int`), max_side (`int`), fps (`float`): A clip's sampling (see
            [`sample_video_frames`]).
        pixel_limit (`int`, *optional*): ``Image.MAX_IMAGE_PIXELS`` of the asking process
            (``QUORUM_MAX_IMAGE_MEGAPIXELS``), applied in the decoding process too.
    """

    factor: int
    min_pixels: int
    max_pixels: int
    resample: int = int(Image.Resampling.BICUBIC)
    max_frames: int = 8
    max_side: int | None = None
    fps: float | None = None
    pixel_limit: int | None = None


def decode_for_model(kind: str, path: str, budget: MediaBudget) -> tuple[np.ndarray, dict]:
    """Decode a file and resize it as a Qwen2-VL-style builder does before patchifying.

    A picture is decoded whole and resized once, straight to the size its image processor
    picks (`smart_resize`, the processor's resampling); a clip is sampled by
    [`sample_video_frames`] and its frames resized by Pillow (bicubic) to `smart_resize` of
    their size. Runs in the process that asks or in a [`DecodePool`] process: the same calls.

    Returns:
        `tuple`: ``(frames, meta)``: ``(T, H, W, 3)`` uint8 frames (``T`` = 1 for a picture)
        and the numbers the builder needs besides: the file's ``"source"`` [width, height]
        (checked against the pixel limit on a store hit) and a clip's sampling rate
        (``"fps"``).

    Raises:
        MediaError: The file cannot be read or decoded.
    """
    Image.MAX_IMAGE_PIXELS = budget.pixel_limit  # the asking process's limit, here too
    if kind == "image":
        image = load_image(path)
        source = [image.width, image.height]
        height, width = smart_resize(
            image.height,
            image.width,
            factor=budget.factor,
            min_pixels=budget.min_pixels,
            max_pixels=budget.max_pixels,
        )
        if (width, height) != image.size:
            image = image.resize((width, height), Image.Resampling(budget.resample))
        return np.asarray(image)[None], {"source": source}
    if kind != "video":
        raise ValueError(f"unknown media kind {kind!r}")
    video = sample_video_frames(
        path, max_frames=budget.max_frames, max_side=budget.max_side, fps=budget.fps
    )
    height, width = smart_resize(
        video.frames.shape[1],
        video.frames.shape[2],
        factor=budget.factor,
        min_pixels=budget.min_pixels,
        max_pixels=budget.max_pixels,
    )
    meta = {"fps": video.fps, "source": list(video.source_size or ())}
    return resize_frames(video.frames, height, width), meta


# A media store entry (`workers.reward_model.media_cache.MediaStore`): this header, the JSON of
# the frames' shape and numbers, a newline, the frames' bytes (zlib). Written here too: a decoding
# process stores what it decoded itself, without importing torch.
STORE_MAGIC = b"QMS1\n"


def store_entry(frames: np.ndarray, meta: dict) -> bytes:
    """The bytes of a media store entry holding `frames` (uint8) and `meta`."""
    import json
    import zlib

    frames = np.ascontiguousarray(frames, dtype=np.uint8)
    header = json.dumps({"shape": list(frames.shape), "meta": meta}, separators=(",", ":"))
    # Level 1: the demo's pictures shrink 5x for 0.1 ms; a higher level buys little.
    return STORE_MAGIC + header.encode() + b"\n" + zlib.compress(frames.tobytes(), 1)


def write_store_file(path: Path, data: bytes, *, made: set[Path] | None = None) -> None:
    """Write an entry whole and rename it into place (readers never see half of one); raises
    `OSError`. `made`: folders known to exist (not made again)."""
    temporary = path.parent / f".{path.name[:8]}-{os.getpid()}-{os.urandom(4).hex()}"
    try:
        if made is None or path.parent not in made:
            path.parent.mkdir(parents=True, exist_ok=True)
            if made is not None:
                made.add(path.parent)
        try:
            temporary.write_bytes(data)
        except FileNotFoundError:  # the folder was deleted meanwhile (the store may be)
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary.write_bytes(data)
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):  # its folder could not be made
            temporary.unlink(missing_ok=True)
        raise


def decode_and_store(
    kind: str, path: str, budget: MediaBudget, store_path: str | None = None
) -> tuple[np.ndarray, dict, int]:
    """[`decode_for_model`] in a pool process, the frames also written to the media store at
    `store_path` when given: the asking process then neither compresses nor writes them (3 ms
    of its time a 4 x 224^2 clip). Returns ``(frames, meta, bytes written)``; 0 bytes when
    nothing was written (no `store_path`, or it could not be: the asking process tries)."""
    frames, meta = decode_for_model(kind, path, budget)
    if store_path is None:
        return frames, meta, 0
    data = store_entry(frames, meta)
    try:
        write_store_file(Path(store_path), data)
    except OSError:
        return frames, meta, 0
    return frames, meta, len(data)


class DecodePool:
    """Processes that run [`decode_for_model`] beside the asking process's threads.

    Threads decoding in the scoring process share its GIL with the model's forward pass (the
    Python between torch's kernels); decoding processes do not. They are started with
    ``spawn`` (never forked from a process running torch's threads) on first use, import this
    module only (not torch nor transformers: about 0.4 s and 30 MB each), and live as long as
    the pool. A pool whose process died is dropped and started again on the next call;
    meanwhile the caller decodes itself. A pool that could not start (a process could not be
    spawned) is not tried again for [`START_RETRY_S`] seconds, one warning each time; the
    callers decode themselves meanwhile.

    Args:
        processes (`int`): How many; 0 (the default) turns the pool off.
    """

    def __init__(self, processes: int = 0) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._start_failed_at: float | None = None  # when a start last failed
        self._lock = threading.Lock()

    def configure(self, processes: int) -> None:
        """Set the number of processes (0: off); a running pool of another size is stopped."""
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        with self._lock:
            if processes != self.processes and self._executor is not None:
                self._executor.shutdown(wait=False, cancel_futures=True)
                self._executor = None
            if processes != self.processes:
                self._start_failed_at = None
            self.processes = processes

    def submit(
        self, kind: str, path: str, budget: MediaBudget, store_path: str | None = None
    ) -> Future | None:
        """[`decode_and_store`]`(kind, path, budget, store_path)` in a pool process; `None`
        when the pool is off or cannot take it (then decode in this process)."""
        with self._lock:
            if self.processes < 1:
                return None
            if self._executor is None:
                failed = self._start_failed_at
                if failed is not None and _clock() - failed < START_RETRY_S:
                    return None
                try:
                    self._executor = ProcessPoolExecutor(
                        self.processes, mp_context=multiprocessing.get_context("spawn")
                    )
                except OSError as exc:  # out of file descriptors
                    self._could_not_start(None, exc)
                    return None
            executor = self._executor
        try:
            return executor.submit(decode_and_store, kind, path, budget, store_path)
        except (BrokenProcessPool, RuntimeError) as exc:
            self.broken(executor, exc)
            return None
        except OSError as exc:  # spawning a process failed
            with self._lock:
                if executor is not self._executor:
                    return None
                self._executor = None
                self._could_not_start(executor, exc)
            return None

    def _could_not_start(self, executor: ProcessPoolExecutor | None, exc: OSError) -> None:
        # Call holding self._lock: remembered (one warning a failed start, not one a call).
        self._start_failed_at = _clock()
        logger.warning(
            "media decoding pool could not start (%s): decoding in the asking threads, and "
            "not starting it again, for %.0f s",
            exc,
            START_RETRY_S,
        )
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def broken(self, executor: ProcessPoolExecutor | None, exc: BaseException) -> None:
        """Drop `executor` (the pool's current one when `None`) after `exc`."""
        with self._lock:
            if executor is None or executor is self._executor:
                executor, self._executor = self._executor, None
            else:
                return
        if executor is not None:
            logger.warning("media decoding pool lost (%s): starting it again", exc)
            executor.shutdown(wait=False, cancel_futures=True)

    def shutdown(self) -> None:
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)


# The process's pool, off until the process says how many (the gpu workers:
# scoring.scorer_for, QUORUM_DECODE_PROCESSES); shared by every input builder of the process.
DECODE_POOL = DecodePool()


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
