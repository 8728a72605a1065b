"""A JSONL column whose value is the same in every row of a chunk is written in the lines'
constant text (`exporting._same_json`), with the bytes ``json.dumps`` writes: 0.0 and -0.0
apart, NaN and infinities as `json` spells them, missing values as ``null``, optional keys
left out where every row's value is missing or empty."""

from __future__ import annotations

import sys

import pyarrow as pa
import pytest

from curation import exporting as E
from tests.curation.test_export_jsonl_columns import NASTY, _reference_line

CHUNK = 8
# Per kind, the value of each chunk in turn (a column the same within each chunk of CHUNK
# rows, other from one chunk to the next). "mixed" rows alternate two values.
CONSTANTS = {
    "string": [NASTY[0], "", None, NASTY[3], "plain"],
    "float": [-0.0, 0.0, float("nan"), float("inf"), None, 0.25],
    "integer": [7, None, -3, 0],
    "boolean": [True, False, None],
}


def _value(kind: pa.DataType, name: str, row: int):
    chunk, i = divmod(row, CHUNK)
    if pa.types.is_string(kind):
        values = CONSTANTS["string"]
    elif pa.types.is_floating(kind):
        if name == "human_margin":  # 0.0 and -0.0 mixed: equal as numbers, not as JSON
            return (0.0, -0.0)[i % 2]
        values = CONSTANTS["float"]
    elif pa.types.is_integer(kind):
        values = CONSTANTS["integer"]
    elif pa.types.is_boolean(kind):
        values = CONSTANTS["boolean"]
    elif pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
        return ["same", None] if chunk % 2 else []
    else:
        return [1, 2] if chunk % 2 else []
    if name in ("chosen", "rejected"):  # the first and last rows equal, a middle one not
        return "middle" if i == CHUNK // 2 else "ends"
    return values[(chunk + len(name)) % len(values)]


def _table(schema: pa.Schema, n: int) -> pa.Table:
    return pa.Table.from_pydict(
        {f.name: pa.array([_value(f.type, f.name, r) for r in range(n)], f.type) for f in schema},
        schema=schema,
    )


@pytest.mark.parametrize(
    ("shape", "schema"),
    [
        ("pairs", E._pair_schema()),
        ("seed", E._ranking_schema()),
        ("multimodal", E._ranking_schema()),
    ],
)
def test_constant_columns_write_the_bytes_json_dumps_writes(monkeypatch, shape, schema):
    monkeypatch.setattr(E, "JSONL_CHUNK_ROWS", CHUNK)
    table = _table(schema, 6 * CHUNK + 3)
    written = b"".join(E.jsonl_chunks(table, shape)).decode()
    expected = "".join(_reference_line(row, shape) for row in table.to_pylist())
    assert written == expected
    assert '"human_margin": -0.0' in written or shape != "pairs"


@pytest.mark.parametrize(
    ("values", "kind", "same"),
    [
        ([-0.0, -0.0], pa.float64(), "-0.0"),
        ([0.0, -0.0, 0.0], pa.float64(), None),
        ([float("nan")] * 3, pa.float64(), "NaN"),
        ([None, None], pa.float64(), "null"),
        ([1.5, None], pa.float64(), None),
        (["a", "b", "a"], pa.string(), None),
        (['q"', 'q"'], pa.string(), '"q\\""'),
        (["\u2028"] * 2, pa.string(), '"\\u2028"'),
        ([3, 3, 3], pa.int32(), "3"),
        ([False, False], pa.bool_(), "false"),
        ([[1], [1]], pa.list_(pa.int64()), None),
        ([], pa.string(), None),
    ],
)
def test_same_json(values, kind, same):
    assert E._same_json(pa.array(values, kind)) == same


def test_py_spaces_are_the_characters_str_strip_strips():
    spaces = [c for c in map(chr, range(sys.maxunicode + 1)) if c.isspace()]
    assert sorted(E._PY_SPACES) == spaces


def test_not_blank_is_str_strip():
    texts = [c * n for c in E._PY_SPACES for n in (1, 3)]
    texts += ["", "a", " a ", "\u200b", "\u3000x\u3000", "\x1fé\x1c", "中", "😀 ", "\x00", None]
    texts += [E._PY_SPACES, E._PY_SPACES + "."]
    column = pa.chunked_array([texts[:20], [], texts[20:]], pa.string())
    assert E._not_blank(column) == [bool(t and t.strip()) for t in texts]


def test_empty_split_warnings():
    def table(splits):
        return pa.table({"split": pa.array(splits, pa.string())})

    snapshot = E.Snapshot(
        pairs=table(["train", "test", "train"]),
        rankings=table(["train"]),
        variants=table([]),
        sheet={},
        media=set(),
    )
    assert E._empty_warnings(snapshot, ["train", "test", "valid"]) == [
        "table pairs: split 'valid' is empty (0 rows)",
        "table rankings: split 'test' is empty (0 rows)",
        "table rankings: split 'valid' is empty (0 rows)",
        f"table rankings_4 is empty: {E._EMPTY_WHY['rankings_4']}",
    ]
