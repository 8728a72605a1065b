"""The input builder's tokenising: the Rust tokenizer called directly gives the ids the
tokenizer's own call gives, and the builder falls back to that call whenever the backend's
state (truncation, padding, special tokens split) would make them differ (no Django)."""

from __future__ import annotations

import pytest

from workers.reward_model import inputs
from workers.tiny import build_tiny_reward_scorer, build_tiny_tokenizer

TEXTS = [
    "",
    "A short answer.",
    "<|im_start|>user\nWhich one?<|im_end|>\n<|im_start|>assistant\n",
    "Two answers<|resp_sep|>side by side, café, 東京, emoji 🙂",
    "<2.5 seconds>",
]


@pytest.fixture(autouse=True)
def _media_root():
    """Shadow tests/conftest.py's autouse Django MEDIA_ROOT fixture (no Django here)."""


@pytest.fixture
def builder():
    return build_tiny_reward_scorer(tokenizer=build_tiny_tokenizer()).builder


def _called(tokenizer, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_the_direct_call_gives_the_tokenizers_ids(builder, monkeypatch):
    direct = []
    backend = builder.tokenizer._tokenizer
    encode = type(backend).encode
    monkeypatch.setattr(
        builder.tokenizer, "_tokenizer", _Counting(backend, encode, direct), raising=False
    )
    monkeypatch.setattr(inputs, "_RustTokenizer", (type(backend), _Counting))
    got = [builder._tokenise(text) for text in TEXTS]
    monkeypatch.undo()

    assert len(direct) == len(TEXTS)  # the direct call was taken
    assert got == [_called(builder.tokenizer, text) for text in TEXTS]
    assert any(builder.sep_id in ids for ids in got)  # a control token stays one token


def test_a_truncating_backend_is_not_called_directly(builder):
    long = " ".join(["word"] * 40)
    full = _called(builder.tokenizer, long)
    builder.tokenizer._tokenizer.enable_truncation(max_length=3)
    try:
        assert builder._tokenise(long) == full
    finally:
        builder.tokenizer._tokenizer.no_truncation()


def test_a_padding_backend_is_not_called_directly(builder):
    full = _called(builder.tokenizer, "A short answer.")
    builder.tokenizer._tokenizer.enable_padding(length=32)
    try:
        assert builder._tokenise("A short answer.") == full
    finally:
        builder.tokenizer._tokenizer.no_padding()


def test_split_special_tokens_is_followed(builder, monkeypatch):
    text = TEXTS[3]
    monkeypatch.setattr(builder.tokenizer, "split_special_tokens", True, raising=False)
    split = _called(builder.tokenizer, text)
    builder.tokenizer._tokenizer.encode_special_tokens = False  # the backend's state before

    assert builder._tokenise(text) == split
    assert builder.sep_id not in split


class _Counting:
    """The Rust tokenizer, counting direct `encode` calls."""

    def __init__(self, backend, encode, calls: list) -> None:
        self._backend, self._encode, self._calls = backend, encode, calls

    def __getattr__(self, name: str):
        return getattr(self._backend, name)

    def encode(self, *args, **kwargs):
        self._calls.append(args)
        return self._encode(self._backend, *args, **kwargs)
