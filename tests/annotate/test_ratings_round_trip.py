"""Rubric ratings survive a raw export and its import: ``ratings`` in the Quorum format.

A judgment's ratings are stored as ``{dimension: {candidate id (text): 1..5}}``; the Quorum
format names the candidates by external id, and an import checks them as a submit does.
"""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from annotate import importing, queue
from annotate.exporting import export_project
from annotate.importing import ImportRejected
from annotate.models import Candidate, Judgment, Project
from annotate.services import api_token_create, import_file
from tests.annotate.conftest import new_key

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("fast_passwords")]

RUBRIC = ["accuracy", "style"]


def _submit_rated(project: Project, user, rate) -> None:
    """Leases and submits every task ``user`` may judge, with ``rate(order)`` as ratings."""
    while (a := queue.assignment_next(project=project, annotator=user)) is not None:
        order = a.presented_order
        verdict = (
            {"choice": "A"}
            if project.mode == Project.Mode.PAIRWISE
            else {"ranking": [[c] for c in order]}
        )
        queue.judgment_submit(
            assignment=a,
            project=project,
            idempotency_key=new_key(),
            ratings=rate(order),
            **verdict,
        )


def _ratings_by_key(project: Project) -> dict[str, dict]:
    """Each judgment's ratings with candidates named by external id, by its submitted key."""
    ext = {str(c.pk): c.external_id for c in Candidate.objects.filter(project=project)}
    prefix = f"import:{project.pk}:"
    return {
        j.idempotency_key.removeprefix(prefix): {
            dim: {ext[c]: v for c, v in per.items()} for dim, per in j.ratings.items()
        }
        for j in Judgment.objects.filter(project=project)
    }


def _rate(order):
    return {"accuracy": {order[0]: 5, str(order[1]): 1}, "style": {str(order[1]): 3}}


@pytest.fixture
def rated(ranking_project, users) -> Project:
    """The ranking project with a rubric: ann's judgments rated, ann2's without ratings."""
    ranking_project.rubric_dimensions = RUBRIC
    ranking_project.save()
    _submit_rated(ranking_project, users["annotator"], _rate)
    _submit_rated(ranking_project, users["annotator2"], lambda order: None)
    return ranking_project


def test_it_round_trips_ratings_through_export_project(rated, tmp_path):
    path = export_project(rated, tmp_path / "out")
    copy = import_file(path=path, project_name="copy").project
    before = _ratings_by_key(rated)
    assert sum(1 for r in before.values() if r) == 3  # ann rated the 3 tasks; ann2 did not
    assert _ratings_by_key(copy) == before
    assert copy.rubric_dimensions == RUBRIC


def test_it_stores_imported_ratings_by_candidate_id_as_a_submit_does(rated, tmp_path):
    path = export_project(rated, tmp_path / "out")
    copy = import_file(path=path, project_name="copy").project
    ids = {str(c.pk) for c in Candidate.objects.filter(project=copy)}
    stored = [j.ratings for j in Judgment.objects.filter(project=copy) if j.ratings]
    assert len(stored) == 3
    for ratings in stored:
        assert set(ratings) == set(RUBRIC)
        assert all(c in ids and type(v) is int for per in ratings.values() for c, v in per.items())


def test_it_writes_ratings_by_external_id_only_for_judgments_that_have_them(rated, tmp_path):
    path = export_project(rated, tmp_path / "out")
    judgments = [
        j for line in path.read_text().splitlines()[1:] for j in json.loads(line)["judgments"]
    ]
    rated_rows = [j for j in judgments if "ratings" in j]
    assert len(rated_rows) == 3 and len(judgments) == 6
    for j in rated_rows:
        first, second = j["ranking"][0][0], j["ranking"][1][0]  # ranked in the order shown
        assert j["ratings"] == {"accuracy": {first: 5, second: 1}, "style": {second: 3}}


def test_it_round_trips_pair_ratings(pair_project, users, tmp_path):
    pair_project.rubric_dimensions = ["accuracy"]
    pair_project.save()
    _submit_rated(pair_project, users["annotator"], lambda order: {"accuracy": {order[1]: 2}})
    path = export_project(pair_project, tmp_path / "out")
    copy = import_file(path=path, project_name="copy").project
    before = _ratings_by_key(pair_project)
    assert len(before) == 3 and all(before.values())
    assert _ratings_by_key(copy) == before


