"""`selectors._display_orders` (the judgments' display orders in one JSON decode per chunk)
gives what decoding each text alone gives: ``tuple(json.loads(text) or ())``, ``()`` for
NULL, on random columns of every JSON shape a display order can hold, in chunks of every
size (one, a few, the whole column)."""

from __future__ import annotations

import json
import random

import pytest

from curation import selectors

SHAPES = [
    None,
    "null",
    "[]",
    "[12, 34]",
    "[34, 12]",
    "[0, 7]",
    "[12,34]",
    "[-1, 2]",
    "[1, 2, 3]",
    "[5]",
    "[5, 5]",
    "[1.0, 2]",
    "[0, 1000000000000]",
    '["a", 1]',
    "[[1], 2]",
    "[null, 3]",
    "0",
    "false",
    '""',
    '"ab"',
    "{}",
    '{"x": 1}',
]


def _reference(texts):
    return [() if text is None else tuple(json.loads(text) or ()) for text in texts]


@pytest.mark.parametrize("seed", range(40))
def test_display_orders_equal_one_decode_per_text(seed, monkeypatch):
    rng = random.Random(seed)
    monkeypatch.setattr(selectors, "DISPLAY_ORDER_CHUNK", rng.choice([1, 3, 7, 8192]))
    # Some columns only of pair orders (the usual load), some of every shape.
    pool = SHAPES[2:6] if seed % 3 == 0 else SHAPES
    texts = [rng.choice(pool) for _ in range(rng.randint(0, 30))]
    rows = [(i, text, "x") for i, text in enumerate(texts)]
    got = list(selectors._display_orders(rows, 1))
    assert got == _reference(texts)
    assert all(type(value) is tuple for value in got)
    assert [type(v) for value in got for v in value] == [
        type(v) for value in _reference(texts) for v in value
    ]


@pytest.mark.parametrize("chunk", [1, 2, 5, 8192])
def test_display_orders_of_every_shape_at_once(chunk, monkeypatch):
    monkeypatch.setattr(selectors, "DISPLAY_ORDER_CHUNK", chunk)
    rows = [(text,) for text in SHAPES]
    assert list(selectors._display_orders(rows, 0)) == _reference(SHAPES)
    assert list(selectors._display_orders([], 0)) == []
