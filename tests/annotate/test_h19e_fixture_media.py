"""The test clips of tests/media_fixtures.py are reproducible in a process: mp4_bytes() encodes a
clip once and gives those bytes for every call naming it (encoding again came out different
once in some thousands of encodes under load), and it encodes on one thread."""

from __future__ import annotations

import io

import av

from tests import media_fixtures
from tests.media_fixtures import mp4_bytes


class _Recording:
    """``av.open``'s container, passed through, keeping the streams it adds."""

    def __init__(self, container):
        self.container, self.streams = container, []

    def __enter__(self):
        self.container.__enter__()
        return self

    def __exit__(self, *exc):
        return self.container.__exit__(*exc)

    def add_stream(self, *args, **kwargs):
        stream = self.container.add_stream(*args, **kwargs)
        self.streams.append(stream)
        return stream

    def __getattr__(self, name):
        return getattr(self.container, name)


def test_a_clip_is_encoded_once_and_the_same_bytes_given_after(monkeypatch):
    encodes = []
    real = media_fixtures._encode_mp4

    def counting(*args):
        encodes.append(args)
        return real(*args)

    monkeypatch.setattr(media_fixtures, "_encode_mp4", counting)
    clip = mp4_bytes(frames=3, size=16, color=(1, 2, 19))  # named by no other test
    again = [
        mp4_bytes(frames=3, size=16, color=(1, 2, 19)),
        mp4_bytes(3, 16, [1, 2, 19]),
        mp4_bytes(color=(1, 2, 19), size=16, frames=3),
    ]
    other = mp4_bytes(frames=3, size=16, color=(1, 2, 20))

    assert encodes == [(3, 16, (1, 2, 19)), (3, 16, (1, 2, 20))]
    assert all(data is clip for data in again)
    assert other != clip
    with av.open(io.BytesIO(clip)) as container:
        assert container.streams.video[0].codec_context.name == "h264"
        assert sum(1 for _ in container.decode(video=0)) == 3


def test_the_clip_is_encoded_on_one_thread(monkeypatch):
    opened: list[_Recording] = []
    real_open = av.open

    def recording_open(*args, **kwargs):
        opened.append(_Recording(real_open(*args, **kwargs)))
        return opened[-1]

    monkeypatch.setattr(media_fixtures.av, "open", recording_open)
    media_fixtures._encode_mp4(24, 64, (30, 30, 200))
    monkeypatch.undo()

    assert len(opened) == 1 and len(opened[0].streams) == 1
    # x264's threads and the RGB -> YUV conversion's slices: 0 would be one per core.
    assert opened[0].streams[0].codec_context.thread_count == 1
