"""The leaderboard command on real GenAI-Arena votes, and on a project's own judgments."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from annotate.models import Task
from tests.curation.builders import (  # noqa: F401  (fast_passwords: autouse fixture)
    fast_passwords,
    judge_ranking,
    members,
    slots,
)
from tests.factories import make_project

pytestmark = pytest.mark.django_db

ARENA = Path("/work/shared/data/genai_arena_clean_battle_20240220.json")


@pytest.fixture
def arena():
    if not ARENA.is_file():
        pytest.skip(f"{ARENA} is not on this machine")
    call_command("import_project", str(ARENA), "--project", "arena", stdout=io.StringIO())


def _board(*args: str) -> dict:
    out = io.StringIO()
    call_command("leaderboard", *args, "--json", stdout=out)
    return json.loads(out.getvalue())


def test_it_gives_the_sparse_edition_models_wide_intervals(arena):
    board = _board("arena", "--bootstrap", "100")
    rows = {r["model"]: r for r in board["rows"]}
    assert len(rows) == 13
    width = {m: r["ci_high"] - r["ci_low"] for m, r in rows.items()}
    editions = [w for m, w in width.items() if m.endswith("_edition")]
    generations = [w for m, w in width.items() if m.endswith("_generation")]
    assert len(editions) == 7 and len(generations) == 6
    # 7-33 votes each against 600+: intervals several times wider.
    assert min(editions) > 3 * max(generations)
    assert all(rows[m]["comparisons"] < 40 for m in rows if m.endswith("_edition"))


def test_it_prints_the_table_and_the_stability_figure(arena):
    out = io.StringIO()
    call_command("leaderboard", "arena", "--bootstrap", "50", stdout=out)
    text = out.getvalue()
    assert "imagenhub_PlayGroundV2_generation" in text and "95% CI" in text
    assert "Stability: removing" in text
    # The edition models were never compared with the generators: said, and kept apart.
    assert "not comparable" in text


def test_it_measures_stability_within_the_comparable_part(arena):
    board = _board("arena", "--bootstrap", "0")
    stability = board["stability"]
    assert stability["leader"].endswith("_generation")
    assert 0 < stability["votes_to_change"] < stability["votes"]


def test_it_ranks_models_from_rankings(users):
    project = make_project(n_prompts=4, n_candidates=3, k=2, models=["good", "fair", "poor"])
    members(project, users)
    for task in Task.objects.filter(project=project):
        for user in (users["annotator"], users["annotator2"]):
            judge_ranking(task, user, [[c] for c in slots(task)])
    board = _board(project.name, "--bootstrap", "20")
    assert [r["model"] for r in board["rows"]] == ["good", "fair", "poor"]
    assert board["stability"]["votes"] == 4 * 2 * 3


def test_it_names_an_unknown_project():
    with pytest.raises(CommandError, match="no project named 'nope'"):
        call_command("leaderboard", "nope")
