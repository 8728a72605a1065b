"""The curated export's JSONL files hold one row a line for line-based readers: U+2028,
U+2029 and U+0085 (which ``str.splitlines`` ends a line at, and JSON leaves as they are) are
written escaped, as the raw export writes them, and read back as the characters."""

from __future__ import annotations

import io
import json

import pandas as pd
import pytest

from annotate.models import Candidate, Prompt, Task
from curation import exporting as E
from curation import services
from curation.models import DatasetExport
from tests.curation.builders import (
    fast_passwords,  # noqa: F401  (autouse fixture)
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]
BREAKS = "one\u2028two\u2029three\x85four"
MODELS = ["model\u2028a", "model-b", "model\u2029c", "model\x85d"]


def _export(users, denoise: bool) -> DatasetExport:
    """Three prompts of four candidates ranked by three annotators in a cycle (overruled arcs,
    with the models' names in them); line breaks in a prompt, an answer and the model names."""
    project = make_project(name="breaks", n_prompts=3, n_candidates=4, k=4, models=MODELS)
    Prompt.objects.filter(project=project, external_id="p0").update(text=f"Q? {BREAKS}")
    Candidate.objects.filter(project=project, external_id="p1-c2").update(text=f"A {BREAKS}")
    people = members(project, users, extra_annotators=1)
    for task in Task.objects.filter(project=project).order_by("id"):
        a, b, c, d = slots(task)
        # A majority cycle a > b > c > a: whatever the ranking, it reverses a human arc.
        judge_ranking(task, people[0], [[a], [b], [c], [d]])
        judge_ranking(task, people[1], [[b], [c], [a], [d]])
        judge_ranking(task, people[2], [[c], [a], [b], [d]])
    export = services.export_create(project=project, options={"denoise": denoise}, enqueue=False)
    export = services.export_build(export_id=export.pk)
    assert export.status == DatasetExport.Status.DONE, export.error
    return export


def _rows(text: str) -> list[dict]:
    lines = text.splitlines()
    assert len(lines) == text.count("\n")  # no line split inside a row
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("denoise", [True, False])
def test_line_readers_read_one_row_a_line(users, denoise):
    export = _export(users, denoise)
    files = {p.relative_to(export.path).as_posix(): p for p in export.path.rglob("*.jsonl")}
    assert {"pairs/train.jsonl", "rankings/train.jsonl", "overruled_arcs.jsonl"} <= set(files)
    read = {}
    for name, path in files.items():
        text = path.read_text(encoding="utf-8")
        assert not any(char in text for char in "\u2028\u2029\x85"), name
        read[name] = _rows(text)
        if read[name]:
            frame = pd.read_json(io.StringIO(text), lines=True)
            assert len(frame) == len(read[name]), name

    # The escapes read back as the characters: the rows hold the texts and names as stored.
    pairs, rankings = read["pairs/train.jsonl"], read["rankings/train.jsonl"]
    assert {r["prompt"] for r in pairs} == {f"Q? {BREAKS}", "Question 1?", "Question 2?"}
    assert f"A {BREAKS}" in {r["chosen"] for r in pairs} | {r["rejected"] for r in pairs}
    assert {r["chosen_model"] for r in pairs} <= set(MODELS)
    assert "model\u2028a" in {r["chosen_model"] for r in pairs}
    assert f"Q? {BREAKS}" in {r["prompt"] for r in rankings}
    assert f"A {BREAKS}" in {t for r in rankings for t in r["responses"]}
    overruled = read["overruled_arcs.jsonl"]
    if denoise:
        assert overruled and {r["preferred_model"] for r in overruled} <= set(MODELS)
        assert {r["over_model"] for r in overruled} & {"model\u2028a", "model\u2029c"}

    # Downloaded with absolute media paths, the rows are written again: escaped the same way.
    for name in ("pairs/train.jsonl", "rankings/train.jsonl", "overruled_arcs.jsonl"):
        data = b"".join(E.export_file_chunks(files[name], base_folder="/data/x")).decode()
        assert data == files[name].read_text(encoding="utf-8")  # no media paths to rewrite
        assert _rows(data) == read[name]
