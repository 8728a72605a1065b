"""An import runs with Python's cyclic garbage collector paused (its collections walked every
object of the process and found nothing), and leaves it as it found it, also when the file is
rejected."""

from __future__ import annotations

import gc
import json

import pytest

from annotate.importing import ImportRejected
from annotate.models import Prompt
from annotate.services import import_file

pytestmark = pytest.mark.django_db


def _rows(tmp_path, *, bad: bool = False):
    path = tmp_path / "rows.jsonl"
    rows = [
        {
            "id": f"p{i}",
            "prompt": "Which is better?",
            "candidates": [{"id": f"p{i}-{c}", "model": c, "text": c} for c in "ab"],
        }
        for i in range(3)
    ]
    if bad:
        rows[1]["candidates"] = []
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def collector():
    enabled = gc.isenabled()
    yield
    (gc.enable if enabled else gc.disable)()


def test_the_collector_is_off_while_an_import_runs_and_on_after(tmp_path, collector):
    gc.enable()
    seen = []

    import_file(
        path=_rows(tmp_path),
        project_name="paused",
        on_progress=lambda *a: seen.append(gc.isenabled()),
    )

    assert seen and not any(seen)
    assert gc.isenabled()
    assert Prompt.objects.count() == 3


def test_a_rejected_file_leaves_the_collector_on(tmp_path, collector):
    gc.enable()

    with pytest.raises(ImportRejected, match="at least 2 candidates"):
        import_file(path=_rows(tmp_path, bad=True), project_name="rejected")

    assert gc.isenabled()
    assert Prompt.objects.count() == 0


def test_a_collector_turned_off_before_stays_off(tmp_path, collector):
    gc.disable()

    import_file(path=_rows(tmp_path), project_name="off")

    assert not gc.isenabled()
