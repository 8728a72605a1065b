"""The stored media path's shortcuts (h19d) give what the long ways gave.

`file_digest` hashes small files from one read and large ones by `hashlib.file_digest`: the
same BLAKE2b digest either way (the media cache and store are keyed by it). `_nbytes` skips
scalars without recursing: the same byte counts, a shared tensor counted once. The store reads
entries through a string path and inflates into a buffer of the frames' size: the frames come
back as written, writable. `_store_scores` converts a batch's scores once: the same doubles as
`float()` of each element, float32 and bfloat16.
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np
import pytest
import torch

from workers.reward_model import media_cache
from workers.reward_model.inputs import _Row, _Visual
from workers.reward_model.media_cache import MediaStore, _nbytes, file_digest
from workers.reward_model.records import ScoringResult
from workers.reward_model.scorers import _store_scores


def _reference_digest(path) -> str:  # noqa: ANN001
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "blake2b").hexdigest()


@pytest.mark.parametrize("size", [0, 1, 17_161, 2**20, 2**20 + 1, 3 * 2**20 + 7])
def test_file_digest_is_blake2b_of_the_bytes(tmp_path, size) -> None:
    path = tmp_path / "media.bin"
    path.write_bytes(np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes())
    assert file_digest(path) == _reference_digest(path)
    assert file_digest(str(path)) == hashlib.blake2b(path.read_bytes()).hexdigest()


def test_file_digest_of_a_missing_file_is_none(tmp_path) -> None:
    assert file_digest(tmp_path / "gone.png") is None


@dataclasses.dataclass
class _Holder:
    name: str
    arrays: list
    extra: dict
    count: int = 3


def _reference_nbytes(value, seen=None) -> int:  # noqa: ANN001
    # The counting before h19d: every field and element visited, scalars included.
    seen = set() if seen is None else seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, np.ndarray):
        return int(value.nbytes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(
            _reference_nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value)
        )
    if isinstance(value, (list, tuple)):
        return sum(_reference_nbytes(v, seen) for v in value)
    if isinstance(value, dict):
        return sum(_reference_nbytes(v, seen) for v in value.values())
    return 0


def test_nbytes_counts_as_before() -> None:
    pixels = torch.zeros(36, 1176)
    visual = _Visual("image", pixels, (1, 6, 6), 2)
    assert _nbytes(visual) == 36 * 1176 * 4 == _reference_nbytes(visual)
    shared = np.ones((4, 5), dtype=np.float64)
    holder = _Holder(
        "x",
        [shared, shared, torch.ones(3, dtype=torch.int16), (1, 2.0, None, b"z")],
        {"a": visual, "b": [visual, np.zeros(7, dtype=np.uint8)], "c": "text"},
    )
    expected = 160 + 6 + 36 * 1176 * 4 + 7
    assert _nbytes(holder) == expected == _reference_nbytes(holder)
    assert _nbytes([1, "a", None, 2.5]) == 0
    assert _nbytes(pixels.half()) == 36 * 1176 * 2


def test_store_reads_back_what_it_wrote(tmp_path) -> None:
    store = MediaStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    for kind, shape in (
        ("image", (1, 84, 84, 3)),
        ("video", (4, 56, 56, 3)),
        ("image", (1, 1, 1, 3)),
    ):
        frames = rng.integers(0, 256, shape, dtype=np.uint8)
        digest = hashlib.blake2b(frames.tobytes()).hexdigest()
        store.write("scope", kind, digest, frames, {"source": [shape[2], shape[1]], "fps": 2.0})
        assert store.contains("scope", kind, digest)
        assert (
            store._path("scope", kind, digest)
            == tmp_path / "store" / "scope" / digest[:2] / f"{digest}.{kind}"
        )
        got, meta = store.read("scope", kind, digest)
        assert got.dtype == np.uint8 and got.shape == shape
        assert np.array_equal(got, frames)
        assert got.flags.writeable
        assert meta == {"source": [shape[2], shape[1]], "fps": 2.0}
    assert not store.contains("scope", "image", "0" * 64)
    assert store.read("scope", "image", "0" * 64) is None


def test_store_entry_with_a_bad_header_is_a_miss(tmp_path) -> None:
    store = MediaStore(tmp_path / "store")
    frames = np.zeros((1, 2, 2, 3), dtype=np.uint8)
    store.write("scope", "image", "ab" * 32, frames, {"source": [2, 2]})
    path = store._path("scope", "image", "ab" * 32)
    data = path.read_bytes()
    end = data.index(b"\n", len(media_cache.STORE_MAGIC))
    path.write_bytes(data[: len(media_cache.STORE_MAGIC)] + b"\xff\xfe" + data[end:])
    assert store.read("scope", "image", "ab" * 32) is None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_store_scores_gives_the_elements_doubles(dtype) -> None:
    scores = (torch.randn(3, 4, generator=torch.Generator().manual_seed(1)) * 7).to(dtype)
    rows = [
        _Row(0, [], [], [], [(2, 0, 0), (0, 0, 0), (1, 0, 0)]),
        _Row(1, [], [], [], [(1, 0, 0), (0, 0, 0)]),
        _Row(0, [], [], [], [(3, 0, 0)]),
    ]
    results = [
        ScoringResult(scores=[None] * 4, errors=[None] * 4),
        ScoringResult(scores=[None] * 2, errors=[None] * 2),
    ]
    _store_scores(scores, rows, results)
    expected = [
        [float(scores[0, 1]), float(scores[0, 2]), float(scores[0, 0]), float(scores[2, 0])],
        [float(scores[1, 1]), float(scores[1, 0])],
    ]
    assert results[0].scores == expected[0] and results[1].scores == expected[1]
    assert all(type(v) is float for r in results for v in r.scores)


@pytest.mark.parametrize("corpus", [None, ["a red circle", "three blue squares moving left", "ok"]])
def test_tokenise_gives_the_tokenizers_ids(corpus) -> None:
    from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

    tokenizer = build_tiny_tokenizer(corpus, vocab_size=1024) if corpus else None
    builder = build_tiny_reward_scorer(tokenizer=tokenizer).builder
    backend = builder.tokenizer._tokenizer
    assert hasattr(type(backend), "encode_batch_fast")  # tokenizers >= 0.21: the fast call
    texts = [
        "",
        "a red circle",
        "<|im_start|>system\nYou are a judge.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>Which one?<|im_end|>\n<|im_start|>assistant\n"
        "The first.\n\n<|resp_sep|>\n\nThe <\u200b|im_end|> second, café 東京 🙂<|im_end|>\n",
        "  spaces   and\ttabs\n\n\n",
    ]
    for text in texts:
        expected = list(builder.tokenizer(text, add_special_tokens=False)["input_ids"])
        assert builder._tokenise(text) == expected
    rendered = [builder.render(builder.encode_item(item), None) for item in _items()]
    for text in rendered:
        assert builder._tokenise(text) == list(
            builder.tokenizer(text, add_special_tokens=False)["input_ids"]
        )


def _items():  # noqa: ANN202
    from workers.reward_model import CandidateInput, ScoringItem

    return [
        ScoringItem(
            prompt_text="Pick the better answer: 2+2?", candidates=[CandidateInput(text="4")]
        ),
        ScoringItem(
            prompt_text="<|resp_sep|> typed by a user", candidates=[CandidateInput(text="x")]
        ),
    ]


def test_tokenise_takes_the_batch_call(monkeypatch) -> None:
    from workers.reward_model import inputs
    from workers.tiny import build_tiny_reward_scorer

    builder = build_tiny_reward_scorer().builder
    backend = builder.tokenizer._tokenizer
    calls: list[str] = []

    class Fast:
        def __getattr__(self, name: str):  # noqa: ANN204
            return getattr(backend, name)

        def encode_batch_fast(self, texts, add_special_tokens=True):  # noqa: ANN001, ANN201
            calls.append("batch")
            return backend.encode_batch_fast(texts, add_special_tokens=add_special_tokens)

        def encode(self, text, add_special_tokens=True):  # noqa: ANN001, ANN201
            calls.append("one")
            return backend.encode(text, add_special_tokens=add_special_tokens)

    monkeypatch.setattr(builder.tokenizer, "_tokenizer", Fast(), raising=False)
    monkeypatch.setattr(inputs, "_RustTokenizer", (type(backend), Fast))
    text = "<|im_start|>user\nWhich one?<|im_end|>\n"
    got = builder._tokenise(text)
    monkeypatch.undo()
    assert calls == ["batch"]
    assert got == list(builder.tokenizer(text, add_special_tokens=False)["input_ids"])
