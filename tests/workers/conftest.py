"""Fixtures shared by the worker tests; a module's own fixture of the same name wins."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tokenizer():
    """The tiny models' tokenizer, built once per module."""
    from workers.tiny import build_tiny_tokenizer

    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def pool():
    """A decoding pool of one process, shared by the module's tests."""
    from workers.media import DecodePool

    pool = DecodePool(1)
    yield pool
    pool.shutdown()
