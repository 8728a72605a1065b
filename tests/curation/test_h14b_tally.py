"""`graph._tally` counts the votes with one ``Counter`` (in C) and takes the skipped cells
out after: the same cells, in the same order, with the same counts as counting row by row,
and the same errors (pure; no database)."""

from __future__ import annotations

import random
from collections import Counter, namedtuple

import numpy as np
import pytest

from curation import graph as G


def _reference(comparisons, ties):
    """The row-by-row tally as it was before the ``Counter`` (the reference)."""
    counter: Counter = Counter()
    for row, (a, b, outcome) in enumerate(comparisons):
        if outcome not in G.OUTCOMES:
            raise ValueError(
                f"comparison {row}: outcome must be one of {G.OUTCOMES}, got {outcome!r}"
            )
        if a == b or (ties == "drop" and outcome in ("tie", "both_bad")):
            continue
        counter[(a, b, outcome)] += 1
    return counter


def _same(tally, counter):
    assert tally.cells == list(counter)
    assert all(type(cell) is tuple for cell in tally.cells)
    assert tally.counts.tolist() == [float(v) for v in counter.values()]
    models = list(G._stable_order({m for a, b, _ in counter for m in (a, b)}))
    assert tally.models == models
    index = {m: i for i, m in enumerate(models)}
    assert tally.first.tolist() == [index[a] for a, _, _ in counter]
    assert tally.second.tolist() == [index[b] for _, b, _ in counter]
    shares = [{"a": 1.0, "b": 0.0}.get(o, 0.5) for _, _, o in counter]
    assert tally.share.tolist() == shares and tally.first.dtype == np.int64


@pytest.mark.parametrize("seed", range(8))
def test_tally_equals_counting_row_by_row(seed):
    rng = random.Random(seed)
    models = ["m0", "m1", "m2", 3, 3.0, ("t", 1)] if seed % 2 else [f"m{i}" for i in range(6)]
    rows = [
        (rng.choice(models), rng.choice(models), rng.choice(G.OUTCOMES))
        for _ in range(rng.randint(0, 400))
    ]
    for ties in ("half", "drop"):
        expected = _reference(rows, ties)
        _same(G._tally(rows, ties), expected)
        _same(G._tally(tuple(rows), ties), expected)
        _same(G._tally(iter(rows), ties), expected)  # a one-pass iterable


def test_rows_other_than_plain_tuples_are_counted_row_by_row():
    Row = namedtuple("Row", "a b outcome")
    hashable = [Row("x", "y", "a"), ("x", "y", "a"), Row("y", "x", "b"), Row("x", "x", "tie")]
    mixed = hashable + [["y", "x", "b"]]
    for rows in (hashable, mixed):
        for ties in ("half", "drop"):
            _same(G._tally(rows, ties), _reference(rows, ties))
    listed = [["x", "y", "a"], ["x", "y", "a"], ["y", "x", "tie"]]
    _same(G._tally(listed, "half"), _reference(listed, "half"))


@pytest.mark.parametrize(
    "rows",
    [
        [("x", "y", "a"), ("x", "x", "left"), ("y", "x", "b")],  # invalid on a self-pair
        [("x", "y", "a"), ["x", "y", "win"]],
        [("x", "y", "a"), ("x", "y")],
    ],
)
def test_the_same_errors_as_row_by_row(rows):
    with pytest.raises(ValueError) as expected:
        _reference(rows, "half")
    with pytest.raises(ValueError) as got:
        G._tally(rows, "half")
    assert str(got.value) == str(expected.value)
