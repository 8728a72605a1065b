"""JSONL lines written from the export's Arrow tables (`exporting.jsonl_chunks`) are exactly
``json.dumps(line, ensure_ascii=False) + "\\n"`` of each row's dict (U+2028, U+2029 and U+0085
escaped), for strings that need escaping, missing values, floats `json` spells its own way,
lists and optional keys."""

from __future__ import annotations

import io
import json

import pandas as pd
import pyarrow as pa
import pytest

from curation import exporting as E

NASTY = [
    'quote " and backslash \\',
    "new\nline\r\ttab\b\f",
    "nul \x00 and unit separator \x1f and DEL \x7f",
    "line separator \u2028 paragraph \u2029",
    "next line \x85 (C1)",
    # Bytes that begin those separators begin other characters too: not escaped.
    "curly \u2019quotes\u2019, \u20ac and \xa2, \u2027 and \u202a",
    "é 中文 😀 /slash",
    "",
    # One character to escape each (a string is escaped or quoted as it is, whole).
    "only a backslash \\ here",
    'only a quote " here',
    "only a nul \x00 here",
    "only a unit separator \x1f here",
    "only DEL \x7f here (not escaped)",
]
FLOATS = [0.1, 1e-06, 1e16, -0.0, 2.0, 0.0, 123456789.123, float("inf"), float("nan"), None]


def _pairs_table(n: int) -> pa.Table:
    schema = E._pair_schema()
    columns = {}
    for i, field in enumerate(schema):
        kind = field.type
        if pa.types.is_string(kind):
            values = [NASTY[(r + i) % len(NASTY)] if (r + i) % 5 else None for r in range(n)]
        elif pa.types.is_floating(kind):
            values = [FLOATS[(r + i) % len(FLOATS)] for r in range(n)]
        elif pa.types.is_integer(kind):
            values = [None if r % 7 == 3 else r * (i + 1) - 5 for r in range(n)]
        elif pa.types.is_boolean(kind):
            values = [r % 2 == 0 for r in range(n)]
        else:  # judgment ids
            values = [list(range(r % 4)) for r in range(n)]
        columns[field.name] = pa.array(values, kind)
    return pa.Table.from_pydict(columns, schema=schema)


def _rankings_table(n: int) -> pa.Table:
    schema = E._ranking_schema()
    columns = {}
    for i, field in enumerate(schema):
        kind = field.type
        if pa.types.is_string(kind):
            values = [NASTY[(r + i) % len(NASTY)] if (r + i) % 4 else None for r in range(n)]
        elif pa.types.is_list(kind) and pa.types.is_string(kind.value_type):
            values = [
                [NASTY[(r + j) % len(NASTY)] if (r + j) % 3 else None for j in range(r % 5)]
                for r in range(n)
            ]
        elif pa.types.is_list(kind):
            values = [list(range(1, r % 5 + 1)) for r in range(n)]
        elif pa.types.is_floating(kind):
            values = [FLOATS[(r + i) % len(FLOATS)] for r in range(n)]
        else:
            values = [r for r in range(n)]
        columns[field.name] = pa.array(values, kind)
    return pa.Table.from_pydict(columns, schema=schema)


def _reference_line(row: dict, shape: str) -> str:
    """The line as the exporter wrote it from a dict per row (before the tables)."""
    if shape == "pairs":
        out = {key: row[key] for key in E.PAIR_LINE_KEYS}
        out["provenance"] = {key: row[key] for key in E.PAIR_PROVENANCE}
    else:
        out = {key: row[key] for key in E.LINE_SHAPES[shape] if not key.endswith("?")}
        for key in ("image", "video"):
            if row.get(key):
                out[key] = row[key]
    line = json.dumps(out, ensure_ascii=False)
    # Line breaks `str.splitlines` ends a line at, escaped as the raw export escapes them.
    for char in ("\u2028", "\u2029", "\x85"):
        line = line.replace(char, f"\\u{ord(char):04x}")
    return line + "\n"


@pytest.mark.parametrize(
    ("shape", "table"),
    [
        ("pairs", _pairs_table(53)),
        ("seed", _rankings_table(41)),
        ("multimodal", _rankings_table(41)),
    ],
)
def test_it_writes_the_bytes_json_dumps_writes(monkeypatch, shape, table):
    monkeypatch.setattr(E, "JSONL_CHUNK_ROWS", 8)  # several chunks, one short
    written = b"".join(E.jsonl_chunks(table, shape)).decode()
    expected = "".join(_reference_line(row, shape) for row in table.to_pylist())
    assert written == expected
    assert "\u2028" not in written and "\\u2028" in written  # escaped, unlike json


def test_an_empty_table_writes_nothing():
    assert b"".join(E.jsonl_chunks(_pairs_table(0), "pairs")) == b""


def test_pandas_reads_every_line():
    table = _rankings_table(30)
    data = b"".join(E.jsonl_chunks(table, "multimodal"))
    frame = pd.read_json(io.BytesIO(data), lines=True)
    assert len(frame) == 30
    assert frame["rankings"].tolist() == table.column("rankings").to_pylist()
