"""A project built from arena-style votes (model names only, no responses): imported through the
importer, exported, every file read back by its consumer. No training row has empty content,
the datasheet counts what was left out and why, and the leaderboard still uses every vote."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from annotate.services import import_file
from curation import services
from curation.models import DatasetExport
from tests.curation.test_export import _lines, _read_back

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("_data_dir")]


def _votes(path: Path) -> Path:
    """30 battles: gen-1 beats gen-2 and gen-3 mostly, gen-2 beats gen-3; a few ties; some
    votes carry the user's prompt text, none the generated content."""
    rows = []
    for n in range(10):
        rows.append({"model_a": "gen-1", "model_b": "gen-2", "winner": "model_a", "judge": f"u{n}"})
        rows.append(
            {
                "model_a": "gen-3",
                "model_b": "gen-1",
                "winner": "model_b" if n < 8 else "tie",
                "judge": f"u{n}",
                "prompt": f"A red cube number {n}",
            }
        )
        rows.append(
            {
                "model_a": "gen-2",
                "model_b": "gen-3",
                "winner": "model_a" if n < 7 else "tie (bothbad)",
                "judge": f"v{n}",
                "tstamp": 1700000000 + n,
            }
        )
    path.write_text(json.dumps(rows))
    return path


def test_it_exports_a_votes_only_project_with_no_empty_training_rows(tmp_path):
    result = import_file(path=_votes(tmp_path / "battles.json"), project_name="arena")
    assert result.format == "arena" and result.counts["judgments"] == 30

    export = services.export_create(
        project=result.project, options={"splits": {"train": 0.8, "test": 0.2}}, enqueue=False
    )
    export = services.export_build(export_id=export.pk)

    assert export.status == DatasetExport.Status.DONE, export.error
    loaded = _read_back(export)  # pyarrow, load_from_disk for every folder and split
    assert all(split.num_rows == 0 for table in loaded.values() for split in table.values())
    for path in sorted(export.path.glob("*/*.jsonl")):
        assert _lines(path) == [], path
    sheet = json.loads((export.path / "datasheet.json").read_text())
    assert sheet["without_content"]["candidates"] == 60
    assert sheet["without_content"]["prompts_dropped"] == 30
    assert sheet["counts"]["judgments_in_project"] == 30
    assert "arena imports" in sheet["without_content"]["why"]
    assert any("is empty" in warning for warning in sheet["warnings"])
    board = [row["model"] for row in sheet["leaderboard"]]
    assert board == ["gen-1", "gen-2", "gen-3"]
    # Every vote, ties and both-bad included, as the leaderboard command counts them.
    assert sum(row["comparisons"] for row in sheet["leaderboard"]) == 2 * 30
    assert "## Rows without content" in (export.path / "datasheet.md").read_text()
