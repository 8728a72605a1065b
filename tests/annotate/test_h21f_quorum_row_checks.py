"""h21f: a Quorum row's id, prompt, fields and judgments checked inline where they are the
common case (``_Parser.quorum``); every other value still gets ``text``'s and the full path's
problems, named as before, in the same order."""

from __future__ import annotations

import json

import pytest

from annotate.importing import ImportRejected, parse_import

LIMITS = {"max_media_bytes": 10**8, "max_file_bytes": 10**8, "max_text_chars": 20}
CANDIDATES = [
    {"id": "a", "model": "m1", "text": "one"},
    {"id": "b", "model": "m2", "text": "two"},
]


def _problems(tmp_path, row: dict) -> list[str]:
    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps(row) + "\n")
    try:
        parse_import(path, **LIMITS).source.close()
    except ImportRejected as exc:
        return [str(p) for p in exc.problems]
    return []


@pytest.mark.parametrize(
    ("row", "problems"),
    [
        ({"id": " ", "prompt": "q"}, ["line 1, field 'id': must not be empty"]),
        ({"id": "", "prompt": "q"}, ["line 1, field 'id': must not be empty"]),
        ({"prompt": "q"}, ["line 1, field 'id': is required"]),
        ({"id": 7, "prompt": "q"}, ["line 1, field 'id': must be a string, got int"]),
        (
            {"id": "x" * 21, "prompt": "q"},
            ["line 1, field 'id': 21 characters is over the limit of 20 (QUORUM_MAX_TEXT_CHARS)"],
        ),
        ({"id": "p", "prompt": ["q"]}, ["line 1, field 'prompt': must be a string, got list"]),
        (
            {"id": "p", "prompt": "q" * 21},
            [
                "line 1, field 'prompt': 21 characters is over the limit of 20 (QUORUM_MAX_TEXT_CHARS)"
            ],
        ),
        (
            {"id": "p", "prompt": "q", "zeta": 1, "alpha": 2},
            [
                "line 1, field 'alpha': unknown field (expected id, prompt, image, video, metadata, "
                "candidates, judgments)"
            ],
        ),
        (
            {"id": "p", "prompt": "q", "judgments": "x"},
            ["line 1, field 'judgments': must be a list"],
        ),
        (
            {"id": "p", "prompt": "q", "judgments": [7]},
            ["line 1, field 'judgments[0]': must be an object"],
        ),
        ({"id": "p", "prompt": "q", "judgments": 0}, []),
        ({"id": "p", "prompt": "q", "judgments": {}}, []),
        ({"id": "p", "prompt": "q", "judgments": None}, []),
        ({"id": "p"}, []),
    ],
)
def test_row_problems(tmp_path, row, problems):
    assert _problems(tmp_path, {**row, "candidates": CANDIDATES}) == problems


def test_problems_in_the_rows_order_with_the_id_first(tmp_path):
    row = {"id": " ", "prompt": 3, "extra": 1, "candidates": CANDIDATES, "judgments": "x"}
    assert _problems(tmp_path, row) == [
        "line 1, field 'id': must not be empty",
        "line 1, field 'prompt': must be a string, got int",
        "line 1, field 'extra': unknown field (expected id, prompt, image, video, metadata, candidates, "
        "judgments)",
        "line 1, field 'judgments': must be a list",
    ]


def test_a_record_of_the_common_row(tmp_path):
    path = tmp_path / "rows.jsonl"
    row = {"id": "p", "prompt": "q", "metadata": {"k": 1}, "candidates": CANDIDATES}
    path.write_text(json.dumps(row) + "\n")
    parsed = parse_import(path, **LIMITS)
    parsed.source.close()
    (record,) = parsed.prompts
    assert (record.line, record.external_id, record.text, record.metadata) == (
        1,
        "p",
        "q",
        {"k": 1},
    )
    assert (record.image, record.video, record.judgments) == (None, None, [])
    assert [(c.external_id, c.model_name, c.text) for c in record.candidates] == [
        ("a", "m1", "one"),
        ("b", "m2", "two"),
    ]
