"""The raw export's rows (orjson-encoded) read back as the values ``json.dumps`` wrote.

orjson writes UTF-8 as it is, where ``json.dumps`` escaped everything past ASCII: a line
separator inside a string (U+2028, U+2029, U+0085) would end the line for the importer's
``str.splitlines``. It refuses integers past 64 bits; those rows fall back to ``json.dumps``.
Each case here is exported, imported back, and compared value by value.
"""

from __future__ import annotations

import json

import pytest

from annotate.exporting import export_project
from annotate.models import Candidate, Prompt
from annotate.services import import_file
from tests.annotate.test_import import _judgments_as_records

pytestmark = pytest.mark.django_db

BREAKS = "one\u2028two\u2029three\u0085four é ✓"
BIG = 123456789012345678901234567890  # past 64 bits: orjson refuses it


def _import(tmp_path, rows: list[dict], name: str):
    path = tmp_path / f"{name}.jsonl"
    # ensure_ascii: the source file itself has no raw line separators
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return import_file(path=path, project_name=name).project


def _rows(prompt_metadata: dict, candidate_metadata: dict) -> list[dict]:
    return [
        {"project": {"mode": "ranking", "candidates_per_task": 2, "instructions": BREAKS}},
        {
            "id": "p1",
            "prompt": BREAKS,
            "metadata": prompt_metadata,
            "candidates": [
                {"id": "c1", "model": "alpha", "text": BREAKS, "metadata": candidate_metadata},
                {"id": "c2", "model": "beta", "text": "plain"},
            ],
            "judgments": [
                {"annotator": "ann-1", "ranking": [["c2"], ["c1"]], "rationale": BREAKS},
            ],
        },
        {
            "id": "p2",
            "prompt": "ascii only",
            "candidates": [
                {"id": "d1", "model": "alpha", "text": "a"},
                {"id": "d2", "model": "beta", "text": "b"},
            ],
            "judgments": [{"annotator": "ann-2", "ranking": [["d1", "d2"]]}],
        },
    ]


def _contents(project) -> dict:
    prompts = {
        p.external_id: (p.text, json.dumps(p.metadata, sort_keys=True))
        for p in Prompt.objects.filter(project=project)
    }
    candidates = {
        c.external_id: (c.text, json.dumps(c.metadata, sort_keys=True))
        for c in Candidate.objects.filter(project=project)
    }
    return {
        "prompts": prompts,
        "candidates": candidates,
        "judgments": _judgments_as_records(project),
    }


def _round_trip(tmp_path, first):
    path = export_project(first, tmp_path / "out")
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b"" and len(lines) == 4  # settings, two prompts, final newline
    second = import_file(path=path, project_name="copy").project
    assert second.instructions == BREAKS
    return second, path


def test_line_separators_and_big_integers_survive_the_round_trip(tmp_path):
    first = _import(tmp_path, _rows({"n": BIG, "x": 1.5}, {"ids": [BIG, -BIG]}), "first")
    second, path = _round_trip(tmp_path, first)
    assert _contents(second) == _contents(first)
    assert Prompt.objects.get(project=second, external_id="p1").metadata["n"] == BIG
    text = path.read_text(encoding="utf-8")
    assert "\u2028" not in text and "\u2029" not in text and "\u0085" not in text
    assert "é ✓" in text  # the other non-ASCII text is written as UTF-8, not escaped