def test_it_round_trips_ratings_through_the_raw_export_api(client, rated, users, tmp_path):
    _token, key = api_token_create(user=users["reviewer"])
    response = client.get(
        f"/api/projects/{rated.pk}/raw-export", HTTP_AUTHORIZATION=f"Bearer {key}"
    )
    assert response.status_code == 200
    path = tmp_path / "raw.zip"
    path.write_bytes(b"".join(response.streaming_content))
    assert zipfile.ZipFile(io.BytesIO(path.read_bytes())).namelist() == ["data.jsonl"]
    copy = import_file(path=path, project_name="copy").project
    assert _ratings_by_key(copy) == _ratings_by_key(rated)


def test_it_uses_the_bounds_of_a_submitted_rating():
    assert (importing.RATING_MIN, importing.RATING_MAX) == (queue.RATING_MIN, queue.RATING_MAX)


# --- import problems ------------------------------------------------------------------------


def _import_rated(tmp_path, ratings) -> None:
    rows = [
        {"project": {"mode": "ranking", "candidates_per_task": 3, "rubric_dimensions": RUBRIC}},
        {
            "id": "q1",
            "prompt": "Which is right?",
            "candidates": [
                {"id": "q1-a", "model": "m1", "text": "A"},
                {"id": "q1-b", "model": "m2", "text": "B"},
                {"id": "q1-c", "model": "m3", "text": "C"},
            ],
            "judgments": [
                {"annotator": "e1", "ranking": [["q1-a"], ["q1-b"]]},
                {"annotator": "e2", "ranking": [["q1-b"], ["q1-a"]], "ratings": ratings},
            ],
        },
    ]
    path = tmp_path / "rated.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    import_file(path=path, project_name="rated")


def test_it_imports_valid_ratings(tmp_path):
    _import_rated(tmp_path, {"accuracy": {"q1-a": 1, "q1-b": 5}})
    project = Project.objects.get(name="rated")
    assert sorted(_ratings_by_key(project).values(), key=bool) == [
        {},
        {"accuracy": {"q1-a": 1, "q1-b": 5}},
    ]


@pytest.mark.parametrize(
    ("ratings", "field", "words"),
    [
        ({"speed": {"q1-a": 3}}, "judgments.ratings.speed", ["'speed'", "accuracy, style"]),
        ({"accuracy": {"q1-z": 3}}, "judgments[1].ratings.accuracy", ["'q1-z'"]),
        ({"accuracy": {"q1-c": 3}}, "judgments[1].ratings.accuracy", ["'q1-c'", "task"]),
        ({"style": {"q1-a": 6}}, "judgments[1].ratings.style", ["'q1-a'", "6", "1..5"]),
        ({"style": {"q1-a": 0}}, "judgments[1].ratings.style", ["'q1-a'", "0", "1..5"]),
        ({"accuracy": {"q1-b": "4"}}, "judgments[1].ratings.accuracy", ["'q1-b'", "integer"]),
        ({"accuracy": {"q1-b": 4.5}}, "judgments[1].ratings.accuracy", ["'q1-b'", "integer"]),
        ({"accuracy": {"q1-b": True}}, "judgments[1].ratings.accuracy", ["'q1-b'", "integer"]),
        ({"accuracy": ["q1-b", 4]}, "judgments[1].ratings.accuracy", ["candidate ids"]),
        (["accuracy"], "judgments[1].ratings", ["object"]),
    ],
)
def test_it_rejects_a_bad_rating_naming_line_and_field(tmp_path, ratings, field, words):
    with pytest.raises(ImportRejected) as info:
        _import_rated(tmp_path, ratings)
    [problem] = info.value.problems
    assert (problem.line, problem.field) == (2, field)
    for word in words:
        assert word in problem.message
    assert not Project.objects.filter(name="rated").exists()
    assert Judgment.objects.count() == 0


def test_it_checks_dimensions_against_an_existing_projects_rubric(tmp_path, ranking_project):
    ranking_project.name = "rated"
    ranking_project.rubric_dimensions = ["tone"]
    ranking_project.save()
    with pytest.raises(ImportRejected) as info:
        _import_rated(tmp_path, {"accuracy": {"q1-a": 3}})
    [problem] = info.value.problems
    assert (problem.line, problem.field) == (2, "judgments.ratings.accuracy")
    assert Judgment.objects.count() == 0
